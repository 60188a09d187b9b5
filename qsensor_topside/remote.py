"""The Pi's HTTP contract as seen by the mirror: session list, manifest, chunk names.

Validated at the edge so a corrupted or hostile answer can never name a path outside the
session folder: session ids and chunk names are allow-listed here.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK_NAME = re.compile(r"^chunk_(\d{5,})\.csv$")
_CHUNK_PREFIX = re.compile(r"^chunk_(\d{5,})\.csv")

RECORDING = "recording"  # the only state the mirror treats specially; others are final


def check_session_id(session_id: str) -> str:
    if not SESSION_ID.match(session_id) or ".." in session_id:
        raise ValueError(f"unsafe session id: {session_id!r}")
    return session_id


def chunk_index(name: str) -> int:
    """Index of a chunk from its name; also accepts the open chunk's `.open` name."""
    match = _CHUNK_PREFIX.match(name)
    if not match:
        raise ValueError(f"not a chunk name: {name!r}")
    return int(match.group(1))


def _check_open_chunk(name: str | None) -> str | None:
    if name is not None:
        chunk_index(name)
    return name


SessionId = Annotated[str, AfterValidator(check_session_id)]
OpenChunk = Annotated[str | None, AfterValidator(_check_open_chunk)]


class RemoteChunk(BaseModel):
    """One sealed chunk as the Pi's manifest lists it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    index: int
    name: str
    rows: int
    size_bytes: int
    sha256: str
    first_seq: int | None = None
    last_seq: int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not CHUNK_NAME.match(name):
            raise ValueError(f"unsafe chunk name: {name!r}")
        return name

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"not a sha256 hex digest: {value!r}")
        return value


class RemoteManifest(BaseModel):
    """The Pi's manifest of one session; the mirror's source of truth for what exists."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: SessionId
    state: str
    chunks: list[RemoteChunk]
    open_chunk: OpenChunk = None
    started_at: str | None = None
    stopped_at: str | None = None


class RemoteSession(BaseModel):
    """One entry of `GET /record/sessions`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: SessionId
    state: str
    mission: str | None = None
    started_at: str | None = None
    stopped_at: str | None = None
    rows: int = 0
    chunks: int = 0
    bytes: int = 0
    open_chunk: OpenChunk = None
