"""The live mirror of one vehicle: three cooperating loops over one folder.

- events: the Pi's SSE stream (resumed with Last-Event-ID) wakes the other two at once;
- sync: reconciles the Pi's sessions and manifests with the verified files on disk, fetching
  every missing sealed chunk in order and retrying failures with backoff until they succeed
  (also on a timer, so it works without SSE);
- tail: follows the open chunk of a recording session by byte offset, about once a second.

Tail and sync may both reach a chunk that was just sealed; a per-chunk lock makes the second
one see the first one's result in the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import httpx

from qsensor_core.recording.csv_format import HEADER_BYTES, parse_row
from qsensor_core.recording.layout import chunk_name
from qsensor_topside.client import PiClient, PiError
from qsensor_topside.config import TopsideConfig, VehicleSpec
from qsensor_topside.plan import (
    ChunkKey,
    FetchChunk,
    LocalSession,
    Retry,
    backoff_delay,
    manifests_to_refresh,
    plan_chunks,
)
from qsensor_topside.remote import RECORDING, RemoteChunk, RemoteSession, chunk_index
from qsensor_topside.sse import SSEParser
from qsensor_topside.status_model import ChunkFailure, LinkState, SessionStatus, VehicleStatus
from qsensor_topside.store import VehicleStore
from qsensor_topside.token_bucket import RateMeter

log = logging.getLogger("qsensor_topside.mirror")

LINK_ERRORS = (httpx.RequestError,)  # no answer: connection, timeout, broken transfer
WAKE_EVENTS = frozenset({"chunk_sealed", "session"})
SSE_READ_TIMEOUT_S = 45.0  # the Pi pings every 15 s
TAIL_MORE_BYTES = 256 * 1024  # a tail read this long may have stopped at the Pi's read limit
PARALLEL_UNCAPPED = 3  # chunk transfers at once when there is no bandwidth cap
REPORT_AFTER_ATTEMPTS = 3  # a chunk failing this often is logged as an error
RESTART_DELAY_S = 2.0  # before a loop that raised is started again


class IntegrityError(Exception):
    """Bytes received do not match the Pi's SHA-256 or size."""


class VehicleMirror:
    """Mirrors every session of one vehicle into `store`; run() until cancelled."""

    def __init__(
        self,
        spec: VehicleSpec,
        store: VehicleStore,
        client: PiClient,
        config: TopsideConfig,
        meter: RateMeter,
    ) -> None:
        self.spec = spec
        self.store = store
        self.client = client
        self.config = config
        self.meter = meter
        self.remote: dict[str, RemoteSession] = {}
        self.retries: dict[ChunkKey, Retry] = {}
        self.link: LinkState = "connecting"
        self.events_connected = False
        self.last_contact: float | None = None
        self.last_error: str | None = None
        self.disk_alert: str | None = None
        self._locks: defaultdict[ChunkKey, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._wake_sync = asyncio.Event()
        self._wake_tail = asyncio.Event()
        self._wake_events = asyncio.Event()
        self._tail_at: dict[str, int] = {}
        self._newest: dict[str, str] = {}
        client.on_contact = self._contact

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for loop in (self._events_loop, self._sync_loop, self._tail_loop):
                group.create_task(self._supervised(loop), name=f"{self.name}{loop.__name__}")

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """A bug in one loop must not end the mirror mid-dive: log it and start it again."""
        while True:
            try:
                await loop()
            except Exception as exc:
                log.exception("%s: %s failed; restarting it", self.name, loop.__name__)
                self.last_error = describe(exc)
                await asyncio.sleep(RESTART_DELAY_S)

    # -- sync ---------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            self._wake_sync.clear()
            try:
                await self.reconcile()
                failures = 0
            except LINK_ERRORS as exc:
                self._link_failed(exc)
                failures += 1
            except (PiError, OSError) as exc:
                self._note_error(exc)
                failures += 1
            await _wait(self._wake_sync, self._next_sync_delay(failures))

    async def reconcile(self) -> None:
        """One pass: session list, stale manifests, then every unverified chunk in order."""
        sessions = await self.client.sessions()
        self.remote = {s.session_id: s for s in sessions}
        local = await asyncio.to_thread(self.store.scan_all)
        for session_id in manifests_to_refresh(sessions, local):
            try:
                _, raw = await self.client.manifest(session_id)
            except PiError as exc:
                self._note_error(exc)
                continue
            await asyncio.to_thread(self.store.save_manifest, session_id, raw)
        if any(s.state == RECORDING for s in sessions):
            self._wake_tail.set()
        local = await asyncio.to_thread(self.store.scan_all)
        plan = plan_chunks(local.values(), self.retries, time.monotonic())
        await self._fetch_all(plan.ready)

    async def _fetch_all(self, actions: list[FetchChunk]) -> None:
        """Start fetches in plan order until the link or the disk says stop.

        With a cap one transfer fills the link, so they run one at a time and the oldest
        chunk is verified first; without one, a few overlap to hide per-chunk latency
        (server, hashing, fsync).

        After the first fetch, a pass starts no new one once the loop is woken (a session
        started, a chunk was sealed) or a poll interval has gone by: the next pass follows at
        once with a fresh session list, so a long backlog never leaves a new session untailed
        or a stopped one shown as recording."""
        slots = asyncio.Semaphore(1 if self.client.bucket.rate else PARALLEL_UNCAPPED)
        link_ok = True
        deadline = time.monotonic() + self.config.poll_interval

        async def fetch(action: FetchChunk) -> None:
            nonlocal link_ok
            try:
                link_ok = await self._fetch(action) and link_ok
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for started, action in enumerate(actions):
                await slots.acquire()
                if started and (self._wake_sync.is_set() or time.monotonic() > deadline):
                    self._wake_sync.set()
                    slots.release()
                    break
                if not link_ok or not self._disk_ok(action.remaining):
                    slots.release()
                    break
                group.create_task(fetch(action))

    async def _fetch(self, action: FetchChunk) -> bool:
        """Fetch one chunk, recording a failure for retry; False if the link failed."""
        key = action.key
        async with self._locks[key]:
            if self.store.is_verified(action.session_id, action.chunk.name):
                self.retries.pop(key, None)
                return True
            try:
                await self._complete(action.session_id, action.chunk)
            except (*LINK_ERRORS, PiError, IntegrityError, OSError) as exc:
                self._chunk_failed(key, exc)
                if isinstance(exc, LINK_ERRORS):
                    self._link_failed(exc)
                    return False
            else:
                self.retries.pop(key, None)
                self._note_verified(action.session_id, action.chunk)
            return True

    async def _complete(self, session_id: str, chunk: RemoteChunk) -> None:
        """Bring a sealed chunk's `.part` to its full, verified bytes and promote it."""
        size, name = chunk.size_bytes, chunk.name
        held = self.store.part_size(session_id, name)
        part = await asyncio.to_thread(
            self.store.open_part, session_id, name, held if held <= size else 0
        )
        try:
            if part.size == size and part.hexdigest() != chunk.sha256:
                log.warning(
                    "%s: %s/%s bytes held do not verify; fetching it whole",
                    self.name,
                    session_id,
                    name,
                )
                part.reset()
            if part.size < size:
                if part.size:
                    log.info(
                        "%s: resuming %s/%s from byte %d of %d",
                        self.name,
                        session_id,
                        name,
                        part.size,
                        size,
                    )
                await self.client.download(session_id, name, part, size)
            if part.size != size or part.hexdigest() != chunk.sha256:
                problem = (
                    f"{name}: got {part.size} bytes sha256 {part.hexdigest()[:12]}…, "
                    f"manifest says {size} bytes sha256 {chunk.sha256[:12]}…"
                )
                part.reset()
                raise IntegrityError(problem)
        finally:
            await asyncio.to_thread(part.close)
        await asyncio.to_thread(self.store.promote, session_id, name)

    def _next_sync_delay(self, failures: int) -> float:
        """The poll interval or the soonest chunk retry; after failed passes, a backoff
        instead (a retry already due would otherwise ask a dead Pi again at once, forever)."""
        if failures:
            return backoff_delay(
                failures,
                initial=self.config.retry_initial,
                maximum=self.config.poll_interval,
                jitter=random.random(),
            )
        delay = self.config.poll_interval
        if self.retries:
            soonest = min(r.next_at for r in self.retries.values())
            delay = min(delay, max(0.05, soonest - time.monotonic()))
        return delay

    # -- tail ---------------------------------------------------------------------------

    async def _tail_loop(self) -> None:
        failures = 0
        while True:
            self._wake_tail.clear()
            busy = failed = False
            try:
                for session_id in self._recording():
                    try:
                        busy |= await self._tail_step(session_id)
                    except (PiError, OSError) as exc:  # this session's only: the others go on
                        self._note_error(exc)
                        failed = True
            except LINK_ERRORS as exc:
                self._link_failed(exc)
                failed = True
            failures = failures + 1 if failed else 0
            if not busy:
                delay = self.config.tail_interval * min(2**failures, 4)
                await _wait(self._wake_tail, delay)

    def _recording(self) -> list[str]:
        recording = [sid for sid, s in self.remote.items() if s.state == RECORDING]
        for gone in set(self._tail_at) - set(recording):
            del self._tail_at[gone]
        return recording

    async def _tail_step(self, session_id: str) -> bool:
        """One tail read of the session's open chunk; True if there is more to read now."""
        summary = self.remote.get(session_id)
        if summary is None:
            return False
        index = self._tail_at.get(session_id)
        if index is None:
            if summary.open_chunk is None:
                return False
            index = self._tail_at[session_id] = chunk_index(summary.open_chunk)
        name = chunk_name(index)
        if index < summary.chunks:  # sealed: sync fetches it with Range
            self._tail_at[session_id] = index + 1
            self._wake_sync.set()
            return True
        async with self._locks[(session_id, name)]:
            if self.store.is_verified(session_id, name):
                self._tail_at[session_id] = index + 1
                return True
            if not self._disk_ok(0):
                return False
            offset = self.store.part_size(session_id, name)
            read = await self.client.tail(session_id, index, offset)
            if read is None:  # not created yet, or the session ended: ask the session list
                self._wake_sync.set()
                return False
            if read.body:
                await asyncio.to_thread(self.store.append_part, session_id, name, offset, read.body)
                self._note_rows(session_id, read.body)
            if not read.sealed:
                return len(read.body) >= TAIL_MORE_BYTES
            if read.body and read.size is not None and read.next_offset < read.size:
                return True  # more to read; with no bytes at all it is left to sync's Range
            await self._finish_tailed(session_id, name, read.next_offset, read.size, read.sha256)
            self._tail_at[session_id] = index + 1
            return True

    async def _finish_tailed(
        self, session_id: str, name: str, held: int, size: int | None, sha256: str | None
    ) -> None:
        """Promote a sealed chunk received by the tail if it verifies; else leave it to sync."""
        digest = await asyncio.to_thread(self.store.part_digest, session_id, name)
        if held == size and digest == sha256:
            await asyncio.to_thread(self.store.promote, session_id, name)
            self.retries.pop((session_id, name), None)
            log.info("%s: %s/%s verified (live tail)", self.name, session_id, name)
            return
        log.warning(
            "%s: tailed bytes of %s/%s do not verify; fetching it whole",
            self.name,
            session_id,
            name,
        )
        self._wake_sync.set()

    def _note_rows(self, session_id: str, body: bytes) -> None:
        last = body.rstrip(b"\n").rpartition(b"\n")[2] + b"\n"
        if last == HEADER_BYTES:
            return
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            self._newest[session_id] = parse_row(last.decode("utf-8")).timestamp

    # -- events -------------------------------------------------------------------------

    async def _events_loop(self) -> None:
        parser = SSEParser()
        delay = 1.0
        while True:
            self._wake_events.clear()
            try:
                async for event in self.client.events(parser, SSE_READ_TIMEOUT_S):
                    if not self.events_connected:
                        log.info("%s: event stream connected", self.name)
                        self.events_connected, delay = True, 1.0
                        self._wake_sync.set()
                    if event.event in WAKE_EVENTS:
                        self._wake_sync.set()
                        self._wake_tail.set()
            except LINK_ERRORS as exc:
                self._link_failed(exc)
            except PiError as exc:
                self._note_error(exc)
            if self.events_connected:
                log.info(
                    "%s: event stream lost; polling every %.0f s until it is back",
                    self.name,
                    self.config.poll_interval,
                )
            self.events_connected = False
            await _wait(self._wake_events, delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.config.poll_interval)

    # -- bookkeeping --------------------------------------------------------------------

    def _contact(self) -> None:
        self.last_contact = time.time()
        if self.link != "up":
            log.info("%s: link up (%s)", self.name, self.spec.url)
            self.link = "up"
            self.retries = {k: replace(r, next_at=0.0) for k, r in self.retries.items()}
            self._wake_sync.set()
            self._wake_tail.set()
            self._wake_events.set()

    def _link_failed(self, exc: Exception) -> None:
        self.last_error = describe(exc)
        if self.link != "down":
            log.warning("%s: link down: %s", self.name, self.last_error)
            self.link = "down"

    def _note_error(self, exc: Exception) -> None:
        self.last_error = describe(exc)
        log.warning("%s: %s", self.name, self.last_error)

    def _chunk_failed(self, key: ChunkKey, exc: Exception) -> None:
        previous = self.retries.get(key)
        attempts = (previous.attempts if previous else 0) + 1
        delay = backoff_delay(
            attempts,
            initial=self.config.retry_initial,
            maximum=self.config.retry_max,
            jitter=random.random(),
        )
        error = describe(exc)
        self.retries[key] = Retry(attempts, time.monotonic() + delay, error)
        self.last_error = f"{key[0]}/{key[1]}: {error}"
        level = logging.ERROR if attempts >= REPORT_AFTER_ATTEMPTS else logging.WARNING
        log.log(
            level,
            "%s: %s/%s failed (attempt %d, retry in %.1f s): %s",
            self.name,
            key[0],
            key[1],
            attempts,
            delay,
            error,
        )

    def _note_verified(self, session_id: str, chunk: RemoteChunk) -> None:
        log.info(
            "%s: %s/%s verified (%d bytes)", self.name, session_id, chunk.name, chunk.size_bytes
        )

    def _disk_ok(self, need: int) -> bool:
        free = self.store.free_bytes()
        if free - need >= self.config.min_free:
            if self.disk_alert:
                log.warning(
                    "%s: disk space is back (%d bytes free); fetching again", self.name, free
                )
                self.disk_alert = None
            return True
        if not self.disk_alert:
            log.error(
                "%s: only %d bytes free in %s (minimum %d): fetching stopped, verified files kept",
                self.name,
                free,
                self.store.root,
                self.config.min_free,
            )
        self.disk_alert = f"disk low: {free} bytes free, minimum {self.config.min_free}"
        return False

    # -- status -------------------------------------------------------------------------

    async def snapshot(self) -> VehicleStatus:
        """The vehicle's status, computed from the files now plus the link bookkeeping.

        The folders are scanned in a thread; the mirror's own state is read on the loop that
        changes it, so a status request never sees a dict changing under it."""
        local = await asyncio.to_thread(self.store.scan_all)
        now_mono, now_wall = time.monotonic(), time.time()
        plan = plan_chunks(local.values(), self.retries, now_mono)
        pending: defaultdict[str, list[FetchChunk]] = defaultdict(list)
        for action in [*plan.ready, *(a for a, _ in plan.waiting)]:
            pending[action.session_id].append(action)
        failures = [
            ChunkFailure(
                session_id=k[0],
                name=k[1],
                attempts=r.attempts,
                last_error=r.last_error,
                retry_in_s=max(0.0, r.next_at - now_mono),
            )
            for k, r in sorted(self.retries.items())
        ]
        failed_by_session: defaultdict[str, int] = defaultdict(int)
        for failure in failures:
            failed_by_session[failure.session_id] += 1
        sessions = [
            self._session_status(
                sid, local.get(sid), pending[sid], failed_by_session[sid], now_wall
            )
            for sid in sorted(set(local) | set(self.remote))
        ]
        return VehicleStatus(
            name=self.name,
            url=self.spec.url,
            link=self.link,
            events="connected" if self.events_connected else "disconnected",
            last_contact=_iso(self.last_contact),
            last_contact_age_s=None if self.last_contact is None else now_wall - self.last_contact,
            last_error=self.last_error,
            disk_alert=self.disk_alert,
            bandwidth_bps=self.meter.rate(),
            bytes_received=self.meter.total,
            backlog_bytes=sum(s.backlog_bytes for s in sessions),
            chunks_verified=sum(s.chunks_verified for s in sessions),
            chunks_pending=sum(s.chunks_pending for s in sessions),
            chunks_failed=len(failures),
            failures=failures,
            sessions=sessions,
        )

    def _session_status(
        self,
        session_id: str,
        local: LocalSession | None,
        pending: list[FetchChunk],
        failed: int,
        now_wall: float,
    ) -> SessionStatus:
        summary = self.remote.get(session_id)
        manifest = local.manifest if local else None
        state = summary.state if summary else (manifest.state if manifest else "unknown")
        chunks = manifest.chunks if manifest else []
        verified = [c for c in chunks if local is not None and local.is_verified(c)]
        total = max(len(chunks), summary.chunks if summary else 0)
        held = sum(local.verified.values()) + sum(local.partial.values()) if local else 0
        newest = self._newest_timestamp(session_id, verified)
        recording = state == RECORDING
        tail_index = self._tail_at.get(session_id)
        return SessionStatus(
            session_id=session_id,
            state=state,
            mission=summary.mission if summary else None,
            chunks_total=total,
            chunks_verified=len(verified),
            chunks_pending=total - len(verified),
            chunks_failed=failed,
            bytes_mirrored=held,
            backlog_bytes=sum(a.remaining for a in pending),
            tail_chunk=chunk_name(tail_index) if recording and tail_index is not None else None,
            newest_timestamp=newest,
            lag_s=_lag(newest, now_wall) if recording else None,
            complete=not recording and manifest is not None and total == len(verified),
        )

    def _newest_timestamp(self, session_id: str, verified: list[RemoteChunk]) -> str | None:
        stamps = [c.last_timestamp for c in verified if c.last_timestamp]
        if session_id in self._newest:
            stamps.append(self._newest[session_id])
        return max(stamps, key=_epoch, default=None)


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _epoch(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def _lag(newest: str | None, now_wall: float) -> float | None:
    return None if newest is None else round(now_wall - _epoch(newest), 3)


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, tz=UTC).isoformat()
