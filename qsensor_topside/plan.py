"""Pure reconcile: the Pi's sessions and manifests against the verified files on local disk.

Reconciling by set, not by a high-water mark, is what keeps a chunk that failed once from
being skipped: every sealed chunk the manifest lists and the disk does not hold verified is
an action until it is verified, however many later chunks succeed meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qsensor_topside.remote import (
    RemoteChunk,
    RemoteManifest,
    RemoteSession,
    chunk_index,
)

ChunkKey = tuple[str, str]
"""(session_id, chunk name)"""


@dataclass(frozen=True)
class LocalSession:
    """What the disk holds for one session: the manifest copy and chunk files with sizes."""

    session_id: str
    manifest: RemoteManifest | None = None
    verified: Mapping[str, int] = field(default_factory=dict)  # chunk name -> size
    partial: Mapping[str, int] = field(default_factory=dict)  # chunk name -> bytes in .part

    def is_verified(self, chunk: RemoteChunk) -> bool:
        return self.verified.get(chunk.name) == chunk.size_bytes


@dataclass(frozen=True)
class Retry:
    """Backoff bookkeeping of a chunk that failed: kept in memory, never on disk."""

    attempts: int
    next_at: float
    last_error: str


@dataclass(frozen=True)
class FetchChunk:
    """Bring one sealed chunk to verified, resuming from `offset` bytes already on disk."""

    session_id: str
    chunk: RemoteChunk
    offset: int

    @property
    def key(self) -> ChunkKey:
        return (self.session_id, self.chunk.name)

    @property
    def remaining(self) -> int:
        return self.chunk.size_bytes - self.offset


@dataclass(frozen=True)
class ChunkPlan:
    ready: list[FetchChunk]  # to run now, oldest session first, chunks in index order
    waiting: list[tuple[FetchChunk, float]]  # failed before: (action, retry time)


def manifests_to_refresh(
    remote: Sequence[RemoteSession], local: Mapping[str, LocalSession]
) -> list[str]:
    """Sessions whose local manifest copy is missing or behind the Pi's session list."""
    stale = []
    for summary in remote:
        have = local.get(summary.session_id)
        manifest = have.manifest if have else None
        if (
            manifest is None
            or manifest.state != summary.state
            or _open_index(manifest.open_chunk) != _open_index(summary.open_chunk)
            or len(manifest.chunks) != summary.chunks
        ):
            stale.append(summary.session_id)
    return stale


def plan_chunks(
    local: Iterable[LocalSession], retries: Mapping[ChunkKey, Retry], now: float
) -> ChunkPlan:
    """Every sealed, unverified chunk: ready now, or waiting for its retry time."""
    ready: list[FetchChunk] = []
    waiting: list[tuple[FetchChunk, float]] = []
    for session in sorted(local, key=_session_order):
        if session.manifest is None:
            continue
        for chunk in sorted(session.manifest.chunks, key=lambda c: c.index):
            if session.is_verified(chunk):
                continue
            action = FetchChunk(session.session_id, chunk, _resume_offset(session, chunk))
            retry = retries.get(action.key)
            if retry is not None and retry.next_at > now:
                waiting.append((action, retry.next_at))
            else:
                ready.append(action)
    return ChunkPlan(ready, waiting)


def backoff_delay(attempts: int, *, initial: float, maximum: float, jitter: float) -> float:
    """Exponential backoff with jitter: `jitter` in [0, 1) spreads the delay over [d/2, d)."""
    delay = min(maximum, initial * 2 ** max(0, attempts - 1))
    return delay * (0.5 + jitter / 2)


def _open_index(name: str | None) -> int | None:
    return chunk_index(name) if name else None


def _resume_offset(session: LocalSession, chunk: RemoteChunk) -> int:
    have = session.partial.get(chunk.name, 0)
    return have if have <= chunk.size_bytes else 0


def _session_order(session: LocalSession) -> tuple[str, str]:
    started = session.manifest.started_at if session.manifest else None
    return (started or "", session.session_id)
