"""Pure chunk format, schema 1: the header, reading and marker rows, and reading rows back.

One row is always one physical line: no field may hold CR or LF, so a chunk can be cut after
its last LF without losing a complete row, and a line without its LF is known to be torn.
Plain fields are written as they are; a field with a comma or a quote is quoted the way the
csv module does it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Literal

from qsensor_core.sensor.models import Reading

SCHEMA_VERSION = 1
COLUMNS = (
    "timestamp",
    "sensor_id",
    "mode",
    "value",
    "TempC",
    "Vin",
    "seq",
    "mono_ns",
    "sensor_seq",
    "sync_id",
    "sync_seq",
)
HEADER = ",".join(COLUMNS) + "\n"
HEADER_BYTES = HEADER.encode("ascii")

MarkerType = Literal["START", "STOP", "PERIODIC"]
MARKER_MODES: dict[str, str] = {
    "START": "SYNC_START",
    "STOP": "SYNC_STOP",
    "PERIODIC": "SYNC_PERIODIC",
}
_MARKER_MODE_SET = frozenset(MARKER_MODES.values())

_SPECIAL = re.compile(r'[",\r\n]')
_LINE_BREAK = re.compile(r"[\r\n]")
_SYNC_ID = re.compile(r"[0-9a-fA-F-]{8,64}")


def field(text: str) -> str:
    """`text` as one CSV field: unchanged when plain, csv-quoted when it holds `,` or `"`."""
    if _SPECIAL.search(text) is None:
        return text
    if _LINE_BREAK.search(text):
        raise ValueError(f"a recorded field cannot contain a line break: {text!r}")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([text])
    return out.getvalue()[:-1]


def _optional(text: str | None) -> str:
    return "" if text is None else field(text)


def check_sync_id(sync_id: object) -> str:
    """8-64 characters of hex digits and dashes with at least 8 hex digits (UUIDs qualify)."""
    if not isinstance(sync_id, str) or not _SYNC_ID.fullmatch(sync_id):
        raise ValueError(f"sync id must be 8-64 characters of hex digits and '-', got {sync_id!r}")
    if len(sync_id.replace("-", "")) < 8:
        raise ValueError(f"sync id needs at least 8 hex digits, got {sync_id!r}")
    return sync_id


def sync_value(sync_id: str) -> int:
    """The marker row's `value`: the sync id's first 8 hex digits as a decimal integer."""
    return int(check_sync_id(sync_id).replace("-", "")[:8], 16)


def check_marker(
    marker_type: object, sync_id: object, periodic_sequence: object
) -> tuple[str, str, int | None]:
    """Validated (mode, sync_id, periodic_sequence) of a marker request."""
    if marker_type not in MARKER_MODES:
        raise ValueError(f"marker type must be one of {sorted(MARKER_MODES)}, got {marker_type!r}")
    check_sync_id(sync_id)
    if periodic_sequence is not None:
        if not isinstance(periodic_sequence, int) or isinstance(periodic_sequence, bool):
            raise ValueError(f"periodic sequence must be an integer, got {periodic_sequence!r}")
        if periodic_sequence < 0:
            raise ValueError(f"periodic sequence must be >= 0, got {periodic_sequence}")
        if marker_type != "PERIODIC":
            raise ValueError("a periodic sequence is only for PERIODIC markers")
    return MARKER_MODES[marker_type], sync_id, periodic_sequence  # type: ignore[return-value]


def reading_row(reading: Reading, *, seq: int, timestamp: str) -> str:
    """The row of one reading; `timestamp` is iso_utc(reading.wall_ns), passed in by a caller
    that keeps it for its chunk statistics."""
    return (
        f"{timestamp},{field(reading.sensor_id)},{field(reading.mode)},{field(reading.value)},"
        f"{_optional(reading.temp_c)},{_optional(reading.vin)},"
        f"{seq},{reading.mono_ns},{reading.seq},,\n"
    )


def marker_row(
    *,
    timestamp: str,
    sensor_id: str,
    mode: str,
    sync_id: str,
    periodic_sequence: int | None,
    seq: int,
    mono_ns: int,
) -> str:
    """The row of one sync marker (mode SYNC_START/SYNC_STOP/SYNC_PERIODIC)."""
    sync_seq = "" if periodic_sequence is None else str(periodic_sequence)
    return (
        f"{timestamp},{field(sensor_id)},{mode},{sync_value(sync_id)},,,"
        f"{seq},{mono_ns},,{sync_id},{sync_seq}\n"
    )


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One row read back; optional fields are None where the file has an empty field."""

    timestamp: str
    sensor_id: str
    mode: str
    value: str
    temp_c: str | None
    vin: str | None
    seq: int
    mono_ns: int
    sensor_seq: int | None
    sync_id: str | None
    sync_seq: int | None

    @property
    def is_marker(self) -> bool:
        return self.mode in _MARKER_MODE_SET


def _opt_int(text: str) -> int | None:
    return int(text) if text else None


def parse_row(line: str) -> ChunkRow:
    """Parse one row (with or without its LF); ValueError when it is not a schema-1 row."""
    line = line.removesuffix("\n")
    fields = next(csv.reader([line])) if '"' in line else line.split(",")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} fields, got {len(fields)}: {line!r}")
    ts, sensor_id, mode, value, temp, vin, seq, mono_ns, sensor_seq, sync_id, sync_seq = fields
    return ChunkRow(
        timestamp=ts,
        sensor_id=sensor_id,
        mode=mode,
        value=value,
        temp_c=temp or None,
        vin=vin or None,
        seq=int(seq),
        mono_ns=int(mono_ns),
        sensor_seq=_opt_int(sensor_seq),
        sync_id=sync_id or None,
        sync_seq=_opt_int(sync_seq),
    )


def _lines(body: str) -> list[str]:
    """LF-terminated lines without their LF (str.splitlines would also split on other marks)."""
    return body.split("\n")[:-1]


def parse_chunk(data: bytes) -> list[ChunkRow]:
    """Every row of a complete chunk; ValueError on a missing header or a torn last line."""
    if not data.startswith(HEADER_BYTES):
        raise ValueError("chunk does not start with the schema-1 header")
    if not data.endswith(b"\n"):
        raise ValueError("chunk ends with a torn line")
    body = data[len(HEADER_BYTES) :].decode("utf-8")
    return [parse_row(line) for line in _lines(body)]


@dataclass(slots=True)
class ChunkTally:
    """Running statistics of one chunk, kept while writing or recounted from the file."""

    size_bytes: int = len(HEADER_BYTES)
    rows: int = 0
    readings: int = 0
    markers: int = 0
    malformed: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    def add(self, *, seq: int, timestamp: str, is_marker: bool, nbytes: int) -> None:
        if self.rows == 0:
            self.first_seq, self.first_timestamp = seq, timestamp
        self.last_seq, self.last_timestamp = seq, timestamp
        self.rows += 1
        self.size_bytes += nbytes
        if is_marker:
            self.markers += 1
        else:
            self.readings += 1


@dataclass(frozen=True, slots=True)
class ChunkScan:
    """What a chunk file holds: its complete part, its torn tail and their statistics."""

    complete_bytes: int  # length up to and including the last LF
    torn_bytes: int  # bytes after the last LF
    has_header: bool
    tally: ChunkTally


def scan_chunk(data: bytes) -> ChunkScan:
    """Recount a chunk from its bytes (for recovery and disk-full truncation)."""
    complete = data.rfind(b"\n") + 1
    has_header = data.startswith(HEADER_BYTES)
    tally = ChunkTally(size_bytes=complete)
    if has_header:
        body = data[len(HEADER_BYTES) : complete].decode("utf-8", errors="replace")
        for line in _lines(body):
            try:
                row = parse_row(line)
            except ValueError:
                tally.rows += 1
                tally.malformed += 1
                continue
            tally.add(seq=row.seq, timestamp=row.timestamp, is_marker=row.is_marker, nbytes=0)
    return ChunkScan(complete, len(data) - complete, has_header, tally)
