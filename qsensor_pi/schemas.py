"""Request and response bodies of the HTTP API (the Cockpit integration relies on these names)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from qsensor_core.recording.csv_format import check_sync_id
from qsensor_core.recording.recorder import ROLL_INTERVAL_MAX_S, ROLL_INTERVAL_MIN_S
from qsensor_core.sensor import protocol

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SYNC_ID_PATTERN = r"^[0-9a-fA-F-]{8,64}$"  # a UUID, or 8+ hex digits and dashes
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN, description="a session id")]
# Literal over the protocol's tuples: one source of truth, and enums in the OpenAPI schema.
AdcRate = Literal[protocol.VALID_ADC_RATES]  # type: ignore[valid-type]


def _one_of(allowed: tuple[int, ...]) -> AfterValidator:
    def check(value: int) -> int:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
        return value

    return AfterValidator(check)


# A query parameter arrives as text, which a Literal of ints would refuse: check the number.
Baud = Annotated[
    int,
    _one_of(protocol.VALID_BAUDS),
    Field(json_schema_extra={"enum": list(protocol.VALID_BAUDS)}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigRequest(Strict):
    """Any subset of the device settings; applied in the order averaging, ADC rate, mode."""

    averaging: int | None = Field(None, ge=protocol.AVERAGING_MIN, le=protocol.AVERAGING_MAX)
    adc_rate_hz: AdcRate | None = None
    mode: Literal["freerun", "polled"] | None = None
    tag: str | None = Field(None, pattern=f"^[{protocol.VALID_TAGS}]$")


class RecordStartRequest(Strict):
    rate_hz: float = Field(1.0, gt=0, le=500, description="poll rate when polled; else echoed")
    schema_version: int = Field(1, ge=1, le=1000)
    mission: str = Field("default", min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f]+$")
    roll_interval_s: float = Field(60.0, ge=ROLL_INTERVAL_MIN_S, le=ROLL_INTERVAL_MAX_S)


class RecordStopRequest(Strict):
    session_id: Annotated[
        str, Field(pattern=SESSION_ID_PATTERN, description='a session id, or "current"')
    ]


class SyncMarkerRequest(Strict):
    session_id: SessionId
    sync_id: Annotated[str, Field(pattern=SYNC_ID_PATTERN)]
    marker_type: Literal["START", "STOP", "PERIODIC"]
    periodic_sequence: int | None = Field(None, ge=0, le=2**53)

    @field_validator("sync_id")
    @classmethod
    def _sync_id_has_hex(cls, value: str) -> str:
        return check_sync_id(value)  # also needs 8 hex digits, not only dashes

    @model_validator(mode="after")
    def _periodic_needs_sequence(self) -> SyncMarkerRequest:
        if self.marker_type == "PERIODIC" and self.periodic_sequence is None:
            raise ValueError("periodic_sequence is required for PERIODIC markers")
        if self.marker_type != "PERIODIC" and self.periodic_sequence is not None:
            raise ValueError("periodic_sequence is only for PERIODIC markers")
        return self


class ReadingOut(BaseModel):
    """One reading; values are the device's own text, never re-formatted numbers."""

    timestamp: str
    sensor_id: str
    mode: str
    value: str
    TempC: str | None
    Vin: str | None
    seq: int
    pi_monotonic_ns: int


class RecentOut(BaseModel):
    rows: list[ReadingOut]


class ConnectOut(BaseModel):
    status: Literal["connected"]
    sensor_id: str
    port: str
    baud: int


class StoppedOut(BaseModel):
    """Disconnect and stop: `session_id` names the recording that had to be stopped, if any."""

    status: Literal["disconnected", "stopped"]
    session_id: str | None


class StartedOut(BaseModel):
    status: Literal["started"]
    mode: str
    recording: bool
    session_id: str | None


class PausedOut(BaseModel):
    status: Literal["paused"]


class ResumedOut(BaseModel):
    status: Literal["resumed"]
    mode: str


class ConfigOut(BaseModel):
    averaging: int
    adc_rate_hz: int
    mode: str
    tag: str
    sample_period_s: float
    serial_number: str
    firmware: str
    temp_output: bool
    vin_output: bool | None


class HealthOut(BaseModel):
    connected: bool
    port: str | None
    model: str | None
    firmware: str | None
    disk_free_bytes: int
    state: str


class RecordingBrief(BaseModel):
    session_id: str
    state: str
    rows: int
    started_at: str


class StatusOut(BaseModel):
    connected: bool
    recording: bool
    sensor_id: str | None
    mode: str | None
    rows: int
    state: str
    port: str | None
    baud: int | None
    poll_hz: float | None
    last_error: str | None
    config: ConfigOut | None
    session: RecordingBrief | None
    stats: dict[str, object] | None


class PortOut(BaseModel):
    port: str
    device: str
    description: str
    hwid: str


class RecordStartOut(BaseModel):
    session_id: str
    started_at: str
    rate_hz: float
    schema_version: int


class RecordStopOut(BaseModel):
    session_id: str
    stopped_at: str | None
    chunks: int
    rows: int


class RecordStatusOut(BaseModel):
    session_id: str
    state: str
    rows: int
    bytes: int
    last_chunk_index: int | None
    backlog: int


class ChunkOut(BaseModel):
    index: int
    name: str
    size_bytes: int
    sha256: str
    rows: int


class SessionOut(BaseModel):
    session_id: str
    state: str
    mission: str
    started_at: str | None
    stopped_at: str | None
    rows: int
    chunks: int
    bytes: int
    open_chunk: str | None


class SyncMarkerOut(BaseModel):
    status: Literal["injected"]
    timestamp: str
    pi_monotonic_ns: int
    seq: int


class SyncTimeOut(BaseModel):
    pi_iso: str
    pi_unix_ms: int
    schema_version: int
    pi_monotonic_ns: int


class ErrorOut(BaseModel):
    detail: str
