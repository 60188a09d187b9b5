"""The sidebar page, its assets, and what BlueOS and Cockpit discover about the extension."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from qsensor_pi import blueos

router = APIRouter(tags=["meta"])
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


_INLINE = re.compile(r"<!-- inline:([a-z]+\.(css|js)) -->")


@functools.cache
def page_html() -> str:
    """index.html with its stylesheet and scripts inlined (one document, no asset URLs)."""

    def inline(found: re.Match[str]) -> str:
        text = (WEB_DIR / found[1]).read_text(encoding="utf-8")
        return f"<style>\n{text}</style>" if found[2] == "css" else f"<script>\n{text}</script>"

    return _INLINE.sub(inline, (WEB_DIR / "index.html").read_text(encoding="utf-8"))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(page_html())


@router.get("/register_service")
async def register_service() -> dict[str, Any]:
    """BlueOS extension metadata (name, icon, web page, API docs, Cockpit extras)."""
    return blueos.service_metadata()


@router.get("/cockpit_extras.json")
async def cockpit_extras() -> dict[str, Any]:
    """Cockpit actions that start and stop a recording."""
    return blueos.cockpit_extras()
