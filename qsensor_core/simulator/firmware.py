"""Pure model of the Q-Series firmware 4.003 (2150 mode): bytes in at a time, bytes out at a time.

The real firmware is blocking code: it prints, sleeps, and waits for a byte (sometimes with a
timeout). The model is written the same way, as a generator that yields `_Emit`, `_Wait` and
`_Read` actions; `Firmware.run(now)` drives it as far as the input received so far and the
clock allow. Nothing here does I/O or reads a clock, so every path is testable with
made-up times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qsensor_core.sensor import protocol as p
from qsensor_core.simulator.values import ValueModel

Mode = Literal["freerun", "polled"]
SERIAL_PADDING = "   "  # the firmware pads its serial number field
EOL_SKIP_WINDOW_S = 0.05  # how late a CR/LF after a selection letter may come and still be skipped
BOOT_S = 0.5  # from power-on/reset to the banner
NUMBER_INPUT_MAX = 32  # characters kept of a typed number; the rest is dropped
_MENU_KEYS = (p.ESC[0], ord("?"))
_ENTER_KEYS = tuple(key[0] for key in p.SELECTION_ENTER_KEYS)
_PRINTABLE = range(0x20, 0x7F)

_Printable = Annotated[str, Field(pattern=r"^[\x20-\x2b\x2d-\x7e]*$")]  # printable ASCII, no comma


class DeviceSettings(BaseModel):
    """The device's EEPROM: what menu commands change and a restart keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    averaging: int = Field(125, ge=p.AVERAGING_MIN, le=p.AVERAGING_MAX)
    baud: int = 9600
    adc_rate: int = 125
    mode: Mode = "freerun"
    tag: str = Field("A", pattern=r"^[A-Z]$")
    serial_number: _Printable = Field("Q12345", min_length=1)
    preamble: _Printable = ""
    temp_output: bool = True
    vin_output: bool = True
    quiet: bool = False
    calfactor: _Printable = "1.000000E+00"
    units: _Printable = " uE/cm^2sec"
    description: _Printable = "QSP2150 dark"
    immersion_factor: _Printable = "1.000000"
    dark_value: _Printable = "0.010000"
    supply_voltage: _Printable = "7.50"
    gain: int = 1
    calmode: _Printable = "0"

    @field_validator("baud")
    @classmethod
    def _known_baud(cls, baud: int) -> int:
        if baud not in p.VALID_BAUDS:
            raise ValueError(f"baud must be one of {p.VALID_BAUDS}")
        return baud

    @field_validator("adc_rate")
    @classmethod
    def _known_rate(cls, rate: int) -> int:
        if rate not in p.VALID_ADC_RATES:
            raise ValueError(f"ADC rate must be one of {p.VALID_ADC_RATES}")
        return rate

    @property
    def padded_serial(self) -> str:
        return self.serial_number + SERIAL_PADDING


@dataclass(frozen=True, slots=True)
class Output:
    """Bytes the device puts on its UART at `at` (device time, seconds)."""

    at: float
    data: bytes
    is_data: bool = False  # a measurement line (one whole line, CRLF included)


@dataclass(frozen=True, slots=True)
class _Emit:
    data: bytes
    is_data: bool = False


@dataclass(frozen=True, slots=True)
class _Wait:
    until: float


@dataclass(frozen=True, slots=True)
class _Read:
    until: float | None  # None: wait forever
    peek: bool = False


_Action = _Emit | _Wait | _Read
_Program = Generator[_Action, int | None, None]


def _line(text: str) -> bytes:
    return text.encode("ascii") + p.EOL


def _atoi(text: str) -> int:
    """C `atoi`: optional blanks and sign, then leading digits; 0 when there are none."""
    s = text.lstrip(" \t")
    sign = -1 if s[:1] == "-" else 1
    s = s[1:] if s[:1] in "+-" else s
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


class Firmware:
    """The device from power-on: feed it bytes with their arrival times, run it up to `now`."""

    def __init__(
        self,
        settings: DeviceSettings,
        values: ValueModel,
        *,
        time_scale: float = 1.0,
        ppm: float = 0.0,
        bench_speedup: float = 1.0,
    ) -> None:
        self.settings = settings
        self._values = values
        self._scale = time_scale
        # A benchmark's speed-up divides the period too: faster than any real device can sample.
        self._clock_factor = (1 + ppm / 1e6) / bench_speedup
        self._input: deque[tuple[float, int]] = deque()
        self._t = 0.0
        self._program: _Program | None = None
        self._action: _Action | None = None

    # --- driving -------------------------------------------------------------------------

    def power_on(self, now: float) -> list[Output]:
        """Start the firmware at `now`: boot, banner, sampling in the saved mode."""
        self._t = now
        self._input.clear()
        self._program = self._main()
        self._action = next(self._program)
        return self.run(now)

    def feed(self, data: bytes, at: float) -> None:
        """Bytes the host sent, arriving at `at` (not before anything fed earlier)."""
        self._input.extend((at, byte) for byte in data)

    def run(self, now: float) -> list[Output]:
        """Everything the device does up to `now`, as the bytes it prints and when."""
        out: list[Output] = []
        while self._action is not None:
            answer, ready = self._try(self._action, now)
            if not ready:
                break
            if isinstance(self._action, _Emit):
                out.append(Output(self._t, self._action.data, self._action.is_data))
            assert self._program is not None
            self._action = self._program.send(answer)
        return out

    def next_wakeup(self) -> float | None:
        """When `run` next has something to do without new input (None: only input helps)."""
        action = self._action
        if isinstance(action, _Wait):
            return action.until
        if isinstance(action, _Read):
            if self._input:
                first = self._input[0][0]
                return first if action.until is None else min(first, action.until)
            return action.until
        return None

    def _try(self, action: _Action, now: float) -> tuple[int | None, bool]:
        if isinstance(action, _Emit):
            return None, True
        if isinstance(action, _Wait):
            if action.until > now:
                return None, False
            self._t = max(self._t, action.until)
            return None, True
        if self._input and self._input[0][0] <= now:
            at, byte = self._input[0]
            if action.until is None or at <= action.until:
                if not action.peek:
                    self._input.popleft()
                self._t = max(self._t, at)
                return byte, True
        if action.until is not None and action.until <= now:
            self._t = max(self._t, action.until)
            return None, True
        return None, False

    # --- helpers for the program -----------------------------------------------------------

    def _delay(self, seconds: float) -> Generator[_Action, int | None, None]:
        """A firmware delay; `--time-scale` stretches or shrinks these."""
        yield _Wait(self._t + seconds * self._scale)

    def _print(self, *lines: str) -> Generator[_Action, int | None, None]:
        yield _Emit(b"".join(_line(text) for text in lines))

    def _prompt(self, text: str) -> Generator[_Action, int | None, None]:
        yield _Emit(text.encode("ascii"))

    @property
    def period_s(self) -> float:
        """Time between averaged readings on the device's (possibly fast or slow) clock."""
        s = self.settings
        return s.averaging / s.adc_rate * self._clock_factor

    def _save(self, **changes: object) -> None:
        self.settings = self.settings.model_copy(update=changes)

    # --- the firmware ----------------------------------------------------------------------

    def _main(self) -> _Program:
        """Power-on, then forever: boot, sample until ESC, menu until `X`, reset."""
        while True:
            reset_at = self._t
            yield from self._delay(BOOT_S)
            if not self.settings.quiet:
                yield from self._print(*self._banner(), *self._start_lines())
            first_data = reset_at + max(p.FIRST_DATA_AFTER_RESET_S * self._scale, self.period_s)
            if self.settings.mode == "freerun":
                yield from self._freerun(first_data)
            else:
                yield from self._polled(first_data - self.period_s)
            yield from self._menu()
            yield from self._print(*p.RESET_LINES)

    def _banner(self) -> list[str]:
        s = self.settings
        operating = p.BANNER_FREERUN if s.mode == "freerun" else p.BANNER_POLLED.format(tag=s.tag)
        return [
            p.BANNER_TITLE,
            p.BANNER_UNIT_ID.format(serial=s.padded_serial),
            operating,
            p.BANNER_ADC.format(rate=s.adc_rate, gain=s.gain),
            p.BANNER_AVERAGING.format(n=s.averaging),
            p.BANNER_TEMPERATURE.format(temp=self._values.temperature(self._t)),
            p.BANNER_SUPPLY.format(vin=self._values.supply()),
            p.BANNER_CALFACTOR.format(calfactor=s.calfactor, units=s.units),
        ]

    def _start_lines(self) -> list[str]:
        if self.settings.mode == "freerun":
            return [p.BANNER_ADC_OK, *p.BANNER_FREERUN_START]
        return [p.BANNER_ADC_OK, p.BANNER_POLLED_START]

    def _data_line(self, tag: str | None) -> _Emit:
        s = self.settings
        sample = self._values.sample(self._t, s.averaging)
        fields = [sample.value]
        if s.temp_output:
            fields.append(sample.temp_c)
        if s.vin_output:
            fields.append(sample.vin)
        prefix = f"{tag}," if tag else ""
        return _Emit(_line(prefix + s.preamble + ", ".join(fields)), is_data=True)

    def _freerun(self, first_data: float) -> _Program:
        """Stream on an absolute schedule until ESC or `?`; every other byte is ignored."""
        k = 0
        while True:
            byte = yield _Read(until=first_data + k * self.period_s)
            if byte is None:
                yield self._data_line(tag=None)
                k += 1
            elif byte in _MENU_KEYS:
                return

    def _polled(self, ready_at: float) -> _Program:
        """Answer `>TAG*` with one completed average; `*TAGQ000!` CR (re)starts averaging."""
        tag = self.settings.tag
        arm, query = p.polled_arm(tag), p.polled_query(tag)
        recent = bytearray()
        average_started: float | None = None
        reply_due = False
        while True:
            done = None if average_started is None else average_started + self.period_s
            byte = yield _Read(until=done if reply_due else None)
            if byte is None:  # the average a query waits for has completed
                yield self._data_line(tag)
                average_started, reply_due = self._t, False
                continue
            if byte in _MENU_KEYS:
                return
            recent = (recent + bytes([byte]))[-len(arm) :]
            if recent.endswith(arm):
                average_started, reply_due = max(self._t, ready_at), False
            elif recent.endswith(query) and done is not None:
                if self._t >= done:
                    yield self._data_line(tag)
                    average_started = self._t
                else:
                    reply_due = True

    def _menu(self) -> _Program:
        """The menu loop; returns when `X` asks for a restart."""
        yield from self._print(*self._banner())
        while True:
            yield from self._delay(p.MENU_DELAY_S)
            yield from self._print(*self._menu_lines())
            byte = yield from self._read_selection()
            if byte in _MENU_KEYS:
                yield from self._print(*self._banner())
                continue
            letter = chr(byte).upper()
            if letter != "M":
                yield from self._skip_enter()
            if letter == "X":
                return
            handler = {
                "A": self._cmd_averaging,
                "R": self._cmd_adc_rate,
                "M": self._cmd_mode,
                "^": self._cmd_settings,
            }.get(letter)
            if handler is not None:
                yield from handler()

    def _menu_lines(self) -> list[str]:
        s = self.settings

        def enabled(flag: bool) -> str:
            return p.OUTPUT_ENABLED if flag else p.OUTPUT_DISABLED

        return [
            p.MENU_TITLE,
            p.MENU_MODEL.format(serial=s.padded_serial),
            p.MENU_AVERAGING.format(n=s.averaging),
            p.MENU_BAUD.format(baud=s.baud),
            p.MENU_CALFACTOR.format(calfactor=s.calfactor),
            p.MENU_DESCRIPTION.format(description=s.description),
            p.MENU_IMMERSION.format(immersion=s.immersion_factor),
            p.MENU_DARK.format(dark=s.dark_value),
            p.MENU_MODE.format(tag=s.tag, mode=0 if s.mode == "freerun" else 1),
            p.MENU_OUTPUTS.format(temp=enabled(s.temp_output), vin=enabled(s.vin_output)),
            p.MENU_PREAMBLE.format(preamble=s.preamble),
            p.MENU_ADC_RATE.format(rate=s.adc_rate),
            p.MENU_RESTART,
            p.MENU_SETTINGS,
            p.MENU_PROMPT,
        ]

    def _read_selection(self) -> Generator[_Action, int | None, int]:
        """The next byte that can select something: line endings and control bytes are skipped."""
        while True:
            byte = yield _Read(until=None)
            assert byte is not None
            if byte in _MENU_KEYS or byte in _PRINTABLE:
                return byte

    def _skip_enter(self) -> Generator[_Action, int | None, None]:
        """Drop the CR or LF that follows a selection letter (an LF after it is harmless:
        number input and the menu both ignore LF)."""
        byte = yield _Read(until=self._t + EOL_SKIP_WINDOW_S, peek=True)
        if byte in _ENTER_KEYS:
            yield _Read(until=None)

    def _read_number(self) -> Generator[_Action, int | None, str]:
        """Typed characters, echoed, up to CR; there is no timeout (the real device hangs too)."""
        typed = ""
        while True:
            byte = yield _Read(until=None)
            assert byte is not None
            if byte == p.CR[0]:
                yield _Emit(p.EOL)
                return typed
            if byte in _PRINTABLE and len(typed) < NUMBER_INPUT_MAX:
                typed += chr(byte)
                yield _Emit(bytes([byte]))

    def _cmd_averaging(self) -> _Program:
        yield from self._prompt(p.AVERAGING_PROMPT)
        n = _atoi((yield from self._read_number()))
        if p.AVERAGING_MIN <= n <= p.AVERAGING_MAX:
            self._save(averaging=n)
            yield from self._print(p.AVERAGING_OK.format(n=n))
        else:
            yield from self._print(p.AVERAGING_INVALID)
            yield from self._delay(p.AVERAGING_INVALID_PAUSE_S)

    def _cmd_adc_rate(self) -> _Program:
        yield from self._print(p.ADC_RATE_PROMPT_1)
        yield from self._prompt(p.ADC_RATE_PROMPT_2)
        rate = _atoi((yield from self._read_number()))
        if rate in p.VALID_ADC_RATES:
            self._save(adc_rate=rate)
            yield from self._print(p.ADC_RATE_OK.format(r=rate))
        else:
            yield from self._prompt(p.ADC_RATE_INVALID)
            yield from self._delay(p.ADC_RATE_INVALID_PAUSE_S)

    def _read_answer(self) -> Generator[_Action, int | None, int | None]:
        """One byte, with the `M` command's timeout; None (after saying so) when none came."""
        byte = yield _Read(until=self._t + p.MODE_TIMEOUT_S * self._scale)
        if byte is None:
            yield from self._print("", p.MODE_TIMEOUT)
        elif byte in _PRINTABLE:
            yield _Emit(bytes([byte]))
        return byte

    def _cmd_mode(self) -> _Program:
        yield from self._print(p.MODE_PROMPT_1)
        yield from self._prompt(p.MODE_PROMPT_2)
        answer = yield from self._read_answer()
        if answer is None:
            return
        if answer == ord("0"):
            self._save(mode="freerun")
            yield from self._print("")
        elif answer == ord("1"):
            yield from self._print("", p.TAG_PROMPT_1)
            yield from self._prompt(p.TAG_PROMPT_2)
            tag = yield from self._read_answer()
            if tag is None:
                return
            letter = chr(tag).upper()
            if len(letter) == 1 and letter in p.VALID_TAGS:
                self._save(mode="polled", tag=letter)
                yield from self._print("")
            else:
                yield from self._print(p.BAD_TAG)
        else:
            yield from self._print("", p.MODE_CONFUSED)

    def _cmd_settings(self) -> _Program:
        yield from self._print(self.settings_line())

    def settings_line(self) -> str:
        """The `^` CSV line, in the field order `grammar.parse_settings` reads."""
        s = self.settings
        fields = [
            str(s.averaging),
            str(s.baud),
            s.calfactor,
            s.description,
            p.SETTINGS_MARKERS[4],
            p.FIRMWARE_VERSION,
            p.SETTINGS_MARKERS[6],
            p.SETTINGS_MARKERS[7],
            s.padded_serial,
            s.immersion_factor,
            s.dark_value,
            s.supply_voltage,
            "0" if s.mode == "freerun" else "1",
            s.tag,
            s.preamble,
            "1" if s.temp_output else "0",
            str(s.adc_rate),
            p.SETTINGS_TEMP_MARKER,
            self._values.temperature(self._t),
            s.units.strip(),
            p.SETTINGS_VIN_MARKER,
            s.calmode,
        ]
        return ",".join(fields)
