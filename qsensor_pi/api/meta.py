"""The sidebar page, its assets, and what BlueOS and Cockpit discover about the extension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from qsensor_pi import blueos

router = APIRouter(tags=["meta"])
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/register_service")
async def register_service() -> dict[str, Any]:
    """BlueOS extension metadata (name, icon, web page, API docs, Cockpit extras)."""
    return blueos.service_metadata()


@router.get("/cockpit_extras.json")
async def cockpit_extras() -> dict[str, Any]:
    """Cockpit actions that start and stop a recording."""
    return blueos.cockpit_extras()
