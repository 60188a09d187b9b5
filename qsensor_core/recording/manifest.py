"""The session manifest (schema 1): what a session holds, written atomically after each seal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qsensor_core.recording.csv_format import SCHEMA_VERSION, ChunkTally
from qsensor_core.recording.errors import ManifestError
from qsensor_core.recording.fsutil import atomic_write_bytes
from qsensor_core.recording.layout import MANIFEST_NAME, chunk_name

SessionState = Literal["recording", "stopped", "interrupted"]
StopReason = Literal["requested", "disk_full", "error", "chunk_limit"]


class ChunkInfo(BaseModel):
    """One sealed chunk; `sha256` is the digest of its exact bytes on disk."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    name: str
    rows: int = Field(ge=0)
    readings: int = Field(ge=0)
    markers: int = Field(ge=0)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    first_seq: int | None = None
    last_seq: int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    torn_bytes_dropped: int = Field(0, ge=0)  # bytes of a torn last line cut off when sealing

    @model_validator(mode="after")
    def _name_matches_index(self) -> ChunkInfo:
        if self.name != chunk_name(self.index):
            raise ValueError(f"chunk {self.index} must be named {chunk_name(self.index)}")
        return self

    @classmethod
    def from_tally(
        cls, index: int, tally: ChunkTally, *, sha256: str, torn_bytes: int = 0
    ) -> ChunkInfo:
        return cls(
            index=index,
            name=chunk_name(index),
            rows=tally.rows,
            readings=tally.readings,
            markers=tally.markers,
            size_bytes=tally.size_bytes,
            sha256=sha256,
            first_seq=tally.first_seq,
            last_seq=tally.last_seq,
            first_timestamp=tally.first_timestamp,
            last_timestamp=tally.last_timestamp,
            torn_bytes_dropped=torn_bytes,
        )


class Totals(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: int
    readings: int
    markers: int
    bytes: int
    chunks: int

    @classmethod
    def of(cls, chunks: list[ChunkInfo]) -> Totals:
        return cls(
            rows=sum(c.rows for c in chunks),
            readings=sum(c.readings for c in chunks),
            markers=sum(c.markers for c in chunks),
            bytes=sum(c.size_bytes for c in chunks),
            chunks=len(chunks),
        )


class Manifest(BaseModel):
    """Everything a reader needs to list, fetch and verify a session's chunks.

    `totals` is derived from `chunks` (filled in when omitted, checked when given).
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    session_id: str
    mission: str
    sensor_id: str
    sensor_config: dict[str, Any]
    started_at: str
    stopped_at: str | None = None
    state: SessionState
    stop_reason: StopReason | None = None
    stop_detail: str | None = None
    roll_interval_s: float | None  # None only in a manifest rebuilt from chunk files
    max_chunk_bytes: int | None
    open_chunk: str | None = None
    chunks: list[ChunkInfo] = Field(default_factory=list)
    totals: Totals
    dropped_rows: int = Field(0, ge=0)  # accepted rows that never reached the disk (disk full)
    recovered_at: str | None = None
    recovered_torn_bytes: int = Field(0, ge=0)
    recovery_notes: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fill_totals(cls, data: Any) -> Any:
        if isinstance(data, dict) and "totals" not in data:
            chunks = [
                c if isinstance(c, ChunkInfo) else ChunkInfo.model_validate(c)
                for c in data.get("chunks", [])
            ]
            data = {**data, "chunks": chunks, "totals": Totals.of(chunks)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        indices = [c.index for c in self.chunks]
        if indices != sorted(set(indices)):
            raise ValueError("chunk indices must be unique and increasing")
        if self.totals != Totals.of(self.chunks):
            raise ValueError("totals do not match the chunk list")
        return self

    def to_json_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode("utf-8")


def write_manifest(session_dir: Path, manifest: Manifest) -> None:
    atomic_write_bytes(session_dir / MANIFEST_NAME, manifest.to_json_bytes())


def read_manifest(session_dir: Path) -> Manifest:
    """The manifest of a session folder; ManifestError when it is missing or not valid."""
    path = session_dir / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"{path} is missing") from exc
    try:
        return Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc
