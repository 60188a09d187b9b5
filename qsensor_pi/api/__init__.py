"""HTTP routes, one module per area; they validate input and call `PiService`, nothing else."""

from __future__ import annotations

from fastapi import Request, WebSocket

from qsensor_pi.schemas import ErrorOut
from qsensor_pi.service import PiService


def service_of(request: Request) -> PiService:
    return request.app.state.service


def ws_service_of(websocket: WebSocket) -> PiService:
    return websocket.app.state.service


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error answers a route can give (all `{"detail": reason}`)."""
    return {code: {"model": ErrorOut} for code in codes}
