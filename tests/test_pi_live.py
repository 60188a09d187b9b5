"""qsensor-pi live streams: Server-Sent Events (with Last-Event-ID replay) and the WebSocket."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_pi_harness import ServedApp, service_on_simulator, wait_for
from websockets.sync.client import connect as ws_connect

from qsensor_pi.events import Event, EventHub, SubscriberOverflow

SYNC_ID = "5ca1ab1e-0000-4000-8000-00000000beef"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApp]:
    with service_on_simulator(tmp_path) as app:
        yield app


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into dicts {event, id, data, comment}."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "":
            event["comment"] = value
        elif field == "data":
            event["data"] = json.loads(value)
        else:
            event[field] = value


def collect(
    client: httpx.Client, until: Any, headers: dict[str, str] | None = None, **params: str
) -> list[dict[str, Any]]:
    """Events from a fresh /events connection until `until(events)` holds."""
    got: list[dict[str, Any]] = []
    with client.stream("GET", "/events", headers=headers or {}, params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            got.append(event)
            if until(got):
                return got
    raise AssertionError(f"stream ended early: {got}")


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


def test_sse_events_and_last_event_id_replay(served: ServedApp) -> None:
    with served.client(timeout=20) as c, served.client(timeout=20) as actions:
        state: dict[str, str] = {}

        def act_then_wait(events: list[dict[str, Any]]) -> bool:
            if len(events) == 1:  # connected: the snapshot arrived first
                assert events[0]["event"] == "state"
                assert events[0]["data"]["kind"] == "snapshot"
                started = actions.post("/record/start", json={"roll_interval_s": 1})
                state["sid"] = started.json()["session_id"]
            sealed = named(events, "chunk_sealed")
            if len(sealed) >= 3 and "marker" not in state:
                marker = actions.post(
                    "/record/sync-marker",
                    json={"session_id": state["sid"], "sync_id": SYNC_ID, "marker_type": "START"},
                )
                state["marker"] = marker.json()["seq"]
            if named(events, "marker") and "stopped" not in state:
                actions.post("/record/stop", json={"session_id": state["sid"]})
                state["stopped"] = "yes"
            return any(e["data"].get("action") == "stopped" for e in named(events, "session"))

        events = collect(c, act_then_wait)
        sid = state["sid"]
        sessions = named(events, "session")
        assert sessions[0]["data"]["action"] == "started"
        assert sessions[0]["data"]["session_id"] == sid
        assert sessions[-1]["data"]["session_id"] == sid
        readings = named(events, "reading")
        assert readings and all(isinstance(r["data"]["value"], str) for r in readings)
        marker = named(events, "marker")[0]["data"]
        assert marker["sync_id"] == SYNC_ID and marker["seq"] == state["marker"]
        assert any(e["data"]["kind"] == "recording_started" for e in named(events, "state"))

        snaps = c.get("/record/snapshots", params={"session_id": sid}).json()
        sealed = named(events, "chunk_sealed")
        assert [e["id"] for e in sealed] == [f"{sid}/{s['index']}" for s in snaps]
        assert [e["data"] for e in sealed] == [{"session_id": sid, **s} for s in snaps]

        # Reconnect as a mirror that had seen chunk 0: the rest is replayed from the manifests
        def live(got: list[dict[str, Any]]) -> bool:
            return got[-1].get("event") == "state"  # the replay is over, the live part begins

        again = collect(c, live, headers={"Last-Event-ID": f"{sid}/0"})
        ids = [e["id"] for e in again[:-1]]
        assert ids == [f"{sid}/{s['index']}" for s in snaps[1:]]

        # the query form, and an id the service does not know (replays everything)
        via_query = collect(c, live, since=f"{sid}/1")
        assert [e["id"] for e in via_query[:-1]] == ids[1:]
        everything = collect(c, live, headers={"Last-Event-ID": "gone/7"})
        assert [e["id"] for e in everything[:-1]] == [e["id"] for e in sealed]


@pytest.mark.parametrize("since", ["x/\u00b2", "/", "a/b/c", "../0"])
def test_unparsable_event_ids_replay_everything_and_keep_the_stream(
    served: ServedApp, since: str
) -> None:
    with served.client(timeout=20) as c:
        events = collect(c, lambda got: got[-1].get("event") == "state", since=since)
    assert [e["data"]["kind"] for e in events] == ["snapshot"]  # no session yet, nothing to replay


def test_websocket_sends_datalake_frames(served: ServedApp) -> None:
    with served.client() as c:
        assert c.post("/sensor/start").status_code == 200
        url = served.url.replace("http://", "ws://") + "/ws/readings"
        frames: list[str] = []
        with ws_connect(url, open_timeout=10) as ws:
            deadline = time.monotonic() + 15
            while len(frames) < 9 and time.monotonic() < deadline:
                frames.append(ws.recv(timeout=10))
        pattern = re.compile(r"qsensor_(value|temp|vin)=-?\d+\.\d+")
        assert all(pattern.fullmatch(f) for f in frames), frames
        names = {f.split("=")[0] for f in frames}
        assert names == {"qsensor_value", "qsensor_temp", "qsensor_vin"}
        values = {r["value"] for r in c.get("/recent", params={"seconds": 60}).json()["rows"]}
        sent = {f.split("=")[1] for f in frames if f.startswith("qsensor_value=")}
        assert sent <= values  # exactly the device's text
        wait_for(lambda: served.service.hub.subscriber_count == 0, 10, "socket not released")


def test_event_hub_fans_out_across_threads_and_drops_a_stalled_subscriber() -> None:
    async def scenario() -> None:
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        with hub.subscribe(frozenset({"reading"})) as readings, hub.subscribe() as stalled:
            thread = threading.Thread(
                target=lambda: [hub.publish(Event("reading", {"n": i})) for i in range(900)]
            )
            thread.start()
            received = [(await readings.get()).data["n"] for _ in range(900)]
            thread.join()
            assert received == list(range(900))  # in order, none lost
            for i in range(200):
                hub.publish(Event("marker", {"n": i}))  # the stalled one never reads
            await asyncio.sleep(0)
            assert hub.subscriber_count == 1  # dropped; the readings subscriber stays
            assert readings.queue.empty()  # markers were filtered out for it
            with pytest.raises(SubscriberOverflow):
                while True:
                    await stalled.get()
        assert hub.subscriber_count == 0

    asyncio.run(scenario())
