"""Sensor connection, configuration and acquisition; live values from memory."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.concurrency import run_in_threadpool

from qsensor_pi.api import errors, service_of
from qsensor_pi.ports import list_serial_ports
from qsensor_pi.schemas import (
    Baud,
    ConfigOut,
    ConfigRequest,
    ConnectOut,
    HealthOut,
    PausedOut,
    PortOut,
    ReadingOut,
    RecentOut,
    ResumedOut,
    StartedOut,
    StatusOut,
    StoppedOut,
)
from qsensor_pi.service import PiService

router = APIRouter(tags=["sensor"])
Service = Annotated[PiService, Depends(service_of)]
DEVICE_ERRORS = errors(409, 503, 504)


@router.post("/sensor/connect", response_model=ConnectOut, responses=errors(404, 409, 503, 504))
async def connect(
    service: Service,
    port: Annotated[str, Query(min_length=1, max_length=210, description="e.g. /dev/ttyUSB0")],
    baud: Annotated[Baud, Query()] = 9600,
) -> dict[str, Any]:
    """Open the port, bring the device to its menu and read its settings."""
    return await service.connect(port, baud)


@router.post("/sensor/disconnect", response_model=StoppedOut, responses=DEVICE_ERRORS)
@router.post("/disconnect", response_model=StoppedOut, responses=DEVICE_ERRORS)
async def disconnect(service: Service) -> dict[str, Any]:
    """Stop any recording, close the port (the device is left sampling)."""
    return await service.disconnect()


@router.get("/sensor/ports", response_model=list[PortOut])
async def ports() -> list[dict[str, Any]]:
    """Serial ports, named by their stable /dev/serial/by-id/ link when there is one."""
    found = await run_in_threadpool(list_serial_ports)
    return [asdict(p) for p in found]


@router.get("/instrument/health", response_model=HealthOut)
async def health(service: Service) -> dict[str, Any]:
    return await service.health()


@router.post("/sensor/start", response_model=StartedOut, responses=errors(409, 503, 504, 507))
async def start(
    service: Service,
    poll_hz: Annotated[float | None, Query(gt=0, le=100, description="polled mode only")] = None,
    auto_record: bool = False,
) -> dict[str, Any]:
    """Start acquisition in the configured mode; optionally start a recording at once."""
    return await service.start_acquisition(poll_hz, auto_record)


@router.post("/sensor/stop", response_model=StoppedOut, responses=DEVICE_ERRORS)
async def stop(service: Service) -> dict[str, Any]:
    """Stop the recording if one runs, then park the device in its menu."""
    return await service.stop_acquisition()


@router.post("/sensor/pause", response_model=PausedOut, responses=DEVICE_ERRORS)
async def pause(service: Service) -> dict[str, Any]:
    return await service.pause()


@router.post("/sensor/resume", response_model=ResumedOut, responses=DEVICE_ERRORS)
async def resume(service: Service) -> dict[str, Any]:
    return await service.resume()


@router.post("/config", response_model=ConfigOut, responses=errors(409, 422, 503, 504))
async def configure(
    service: Service, request: Annotated[ConfigRequest | None, Body()] = None
) -> dict[str, Any]:
    """Change any subset of averaging, ADC rate, mode and tag (device idle, not recording)."""
    return await service.configure(request or ConfigRequest())


@router.get("/status", response_model=StatusOut)
async def status(service: Service) -> dict[str, Any]:
    return await service.status()


@router.get("/latest", response_model=ReadingOut | dict[str, str])
async def latest(service: Service) -> dict[str, Any]:
    """The newest reading, or `{}` before the first one."""
    return service.latest()


@router.get("/recent", response_model=RecentOut)
async def recent(
    service: Service, seconds: Annotated[float, Query(gt=0, le=300)] = 60.0
) -> dict[str, Any]:
    """Readings of the last `seconds` (at most the last 300 s are kept in memory)."""
    return {"rows": service.recent(seconds)}
