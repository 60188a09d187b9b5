"""Device texts and command bytes of firmware 4.003 in 2150 mode, as seen on hardware.

The driver expects these texts and the simulator prints them, so both stay in step.
Where the firmware's own documentation disagrees with hardware captures, hardware wins:
`M` and its answers are sent without CR; the polled query is `>`, tag, `*`.
"""

from __future__ import annotations

FIRMWARE_VERSION = "4.003"
VALID_BAUDS = (9600, 19200, 38400, 57600, 115200)
VALID_ADC_RATES = (4, 8, 16, 33, 62, 125, 250, 500)
AVERAGING_MIN, AVERAGING_MAX = 1, 65535
VALID_TAGS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Bytes the host sends.
ESC = b"\x1b"
CR = b"\r"
EOL = b"\r\n"  # what the device ends its lines with
CMD_SETTINGS = b"^\r"
CMD_AVERAGING = b"A\r"
CMD_ADC_RATE = b"R\r"
CMD_MODE = b"M"  # no CR: the device reads the next byte as the mode digit
CMD_EXIT = b"X\r"


def polled_arm(tag: str) -> bytes:
    """Starts averaging in polled mode; sent once after every restart."""
    return f"*{tag}Q000!\r".encode("ascii")


def polled_query(tag: str) -> bytes:
    return f">{tag}*".encode("ascii")


# Menu.
MENU_PROMPT = "Select the letter of the menu entry:"
MENU_TITLE = "Biospherical Instruments Inc: Digital Log Engine v: " + FIRMWARE_VERSION
OUTPUTS_MENU_PREFIX = "O to configure the OUTPUTs"

# Averaging (`A`).
AVERAGING_PROMPT = "Enter # readings to average before update (1-65535): "
AVERAGING_OK = "ADC set to averaging {n}"
AVERAGING_INVALID = "****Invalid number, averaging set to 12.  Command ignored ****"
AVERAGING_INVALID_PAUSE_S = 4.0

# ADC rate (`R`).
ADC_RATE_PROMPT_1 = "Enter ADC rate (4, 8, 16, 33, 62, 125, 250* Hz)"
ADC_RATE_PROMPT_2 = " *250Hz is at reduced resolution     ---- Enter selection: "
ADC_RATE_OK = "ADC rate set to {r}"
ADC_RATE_INVALID = "Invalid rate!!! Command is ignored."  # no line break follows
ADC_RATE_INVALID_PAUSE_S = 5.0

# Operating mode (`M`).
MODE_PROMPT_1 = (
    "Set operating mode. Mode 0 is freerun, 1 is polled. Polled require a TAG to be defined"
)
MODE_PROMPT_2 = "Enter the operating mode number: "
TAG_PROMPT_1 = "Enter the single character that will be the tag used in polling (A-F) UPPER case"
TAG_PROMPT_2 = "Note tags G-Z may not be supported in some Biospherical acquisition software : "
BAD_TAG = " Bad TAG "
MODE_CONFUSED = "I am confused"
MODE_TIMEOUT = "Timed out waiting for response. "
MODE_TIMEOUT_S = 20.0

# Restart (`X`) and sign-on banner.
RESET_LINES = ("Calling reset!", "Rebooting program")
FIRST_DATA_AFTER_RESET_S = 4.0
BANNER_TITLE = "Biospherical Instruments Inc: Digital Engine Vers " + FIRMWARE_VERSION
BANNER_FREERUN_START = ("Start free run sampling", "Starting Sampling; quiet mode =0")
BANNER_POLLED_START = "Entering polled mainline sampling"

# Fixed marker fields of the `^` settings line (index -> literal).
SETTINGS_MARKERS = {4: "E", 6: "G", 7: "H"}
SETTINGS_MIN_FIELDS = 17

# Timing of the menu loop (seconds on the device's clock).
MENU_DELAY_S = 1.0  # after entering the menu and after every command, before the menu prints
SELECTION_ENTER_KEYS = (b"\r", b"\n")  # skipped right after a selection letter and in the menu

# Menu lines (the first and the last are MENU_TITLE and MENU_PROMPT).
MENU_MODEL = "Model: {serial}"
MENU_AVERAGING = "A to set number of samples averaged before update: {n}"
MENU_BAUD = "B to set the baudrate, now: {baud}"
MENU_CALFACTOR = "C to set the calibration factor, now: {calfactor}"
MENU_DESCRIPTION = "D to set the description, now: {description}"
MENU_IMMERSION = "F to set the immersion factor, now: {immersion}"
MENU_DARK = "I to set the dark value, now: {dark}"
MENU_MODE = "M to set the operating mode (0=streaming, 1=polled with tag= {tag}) currently {mode}"
MENU_OUTPUTS = OUTPUTS_MENU_PREFIX + ", temperature is {temp}, line voltage is {vin}"
MENU_PREAMBLE = "P to set the preamble, now: {preamble}"
MENU_ADC_RATE = "R to set ADC sample rate: {rate}"
MENU_RESTART = "X to restart sampling"
MENU_SETTINGS = "^ to list all settings"
OUTPUT_ENABLED, OUTPUT_DISABLED = "enabled", "disabled"

# Sign-on banner (printed at power-on and reset unless quiet, and on entering the menu).
BANNER_UNIT_ID = "Unit ID {serial}"
BANNER_FREERUN = "Operating in free run mode"
BANNER_POLLED = "Operating in polled mode with tag of {tag}"
BANNER_ADC = "ADC sample rate {rate}, gain {gain}"
BANNER_AVERAGING = "Averaging {n} readings"
BANNER_TEMPERATURE = "Sensor temperature: {temp} C"
BANNER_SUPPLY = "Input Supply Voltage: {vin}v"
BANNER_CALFACTOR = "Calfactor: {calfactor}{units}"
BANNER_ADC_OK = "ADC OK"

# Settings line (`^`): fields after the ADC rate.
SETTINGS_TEMP_MARKER = "S"
SETTINGS_VIN_MARKER = "V"
