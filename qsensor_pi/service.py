"""The service's state: one sensor driver, at most one active recorder, recent readings.

This is the only module that calls the driver and the recorder. Nothing here blocks the event
loop: serial exchanges are awaited through `AsyncSensor` (the driver's own thread does them)
and disk work runs in the thread pool, so other requests are answered while the device is
being configured. Two locks order the control operations: the recording lock is always taken
before the sensor lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from qsensor_core.clock import Clock, iso_utc
from qsensor_core.recording import (
    Manifest,
    ManifestError,
    NotFound,
    RecordingError,
    SessionRecorder,
    SessionStore,
)
from qsensor_core.recording.fsutil import atomic_write_bytes, file_sha256, free_bytes
from qsensor_core.recording.layout import MANIFEST_NAME
from qsensor_core.recording.recorder import RecorderEvent
from qsensor_core.sensor.aio import AsyncSensor
from qsensor_core.sensor.driver import SensorDriver
from qsensor_core.sensor.models import DriverEvent, DriverState, Reading, SensorConfig
from qsensor_pi import views
from qsensor_pi.errors import Conflict, InvalidArgument
from qsensor_pi.events import Event, EventHub
from qsensor_pi.ports import check_port
from qsensor_pi.readings import ReadingRing
from qsensor_pi.schemas import ConfigRequest, RecordStartRequest, SyncMarkerRequest

log = logging.getLogger("qsensor_pi")
T = TypeVar("T")

ACQUIRING = (DriverState.FREERUN, DriverState.POLLED)
LAST_PORT_FILE = "last_port.json"
SYNC_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ServiceSettings:
    data_dir: Path
    serial_port: str | None = None  # connect here on start-up, else to the last used port
    baud: int = 9600
    remember_port: bool = True  # False for throw-away ports (the simulator's pty)
    min_free_bytes: int = 50 * 2**20
    max_chunk_bytes: int = 16 * 2**20
    recent_window_s: float = 300.0
    reading_event_interval_s: float = 0.2  # SSE/WebSocket readings: at most 5 per second
    startup_retry_s: float = 5.0


_LINK_DOWN = frozenset({DriverState.DISCONNECTED, DriverState.CONNECTING, DriverState.RECONNECTING})


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


async def _device(call: Awaitable[T]) -> T:
    """A driver command (awaited, no thread held); ValueError: refused before anything was sent."""
    try:
        return await call
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc


async def _recording(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A recorder call in a worker thread; a plain ValueError means a refused argument."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ValueError as exc:
        if isinstance(exc, RecordingError):
            raise
        raise InvalidArgument(str(exc)) from exc


class PiService:
    def __init__(self, settings: ServiceSettings, *, clock: Clock, hub: EventHub) -> None:
        self.settings = settings
        self.clock = clock
        self.hub = hub
        self.store = SessionStore(settings.data_dir, clock=clock)
        self.ring = ReadingRing(settings.recent_window_s)
        self._sensor: AsyncSensor | None = None
        self._recorder: SessionRecorder | None = None
        self._recorder_swap = threading.Lock()  # the recorder can also stop itself (disk full)
        self._started_at: str | None = None  # of the active recording
        self._poll_hz: float | None = None
        self._last_error: str | None = None
        self._last_reading_event_ns = 0
        self._sensor_lock = asyncio.Lock()
        self._record_lock = asyncio.Lock()
        self._startup_task: asyncio.Task[None] | None = None

    # ---- life cycle -------------------------------------------------------------------

    async def startup(self) -> None:
        """Seal what a crash left open, then reconnect to the sensor in the background."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        recovered = await _run(self.store.recover)
        if recovered:
            log.warning("recovered interrupted sessions: %s", ", ".join(recovered))
        target = self._startup_target()
        if target is not None:
            self._startup_task = asyncio.create_task(self._connect_with_retry(*target))

    async def shutdown(self) -> None:
        """Seal the recording, then release the port, also when sealing failed."""
        self._cancel_startup()
        try:
            async with self._record_lock:
                await self._stop_recording_locked()
        finally:
            async with self._sensor_lock:
                sensor, self._sensor = self._sensor, None
                if sensor is not None:
                    with contextlib.suppress(Exception):
                        await sensor.disconnect()

    def _startup_target(self) -> tuple[str, int] | None:
        if self.settings.serial_port:
            return self.settings.serial_port, self.settings.baud
        saved = self.settings.data_dir / LAST_PORT_FILE
        try:
            data = json.loads(saved.read_text())
            return str(data["port"]), int(data["baud"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", saved, exc)
            return None

    async def _connect_with_retry(self, port: str, baud: int) -> None:
        delay = self.settings.startup_retry_s
        while True:
            try:
                await self.connect(port, baud, _from_startup=True)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = f"start-up connect to {port} failed: {exc}"
                log.warning("%s; retrying in %.0f s", self._last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _cancel_startup(self) -> None:
        task, self._startup_task = self._startup_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ---- callbacks (driver and recorder worker threads) --------------------------------

    def _on_reading(self, driver: SensorDriver, reading: Reading) -> None:
        if driver is not self._driver:
            return
        self.ring.add(reading)
        recorder = self._recorder
        if recorder is not None:
            try:
                recorder.add_reading(reading)
            except Exception:  # never let a recorder fault stop the driver's thread
                log.exception("recorder refused reading %d", reading.seq)
        if reading.mono_ns - self._last_reading_event_ns >= (
            self.settings.reading_event_interval_s * 1e9
        ):
            self._last_reading_event_ns = reading.mono_ns
            self.hub.publish(Event("reading", views.reading_json(reading)))

    def _on_driver_event(self, driver: SensorDriver, event: DriverEvent) -> None:
        if driver is not self._driver:
            return
        if event.kind in ("error", "link_lost"):
            self._last_error = event.detail or event.kind
        if event.kind == "rejected_line":
            return
        self.hub.publish(Event("state", self._state_payload(event.kind, event.detail)))

    def _on_recorder_event(self, event: RecorderEvent) -> None:
        if event.kind == "chunk_sealed" and event.chunk is not None:
            self.hub.publish(views.chunk_sealed_event(event.session_id, event.chunk))
        elif event.kind in ("disk_full", "error"):
            self._last_error = f"recording {event.session_id}: {event.kind}: {event.detail}"
            self._publish_state(f"recording_{event.kind}", event.detail)
        elif event.kind == "stopped":
            recorder = self._take_recorder(event.session_id)
            if recorder is not None:  # stopped by itself, not through stop_recording
                self._announce_stopped(recorder.stop())

    def _take_recorder(self, session_id: str | None = None) -> SessionRecorder | None:
        """Detach the active recorder (only if it is `session_id`, when given)."""
        with self._recorder_swap:
            recorder = self._recorder
            if recorder is None or (session_id is not None and recorder.session_id != session_id):
                return None
            self._recorder = None
            return recorder

    def _announce_stopped(self, manifest: Manifest) -> None:
        self.hub.publish(Event("session", {"action": "stopped", **views.stop_answer(manifest)}))
        self._publish_state("recording_stopped", manifest.stop_reason or "")

    def _state_payload(self, kind: str, detail: str = "") -> dict[str, Any]:
        recorder = self._recorder
        return {
            "kind": kind,
            "detail": detail,
            "driver_state": self.driver_state.value,
            "recording": recorder is not None,
            "session_id": recorder.session_id if recorder is not None else None,
        }

    def state_snapshot(self) -> dict[str, Any]:
        return self._state_payload("snapshot")

    def _publish_state(self, kind: str, detail: str = "") -> None:
        self.hub.publish(Event("state", self._state_payload(kind, detail)))

    # ---- sensor -----------------------------------------------------------------------

    @property
    def _driver(self) -> SensorDriver | None:
        sensor = self._sensor
        return sensor.driver if sensor is not None else None

    @property
    def driver_state(self) -> DriverState:
        sensor = self._sensor
        return sensor.state if sensor is not None else DriverState.DISCONNECTED

    @property
    def link_up(self) -> bool:
        """The device answers: connecting and reconnecting are not connected yet."""
        return self.driver_state not in _LINK_DOWN

    def _require_sensor(self) -> AsyncSensor:
        sensor = self._sensor
        if sensor is None or sensor.state == DriverState.DISCONNECTED:
            raise Conflict("sensor not connected: POST /sensor/connect first")
        return sensor

    def _require_config(self, sensor: AsyncSensor) -> SensorConfig:
        config = sensor.config
        if config is None:
            raise Conflict("sensor configuration not known yet")
        return config

    async def connect(self, port: str, baud: int, *, _from_startup: bool = False) -> dict[str, Any]:
        check_port(port)
        if not _from_startup:
            self._cancel_startup()
        async with self._record_lock, self._sensor_lock:
            current = self._sensor
            if (
                current is not None
                and current.driver.port == port
                and current.driver.baud == baud
                and current.state != DriverState.DISCONNECTED
                and current.config is not None
            ):
                return views.connect_answer(current.driver, current.config)
            if self._recorder is not None:
                raise Conflict(
                    f"recording {self._recorder.session_id} in progress; stop it before "
                    "connecting to another port"
                )
            if current is not None:
                self._sensor = None
                with contextlib.suppress(Exception):
                    await current.disconnect()
            sensor = AsyncSensor(self._new_driver(port, baud))
            self._sensor = sensor
            try:
                config = await _device(sensor.connect())
            except BaseException:
                self._sensor = None
                with contextlib.suppress(Exception):
                    await sensor.disconnect()
                raise
            self._poll_hz = None
            self._last_error = None
            if self.settings.remember_port:
                saved = json.dumps({"port": port, "baud": baud}).encode()
                await _run(atomic_write_bytes, self.settings.data_dir / LAST_PORT_FILE, saved)
        self._publish_state("connected")
        return views.connect_answer(sensor.driver, config)

    def _new_driver(self, port: str, baud: int) -> SensorDriver:
        holder: list[SensorDriver] = []
        driver = SensorDriver(
            port,
            baud,
            clock=self.clock,
            on_reading=lambda r: self._on_reading(holder[0], r),
            on_event=lambda e: self._on_driver_event(holder[0], e),
            reconnect=True,
        )
        holder.append(driver)
        return driver

    async def disconnect(self) -> dict[str, Any]:
        self._cancel_startup()
        async with self._record_lock:
            stopped = await self._stop_recording_locked()
            async with self._sensor_lock:
                sensor, self._sensor = self._sensor, None
                self._poll_hz = None
                if sensor is not None:
                    await sensor.disconnect()  # a no-op when the link ended by itself
        self._publish_state("disconnected")
        return {"status": "disconnected", "session_id": stopped}

    async def start_acquisition(self, poll_hz: float | None, auto_record: bool) -> dict[str, Any]:
        async with self._record_lock:
            async with self._sensor_lock:
                sensor = self._require_sensor()
                if sensor.state in ACQUIRING:
                    raise Conflict(f"acquisition already running ({sensor.state.value})")
                await self._start_acquisition_locked(sensor, poll_hz)
            session_id = None
            if auto_record and self._recorder is None:
                session_id = (await self._start_recording_locked(RecordStartRequest()))[
                    "session_id"
                ]
            elif self._recorder is not None:
                session_id = self._recorder.session_id
        mode = self._require_config(sensor).mode
        return {
            "status": "started",
            "mode": mode,
            "recording": self._recorder is not None,
            "session_id": session_id,
        }

    async def _start_acquisition_locked(self, sensor: AsyncSensor, poll_hz: float | None) -> None:
        if sensor.state == DriverState.PAUSED:
            await _device(sensor.resume())
        elif self._require_config(sensor).mode == "polled":
            hz = poll_hz if poll_hz is not None else 1.0
            await _device(sensor.start_polled(hz))
            self._poll_hz = hz
        else:
            await _device(sensor.start_freerun())
            self._poll_hz = None
        self._publish_state("acquisition_started")

    async def stop_acquisition(self) -> dict[str, Any]:
        async with self._record_lock:
            stopped = await self._stop_recording_locked()
            async with self._sensor_lock:
                sensor = self._require_sensor()
                if sensor.state != DriverState.IDLE:
                    await _device(sensor.stop())
                self._poll_hz = None
        self._publish_state("acquisition_stopped")
        return {"status": "stopped", "session_id": stopped}

    async def pause(self) -> dict[str, Any]:
        async with self._sensor_lock:
            await _device(self._require_sensor().pause())
        self._publish_state("paused")
        return {"status": "paused"}

    async def resume(self) -> dict[str, Any]:
        async with self._sensor_lock:
            sensor = self._require_sensor()
            await _device(sensor.resume())
        self._publish_state("resumed")
        return {"status": "resumed", "mode": self._require_config(sensor).mode}

    async def configure(self, request: ConfigRequest) -> dict[str, Any]:
        async with self._sensor_lock:
            sensor = self._require_sensor()
            if self._recorder is not None:
                raise Conflict("recording in progress: stop it before changing the configuration")
            if sensor.state in ACQUIRING:
                raise Conflict("acquisition running: POST /sensor/stop before configuring")
            config = self._require_config(sensor)
            mode, tag = self._mode_change(request, config)
            if request.averaging is not None:
                config = await _device(sensor.set_averaging(request.averaging))
            if request.adc_rate_hz is not None:
                config = await _device(sensor.set_adc_rate(request.adc_rate_hz))
            if mode is not None:
                config = await _device(sensor.set_mode(mode, tag))
        self._publish_state("configured")
        return views.config_answer(config)

    @staticmethod
    def _mode_change(request: ConfigRequest, config: SensorConfig) -> tuple[Any, str | None]:
        mode = request.mode
        if mode == "freerun" and request.tag is not None:
            raise InvalidArgument("a tag applies to polled mode only")
        if mode is None and request.tag is not None:
            if config.mode != "polled":
                raise InvalidArgument('a tag applies to polled mode: send "mode": "polled" too')
            mode = "polled"
        if mode == "polled":
            tag = request.tag or config.tag
            if len(tag) != 1 or not tag.isupper():
                raise InvalidArgument("polled mode needs a tag (one letter A-Z)")
            return mode, tag
        return mode, None

    # ---- views of the sensor ----------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        driver = self._driver
        config = driver.config if driver is not None else None
        recorder = self._recorder
        session = None
        if recorder is not None:
            live = await _run(recorder.status)  # its lock is held while rows are written
            session = {
                "session_id": recorder.session_id,
                "state": live.state,
                "rows": live.rows,
                "started_at": self._started_at,
            }
        return {
            "connected": self.link_up,
            "recording": recorder is not None,
            "sensor_id": config.serial_number if config is not None else None,
            "mode": config.mode if config is not None else None,
            "rows": self.ring.count,
            "state": self.driver_state.value,
            "port": driver.port if driver is not None else None,
            "baud": driver.baud if driver is not None else None,
            "poll_hz": self._poll_hz,
            "last_error": self._last_error,
            "config": views.config_answer(config) if config is not None else None,
            "session": session,
            "stats": views.driver_stats(driver) if driver is not None else None,
        }

    async def health(self) -> dict[str, Any]:
        driver = self._driver
        config = driver.config if driver is not None else None
        return {
            "connected": self.link_up,
            "port": driver.port if driver is not None else None,
            "model": config.description if config is not None else None,
            "firmware": config.firmware if config is not None else None,
            "disk_free_bytes": await _run(free_bytes, self.settings.data_dir),
            "state": self.driver_state.value,
        }

    def latest(self) -> dict[str, Any]:
        reading = self.ring.latest()
        return views.reading_json(reading) if reading is not None else {}

    def recent(self, seconds: float) -> list[dict[str, Any]]:
        horizon = self.clock.monotonic_ns() - int(seconds * 1e9)
        return [views.reading_json(r) for r in self.ring.since(horizon)]

    # ---- recording --------------------------------------------------------------------

    async def start_recording(self, request: RecordStartRequest) -> dict[str, Any]:
        async with self._record_lock:
            return await self._start_recording_locked(request)

    async def _start_recording_locked(self, request: RecordStartRequest) -> dict[str, Any]:
        if self._recorder is not None:
            raise Conflict(f"already recording session {self._recorder.session_id}")
        async with self._sensor_lock:
            sensor = self._require_sensor()
            if sensor.state not in ACQUIRING:
                await self._start_acquisition_locked(sensor, request.rate_hz)
            config = self._require_config(sensor)
        sensor_config = config.model_dump(mode="json") | {
            "requested_rate_hz": request.rate_hz,
            "schema_version": request.schema_version,
            "poll_hz": self._poll_hz,
        }
        recorder = await _recording(
            SessionRecorder.start,
            self.settings.data_dir,
            mission=request.mission,
            sensor_id=config.serial_number,
            sensor_config=sensor_config,
            roll_interval_s=request.roll_interval_s,
            max_chunk_bytes=self.settings.max_chunk_bytes,
            min_free_bytes=self.settings.min_free_bytes,
            clock=self.clock,
            on_event=self._on_recorder_event,
        )
        with self._recorder_swap:
            self._recorder = recorder
        started_at = (await self._manifest(recorder.session_id)).started_at
        self._started_at = started_at
        self.hub.publish(
            Event(
                "session",
                {
                    "action": "started",
                    "session_id": recorder.session_id,
                    "mission": request.mission,
                    "started_at": started_at,
                },
            )
        )
        self._publish_state("recording_started")
        return {
            "session_id": recorder.session_id,
            "started_at": started_at,
            "rate_hz": request.rate_hz,
            "schema_version": request.schema_version,
        }

    async def stop_recording(self, session_id: str) -> dict[str, Any]:
        async with self._record_lock:
            active = self._recorder
            if session_id == "current":
                if active is None:
                    raise Conflict("no recording in progress")
                session_id = active.session_id
            if active is not None and active.session_id == session_id:
                await self._stop_recording_locked()
            manifest = await self._manifest(session_id)
        return views.stop_answer(manifest)

    async def _stop_recording_locked(self) -> str | None:
        recorder = self._take_recorder()
        if recorder is None:
            return None
        self._announce_stopped(await _run(recorder.stop))
        return recorder.session_id

    async def _manifest(self, session_id: str) -> Manifest:
        """The session's manifest (recording errors map to 404 in the app)."""
        return await _run(self.store.manifest, session_id)

    async def recording_status(self, session_id: str) -> dict[str, Any]:
        recorder = self._recorder
        if recorder is not None and recorder.session_id == session_id:
            return views.live_status(await _run(recorder.status))
        return views.manifest_status(await self._manifest(session_id))

    async def snapshots(self, session_id: str) -> list[dict[str, Any]]:
        return views.sealed_chunks(await self._manifest(session_id))

    async def sessions(self) -> list[dict[str, Any]]:
        summaries = await _run(self.store.list_sessions)
        recorder = self._recorder
        live = await _run(recorder.status) if recorder is not None else None
        out = []
        for summary in summaries:
            entry = views.summary_json(summary)
            if live is not None and live.session_id == summary.session_id:
                entry |= views.live_overlay(live)
            out.append(entry)
        return out

    async def session_file(self, session_id: str, name: str) -> views.SessionFile:
        """An allow-listed file of a session and the sha256 a client should verify.

        Sealed chunks never change, so they are served from disk (with Range); the manifest is
        rewritten at every seal, so it is read once and its digest taken over those bytes.
        """
        path = await _run(self.store.sealed_file, session_id, name)
        if name == MANIFEST_NAME:
            content = await _run(path.read_bytes)
            return views.SessionFile(hashlib.sha256(content).hexdigest(), content=content)
        digest = views.chunk_sha256(await self._manifest(session_id), name)
        return views.SessionFile(digest or await _run(file_sha256, path), path=path)

    async def tail(self, session_id: str, index: int, offset: int) -> views.TailAnswer:
        recorder = self._recorder
        if recorder is not None and recorder.session_id == session_id:
            await _run(recorder.flush)  # what was received so far is readable at once
        tail = await _recording(self.store.read_tail, session_id, index, offset)
        return views.tail_answer(index, tail)

    async def sync_marker(self, request: SyncMarkerRequest) -> dict[str, Any]:
        recorder = self._recorder
        if recorder is None or recorder.session_id != request.session_id:
            await self._manifest(request.session_id)
            raise Conflict(f"session {request.session_id} is not recording")
        row = await _recording(
            recorder.add_marker, request.marker_type, request.sync_id, request.periodic_sequence
        )
        answer = views.marker_answer(row)
        self.hub.publish(
            Event(
                "marker",
                {
                    "session_id": request.session_id,
                    "sync_id": request.sync_id,
                    "marker_type": request.marker_type,
                    "periodic_sequence": request.periodic_sequence,
                    **answer,
                },
            )
        )
        return answer

    def sync_time(self) -> dict[str, Any]:
        mono_ns, wall_ns = self.clock.now()
        return {
            "pi_iso": iso_utc(wall_ns),
            "pi_unix_ms": wall_ns // 1_000_000,
            "schema_version": SYNC_SCHEMA_VERSION,
            "pi_monotonic_ns": mono_ns,
        }

    async def replay_after(self, last_event_id: str) -> list[Event]:
        """Sealed-chunk events after `<session_id>/<index>`, rebuilt from the manifests.

        An id naming no known session replays every sealed chunk on disk.
        """
        return await _run(self._sealed_events_after, last_event_id)

    def _sealed_events_after(self, last_event_id: str) -> list[Event]:
        session_after, _, index_text = last_event_id.partition("/")
        after_index = int(index_text) if index_text.isascii() and index_text.isdigit() else -1
        ids = [s.session_id for s in self.store.list_sessions() if s.manifest_error is None]
        if session_after in ids:
            ids = ids[ids.index(session_after) :]
        events: list[Event] = []
        for session_id in ids:
            try:
                chunks = self.store.manifest(session_id).chunks
            except (ManifestError, NotFound):  # changed since it was listed
                continue
            skip = after_index if session_id == session_after else -1
            events += [views.chunk_sealed_event(session_id, c) for c in chunks if c.index > skip]
        return events
