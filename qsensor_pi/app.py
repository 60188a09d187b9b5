"""The FastAPI application: routes, CORS, error mapping, and the service's life cycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from qsensor_core.clock import Clock
from qsensor_core.recording import (
    ChunkFormatError,
    DiskFullError,
    InvalidName,
    ManifestError,
    NotFound,
    OffsetOutOfRange,
    RecorderStopped,
    RecordingError,
)
from qsensor_core.sensor.driver import (
    CommandRejected,
    InvalidState,
    NotConnected,
    SensorError,
    SensorTimeout,
)
from qsensor_pi import __version__
from qsensor_pi.api import live, meta, record, sensor
from qsensor_pi.api.meta import WEB_DIR
from qsensor_pi.errors import ServiceError
from qsensor_pi.events import EventHub
from qsensor_pi.service import PiService, ServiceSettings

log = logging.getLogger("qsensor_pi")

# Most specific first: the first matching class decides the status code.
_ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (ServiceError, 0),  # carries its own status code
    (DiskFullError, 507),
    (NotFound, 404),
    (InvalidName, 404),  # names outside the allow-list: as absent as any other
    (OffsetOutOfRange, 416),
    (RecorderStopped, 409),
    (ManifestError, 409),
    (ChunkFormatError, 409),
    (SensorTimeout, 504),
    (NotConnected, 409),
    (InvalidState, 409),
    (CommandRejected, 409),
    (SensorError, 503),
    (RecordingError, 503),  # the recorder failed on disk; the reason says how
)


def _status_for(exc: BaseException) -> int:
    for cls, status in _ERROR_STATUS:
        if isinstance(exc, cls):
            return status or getattr(exc, "status_code", 400)
    return 500


async def _error_answer(request: Request, exc: Exception) -> JSONResponse:
    status = _status_for(exc)
    log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return JSONResponse({"detail": str(exc) or type(exc).__name__}, status_code=status)


def create_app(settings: ServiceSettings, clock: Clock | None = None) -> FastAPI:
    """One application owning one `PiService`; `clock` defaults to `Clock.from_env()`."""
    hub = EventHub()
    service = PiService(settings, clock=clock or Clock.from_env(), hub=hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        await service.startup()
        try:
            yield
        finally:
            await service.shutdown()

    app = FastAPI(
        title="qsensor-pi",
        description="Recording service for a Biospherical Q-Series sensor on a BlueOS vehicle",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Content-SHA256",
            "X-Chunk-Name",
            "X-Chunk-State",
            "X-Next-Offset",
            "X-Chunk-Size",
            "Content-Range",
        ],
    )
    for cls, _ in _ERROR_STATUS:
        app.add_exception_handler(cls, _error_answer)
    for router in (sensor.router, record.router, live.router, meta.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
