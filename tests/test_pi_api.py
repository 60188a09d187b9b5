"""qsensor-pi over real HTTP: sensor control, recording, files, tails, errors, metadata."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_pi_harness import (
    ServedApp,
    service_on_simulator,
    wait_connected,
    wait_for,
    wait_readings,
)

from qsensor_core.recording import parse_chunk
from qsensor_core.simulator.process import SimulatorProcess
from qsensor_pi.service import ServiceSettings

SYNC_ID = "0badc0de-1234-4321-8765-0123456789ab"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApp]:
    """A fresh service on a fresh simulator, idle, for one test."""
    with service_on_simulator(tmp_path) as app:
        yield app


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """One service for the tests that leave it as they found it (idle, not recording)."""
    with service_on_simulator(tmp_path_factory.mktemp("pi")) as app:
        yield app


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_manifest_digest_matches_the_bytes_sent_while_it_is_rewritten(served: ServedApp) -> None:
    """The manifest changes at every seal; its header must describe the body actually sent."""
    with served.client() as c:
        sid = c.post("/record/start", json={"roll_interval_s": 1}).json()["session_id"]
        deadline = time.monotonic() + 4
        fetched = set()
        while time.monotonic() < deadline:
            answer = c.get(f"/files/{sid}/manifest.json")
            assert answer.status_code == 200
            assert answer.headers["X-Content-SHA256"] == _sha(answer.content)
            fetched.add(len(json.loads(answer.content)["chunks"]))
        c.post("/record/stop", json={"session_id": sid})
    assert len(fetched) >= 3, "the manifest should have been rewritten while it was fetched"


def test_recording_lifecycle_files_and_tail(served: ServedApp) -> None:
    with served.client() as c:
        started = c.post("/record/start", json={"roll_interval_s": 1, "mission": "lab"})
        assert started.status_code == 200, started.text
        sid = started.json()["session_id"]
        assert started.json()["rate_hz"] == 1.0 and started.json()["schema_version"] == 1
        assert c.post("/record/start", json={}).status_code == 409
        wait_for(
            lambda: len(c.get("/record/snapshots", params={"session_id": sid}).json()) >= 2,
            15,
            "no sealed chunks",
        )
        marker = c.post(
            "/record/sync-marker",
            json={
                "session_id": sid,
                "sync_id": SYNC_ID,
                "marker_type": "PERIODIC",
                "periodic_sequence": 3,
            },
        )
        assert marker.status_code == 200, marker.text
        assert marker.json()["status"] == "injected"

        status = c.get("/record/status", params={"session_id": sid}).json()
        assert status["state"] == "recording" and status["rows"] > 0
        listed = {s["session_id"]: s for s in c.get("/record/sessions").json()}
        assert listed[sid]["state"] == "recording" and listed[sid]["open_chunk"]

        # the open chunk can be tailed, from the start and from the offset given back
        open_index = status["last_chunk_index"]
        tail = c.get("/record/tail", params={"session_id": sid, "index": open_index})
        assert tail.status_code == 200, tail.text
        assert tail.headers["X-Chunk-State"] == "open"
        assert tail.text.endswith("\n") and tail.text.startswith("timestamp,")
        nxt = int(tail.headers["X-Next-Offset"])
        assert nxt == len(tail.content)
        past = c.get(
            "/record/tail", params={"session_id": sid, "index": open_index, "offset": nxt + 10**6}
        )
        assert past.status_code == 416
        inside = c.get(
            "/record/tail", params={"session_id": sid, "index": open_index, "offset": nxt - 1}
        )
        assert inside.status_code == 422 and "start of a line" in inside.json()["detail"]
        assert c.get("/record/tail", params={"session_id": sid, "index": 999}).status_code == 404

        stop = c.post("/record/stop", json={"session_id": sid})
        assert stop.status_code == 200, stop.text
        assert c.post("/record/stop", json={"session_id": sid}).json() == stop.json()
        assert stop.json()["rows"] >= status["rows"]

        snaps = c.get("/record/snapshots", params={"session_id": sid}).json()
        assert (
            [s["index"] for s in snaps]
            == list(range(len(snaps)))
            == list(range(stop.json()["chunks"]))
        )
        rows = 0
        for snap in snaps:
            whole = c.get(f"/files/{sid}/{snap['name']}")
            assert whole.status_code == 200
            assert _sha(whole.content) == snap["sha256"] == whole.headers["X-Content-SHA256"]
            assert len(whole.content) == snap["size_bytes"]
            assert len(parse_chunk(whole.content)) == snap["rows"]
            rows += snap["rows"]
            # sealed tail: same bytes, with size and digest
            sealed = c.get("/record/tail", params={"session_id": sid, "index": snap["index"]})
            assert sealed.headers["X-Chunk-State"] == "sealed"
            assert sealed.headers["X-Content-SHA256"] == snap["sha256"]
            assert int(sealed.headers["X-Chunk-Size"]) == snap["size_bytes"] == len(sealed.content)
        assert rows == stop.json()["rows"]

        # Range requests on a sealed chunk
        name, size = snaps[0]["name"], snaps[0]["size_bytes"]
        full = c.get(f"/files/{sid}/{name}").content
        part = c.get(f"/files/{sid}/{name}", headers={"Range": "bytes=10-29"})
        assert part.status_code == 206 and part.content == full[10:30]
        assert part.headers["Content-Range"] == f"bytes 10-29/{size}"
        assert part.headers["X-Content-SHA256"] == _sha(full)
        suffix = c.get(f"/files/{sid}/{name}", headers={"Range": "bytes=-5"})
        assert suffix.status_code == 206 and suffix.content == full[-5:]
        bad = c.get(f"/files/{sid}/{name}", headers={"Range": f"bytes={size + 5}-"})
        assert bad.status_code == 416

        manifest = c.get(f"/files/{sid}/manifest.json")
        assert manifest.status_code == 200
        assert manifest.headers["X-Content-SHA256"] == _sha(manifest.content)
        assert json.loads(manifest.content)["state"] == "stopped"

        # after the stop, marker injection is refused; the session stays listed
        late = c.post(
            "/record/sync-marker",
            json={"session_id": sid, "sync_id": SYNC_ID, "marker_type": "STOP"},
        )
        assert late.status_code == 409
        assert c.get("/record/status", params={"session_id": sid}).json()["state"] == "stopped"


def test_sensor_control_and_config(served: ServedApp, tmp_path: Path) -> None:
    with served.client() as c:
        assert json.loads((tmp_path / "data" / "last_port.json").read_text())["baud"] == 9600
        config = c.post("/config", json={"averaging": 50, "adc_rate_hz": 250})
        assert config.status_code == 200, config.text
        assert config.json()["averaging"] == 50 and config.json()["adc_rate_hz"] == 250
        assert config.json()["sample_period_s"] == pytest.approx(0.2)
        polled = c.post("/config", json={"mode": "polled", "tag": "C"}).json()
        assert polled["mode"] == "polled" and polled["tag"] == "C"
        assert c.post("/config", json={"mode": "freerun", "tag": "C"}).status_code == 422

        started = c.post("/sensor/start", params={"poll_hz": 4})
        assert started.status_code == 200, started.text
        assert started.json()["mode"] == "polled"
        assert c.get("/status").json()["state"] == "polled"
        assert c.post("/sensor/start").status_code == 409
        assert c.post("/config", json={"averaging": 10}).status_code == 409
        wait_readings(c, 3)
        assert c.get("/latest").json()["mode"] == "polled"
        assert c.post("/sensor/pause").json()["status"] == "paused"
        assert c.get("/status").json()["state"] == "paused"
        assert c.post("/sensor/resume").json() == {"status": "resumed", "mode": "polled"}
        stopped = c.post("/sensor/stop")
        assert stopped.status_code == 200 and c.get("/status").json()["state"] == "idle"
        assert c.post("/sensor/pause").status_code == 409

        assert c.post("/config", json={"mode": "freerun"}).json()["mode"] == "freerun"
        rows = c.get("/recent", params={"seconds": 300}).json()["rows"]
        assert rows and all(isinstance(r["value"], str) for r in rows)

        assert c.post("/disconnect").json()["status"] == "disconnected"
        status = c.get("/status").json()
        assert not status["connected"] and status["state"] == "disconnected"
        assert c.post("/sensor/start").status_code == 409
        assert c.post("/record/start", json={}).status_code == 409
        health = c.get("/instrument/health").json()
        assert health["connected"] is False and health["disk_free_bytes"] > 0

        port = served.service.settings.serial_port
        again = c.post("/sensor/connect", params={"port": port, "baud": 9600})
        assert again.status_code == 200, again.text
        assert again.json() == {
            "status": "connected",
            "sensor_id": "Q12345",
            "port": port,
            "baud": 9600,
        }
        health = c.get("/instrument/health").json()
        assert health["connected"] and health["firmware"] == "4.003" and health["model"]
        auto = c.post("/sensor/start", params={"auto_record": "true"}).json()
        assert auto["recording"] is True and auto["session_id"]
        stopped = c.post("/sensor/stop").json()
        assert stopped["session_id"] == auto["session_id"]
        assert c.get("/status").json()["recording"] is False


def test_disk_below_the_floor_refuses_or_ends_a_recording(tmp_path: Path) -> None:
    floor = {"min_free_bytes": 2**62}
    with service_on_simulator(tmp_path, settings=floor) as app, app.client() as c:
        refused = c.post("/record/start", json={})
        assert refused.status_code == 507
        assert "free" in refused.json()["detail"]
        assert c.get("/record/sessions").json() == []
    with service_on_simulator(tmp_path / "second") as app, app.client() as c:
        sid = c.post("/record/start", json={"roll_interval_s": 1}).json()["session_id"]
        wait_readings(c, 3)
        # the disk fills up while recording: the recorder stops and seals by itself
        app.service._recorder.set_min_free_bytes(2**62)
        wait_for(lambda: not c.get("/status").json()["recording"], 10, "recording went on")
        listed = {s["session_id"]: s for s in c.get("/record/sessions").json()}[sid]
        assert listed["state"] == "stopped" and listed["open_chunk"] is None
        manifest = c.get(f"/files/{sid}/manifest.json").json()
        assert manifest["stop_reason"] == "disk_full"
        assert "disk_full" in c.get("/status").json()["last_error"]
        assert c.post("/record/stop", json={"session_id": sid}).json()["rows"] == listed["rows"]


@pytest.fixture(scope="module")
def recorded(shared_service: ServedApp) -> tuple[ServedApp, str]:
    """A short stopped session (two or more sealed chunks) on the shared service."""
    with shared_service.client() as c:
        sid = c.post("/record/start", json={"roll_interval_s": 1}).json()["session_id"]
        wait_for(
            lambda: len(c.get("/record/snapshots", params={"session_id": sid}).json()) >= 1,
            15,
            "no sealed chunk",
        )
        c.post("/record/stop", json={"session_id": sid})
        c.post("/sensor/stop")
    return shared_service, sid


@pytest.mark.parametrize(
    "path",
    [
        "/files/{sid}/..%2Fmanifest.json",
        "/files/{sid}/%2E%2E/%2E%2E/last_port.json",
        "/files/{sid}/../../last_port.json",
        "/files/{sid}/chunk_00000.csv.open",
        "/files/{sid}/.lock",
        "/files/{sid}/chunk_00099.csv",
        "/files/{sid}/%2Fetc%2Fpasswd",
        "/files/..%2F..%2Fetc/passwd",
        "/files/{sid}/manifest.json%00.csv",
        "/files/20990101T000000Z-00000000/manifest.json",
        "/files/not-a-session/manifest.json",
        "/record/status?session_id=..%2F..%2Fetc",
        "/record/snapshots?session_id=20990101T000000Z-00000000",
        "/record/tail?session_id={sid}&index=-1",
        "/record/tail?session_id={sid}&index=0&offset=-5",
        "/record/tail?session_id={sid}&index=0&offset=3",
        "/recent?seconds=0",
        "/recent?seconds=abc",
    ],
)
def test_traversal_and_malformed_reads_are_4xx(recorded: tuple[ServedApp, str], path: str) -> None:
    served, sid = recorded
    with served.client() as c:
        answer = c.send(httpx.Request("GET", served.url + path.format(sid=sid)))
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)
        assert "detail" in answer.json()
        assert c.get(f"/files/{sid}/chunk_00000.csv").status_code == 200  # the real file is


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/sensor/connect?port=/etc/passwd", None, 422),
        ("POST", "/sensor/connect?port=/dev/null", None, 422),
        ("POST", "/sensor/connect?port=/dev/ttyUSB987", None, 404),
        ("POST", "/sensor/connect?port=relative", None, 422),
        ("POST", "/sensor/connect?port={port}&baud=1234", None, 422),
        ("POST", "/sensor/start?poll_hz=-1", None, 422),
        ("POST", "/config", {"averaging": 0}, 422),
        ("POST", "/config", {"averaging": 70000}, 422),
        ("POST", "/config", {"adc_rate_hz": 100}, 422),
        ("POST", "/config", {"mode": "burst"}, 422),
        ("POST", "/config", {"tag": "a"}, 422),
        ("POST", "/config", {"tag": "B"}, 422),  # tag without polled mode
        ("POST", "/config", {"bogus": 1}, 422),
        ("POST", "/record/start", {"roll_interval_s": 0}, 422),
        ("POST", "/record/start", {"roll_interval_s": 301}, 422),
        ("POST", "/record/start", {"mission": "a\nb"}, 422),
        ("POST", "/record/start", {"rate_hz": "fast"}, 422),
        ("POST", "/record/stop", {}, 422),
        ("POST", "/record/stop", {"session_id": "../x"}, 422),
        ("POST", "/record/stop", {"session_id": "20990101T000000Z-00000000"}, 404),
        ("POST", "/record/stop", {"session_id": "current"}, 409),
        (
            "POST",
            "/record/sync-marker",
            {"session_id": "20990101T000000Z-00000000", "sync_id": SYNC_ID, "marker_type": "START"},
            404,
        ),
        (
            "POST",
            "/record/sync-marker",
            {
                "session_id": "20990101T000000Z-00000000",
                "sync_id": "not,hex\n",
                "marker_type": "START",
            },
            422,
        ),
        (
            "POST",
            "/record/sync-marker",
            {
                "session_id": "20990101T000000Z-00000000",
                "sync_id": "--------",
                "marker_type": "START",
            },
            422,
        ),
        (
            "POST",
            "/record/sync-marker",
            {
                "session_id": "20990101T000000Z-00000000",
                "sync_id": SYNC_ID,
                "marker_type": "PERIODIC",
            },
            422,
        ),
        (
            "POST",
            "/record/sync-marker",
            {"session_id": "20990101T000000Z-00000000", "sync_id": SYNC_ID, "marker_type": "BEGIN"},
            422,
        ),
    ],
)
def test_malformed_input_is_rejected_with_a_reason(
    shared_service: ServedApp, method: str, path: str, body: object, status: int
) -> None:
    served = shared_service
    with served.client() as c:
        url = path.format(port=served.service.settings.serial_port)
        answer = c.request(method, url, json=body)
        assert answer.status_code == status, answer.text
        assert answer.json()["detail"]
        assert c.get("/status").json()["connected"]  # nothing broke the link
    with served.client() as c:
        raw = c.post(
            "/record/start", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert raw.status_code == 422


def test_api_answers_while_the_device_is_being_configured(tmp_path: Path) -> None:
    """A slow menu exchange runs off the event loop: other requests complete meanwhile."""
    with SimulatorProcess(averaging=25, adc_rate=125, time_scale=1.0) as device:
        settings = ServiceSettings(data_dir=tmp_path / "data", serial_port=device.link)
        with ServedApp(settings) as app, app.client() as c:
            wait_connected(c)
            done = threading.Event()
            answers: list[httpx.Response] = []

            def configure() -> None:
                with app.client() as other:
                    answers.append(
                        other.post("/config", json={"mode": "polled", "tag": "D", "averaging": 30})
                    )
                done.set()

            worker = threading.Thread(target=configure)
            worker.start()
            answered_during = 0
            while not done.is_set():
                assert c.get("/status").status_code == 200
                assert c.get("/api/sync/time").status_code == 200
                if not done.is_set():
                    answered_during += 1
                time.sleep(0.02)
            worker.join()
            assert answers[0].status_code == 200, answers[0].text
            assert answers[0].json()["mode"] == "polled"
            assert answered_during >= 2, "no request completed while /config was in flight"


def test_cors_preflight_and_blueos_metadata(shared_service: ServedApp) -> None:
    with shared_service.client() as c:
        pre = c.options(
            "/record/start",
            headers={
                "Origin": "http://blueos.local",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] in ("*", "http://blueos.local")
        assert "POST" in pre.headers["access-control-allow-methods"]
        simple = c.get("/status", headers={"Origin": "http://192.168.2.2"})
        assert simple.headers["access-control-allow-origin"] == "*"

        meta = c.get("/register_service").json()
        assert meta["works_in_relative_paths"] is True
        assert meta["api"] == "/docs" and meta["extras"]["cockpit"] == "/cockpit_extras.json"
        for key in ("name", "description", "icon", "company", "version", "webpage"):
            assert meta[key]
        extras = c.get(meta["extras"]["cockpit"]).json()
        for snake, camel in (
            ("target_cockpit_api_version", "targetCockpitApiVersion"),
            ("target_system", "targetSystem"),
            ("http_json_actions", "httpJsonActions"),
        ):
            assert extras[snake] == extras[camel]
        urls = {a["url"].split(":9150", 1)[1]: a for a in extras["http_json_actions"]}
        assert set(urls) == {"/record/start", "/record/stop"}
        for path, action in urls.items():
            assert action["method"] == "POST" and action["name"]
            body = json.loads(action["body"])
            assert c.post(path, json=body).status_code in (200, 409)  # bodies the API accepts
        assert c.post("/sensor/stop").status_code == 200  # the shared service idle again
        assert c.get("/openapi.json").json()["paths"]["/record/tail"]
        assert c.get("/docs").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="/' not in page.text and 'href="/' not in page.text  # relative URLs only
        for asset in ("static/app.js", "static/chart.js", "static/style.css"):
            assert c.get(f"/{asset}").status_code == 200
