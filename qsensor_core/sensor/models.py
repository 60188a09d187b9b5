"""Values that cross the driver's boundary: readings, configuration, states and events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qsensor_core.clock import iso_utc

Mode = Literal["freerun", "polled"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One data line, with the text of every field exactly as the device printed it."""

    seq: int  # per driver connection, counts every accepted data line from 0
    mono_ns: int  # receive time on the host's monotonic clock
    wall_ns: int  # receive time on the host's UTC wall clock
    sensor_id: str
    mode: Mode
    value: str
    temp_c: str | None
    vin: str | None
    raw: str  # the whole line without its CRLF

    @property
    def timestamp(self) -> str:
        return iso_utc(self.wall_ns)


class SensorConfig(BaseModel):
    """The device's settings as read back with `^` (and the outputs line of its menu)."""

    model_config = ConfigDict(frozen=True)

    averaging: int
    baud: int
    calfactor: str
    description: str
    firmware: str
    serial_number: str
    immersion_factor: str
    dark_value: str
    supply_voltage: str
    mode: Mode
    tag: str
    preamble: str
    temp_output: bool
    adc_rate: int
    vin_output: bool | None = None  # None: the menu did not say; grammar then accepts either
    extra_fields: tuple[str, ...] = ()

    @property
    def nominal_period_s(self) -> float:
        return self.averaging / self.adc_rate


class DriverState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    IDLE = "idle"  # connected, device parked in its menu
    FREERUN = "freerun"
    POLLED = "polled"
    PAUSED = "paused"  # acquisition interrupted on request, device in its menu
    RECONNECTING = "reconnecting"  # link lost; retrying with backoff


class LineKind(StrEnum):
    DATA = "data"
    BANNER = "banner"
    MENU = "menu"
    PROMPT = "prompt"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DriverEvent:
    """Something a user should know about: state change, rejected line, link gap."""

    kind: Literal["state", "rejected_line", "link_lost", "link_restored", "error"]
    mono_ns: int
    wall_ns: int
    state: DriverState
    detail: str = ""
    line_kind: LineKind | None = None
    gap_s: float | None = None  # for link_restored: time without data
    last_seq_before_gap: int | None = None


class DriverStats(BaseModel):
    """Counters of one driver connection; `lines` == `data` + the sum of `rejected`."""

    model_config = ConfigDict(frozen=True)

    lines: int = 0  # non-blank lines received and classified
    data: int = 0  # accepted as readings
    rejected: dict[LineKind, int] = {}  # non-data lines per kind
    reconnects: int = 0  # automatic reconnects that succeeded
    polls: int = 0  # polled-mode queries sent
    missed_polls: int = 0  # queries whose reply did not come within the reply timeout
