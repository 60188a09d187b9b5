"""Pure classification of device lines: an allow-list grammar for data, never a deny-list.

A line is data only when it matches, in full, the shape the device's current configuration
produces; everything else is classified so it can be counted and logged, never recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qsensor_core.sensor import protocol
from qsensor_core.sensor.models import LineKind, SensorConfig

_VALUE = r"(?P<value>-?\d+\.\d{1,8})"
_TEMP = r", (?P<temp>-?\d+\.\d{2})"
_VIN = r", (?P<vin>-?\d+\.\d{3})"


@dataclass(frozen=True, slots=True)
class DataFields:
    value: str
    temp_c: str | None
    vin: str | None


class DataLineGrammar:
    """The exact shape of a data line for one device configuration."""

    def __init__(
        self,
        *,
        polled_tag: str | None,
        preamble: str = "",
        temp: bool = True,
        vin: bool | None = True,
    ) -> None:
        tag = f"{re.escape(polled_tag)}," if polled_tag else ""
        temp_part = _TEMP if temp else ""
        vin_part = {True: _VIN, False: "", None: f"(?:{_VIN})?"}[vin]
        self._pattern = re.compile(f"{tag}{re.escape(preamble)}{_VALUE}{temp_part}{vin_part}")

    @classmethod
    def for_config(cls, config: SensorConfig) -> DataLineGrammar:
        return cls(
            polled_tag=config.tag if config.mode == "polled" else None,
            preamble=config.preamble,
            temp=config.temp_output,
            vin=config.vin_output,
        )

    def match(self, line: str) -> DataFields | None:
        found = self._pattern.fullmatch(line)
        if found is None:
            return None
        groups = found.groupdict()
        return DataFields(groups["value"], groups.get("temp"), groups.get("vin"))


_BANNER_PREFIXES = (
    protocol.BANNER_TITLE,
    "Unit ID ",
    "Operating in ",
    "ADC sample rate ",
    "Averaging ",
    "Sensor temperature:",
    "Input Supply Voltage:",
    "Calfactor:",
    "ADC OK",
    "ADC did not startup",
    "SetupADC did not complete",
    protocol.BANNER_POLLED_START,
    *protocol.BANNER_FREERUN_START,
    *protocol.RESET_LINES,
)
_MENU_PATTERN = re.compile(
    r"(Biospherical Instruments Inc: Digital Log Engine|Model:|[A-Z^?] to |"
    + re.escape(protocol.MENU_PROMPT)
    + ")"
)
_PROMPT_PREFIXES = (
    "Enter ",
    "If you set this",
    "125 samples per second",
    "*250Hz",
    "ADC set to averaging",
    "ADC rate set to",
    "****",
    "Invalid rate!!!",
    "Set operating mode",
    "Note tags",
    "Bad TAG",
    protocol.MODE_CONFUSED,
    "Timed out waiting",
)


def classify(line: str, grammar: DataLineGrammar | None) -> tuple[LineKind, DataFields | None]:
    """Classify one line (without its line ending); data needs a grammar to be recognised."""
    if grammar is not None:
        fields = grammar.match(line)
        if fields is not None:
            return LineKind.DATA, fields
    text = line.strip()
    if text.startswith(_BANNER_PREFIXES):
        return LineKind.BANNER, None
    if _MENU_PATTERN.match(text):
        return LineKind.MENU, None
    if text.startswith(_PROMPT_PREFIXES) or _looks_like_settings(text):
        return LineKind.PROMPT, None
    return LineKind.UNKNOWN, None


class SettingsParseError(ValueError):
    pass


def _looks_like_settings(text: str) -> bool:
    fields = text.split(",")
    return len(fields) >= protocol.SETTINGS_MIN_FIELDS and all(
        fields[i] == literal for i, literal in protocol.SETTINGS_MARKERS.items()
    )


def parse_settings(line: str, *, vin_output: bool | None = None) -> SensorConfig:
    """Parse the CSV line printed by `^`; fields past the ADC rate are kept verbatim."""
    text = line.strip()
    if not _looks_like_settings(text):
        raise SettingsParseError(f"not a settings line: {text!r}")
    f = text.split(",")
    mode = {"0": "freerun", "1": "polled"}.get(f[12].strip())
    if mode is None:
        raise SettingsParseError(f"unknown operating mode {f[12]!r} in settings line")
    try:
        return SensorConfig(
            averaging=int(f[0]),
            baud=int(f[1]),
            calfactor=f[2].strip(),
            description=f[3].strip(),
            firmware=f[5].strip(),
            serial_number=f[8].strip(),
            immersion_factor=f[9].strip(),
            dark_value=f[10].strip(),
            supply_voltage=f[11].strip(),
            mode=mode,
            tag=f[13].strip(),
            preamble=f[14],
            temp_output=f[15].strip() == "1",
            adc_rate=int(f[16]),
            vin_output=vin_output,
            extra_fields=tuple(f[17:]),
        )
    except ValueError as exc:
        raise SettingsParseError(f"bad number in settings line {text!r}: {exc}") from exc


_OUTPUTS_PATTERN = re.compile(
    re.escape(protocol.OUTPUTS_MENU_PREFIX)
    + r", temperature is (?P<temp>enabled|disabled), line voltage is (?P<vin>enabled|disabled)"
)


def parse_outputs_menu_line(line: str) -> tuple[bool, bool] | None:
    """(temperature, line voltage) output flags from the menu's `O` line, if this is it."""
    found = _OUTPUTS_PATTERN.match(line.strip())
    if found is None:
        return None
    return found["temp"] == "enabled", found["vin"] == "enabled"
