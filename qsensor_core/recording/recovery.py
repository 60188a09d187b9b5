"""Crash recovery, run once at service start-up: make every session on disk whole again.

A session left by a dead recorder (power cut, SIGKILL) gets its open chunks sealed (a torn
last line is cut off and counted), chunks missing from the manifest added, a missing or
corrupt manifest rebuilt from the chunk files, and the state `interrupted`. Sessions whose
lock is held by a live recorder are never touched.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from qsensor_core.recording.csv_format import HEADER_BYTES, parse_row
from qsensor_core.recording.errors import ChunkFormatError, ManifestError, RecordingError
from qsensor_core.recording.fsutil import temp_path, try_lock
from qsensor_core.recording.layout import (
    CHUNK_RE,
    LOCK_NAME,
    MANIFEST_NAME,
    OPEN_CHUNK_RE,
    RESERVE_NAME,
    STAGING_PREFIX,
    chunk_name,
    is_session_id,
    open_chunk_name,
    session_start_iso,
)
from qsensor_core.recording.manifest import ChunkInfo, Manifest, read_manifest, write_manifest
from qsensor_core.recording.sealing import describe_sealed_chunk, seal_open_chunk

log = logging.getLogger(__name__)

_CORRUPT_COPY = f".{MANIFEST_NAME}.corrupt"


def recover_sessions(root: Path, now_iso: str) -> list[str]:
    """Recover every session under `root`; the ids of the sessions that were changed."""
    if not root.is_dir():
        return []
    changed = []
    for entry in sorted(root.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(STAGING_PREFIX):
            _discard_staging(entry)
        elif is_session_id(entry.name):
            try:
                if recover_session(entry, now_iso):
                    changed.append(entry.name)
            except (OSError, RecordingError) as exc:  # one broken session must not stop the rest
                log.error("could not recover session %s: %s", entry.name, exc)
    return changed


def _indices(session_dir: Path) -> tuple[list[int], list[int]]:
    """(open chunk indices, sealed chunk indices) found on disk, sorted."""
    open_, sealed = [], []
    for name in os.listdir(session_dir):
        if match := OPEN_CHUNK_RE.fullmatch(name):
            open_.append(int(match.group(1)))
        elif match := CHUNK_RE.fullmatch(name):
            sealed.append(int(match.group(1)))
    return sorted(open_), sorted(sealed)


def needs_recovery(session_dir: Path) -> bool:
    """Whether the session was left unfinished (read-only check)."""
    try:
        manifest = read_manifest(session_dir)
    except ManifestError:
        return True
    open_, sealed = _indices(session_dir)
    listed = {c.index for c in manifest.chunks}
    return manifest.state == "recording" or bool(open_) or not set(sealed) <= listed


def recover_session(session_dir: Path, now_iso: str) -> bool:
    """Recover one session unless it is complete or a live recorder holds it."""
    if not needs_recovery(session_dir):
        return False
    lock_fd = try_lock(session_dir / LOCK_NAME)
    if lock_fd is None:
        return False
    try:
        _recover_locked(session_dir, now_iso)
    finally:
        (session_dir / LOCK_NAME).unlink(missing_ok=True)
        os.close(lock_fd)
    return True


def _recover_locked(session_dir: Path, now_iso: str) -> None:
    notes: list[str] = []
    try:
        old: Manifest | None = read_manifest(session_dir)
    except ManifestError as exc:
        old = None
        notes.append(f"manifest rebuilt from the chunk files ({exc})")
        if (session_dir / MANIFEST_NAME).exists():
            os.replace(session_dir / MANIFEST_NAME, session_dir / _CORRUPT_COPY)
    sealed_now, torn = _seal_open_chunks(session_dir, notes)
    chunks = _collect_chunks(session_dir, old, sealed_now, notes)
    base = _base_fields(session_dir, old, chunks)
    last_timestamps = [c.last_timestamp for c in chunks if c.last_timestamp]
    manifest = Manifest.model_validate(
        {
            **base,
            "state": "interrupted" if old is None or old.state == "recording" else old.state,
            "stopped_at": base.get("stopped_at")
            or (last_timestamps[-1] if last_timestamps else base["started_at"]),
            "open_chunk": None,
            "chunks": chunks,
            "recovered_at": now_iso,
            "recovered_torn_bytes": base.get("recovered_torn_bytes", 0) + torn,
            "recovery_notes": [*base.get("recovery_notes", []), *notes],
        }
    )
    write_manifest(session_dir, manifest)
    for leftover in (session_dir / RESERVE_NAME, temp_path(session_dir / MANIFEST_NAME)):
        leftover.unlink(missing_ok=True)
    log.warning("recovered session %s: %s", session_dir.name, "; ".join(notes) or "sealed")


def _seal_open_chunks(session_dir: Path, notes: list[str]) -> tuple[dict[int, ChunkInfo], int]:
    """Seal every leftover open chunk: ({index: chunk}, torn bytes dropped)."""
    sealed: dict[int, ChunkInfo] = {}
    torn = 0
    for index in _indices(session_dir)[0]:
        name = open_chunk_name(index)
        size = (session_dir / name).stat().st_size
        try:
            info = seal_open_chunk(session_dir, index)
        except (ChunkFormatError, OSError) as exc:
            notes.append(f"left {name} as it is: {exc}")
            continue
        if info is None:
            torn += size
            notes.append(f"discarded {name}: {size} bytes without a complete header, no rows")
            continue
        sealed[index] = info
        torn += info.torn_bytes_dropped
        if info.torn_bytes_dropped:
            notes.append(
                f"{info.name}: dropped a torn last line of {info.torn_bytes_dropped} bytes"
            )
    return sealed, torn


def _collect_chunks(
    session_dir: Path, old: Manifest | None, sealed_now: dict[int, ChunkInfo], notes: list[str]
) -> list[ChunkInfo]:
    """Every complete chunk on disk, described by the manifest where it agrees with the file."""
    listed = {c.index: c for c in old.chunks} if old else {}
    chunks = []
    on_disk = _indices(session_dir)[1]
    for index in on_disk:
        if index in sealed_now:
            chunks.append(sealed_now[index])
            continue
        entry = listed.get(index)
        if entry and entry.size_bytes == (session_dir / entry.name).stat().st_size:
            chunks.append(entry)
            continue
        try:
            info = describe_sealed_chunk(session_dir, index)
        except (ChunkFormatError, OSError) as exc:
            notes.append(f"left out {chunk_name(index)}: {exc}")
            continue
        if entry:
            notes.append(f"{info.name}: size differs from the manifest, recounted from the file")
        elif old is not None:
            notes.append(f"{info.name}: sealed but missing from the manifest, added")
        chunks.append(info)
    for index in sorted(set(listed) - set(on_disk)):
        notes.append(f"{chunk_name(index)}: listed in the manifest but missing on disk")
    return chunks


def _base_fields(
    session_dir: Path, old: Manifest | None, chunks: list[ChunkInfo]
) -> dict[str, Any]:
    """The session's descriptive fields: from its manifest, or rebuilt from what is on disk."""
    if old is not None:
        return old.model_dump(exclude={"chunks", "totals"})
    return {
        "session_id": session_dir.name,
        "mission": "",
        "sensor_id": _first_sensor_id(session_dir, chunks),
        "sensor_config": {},
        "started_at": session_start_iso(session_dir.name),
        "roll_interval_s": None,
        "max_chunk_bytes": None,
    }


def _first_sensor_id(session_dir: Path, chunks: list[ChunkInfo]) -> str:
    for chunk in chunks:
        if not chunk.rows:
            continue
        with (session_dir / chunk.name).open("rb") as handle:
            handle.readline()
            try:
                return parse_row(handle.readline().decode("utf-8")).sensor_id
            except ValueError:
                continue
    return ""


def _discard_staging(staging: Path) -> None:
    """Remove a session folder whose creation never finished (it can hold no rows)."""
    lock_fd = try_lock(staging / LOCK_NAME)
    if lock_fd is None:
        return
    try:
        open_, _ = _indices(staging)
        sizes = [(staging / open_chunk_name(i)).stat().st_size for i in open_]
        if all(size <= len(HEADER_BYTES) for size in sizes):
            shutil.rmtree(staging)
        else:
            log.warning("left %s in place: it holds rows", staging)
    finally:
        os.close(lock_fd)
