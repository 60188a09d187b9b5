"""Recording sessions: start/stop, markers, listings, sealed files and live tails."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import FileResponse, Response

from qsensor_core.recording.layout import MAX_CHUNK_INDEX
from qsensor_pi.api import errors, service_of
from qsensor_pi.schemas import (
    SESSION_ID_PATTERN,
    ChunkOut,
    RecordStartOut,
    RecordStartRequest,
    RecordStatusOut,
    RecordStopOut,
    RecordStopRequest,
    SessionOut,
    SyncMarkerOut,
    SyncMarkerRequest,
    SyncTimeOut,
)
from qsensor_pi.service import PiService

router = APIRouter(tags=["recording"])
Service = Annotated[PiService, Depends(service_of)]
SessionQuery = Annotated[str, Query(pattern=SESSION_ID_PATTERN)]
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


@router.post("/record/start", response_model=RecordStartOut, responses=errors(409, 503, 504, 507))
async def record_start(
    service: Service, request: Annotated[RecordStartRequest | None, Body()] = None
) -> dict[str, Any]:
    """Start a recording session (and acquisition, if it is not running)."""
    return await service.start_recording(request or RecordStartRequest())


@router.post("/record/stop", response_model=RecordStopOut, responses=errors(404, 409))
async def record_stop(service: Service, request: RecordStopRequest) -> dict[str, Any]:
    """Stop and seal a session; stopping a stopped session gives the same answer again."""
    return await service.stop_recording(request.session_id)


@router.get("/record/status", response_model=RecordStatusOut, responses=errors(404))
async def record_status(service: Service, session_id: SessionQuery) -> dict[str, Any]:
    return await service.recording_status(session_id)


@router.get("/record/snapshots", response_model=list[ChunkOut], responses=errors(404))
async def record_snapshots(service: Service, session_id: SessionQuery) -> list[dict[str, Any]]:
    """The session's sealed chunks, in order, with the sha256 of each file."""
    return await service.snapshots(session_id)


@router.get("/record/sessions", response_model=list[SessionOut])
async def record_sessions(service: Service) -> list[dict[str, Any]]:
    """Every session on disk, oldest first, including those of earlier runs."""
    return await service.sessions()


@router.get(
    "/record/tail",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **errors(404, 416)},
)
async def record_tail(
    service: Service,
    session_id: SessionQuery,
    index: Annotated[int, Query(ge=0, le=MAX_CHUNK_INDEX)],
    offset: Annotated[int, Query(ge=0, le=2**40)] = 0,
) -> Response:
    """Complete lines of chunk `index` from byte `offset` (open or sealed)."""
    tail = await service.tail(session_id, index, offset)
    return Response(content=tail.data, media_type="text/csv", headers=tail.headers)


@router.post("/record/sync-marker", response_model=SyncMarkerOut, responses=errors(404, 409))
async def sync_marker(service: Service, request: SyncMarkerRequest) -> dict[str, Any]:
    """Write a sync marker row into the recording, stamped by the Pi's clock."""
    return await service.sync_marker(request)


@router.get("/api/sync/time", response_model=SyncTimeOut)
async def sync_time(service: Service) -> dict[str, Any]:
    return service.sync_time()


@router.get(
    "/files/{session_id}/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **errors(404, 416)},
)
async def session_file(
    service: Service,
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    name: Annotated[str, Path(pattern=FILE_NAME_PATTERN)],
) -> Response:
    """A sealed chunk (Range supported) or manifest.json; `X-Content-SHA256` covers the file."""
    found = await service.session_file(session_id, name)
    headers = {"X-Content-SHA256": found.sha256}
    if found.content is not None:
        return Response(found.content, media_type="application/json", headers=headers)
    return FileResponse(found.path, media_type="text/csv", headers=headers)
