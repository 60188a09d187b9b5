"""SessionStore: the read side of `DATA/sessions/`: listing, safe file paths, live tail reads.

Every id and name from a client passes an allow-list before it touches a path, and a resolved
path must stay inside its session folder, so no request can reach another file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qsensor_core.clock import SYSTEM_CLOCK, Clock, iso_utc
from qsensor_core.recording.errors import InvalidName, ManifestError, NotFound, OffsetOutOfRange
from qsensor_core.recording.fsutil import lock_is_held
from qsensor_core.recording.layout import (
    CHUNK_RE,
    LOCK_NAME,
    MANIFEST_NAME,
    check_session_id,
    chunk_name,
    is_session_id,
    open_chunk_name,
    sessions_root,
)
from qsensor_core.recording.manifest import Manifest, StopReason, read_manifest
from qsensor_core.recording.recovery import recover_sessions

TAIL_MAX_BYTES = 1024 * 1024


class SessionSummary(BaseModel):
    """One session for a listing; `manifest_error` is set when its manifest is unreadable.

    A session whose manifest says `recording` but whose recorder is gone is listed as
    `interrupted` (recovery will make that permanent at the next start-up).
    """

    model_config = ConfigDict(frozen=True)

    session_id: str
    state: Literal["recording", "stopped", "interrupted"]
    stop_reason: StopReason | None = None
    mission: str = ""
    sensor_id: str = ""
    started_at: str | None = None
    stopped_at: str | None = None
    rows: int = 0
    readings: int = 0
    markers: int = 0
    bytes: int = 0
    chunks: int = 0
    open_chunk: str | None = None
    manifest_error: str | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> SessionSummary:
        return cls(
            session_id=manifest.session_id,
            state=manifest.state,
            stop_reason=manifest.stop_reason,
            mission=manifest.mission,
            sensor_id=manifest.sensor_id,
            started_at=manifest.started_at,
            stopped_at=manifest.stopped_at,
            rows=manifest.totals.rows,
            readings=manifest.totals.readings,
            markers=manifest.totals.markers,
            bytes=manifest.totals.bytes,
            chunks=manifest.totals.chunks,
            open_chunk=manifest.open_chunk,
        )


@dataclass(frozen=True, slots=True)
class TailRead:
    """Complete lines of one chunk from `offset` on (the header is line one)."""

    name: str  # the chunk's name, `chunk_NNNNN.csv` (while open, its file has a `.open` suffix)
    state: Literal["open", "sealed"]
    offset: int
    data: bytes
    next_offset: int
    size_bytes: int  # the file's size when read (an open chunk keeps growing)
    sha256: str | None  # sealed chunks only
    rows: int | None  # sealed chunks only

    @property
    def at_end(self) -> bool:
        """True once a sealed chunk has been read completely: move on to the next index."""
        return self.state == "sealed" and self.next_offset == self.size_bytes


def _read_lines(fd: int, offset: int, size: int, max_bytes: int) -> bytes:
    """Bytes from `offset` up to the last LF within `max_bytes` (more if one line is longer)."""
    data = os.pread(fd, min(size - offset, max_bytes), offset)
    end = data.rfind(b"\n") + 1
    while end == 0 and offset + len(data) < size:
        more = os.pread(fd, min(size - offset - len(data), max_bytes), offset + len(data))
        if not more:
            break
        data += more
        end = data.rfind(b"\n") + 1
    return data[:end]


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class SessionStore:
    """Sessions under `data_dir/sessions/`, for listing, download and live mirroring."""

    def __init__(self, data_dir: Path, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.root = sessions_root(Path(data_dir))
        self._clock = clock

    def list_sessions(self) -> list[SessionSummary]:
        """Every session folder on disk, oldest first."""
        if not self.root.is_dir():
            return []
        sessions = []
        for entry in sorted(self.root.iterdir()):
            if not is_session_id(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                summary = SessionSummary.of(read_manifest(entry))
                if summary.state == "recording" and not lock_is_held(entry / LOCK_NAME):
                    summary = summary.model_copy(update={"state": "interrupted"})
                sessions.append(summary)
            except ManifestError as exc:
                sessions.append(
                    SessionSummary(
                        session_id=entry.name, state="interrupted", manifest_error=str(exc)
                    )
                )
        return sessions

    def session_dir(self, session_id: str) -> Path:
        """The folder of an existing session; NotFound for unknown or malformed ids."""
        check_session_id(session_id)
        path = self.root / session_id
        if path.is_symlink() or not path.is_dir():
            raise NotFound(f"no such session: {session_id}")
        return path

    def manifest(self, session_id: str) -> Manifest:
        """NotFound for an unknown id, ManifestError for an unreadable manifest."""
        return read_manifest(self.session_dir(session_id))

    def sealed_file(self, session_id: str, name: str) -> Path:
        """Path of `manifest.json` or of a chunk the manifest lists as sealed; nothing else.

        InvalidName for any other name (`..`, slashes, `.open`, absolute paths...), NotFound
        for a well-formed chunk name the manifest does not list.
        """
        session_dir = self.session_dir(session_id)
        if not isinstance(name, str) or not (name == MANIFEST_NAME or CHUNK_RE.fullmatch(name)):
            raise InvalidName(
                f"not a downloadable file name: {name!r} "
                f"(only {MANIFEST_NAME} and sealed chunk_NNNNN.csv files)"
            )
        if name != MANIFEST_NAME and name not in {c.name for c in self.manifest(session_id).chunks}:
            raise NotFound(f"{name} is not a sealed chunk of session {session_id}")
        try:
            path = (session_dir / name).resolve(strict=True)
        except FileNotFoundError as exc:
            raise NotFound(f"{name} of session {session_id} is missing on disk") from exc
        if path.parent != session_dir.resolve() or not path.is_file():
            raise InvalidName(f"{name} of session {session_id} is not a plain file in its folder")
        return path

    def read_tail(
        self, session_id: str, index: int, offset: int, *, max_bytes: int = TAIL_MAX_BYTES
    ) -> TailRead:
        """Complete lines of chunk `index` from byte `offset` (0, or a previous next_offset).

        Reads the open chunk, or the sealed one once it has been renamed; ValueError for an
        offset that is negative or not at the start of a line, OffsetOutOfRange (a ValueError)
        for one past the end.
        """
        session_dir = self.session_dir(session_id)
        chunk_name(index)  # validates the index
        _check_int("offset", offset, 0)
        _check_int("max_bytes", max_bytes, 1)
        fd, name, state = self._open_chunk(session_dir, index)
        try:
            size = os.fstat(fd).st_size
            if offset > size:
                raise OffsetOutOfRange(f"offset {offset} is past the end of {name} ({size} bytes)")
            if offset and os.pread(fd, 1, offset - 1) != b"\n":
                raise ValueError(f"offset {offset} is not at the start of a line of {name}")
            data = _read_lines(fd, offset, size, max_bytes)
            sha256, rows = (None, None)
            if state == "sealed":
                sha256, rows = self._sealed_facts(session_dir, fd, index, size)
        finally:
            os.close(fd)
        return TailRead(
            chunk_name(index), state, offset, data, offset + len(data), size, sha256, rows
        )

    def recover(self) -> list[str]:
        """Run at start-up, before any recorder: seal leftovers, mark sessions interrupted.

        Returns the ids of the sessions it changed; sessions held by a live recorder are
        left alone.
        """
        return recover_sessions(self.root, iso_utc(self._clock.wall_ns()))

    @staticmethod
    def _open_chunk(session_dir: Path, index: int) -> tuple[int, str, Literal["open", "sealed"]]:
        """Open the chunk under its open name, else under its sealed name (it may have just
        been renamed: one of the two names always exists)."""
        candidates: tuple[tuple[str, Literal["open", "sealed"]], ...] = (
            (open_chunk_name(index), "open"),
            (chunk_name(index), "sealed"),
        )
        for name, state in candidates:
            try:
                return os.open(session_dir / name, os.O_RDONLY | os.O_NOFOLLOW), name, state
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise InvalidName(f"{name} is not a plain file: {exc}") from exc
        raise NotFound(f"session {session_dir.name} has no chunk {index}")

    def _sealed_facts(self, session_dir: Path, fd: int, index: int, size: int) -> tuple[str, int]:
        """(sha256, rows) of a sealed chunk: from the manifest, or from the bytes in the short
        window between its rename and the manifest rewrite."""
        try:
            listed = {c.index: c for c in read_manifest(session_dir).chunks}.get(index)
        except ManifestError:
            listed = None
        if listed is not None and listed.size_bytes == size:
            return listed.sha256, listed.rows
        data = os.pread(fd, size, 0)
        return hashlib.sha256(data).hexdigest(), data.count(b"\n") - 1
