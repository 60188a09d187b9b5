"""The sidebar page in headless Chromium, served under a path prefix as BlueOS does.

A small reverse proxy puts the service under `/extensionv2/qsensor/`: any absolute URL in the
page would miss the service and the page would not work.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from test_pi_harness import ServedApp, UvicornThread, service_on_simulator

CHROMIUM = "/usr/bin/chromium"
PREFIX = "/extensionv2/qsensor"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed (make test does it)"
)
sync_api = pytest.importorskip("playwright.sync_api")


def prefix_proxy(upstream: str) -> Starlette:
    """Forward `PREFIX/...` to the service, streaming (SSE passes through); 404 elsewhere."""
    client = httpx.AsyncClient(base_url=upstream, timeout=None)

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not path.startswith(PREFIX):
            return PlainTextResponse(f"outside the extension: {path}", status_code=404)
        upstream_request = client.build_request(
            request.method,
            path[len(PREFIX) :] or "/",
            params=request.query_params,
            headers=[(k, v) for k, v in request.headers.items() if k.lower() != "host"],
            content=await request.body(),
        )
        answer = await client.send(upstream_request, stream=True)

        async def body() -> AsyncIterator[bytes]:
            async for part in answer.aiter_raw():
                yield part

        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return StreamingResponse(
            body(), answer.status_code, headers, background=BackgroundTask(answer.aclose)
        )

    methods = ["GET", "POST", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


@pytest.fixture
def page_url(tmp_path: Path) -> Iterator[tuple[str, ServedApp]]:
    with (
        service_on_simulator(tmp_path) as service,
        UvicornThread(prefix_proxy(service.url)) as proxy,
    ):
        yield f"{proxy.url}{PREFIX}", service


@pytest.mark.timeout(120)
def test_page_shows_live_values_and_records(page_url: tuple[str, ServedApp], tmp_path: Path):
    url, service = page_url
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 480, "height": 900})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "response",
                lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"),
            )
            page.goto(url)  # no trailing slash: the page must still resolve its URLs
            expect = sync_api.expect
            expect(page.locator("#link-state")).to_have_text("idle", timeout=15000)
            expect(page.locator("#sensor-id")).to_have_text("Q12345")

            page.click("#acq-start")
            expect(page.locator("#link-state")).to_have_text("freerun", timeout=15000)
            expect(page.locator("#value")).to_have_text(re.compile(r"^-?\d+\.\d+$"), timeout=10000)
            expect(page.locator("#temp")).to_have_text(re.compile(r"^\d+\.\d+$"))
            page.wait_for_function("chart.points.length >= 5", timeout=15000)
            first_value = page.inner_text("#stamp")
            page.wait_for_function(
                f"document.getElementById('stamp').textContent !== {first_value!r}",
                timeout=10000,
            )  # live: the reading changes

            page.fill("#mission", "browser")
            page.fill("#roll", "1")
            page.click("#rec-start")
            expect(page.locator("#rec-state")).to_have_text("recording", timeout=10000)
            chunk_link = page.locator("#session-rows tr").first.locator("a", has_text="chunk_")
            expect(chunk_link.first).to_be_visible(timeout=20000)
            page.screenshot(path=str(tmp_path / "recording.png"))
            page.click("#rec-stop")
            expect(page.locator("#rec-state")).to_have_text("not recording", timeout=10000)
            row = page.locator("#session-rows tr").first
            expect(row).to_contain_text("stopped", timeout=20000)
            expect(row).to_contain_text("browser")

            # the page's download link gives the sealed chunk the API lists
            href = chunk_link.first.get_attribute("href")
            assert href is not None and not href.startswith("/")
            session_id = row.get_attribute("data-session")
            download = page.request.get(urljoin(url, href))
            assert download.ok
            with service.client() as c:
                snaps = c.get("/record/snapshots", params={"session_id": session_id}).json()
                sessions = c.get("/record/sessions").json()
            listed = {s["name"]: s["sha256"] for s in snaps}
            name = href.rsplit("/", 1)[1]
            assert hashlib.sha256(download.body()).hexdigest() == listed[name]
            assert sessions[-1]["mission"] == "browser" and sessions[-1]["state"] == "stopped"
        finally:
            browser.close()
    assert not problems, problems
