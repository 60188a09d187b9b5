"""qsensor-pi acceptance runs: a full minute of recording against the simulator's truth log, and
a kill -9 of the service process in the middle of a recording.

`test_long_60s_recording_matches_device_truth` is one of the suite's few LONG tests (~70 s).
"""

from __future__ import annotations

import hashlib
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_pi_harness import (
    FAST_SIM,
    ServedApp,
    ServiceProcess,
    wait_connected,
    wait_for,
    wait_readings,
)

from qsensor_core.recording import ChunkRow, parse_chunk
from qsensor_core.simulator.process import SimulatorProcess
from qsensor_pi.service import ServiceSettings

SYNC_ID = "c0ffee00-1111-4222-8333-444455556666"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_session(c: httpx.Client, sid: str) -> tuple[list[dict[str, Any]], list[ChunkRow]]:
    """Listed chunks and all their rows; every listed digest must match the bytes served."""
    snaps = c.get("/record/snapshots", params={"session_id": sid}).json()
    assert [s["index"] for s in snaps] == list(range(len(snaps)))
    rows: list[ChunkRow] = []
    for snap in snaps:
        body = c.get(f"/files/{sid}/{snap['name']}")
        assert body.status_code == 200
        assert _sha(body.content) == snap["sha256"] == body.headers["X-Content-SHA256"]
        chunk_rows = parse_chunk(body.content)  # raises on a torn line or a missing header
        assert len(chunk_rows) == snap["rows"]
        rows += chunk_rows
    return snaps, rows


def check_files_on_disk(session_dir: Path, snaps: list[dict[str, Any]]) -> None:
    assert not list(session_dir.glob("*.open"))
    for snap in snaps:
        assert _sha((session_dir / snap["name"]).read_bytes()) == snap["sha256"]


@pytest.mark.timeout(240)
def test_long_60s_recording_matches_device_truth(tmp_path: Path) -> None:
    """LONG (~70 s): 60 s at 5 readings/s with a 5 s roll; rows == the device's lines."""
    with SimulatorProcess(truth_log=tmp_path / "truth.csv", **FAST_SIM) as device:
        settings = ServiceSettings(data_dir=tmp_path / "data", serial_port=device.link)
        with ServedApp(settings) as app, app.client() as c:
            wait_connected(c)
            assert c.post("/sensor/start").status_code == 200
            wait_readings(c, 3)
            started = c.post("/record/start", json={"roll_interval_s": 5, "mission": "truth"})
            assert started.status_code == 200, started.text
            t_started = time.monotonic_ns()
            sid = started.json()["session_id"]

            markers = []
            for n in range(12):  # START, then PERIODIC every 5 s, STOP at the end
                kind = "START" if n == 0 else "PERIODIC"
                body = {"session_id": sid, "sync_id": SYNC_ID, "marker_type": kind}
                if kind == "PERIODIC":
                    body["periodic_sequence"] = n
                markers.append(c.post("/record/sync-marker", json=body).json())
                time.sleep(5)
            markers.append(
                c.post(
                    "/record/sync-marker",
                    json={"session_id": sid, "sync_id": SYNC_ID, "marker_type": "STOP"},
                ).json()
            )
            t_stop = time.monotonic_ns()
            stopped = c.post("/record/stop", json={"session_id": sid}).json()

            snaps, rows = download_session(c, sid)
            assert len(snaps) == stopped["chunks"] >= 12  # 60 s / 5 s, plus the last
            assert len(rows) == stopped["rows"]
            listed = {s["session_id"]: s for s in c.get("/record/sessions").json()}[sid]
            assert listed["state"] == "stopped" and listed["open_chunk"] is None
            assert listed["chunks"] == len(snaps) and listed["rows"] == len(rows)
            check_files_on_disk(tmp_path / "data" / "sessions" / sid, snaps)

        truth = device.read_truth()

    # rows: one sequence, in time order, markers exactly where the API said they went
    assert [r.seq for r in rows] == list(range(len(rows)))
    assert all(a.mono_ns <= b.mono_ns for a, b in pairwise(rows))
    assert all(a.timestamp <= b.timestamp for a, b in pairwise(rows))
    by_seq = {r.seq: r for r in rows}
    for answer in markers:
        row = by_seq[answer["seq"]]
        assert row.is_marker and row.sync_id == SYNC_ID
        assert row.mono_ns == answer["pi_monotonic_ns"] and row.timestamp == answer["timestamp"]
    assert [r.mode for r in rows if r.is_marker] == (
        ["SYNC_START"] + ["SYNC_PERIODIC"] * 11 + ["SYNC_STOP"]
    )

    # readings: exactly the lines the device wrote, in order, none missing in the window
    readings = [r for r in rows if not r.is_marker]
    assert len(readings) >= 250
    sensor_seqs = [r.sensor_seq for r in readings]
    assert sensor_seqs == list(range(sensor_seqs[0], sensor_seqs[0] + len(readings)))
    recorded = [", ".join(x for x in (r.value, r.temp_c, r.vin) if x) for r in readings]
    lines = [t["line"] for t in truth]
    monos = [int(t["mono_ns"]) for t in truth]
    candidates = [
        i
        for i in range(len(lines))
        if monos[i] <= readings[0].mono_ns and lines[i : i + len(recorded)] == recorded
    ]
    assert candidates, "the recorded readings are not a contiguous run of the device's lines"
    first = candidates[-1]
    inside = [i for i, mono in enumerate(monos) if t_started + 0.5e9 <= mono <= t_stop - 0.5e9]
    assert first <= inside[0] and inside[-1] < first + len(recorded)


@pytest.mark.timeout(120)
def test_kill_9_during_recording_then_recover(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SimulatorProcess(**FAST_SIM) as device:
        first = ServiceProcess("--data", str(data), "--serial", device.link)
        try:
            with first.client() as c:
                wait_connected(c)
                sid = c.post("/record/start", json={"roll_interval_s": 4}).json()["session_id"]
                tailed: dict[str, Any] = {}

                def open_chunk_has_rows() -> bool:
                    status = c.get("/record/status", params={"session_id": sid}).json()
                    sealed = c.get("/record/snapshots", params={"session_id": sid}).json()
                    index = status["last_chunk_index"]
                    if len(sealed) < 2 or status["backlog"] or index != len(sealed):
                        return False
                    # a tail read also makes the recorder hand its buffer to the OS
                    tail = c.get("/record/tail", params={"session_id": sid, "index": index})
                    tailed.update(index=index, lines=tail.text.count("\n") - 1, before=sealed)
                    return tail.headers.get("X-Chunk-State") == "open" and tailed["lines"] >= 3

                wait_for(open_chunk_has_rows, 30, "no data in the open chunk")
        finally:
            first.kill9()
        session_dir = data / "sessions" / sid
        assert list(session_dir.glob("chunk_*.csv.open")), "the kill left no open chunk"

        # restart on the same data folder, without --serial: it reconnects to the saved port
        second = ServiceProcess("--data", str(data))
        try:
            with second.client() as c:
                wait_connected(c)
                listed = {s["session_id"]: s for s in c.get("/record/sessions").json()}[sid]
                assert listed["state"] == "interrupted" and listed["open_chunk"] is None
                snaps, rows = download_session(c, sid)
                before = tailed["before"]
                assert snaps[: len(before)] == before  # sealed chunks untouched
                recovered = snaps[len(before) :]
                assert recovered[0]["index"] == tailed["index"]  # the open chunk, now sealed
                assert recovered[0]["rows"] >= tailed["lines"]  # with every row it had
                assert listed["chunks"] == len(snaps) and listed["rows"] == len(rows)
                assert [r.seq for r in rows] == list(range(len(rows)))
                manifest = c.get(f"/files/{sid}/manifest.json").json()
                assert manifest["totals"]["rows"] == sum(s["rows"] for s in snaps)
                assert manifest["totals"]["bytes"] == sum(s["size_bytes"] for s in snaps)
                check_files_on_disk(session_dir, snaps)
                stop = c.post("/record/stop", json={"session_id": sid})
                assert stop.status_code == 200 and stop.json()["rows"] == len(rows)
                # and it records again
                again = c.post("/record/start", json={"roll_interval_s": 1})
                assert again.status_code == 200, again.text
                c.post("/record/stop", json={"session_id": again.json()["session_id"]})
        finally:
            second.stop()
