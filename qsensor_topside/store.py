"""Local mirror files of one vehicle: DATA/<vehicle>/<session_id>/.

The files are the only state. `chunk_NNNNN.csv` exists only once its bytes matched the
Pi's SHA-256 and size (written to `.part`, fsynced, renamed, directory fsynced);
`chunk_NNNNN.csv.part` holds the bytes received so far of a chunk not yet verified, which is
both the live tail of the open chunk (complete lines) and an interrupted download that HTTP
Range resumes; `manifest.json` is the Pi's manifest as last received, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import ValidationError

from qsensor_core.recording.fsutil import (
    HASH_BLOCK,
    atomic_write_bytes,
    file_sha256,
    free_bytes,
    fsync_dir,
)
from qsensor_core.recording.layout import MANIFEST_NAME
from qsensor_topside.plan import LocalSession
from qsensor_topside.remote import CHUNK_NAME, RemoteManifest, check_session_id

PART_SUFFIX = ".part"


class VehicleStore:
    """The folder of one vehicle; every answer comes from the files (parsed manifests are
    kept only under the file's inode, size and mtime, so they cannot disagree with it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._parsed: dict[str, tuple[tuple[int, int, int], RemoteManifest]] = {}

    def session_dir(self, session_id: str) -> Path:
        return self.root / check_session_id(session_id)

    def final_path(self, session_id: str, name: str) -> Path:
        return self.session_dir(session_id) / _checked(name)

    def part_path(self, session_id: str, name: str) -> Path:
        return self.session_dir(session_id) / (_checked(name) + PART_SUFFIX)

    def session_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST_NAME}"))

    def scan(self, session_id: str) -> LocalSession:
        """The session as the disk holds it: manifest copy, verified chunks, partial chunks."""
        folder = self.session_dir(session_id)
        verified: dict[str, int] = {}
        partial: dict[str, int] = {}
        if folder.is_dir():
            for entry in os.scandir(folder):
                name, stem = entry.name, entry.name.removesuffix(PART_SUFFIX)
                try:  # a `.part` may be renamed (promoted) while this runs
                    if CHUNK_NAME.match(name):
                        verified[name] = entry.stat().st_size
                    elif stem != name and CHUNK_NAME.match(stem):
                        partial[stem] = entry.stat().st_size
                except FileNotFoundError:
                    continue
        return LocalSession(session_id, self.load_manifest(session_id), verified, partial)

    def scan_all(self) -> dict[str, LocalSession]:
        return {sid: self.scan(sid) for sid in self.session_ids()}

    def load_manifest(self, session_id: str) -> RemoteManifest | None:
        """The local manifest copy; None if absent or unreadable (it is then fetched again)."""
        path = self.session_dir(session_id) / MANIFEST_NAME
        try:
            stat = path.stat()
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._parsed.get(session_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            manifest = RemoteManifest.model_validate(json.loads(path.read_bytes()))
        except (OSError, ValueError, ValidationError):
            return None
        self._parsed[session_id] = (key, manifest)
        return manifest

    def save_manifest(self, session_id: str, raw: bytes) -> bool:
        """Keep the Pi's manifest bytes as received; False if they are already the copy."""
        path = self.session_dir(session_id) / MANIFEST_NAME
        try:
            if path.read_bytes() == raw:
                return False
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, raw)
        return True

    def open_part(self, session_id: str, name: str, offset: int) -> PartWriter:
        """Open a chunk's `.part` to append from `offset`, hashing the bytes already there."""
        self.session_dir(session_id).mkdir(parents=True, exist_ok=True)
        return PartWriter(self.part_path(session_id, name), offset)

    def append_part(self, session_id: str, name: str, offset: int, data: bytes) -> int:
        """Append live-tail lines at `offset` of a chunk's `.part`; returns the new size."""
        self.session_dir(session_id).mkdir(parents=True, exist_ok=True)
        with open(self.part_path(session_id, name), "ab") as handle:
            if handle.tell() != offset:
                raise OSError(f"{name}.part holds {handle.tell()} bytes, expected {offset}")
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            return handle.tell()

    def part_size(self, session_id: str, name: str) -> int:
        try:
            return self.part_path(session_id, name).stat().st_size
        except FileNotFoundError:
            return 0

    def part_digest(self, session_id: str, name: str) -> str:
        return file_sha256(self.part_path(session_id, name))

    def is_verified(self, session_id: str, name: str) -> bool:
        return self.final_path(session_id, name).is_file()

    def promote(self, session_id: str, name: str) -> Path:
        """Give a verified `.part` its final name: rename, then fsync the directory."""
        final = self.final_path(session_id, name)
        os.replace(self.part_path(session_id, name), final)
        fsync_dir(final.parent)
        return final

    def free_bytes(self) -> int:
        return free_bytes(self.root)


class PartWriter:
    """Appends to a `.part` file while keeping its running SHA-256 and size."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self._file = open(path, "a+b")  # noqa: SIM115 - owned until close()
        if os.fstat(self._file.fileno()).st_size > offset:
            self._file.truncate(offset)
        self._hash = hashlib.sha256()
        self._file.seek(0)
        for block in iter(lambda: self._file.read(HASH_BLOCK), b""):
            self._hash.update(block)
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def reset(self) -> None:
        """Throw the bytes away (they failed verification) and start again from zero."""
        self._file.truncate(0)
        self._file.seek(0)
        self._hash = hashlib.sha256()
        self.size = 0

    def close(self) -> None:
        self.flush()
        self._file.close()


def _checked(name: str) -> str:
    if not CHUNK_NAME.match(name):
        raise ValueError(f"unsafe chunk name: {name!r}")
    return name
