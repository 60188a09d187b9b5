"""SessionRecorder: one session's rows into chunked CSV files, with sealing and a disk guard.

Writers (the driver's worker thread for readings, API threads for markers) only append to an
in-memory buffer under one lock and write it to the OS in large pieces. The recorder's own
thread does everything slow: the once-a-second flush, fsync, rename, hashing, manifest
rewrites and the free-space check, so an append never waits for the disk to sync.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticSerializationError

from qsensor_core.clock import SYSTEM_CLOCK, Clock, iso_utc
from qsensor_core.recording.csv_format import (
    HEADER_BYTES,
    ChunkTally,
    MarkerType,
    check_marker,
    marker_row,
    reading_row,
)
from qsensor_core.recording.errors import (
    ChunkFormatError,
    DiskFullError,
    RecorderStopped,
    RecordingError,
)
from qsensor_core.recording.fsutil import (
    atomic_write_bytes,
    free_bytes,
    fsync_dir,
    is_disk_full,
    reserve_space,
    try_lock,
    write_all,
)
from qsensor_core.recording.layout import (
    LOCK_NAME,
    MANIFEST_NAME,
    MAX_CHUNK_INDEX,
    RESERVE_NAME,
    STAGING_PREFIX,
    is_session_id,
    new_session_id,
    open_chunk_name,
    sessions_root,
)
from qsensor_core.recording.manifest import ChunkInfo, Manifest, StopReason, write_manifest
from qsensor_core.recording.sealing import seal_open_chunk
from qsensor_core.sensor.models import Reading

log = logging.getLogger(__name__)

ROLL_INTERVAL_MIN_S = 1.0
ROLL_INTERVAL_MAX_S = 300.0
MIN_CHUNK_BYTES = 1024
_BUFFER_LIMIT = 64 * 1024  # buffered bytes that trigger a write to the OS
_APPEND_FLUSH_NS = 1_000_000_000  # an append writes the buffer out when it is this old
_TICK_FLUSH_NS = 500_000_000  # the recorder thread writes it out when it is this old
_TICK_S = 0.2
_SYNC_NS = 1_000_000_000  # the open chunk is fdatasync'ed this often: a power cut loses ~1 s
_DISK_CHECK_NS = 1_000_000_000
_RESERVE_MIN_BYTES = 256 * 1024
_MAX_TEXT = 200

RecorderState = Literal["recording", "stopping", "stopped"]
EventKind = Literal["chunk_sealed", "stopped", "disk_full", "error"]


@dataclass(frozen=True, slots=True)
class RecorderEvent:
    """Told to `on_event`, always on the recorder's own thread."""

    kind: EventKind
    session_id: str
    chunk: ChunkInfo | None = None  # the sealed chunk (index, name, rows, size_bytes, sha256)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MarkerRow:
    """Where a sync marker landed in the session."""

    seq: int
    mono_ns: int
    wall_ns: int
    timestamp: str
    marker_type: MarkerType
    sync_id: str
    periodic_sequence: int | None
    chunk_index: int


class RecorderStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    state: RecorderState
    stop_reason: StopReason | None
    rows: int  # rows accepted (the next row's seq)
    readings: int
    markers: int
    bytes: int  # sealed, being sealed and open chunks, buffered bytes included
    chunks_sealed: int
    last_chunk_index: int | None  # the chunk rows go to now (the last one once stopped)
    open_chunk: str | None
    backlog: int  # rolled chunks still waiting to be sealed
    unflushed_bytes: int
    ignored_after_stop: int  # readings that arrived once the recorder had stopped
    free_bytes: int | None
    min_free_bytes: int


@dataclass(slots=True)
class _OpenChunk:
    index: int
    fd: int
    tally: ChunkTally
    deadline_ns: int


def _check_text(name: str, value: object, *, required: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > _MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name} must be at most {_MAX_TEXT} printable characters: {value!r}")
    return value


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_roll(value: object) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not ROLL_INTERVAL_MIN_S <= value <= ROLL_INTERVAL_MAX_S:  # type: ignore[operator]
        raise ValueError(
            f"roll_interval_s must be between {ROLL_INTERVAL_MIN_S:g} and "
            f"{ROLL_INTERVAL_MAX_S:g} seconds, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _reserve_size(manifest_bytes: int) -> int:
    return max(_RESERVE_MIN_BYTES, 4 * manifest_bytes)


def _create_chunk(session_dir: Path, index: int) -> int:
    """A new open chunk with its header already written, so it is never header-less."""
    path = session_dir / open_chunk_name(index)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        write_all(fd, HEADER_BYTES)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


class SessionRecorder:
    """Records one session; create it with `SessionRecorder.start(...)`."""

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        mission: str,
        sensor_id: str,
        sensor_config: dict[str, Any],
        roll_interval_s: float = 60.0,
        max_chunk_bytes: int = 16 * 2**20,
        min_free_bytes: int = 50 * 2**20,
        clock: Clock = SYSTEM_CLOCK,
        on_event: Callable[[RecorderEvent], None] | None = None,
        session_id: str | None = None,
    ) -> SessionRecorder:
        """Create the session folder with its first open chunk and manifest, then record.

        Raises DiskFullError below `min_free_bytes`, ValueError for bad arguments and
        FileExistsError when `session_id` is taken.
        """
        _check_text("mission", mission, required=False)
        _check_text("sensor_id", sensor_id, required=True)
        roll_s = _check_roll(roll_interval_s)
        _check_int("max_chunk_bytes", max_chunk_bytes, MIN_CHUNK_BYTES)
        _check_int("min_free_bytes", min_free_bytes, 0)
        if not isinstance(sensor_config, dict):
            raise ValueError(f"sensor_config must be a dict, got {type(sensor_config).__name__}")
        root = sessions_root(Path(data_dir))
        root.mkdir(parents=True, exist_ok=True)
        free = free_bytes(root)
        if free < min_free_bytes:
            raise DiskFullError(root, free, min_free_bytes)
        mono_ns, wall_ns = clock.now()
        if session_id is None:
            session_id = new_session_id(wall_ns)
        elif not is_session_id(session_id):
            raise ValueError(f"not a session id (e.g. 20261121T120000Z-1a2b3c4d): {session_id!r}")
        if (root / session_id).exists():
            raise FileExistsError(f"session {session_id} already exists")
        manifest = Manifest(
            session_id=session_id,
            mission=mission,
            sensor_id=sensor_id,
            sensor_config=sensor_config,
            started_at=iso_utc(wall_ns),
            state="recording",
            roll_interval_s=roll_s,
            max_chunk_bytes=max_chunk_bytes,
            open_chunk=open_chunk_name(0),
        )
        try:
            manifest_bytes = manifest.to_json_bytes()
        except PydanticSerializationError as exc:
            raise ValueError(f"sensor_config is not JSON-serialisable: {exc}") from exc
        lock_fd, chunk_fd = cls._create_session(root, manifest, manifest_bytes, min_free_bytes)
        recorder = cls(
            session_dir=root / session_id,
            manifest=manifest,
            lock_fd=lock_fd,
            first_chunk=_OpenChunk(0, chunk_fd, ChunkTally(), mono_ns + int(roll_s * 1e9)),
            min_free_bytes=min_free_bytes,
            clock=clock,
            on_event=on_event,
            free=free,
        )
        recorder._thread.start()
        return recorder

    @staticmethod
    def _create_session(
        root: Path, manifest: Manifest, manifest_bytes: bytes, min_free_bytes: int
    ) -> tuple[int, int]:
        """Build the folder under a staging name, then rename it: it appears whole or not at all."""
        staging = root / f"{STAGING_PREFIX}{manifest.session_id}"
        staging.mkdir()
        lock_fd: int | None = None
        chunk_fd: int | None = None
        try:
            lock_fd = try_lock(staging / LOCK_NAME)
            if lock_fd is None:
                raise FileExistsError(f"session {manifest.session_id} is being created")
            reserve_space(staging / RESERVE_NAME, _reserve_size(len(manifest_bytes)))
            chunk_fd = _create_chunk(staging, 0)
            atomic_write_bytes(staging / MANIFEST_NAME, manifest_bytes)
            os.rename(staging, root / manifest.session_id)
            fsync_dir(root)
        except BaseException as exc:
            for fd in (chunk_fd, lock_fd):
                if fd is not None:
                    os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            if is_disk_full(exc):
                raise DiskFullError(root, free_bytes(root), min_free_bytes) from exc
            raise
        return lock_fd, chunk_fd

    def __init__(
        self,
        *,
        session_dir: Path,
        manifest: Manifest,
        lock_fd: int,
        first_chunk: _OpenChunk,
        min_free_bytes: int,
        clock: Clock,
        on_event: Callable[[RecorderEvent], None] | None,
        free: int,
    ) -> None:
        """Internal: use `start()`."""
        self.session_id = manifest.session_id
        self.session_dir = session_dir
        self._initial = manifest
        self._lock_fd: int | None = lock_fd
        self._clock = clock
        self._on_event = on_event
        self._roll_ns = int((manifest.roll_interval_s or 0) * 1e9)
        self._max_chunk_bytes = manifest.max_chunk_bytes or 0
        self._min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._state: RecorderState = "recording"
        self._stop_reason: StopReason | None = None
        self._stop_detail: str | None = None
        self._failed = False  # a write failed: nothing more can be written
        self._open: _OpenChunk | None = first_chunk
        self._parts: list[bytes] = []
        self._parts_bytes = 0
        self._last_flush_ns = clock.monotonic_ns()
        self._unsynced = False  # rows written to the open chunk since its last fdatasync
        self._last_sync_ns = clock.monotonic_ns()
        self._next_seq = 0
        self._readings = 0
        self._markers = 0
        self._ignored_after_stop = 0
        self._lost_rows = 0
        self._pending: deque[_OpenChunk] = deque()
        self._sealed: list[ChunkInfo] = []
        self._sealed_bytes = 0
        self._free_bytes: int | None = free
        self._last_disk_check_ns = clock.monotonic_ns()
        self._final: Manifest | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"recorder-{self.session_id}", daemon=True
        )

    # ----- writers' side (any thread) -----

    def add_reading(self, reading: Reading) -> None:
        """Append one reading; once the recorder has stopped, readings are counted and ignored."""
        timestamp = iso_utc(reading.wall_ns)
        with self._lock:
            if self._state != "recording":
                self._ignored_after_stop += 1
                return
            seq = self._next_seq
            line = reading_row(reading, seq=seq, timestamp=timestamp).encode("utf-8")
            if self._append_locked(line, seq, timestamp, is_marker=False):
                self._readings += 1
            else:
                self._ignored_after_stop += 1

    def add_marker(
        self,
        marker_type: MarkerType,
        sync_id: str,
        periodic_sequence: int | None = None,
    ) -> MarkerRow:
        """Stamp a sync marker now and write it to the OS at once (RecorderStopped if stopped)."""
        mode, sync_id, periodic_sequence = check_marker(marker_type, sync_id, periodic_sequence)
        with self._lock:
            if self._state != "recording":
                raise RecorderStopped(self._stopped_message())
            mono_ns, wall_ns = self._clock.now()
            timestamp = iso_utc(wall_ns)
            seq = self._next_seq
            line = marker_row(
                timestamp=timestamp,
                sensor_id=self._initial.sensor_id,
                mode=mode,
                sync_id=sync_id,
                periodic_sequence=periodic_sequence,
                seq=seq,
                mono_ns=mono_ns,
            ).encode("utf-8")
            if not self._append_locked(line, seq, timestamp, is_marker=True) or self._failed:
                raise RecorderStopped(f"marker not recorded: {self._stopped_message()}")
            self._markers += 1
            assert self._open is not None
            return MarkerRow(
                seq=seq,
                mono_ns=mono_ns,
                wall_ns=wall_ns,
                timestamp=timestamp,
                marker_type=marker_type,
                sync_id=sync_id,
                periodic_sequence=periodic_sequence,
                chunk_index=self._open.index,
            )

    def flush(self) -> None:
        """Write buffered rows to the OS now (no fsync); a live reader then sees them."""
        with self._lock:
            if self._open is not None:
                self._drain_locked()

    def set_min_free_bytes(self, min_free_bytes: int) -> None:
        """Change the free-space floor; the recorder stops with `disk_full` within ~1 s below it."""
        _check_int("min_free_bytes", min_free_bytes, 0)
        with self._lock:
            self._min_free_bytes = min_free_bytes
            self._last_disk_check_ns = -_DISK_CHECK_NS
        self._wake.set()

    def stop(self) -> Manifest:
        """Seal everything and return the final manifest; safe to call again or from on_event."""
        with self._lock:
            self._begin_stop_locked("requested")
        if threading.current_thread() is self._thread:
            self._finalize()
        else:
            self._thread.join()
        if self._final is None:
            raise RecordingError(
                f"recorder of {self.session_id} failed before sealing; see the log"
            )
        return self._final

    def status(self) -> RecorderStatus:
        with self._lock:
            current = self._open or (self._pending[-1] if self._pending else None)
            in_flight = sum(c.tally.size_bytes for c in self._pending)
            open_bytes = self._open.tally.size_bytes if self._open else 0
            last_index = (
                current.index if current else (self._sealed[-1].index if self._sealed else None)
            )
            return RecorderStatus(
                session_id=self.session_id,
                state=self._state,
                stop_reason=self._stop_reason,
                rows=self._next_seq,
                readings=self._readings,
                markers=self._markers,
                bytes=self._sealed_bytes + in_flight + open_bytes,
                chunks_sealed=len(self._sealed),
                last_chunk_index=last_index,
                open_chunk=open_chunk_name(self._open.index) if self._open else None,
                backlog=len(self._pending),
                unflushed_bytes=self._parts_bytes,
                ignored_after_stop=self._ignored_after_stop,
                free_bytes=self._free_bytes,
                min_free_bytes=self._min_free_bytes,
            )

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stopped_message(self) -> str:
        reason = self._stop_reason or "requested"
        detail = f" ({self._stop_detail})" if self._stop_detail else ""
        return f"session {self.session_id} is {self._state}: {reason}{detail}"

    def _append_locked(self, line: bytes, seq: int, timestamp: str, *, is_marker: bool) -> bool:
        chunk = self._open
        assert chunk is not None
        if chunk.tally.rows and chunk.tally.size_bytes + len(line) > self._max_chunk_bytes:
            if not self._roll_locked():
                return False
            chunk = self._open
        self._parts.append(line)
        self._parts_bytes += len(line)
        chunk.tally.add(seq=seq, timestamp=timestamp, is_marker=is_marker, nbytes=len(line))
        self._next_seq = seq + 1
        if (
            is_marker
            or self._parts_bytes >= _BUFFER_LIMIT
            or self._clock.monotonic_ns() - self._last_flush_ns >= _APPEND_FLUSH_NS
        ):
            self._drain_locked()
        return True

    def _drain_locked(self) -> None:
        self._last_flush_ns = self._clock.monotonic_ns()
        if not self._parts or self._failed:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._parts_bytes = 0
        assert self._open is not None
        try:
            write_all(self._open.fd, data)
        except OSError as exc:
            self._fail_io_locked(exc, f"writing {open_chunk_name(self._open.index)}")
        else:
            self._unsynced = True

    def _roll_locked(self) -> bool:
        """Switch appends to a new chunk; the old one waits in `_pending` for the thread to seal."""
        old = self._open
        assert old is not None
        self._drain_locked()
        if self._failed:
            return False
        index = old.index + 1
        if index > MAX_CHUNK_INDEX:
            self._begin_stop_locked("chunk_limit", f"a session holds at most {index} chunks")
            return False
        try:
            fd = _create_chunk(self.session_dir, index)
        except OSError as exc:
            self._fail_io_locked(exc, f"creating {open_chunk_name(index)}")
            return False
        self._pending.append(old)
        deadline = self._clock.monotonic_ns() + self._roll_ns
        self._open = _OpenChunk(index, fd, ChunkTally(), deadline)
        self._wake.set()
        return True

    def _begin_stop_locked(self, reason: StopReason, detail: str | None = None) -> None:
        """Stop accepting rows; the first abnormal reason is the one the manifest keeps."""
        if self._state == "stopped":
            return
        if self._stop_reason is None or (
            self._stop_reason == "requested" and reason != "requested"
        ):
            self._stop_reason, self._stop_detail = reason, detail
        self._state = "stopping"
        self._wake.set()

    def _fail_io_locked(self, exc: BaseException, action: str) -> None:
        self._failed = True
        self._parts.clear()
        self._parts_bytes = 0
        reason: StopReason = "disk_full" if is_disk_full(exc) else "error"
        self._begin_stop_locked(reason, f"{action}: {exc}")

    # ----- the recorder's own thread -----

    def _run(self) -> None:
        try:
            while self._state == "recording":
                self._wake.wait(self._next_wait_s())
                self._wake.clear()
                self._tick()
        except Exception as exc:
            log.exception("recorder thread of %s failed", self.session_id)
            with self._lock:
                self._begin_stop_locked("error", f"recorder thread: {exc!r}")
        try:
            self._finalize()
        except Exception:  # the session stays `recording` on disk; recovery repairs it
            log.exception("recorder of %s failed to finalise", self.session_id)

    def _next_wait_s(self) -> float:
        chunk = self._open
        if chunk is None:
            return 0.0
        return max(0.0, min(_TICK_S, (chunk.deadline_ns - self._clock.monotonic_ns()) / 1e9))

    def _tick(self) -> None:
        self._seal_pending(announce=True)
        now = self._clock.monotonic_ns()
        sync: _OpenChunk | None = None
        with self._lock:
            if self._state == "recording" and self._open is not None:
                if self._parts and now - self._last_flush_ns >= _TICK_FLUSH_NS:
                    self._drain_locked()
                if now >= self._open.deadline_ns:
                    self._roll_locked()
                chunk = self._open
                due = self._unsynced and now - self._last_sync_ns >= _SYNC_NS
                if due and chunk is not None and not self._failed:
                    sync, self._unsynced, self._last_sync_ns = chunk, False, now
        if sync is not None:
            self._sync_open(sync)
        self._seal_pending(announce=True)
        if now - self._last_disk_check_ns >= _DISK_CHECK_NS:
            self._check_disk(now)

    def _sync_open(self, chunk: _OpenChunk) -> None:
        """fdatasync outside the lock, so appends never wait for the card; only this thread
        closes chunk files (when sealing), so the descriptor stays valid meanwhile."""
        try:
            os.fdatasync(chunk.fd)
        except OSError as exc:
            with self._lock:
                self._fail_io_locked(exc, f"syncing {open_chunk_name(chunk.index)}")

    def _check_disk(self, now: int) -> None:
        self._last_disk_check_ns = now
        try:
            free = free_bytes(self.session_dir)
        except OSError as exc:
            with self._lock:
                self._begin_stop_locked("error", f"checking free space: {exc}")
            return
        self._free_bytes = free
        with self._lock:
            if free < self._min_free_bytes:
                self._begin_stop_locked(
                    "disk_full",
                    f"{free} bytes free on the data disk, below the minimum of "
                    f"{self._min_free_bytes} bytes",
                )

    def _seal_pending(self, *, announce: bool) -> tuple[list[ChunkInfo], list[str]]:
        """Seal every rolled chunk in order: (sealed chunks, error details).

        With `announce`, each seal is followed by a manifest rewrite and its events, so the
        manifest never lags behind a slow disk; otherwise the caller does both once its own
        work is done.
        """
        sealed: list[ChunkInfo] = []
        errors: list[str] = []
        while True:
            with self._lock:
                if not self._pending:
                    break
                chunk = self._pending[0]
            info, error = self._seal(chunk)
            with self._lock:
                self._pending.popleft()
                if info is not None:
                    self._sealed.append(info)
                    self._sealed_bytes += info.size_bytes
            new_errors = [error] if error else []
            if announce and info is not None:
                new_errors.extend(self._write_recording_manifest())
            if announce:
                self._emit_all([info] if info else [], new_errors)
            else:
                sealed.extend([info] if info else [])
                errors.extend(new_errors)
        return sealed, errors

    def _seal(self, chunk: _OpenChunk) -> tuple[ChunkInfo | None, str | None]:
        name = open_chunk_name(chunk.index)
        try:
            os.close(chunk.fd)
            info = seal_open_chunk(self.session_dir, chunk.index, expected=chunk.tally)
        except (OSError, ChunkFormatError) as exc:
            detail = f"sealing {name}: {exc}; it stays open until recovery"
            with self._lock:
                self._begin_stop_locked("disk_full" if is_disk_full(exc) else "error", detail)
            return None, detail
        kept = info.rows if info is not None else 0
        self._lost_rows += max(0, chunk.tally.rows - kept)
        return info, None

    def _manifest_now(self, **changes: Any) -> Manifest:
        with self._lock:
            chunks = list(self._sealed)
            fields = {
                "open_chunk": open_chunk_name(self._open.index) if self._open else None,
                "dropped_rows": self._lost_rows,
            }
        data = self._initial.model_dump(exclude={"totals"})
        return Manifest.model_validate({**data, **fields, "chunks": chunks, **changes})

    def _write_recording_manifest(self) -> list[str]:
        """Rewrite the manifest (growing the space reserve with it); error details, if any."""
        manifest = self._manifest_now()
        data = manifest.to_json_bytes()
        try:
            reserve_space(self.session_dir / RESERVE_NAME, _reserve_size(len(data)))
            atomic_write_bytes(self.session_dir / MANIFEST_NAME, data)
        except OSError as exc:
            detail = f"writing the manifest: {exc}"
            with self._lock:
                self._begin_stop_locked("disk_full" if is_disk_full(exc) else "error", detail)
            return [detail]
        return []

    def _finalize(self) -> None:
        """Seal the last chunk, write the final manifest, release the session, then tell."""
        if self._final is not None:
            return
        try:
            sealed, errors, manifest = self._seal_all()
        finally:
            self._release_lock()  # also after a failure, so recovery can repair the session
        with self._lock:
            self._final = manifest
            self._state = "stopped"
        self._emit_all(sealed, errors)
        if manifest.stop_reason in ("disk_full", "error"):
            self._emit(manifest.stop_reason, detail=manifest.stop_detail or "")
        self._emit("stopped", detail=manifest.stop_reason or "")

    def _seal_all(self) -> tuple[list[ChunkInfo], list[str], Manifest]:
        """Seal every chunk and write the final manifest: (sealed, error details, manifest)."""
        with self._lock:
            self._begin_stop_locked("requested")
            if self._open is not None:
                self._drain_locked()
                self._pending.append(self._open)
                self._open = None
        sealed, errors = self._seal_pending(announce=False)
        (self.session_dir / RESERVE_NAME).unlink(missing_ok=True)  # room for the manifest
        with self._lock:
            reason, detail = self._stop_reason, self._stop_detail
        manifest = self._manifest_now(
            state="stopped",
            stopped_at=iso_utc(self._clock.wall_ns()),
            stop_reason=reason,
            stop_detail=detail,
        )
        try:
            write_manifest(self.session_dir, manifest)
        except OSError as exc:
            errors.append(f"writing the final manifest: {exc}; recovery will rebuild it")
        return sealed, errors, manifest

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        (self.session_dir / LOCK_NAME).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _emit_all(self, sealed: list[ChunkInfo], errors: list[str]) -> None:
        for info in sealed:
            self._emit("chunk_sealed", chunk=info)
        for detail in errors:
            self._emit("error", detail=detail)

    def _emit(self, kind: EventKind, *, chunk: ChunkInfo | None = None, detail: str = "") -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(RecorderEvent(kind, self.session_id, chunk, detail))
        except Exception:
            log.exception("on_event callback of %s failed on %s", self.session_id, kind)
