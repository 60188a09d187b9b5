"""The docs match the code: the generated API reference is current and every path is described."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tools.gen_openapi import TARGET, openapi_text

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_generated_openapi_reference_is_current() -> None:
    assert TARGET.read_text(encoding="utf-8") == openapi_text(), "run `make docs`"


def test_every_http_path_is_described_in_the_api_guide() -> None:
    api_guide = (DOCS / "api.md").read_text(encoding="utf-8")
    paths = json.loads(openapi_text())["paths"]
    missing = [p for p in paths if re.sub(r"\{[^}]+\}", "", p).rstrip("/") not in api_guide]
    assert not missing, f"paths missing from docs/api.md: {missing}"


def test_docs_links_point_at_existing_files() -> None:
    broken = []
    for page in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, broken
