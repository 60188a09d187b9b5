"""Live streams: Server-Sent Events for the topside mirror, WebSocket frames for Cockpit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse, ServerSentEvent

from qsensor_pi.api import service_of
from qsensor_pi.events import Event, SubscriberOverflow
from qsensor_pi.service import PiService
from qsensor_pi.views import datalake_frames

router = APIRouter(tags=["live"])
Service = Annotated[PiService, Depends(service_of)]
PING_S = 15


def _sse(event: Event) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(event.data), event=event.name, id=event.id)


async def _event_stream(service: PiService, last_event_id: str | None) -> AsyncIterator:
    with service.hub.subscribe() as sub:
        replayed: set[str] = set()
        if last_event_id:
            for event in await service.replay_after(last_event_id):
                replayed.add(event.id or "")
                yield _sse(event)
        yield _sse(Event("state", service.state_snapshot()))
        with contextlib.suppress(SubscriberOverflow):
            async for event in sub:
                if event.id is not None and event.id in replayed:
                    continue
                yield _sse(event)


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    service: Service,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    since: Annotated[
        str | None, Query(max_length=200, description="same as the Last-Event-ID header")
    ] = None,
) -> EventSourceResponse:
    """state, chunk_sealed (id `<session_id>/<index>`, replayed after Last-Event-ID), marker,
    reading (at most 5/s) and session events; a keep-alive comment every 15 s."""
    return EventSourceResponse(_event_stream(service, last_event_id or since), ping=PING_S)


@router.websocket("/ws/readings")
async def ws_readings(websocket: WebSocket) -> None:
    """`qsensor_value=...`, `qsensor_temp=...`, `qsensor_vin=...` text frames per reading."""
    service = service_of(websocket)
    await websocket.accept()
    with service.hub.subscribe(frozenset({"reading"})) as sub:
        closed = asyncio.ensure_future(_wait_closed(websocket))
        try:
            while not closed.done():
                getter = asyncio.ensure_future(sub.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                for frame in datalake_frames(getter.result().data):
                    await websocket.send_text(frame)
        except (WebSocketDisconnect, SubscriberOverflow, RuntimeError):
            pass
        finally:
            closed.cancel()


async def _wait_closed(websocket: WebSocket) -> None:
    """Drain what the client sends until it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
