"""HTTP routes, one module per area; they validate input and call `PiService`, nothing else."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from qsensor_pi.schemas import ErrorOut
from qsensor_pi.service import PiService


def service_of(connection: HTTPConnection) -> PiService:
    """The application's service, for HTTP requests and WebSockets alike."""
    return connection.app.state.service


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error answers a route can give (all `{"detail": reason}`)."""
    return {code: {"model": ErrorOut} for code in codes}
