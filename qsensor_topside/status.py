"""The daemon's local status API (REST + SSE on 127.0.0.1) and its text rendering.

`GET /status` is the whole `DaemonStatus`; `GET /status/vehicles/{name}` one vehicle;
`GET /status/events` an SSE stream with a `status` event each second. `qsensor-topside
status` prints `render_text` of `GET /status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from qsensor_core.recording.fsutil import free_bytes
from qsensor_topside.bwlimit import format_bytes, format_rate
from qsensor_topside.mirror import REPORT_AFTER_ATTEMPTS, VehicleMirror
from qsensor_topside.sse import format_event
from qsensor_topside.status_model import DaemonStatus, VehicleStatus
from qsensor_topside.token_bucket import RateMeter

STATUS_EVENT_INTERVAL_S = 1.0


class StatusBoard:
    """Builds `DaemonStatus` on demand from the mirrors; holds no copy of their state."""

    def __init__(
        self,
        data_dir: Path,
        bwlimit: int,
        min_free: int,
        mirrors: Sequence[VehicleMirror],
        meter: RateMeter,
    ) -> None:
        self.data_dir = data_dir
        self.bwlimit = bwlimit
        self.min_free = min_free
        self.mirrors = mirrors
        self.meter = meter
        self.started_at = datetime.now(tz=UTC).isoformat()

    async def snapshot(self) -> DaemonStatus:
        vehicles = [await m.snapshot() for m in self.mirrors]
        return DaemonStatus(
            pid=os.getpid(),
            started_at=self.started_at,
            data_dir=str(self.data_dir),
            bwlimit_bps=self.bwlimit,
            bandwidth_bps=self.meter.rate(),
            bytes_received=self.meter.total,
            disk_free_bytes=free_bytes(self.data_dir),
            min_free_bytes=self.min_free,
            alerts=[a for v in vehicles for a in _alerts(v)],
            vehicles=vehicles,
        )

    async def vehicle(self, name: str) -> VehicleStatus | None:
        mirror = next((m for m in self.mirrors if m.name == name), None)
        return None if mirror is None else await mirror.snapshot()


def _alerts(vehicle: VehicleStatus) -> Iterator[str]:
    if vehicle.disk_alert:
        yield f"{vehicle.name}: {vehicle.disk_alert}"
    if vehicle.link == "down":
        yield f"{vehicle.name}: link down ({vehicle.last_error})"
    for failure in vehicle.failures:
        if failure.attempts >= REPORT_AFTER_ATTEMPTS:
            yield (
                f"{vehicle.name}: {failure.session_id}/{failure.name} failed "
                f"{failure.attempts} times: {failure.last_error}"
            )


def build_app(board: StatusBoard) -> FastAPI:
    """Handlers are coroutines: they run on the daemon's loop, never in a worker thread
    beside the mirrors whose state they read."""
    app = FastAPI(title="qsensor-topside status", docs_url=None, redoc_url=None)

    @app.get("/status", response_model=DaemonStatus)
    async def status() -> DaemonStatus:
        return await board.snapshot()

    @app.get("/status/vehicles/{name}", response_model=VehicleStatus)
    async def vehicle(name: str) -> VehicleStatus:
        found = await board.vehicle(name)
        if found is None:
            raise HTTPException(404, f"no vehicle named {name!r}")
        return found

    @app.get("/status/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(_status_events(board.snapshot), media_type="text/event-stream")

    return app


async def _status_events(
    snapshot: Callable[[], Awaitable[DaemonStatus]],
) -> AsyncIterator[str]:
    while True:
        yield format_event("status", (await snapshot()).model_dump_json())
        await asyncio.sleep(STATUS_EVENT_INTERVAL_S)


class _QuietServer(uvicorn.Server):
    """uvicorn inside the daemon: the daemon, not uvicorn, owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_status_socket(host: str, port: int) -> socket.socket:
    """Bind before starting, so a busy port is a clear startup error and port 0 works."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot open the status API on {host}:{port}: {exc.strerror}") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def serve_status(board: StatusBoard, sock: socket.socket) -> None:
    config = uvicorn.Config(
        build_app(board), log_config=None, access_log=False, log_level="warning", lifespan="off"
    )
    server = _QuietServer(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True


def render_text(status: DaemonStatus) -> str:
    """The status as `qsensor-topside status` prints it."""
    in_use = format_rate(status.bandwidth_bps) if status.bandwidth_bps else "0 B/s"
    lines = [
        f"qsensor-topside pid {status.pid}, data {status.data_dir}, "
        f"disk free {format_bytes(status.disk_free_bytes)}",
        f"bandwidth {in_use} (limit {format_rate(status.bwlimit_bps)}), "
        f"received {format_bytes(status.bytes_received)}",
    ]
    lines.extend(f"ALERT {alert}" for alert in status.alerts)
    for v in status.vehicles:
        contact = "never" if v.last_contact_age_s is None else f"{v.last_contact_age_s:.1f} s ago"
        lines.append("")
        lines.append(f"{v.name}  {v.url}  link {v.link}, events {v.events}, last contact {contact}")
        lines.append(
            f"  chunks verified {v.chunks_verified}, pending {v.chunks_pending}, "
            f"failed {v.chunks_failed}; backlog {format_bytes(v.backlog_bytes)}; "
            f"bandwidth {format_bytes(v.bandwidth_bps)}/s"
        )
        if v.last_error:
            lines.append(f"  last error: {v.last_error}")
        for s in v.sessions:
            lag = "" if s.lag_s is None else f", lag {s.lag_s:.1f} s"
            done = " complete" if s.complete else ""
            lines.append(
                f"  {s.session_id} {s.state}{done}: {s.chunks_verified}/{s.chunks_total} chunks "
                f"verified, {s.chunks_failed} failing, {format_bytes(s.bytes_mirrored)} held, "
                f"backlog {format_bytes(s.backlog_bytes)}{lag}"
            )
    return "\n".join(lines)
