"""Session recording: chunked CSV files with SHA-256 manifests (format: docs/file-formats.md)."""

from __future__ import annotations

from qsensor_core.recording.csv_format import (
    COLUMNS,
    HEADER,
    SCHEMA_VERSION,
    ChunkRow,
    MarkerType,
    parse_chunk,
    parse_row,
)
from qsensor_core.recording.errors import (
    ChunkFormatError,
    DiskFullError,
    InvalidName,
    ManifestError,
    NotFound,
    OffsetOutOfRange,
    RecorderStopped,
    RecordingError,
)
from qsensor_core.recording.layout import chunk_name, is_session_id, open_chunk_name
from qsensor_core.recording.manifest import ChunkInfo, Manifest, SessionState, StopReason, Totals
from qsensor_core.recording.recorder import (
    MarkerRow,
    RecorderEvent,
    RecorderStatus,
    SessionRecorder,
)
from qsensor_core.recording.store import SessionStore, SessionSummary, TailRead

__all__ = [
    "COLUMNS",
    "HEADER",
    "SCHEMA_VERSION",
    "ChunkFormatError",
    "ChunkInfo",
    "ChunkRow",
    "DiskFullError",
    "InvalidName",
    "Manifest",
    "ManifestError",
    "MarkerRow",
    "MarkerType",
    "NotFound",
    "OffsetOutOfRange",
    "RecorderEvent",
    "RecorderStatus",
    "RecorderStopped",
    "RecordingError",
    "SessionRecorder",
    "SessionState",
    "SessionStore",
    "SessionSummary",
    "StopReason",
    "TailRead",
    "Totals",
    "chunk_name",
    "is_session_id",
    "open_chunk_name",
    "parse_chunk",
    "parse_row",
]
