"""Acceptance of the live mirror: the Pi service on a simulated sensor, the daemon, and a TCP
fault proxy between them. After every fault the topside files must be byte-identical to the
Pi's sealed files, every sealed chunk verified, and no row duplicated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from topside_support import (
    Daemon,
    PiService,
    Watch,
    assert_no_duplicate_rows,
    free_port,
    mirror_equals_pi,
    wait_for,
)

from benchmarks.mirror_bench import write_session

CUT_S = 30.0  # the acceptance number: a 30 s tether loss mid-session
CHUNK_BODY = b"content-type: text/csv; charset=utf-8\r\naccept-ranges"  # /files chunk answers
OPEN_TAIL = b"x-chunk-state: open"  # live-tail answers of the open chunk


def session(daemon: Daemon, session_id: str) -> dict:
    sessions = {s["session_id"]: s for s in daemon.vehicle()["sessions"]}
    return sessions.get(session_id, {})


def finish(pi: PiService, daemon: Daemon, *session_ids: str, timeout: float = 40) -> None:
    """Wait for the mirror to equal the Pi and say so in its status; check the rows."""
    wait_for(
        lambda: mirror_equals_pi(pi.sessions_dir(), daemon.folder),
        timeout,
        "the mirror to equal the Pi's files",
        interval=0.5,
    )
    wait_for(
        lambda: all(session(daemon, sid).get("complete") for sid in session_ids),
        10,
        "the status to report every session complete",
    )
    vehicle = daemon.vehicle()
    assert vehicle["chunks_pending"] == 0
    assert vehicle["chunks_failed"] == 0
    assert assert_no_duplicate_rows(daemon.folder) > 0
    assert not list(daemon.folder.glob("*/*.part"))


@pytest.fixture
def pi(tmp_path: Path):
    service = PiService(tmp_path / "pi", tmp_path / "pi.log")
    yield service
    service.stop()


@pytest.mark.timeout(150)
def test_link_cut_for_30_s_mid_session(pi: PiService, tmp_path: Path) -> None:
    sid = pi.start_recording(roll_interval_s=2)
    with FaultProxy(pi.port) as proxy:
        daemon = Daemon(proxy.url, tmp_path / "top", tmp_path / "top.log")
        try:
            wait_for(lambda: daemon.verified() >= 2, 30, "two chunks verified before the cut")
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: daemon.vehicle()["link"] == "down", 15, "status to show link down")
            held = daemon.verified()
            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
            assert daemon.verified() == held  # nothing arrived through a dead link
            proxy.restore()
            wait_for(lambda: daemon.vehicle()["link"] == "up", 20, "the link to come back")
            # the backlog of the cut is fetched while the session still records
            wait_for(
                lambda: (
                    (session(daemon, sid).get("lag_s") or 99) < 3
                    and session(daemon, sid)["chunks_pending"] <= 1
                ),
                30,
                "the mirror to catch up after the cut",
            )
            pi.stop_recording(sid)
            finish(pi, daemon, sid)
        finally:
            daemon.stop()


@pytest.mark.timeout(120)
def test_kill_9_during_a_transfer_then_restart_resumes(pi: PiService, tmp_path: Path) -> None:
    fast = PiService(tmp_path / "pi-fast", tmp_path / "pi-fast.log", "--sim-averaging", "1")
    try:
        sid = fast.start_recording(roll_interval_s=3)
        time.sleep(7)  # a backlog of sealed chunks before the daemon first runs
        top = tmp_path / "top"
        daemon = Daemon(fast.url, top, tmp_path / "top1.log", "--bwlimit", "6K")
        try:
            part = wait_for(
                lambda: _sealed_part(daemon.folder / sid), 30, "a sealed chunk half fetched"
            )
        finally:
            daemon.kill9()
        held = part.stat().st_size
        assert held > 0
        again = Daemon(fast.url, top, tmp_path / "top2.log", "--bwlimit", "0")
        try:
            wait_for(
                lambda: (
                    f"resuming {sid}/{part.name.removesuffix('.part')} from byte" in again.output()
                ),
                30,
                "the restarted daemon to resume the partial chunk with a Range request",
            )
            fast.stop_recording(sid)
            finish(fast, again, sid)
        finally:
            again.stop()
    finally:
        fast.stop()


def _sealed_part(folder: Path) -> Path | None:
    """A `.part` of a chunk the local manifest lists as sealed, with some bytes in it."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    chunks = json.loads(manifest.read_bytes())["chunks"]
    sealed = {f"{c['name']}.part" for c in chunks}
    for part in folder.glob("*.part"):
        if part.name in sealed and part.stat().st_size > 0:
            return part
    return None


@pytest.mark.timeout(120)
def test_bytes_corrupted_in_transit_are_caught_and_refetched(pi: PiService, tmp_path: Path) -> None:
    sid = pi.start_recording(roll_interval_s=3)
    time.sleep(4)  # one sealed chunk waits for the daemon: it comes through GET /files
    with FaultProxy(pi.port) as proxy:
        proxy.corrupt_next_body(CHUNK_BODY)
        daemon = Daemon(proxy.url, tmp_path / "top", tmp_path / "top.log")
        try:
            wait_for(lambda: proxy.corrupted, 20, "a chunk download to be corrupted")
            proxy.corrupt_next_body(OPEN_TAIL, skip=100)
            wait_for(lambda: len(proxy.corrupted) == 2, 20, "a live-tail answer to be corrupted")
            wait_for(
                lambda: (
                    daemon.output().count("fetching it whole") >= 1
                    and "manifest says" in daemon.output()
                ),
                30,
                "both corruptions to be detected",
            )
            pi.stop_recording(sid)
            finish(pi, daemon, sid)
        finally:
            daemon.stop()


@pytest.mark.timeout(150)
def test_pi_service_restart_mid_session(tmp_path: Path) -> None:
    data = tmp_path / "pi"
    first = PiService(data, tmp_path / "pi1.log")
    sid = first.start_recording(roll_interval_s=2)
    with FaultProxy(first.port) as proxy:
        daemon = Daemon(proxy.url, tmp_path / "top", tmp_path / "top.log")
        second = None
        try:
            wait_for(lambda: daemon.verified() >= 2, 30, "chunks verified before the crash")
            first.kill9()  # the Pi dies mid-session, its open chunk unsealed
            second = PiService(data, tmp_path / "pi2.log")
            proxy.retarget(second.port)
            wait_for(
                lambda: session(daemon, sid).get("state") == "interrupted",
                30,
                "the mirror to see the recovered session",
            )
            sid2 = second.start_recording(roll_interval_s=2)
            wait_for(
                lambda: session(daemon, sid2).get("chunks_verified", 0) >= 2, 30, "new session"
            )
            second.stop_recording(sid2)
            finish(second, daemon, sid, sid2)
        finally:
            daemon.stop()
            if second is not None:
                second.stop()
            first.stop()


@pytest.mark.timeout(90)
def test_a_session_started_during_a_capped_backlog_is_tailed_at_once(tmp_path: Path) -> None:
    data = tmp_path / "pi"
    old, _ = write_session(data, chunks=8, chunk_bytes=192 * 1024)  # 1.5 MiB: ~30 s at 48K
    pi = PiService(data, tmp_path / "pi.log")
    daemon = None
    try:
        daemon = Daemon(pi.url, tmp_path / "top", tmp_path / "top.log", "--bwlimit", "48K")
        wait_for(lambda: daemon.vehicle()["bytes_received"] > 0, 20, "the backlog to start")
        sid = pi.start_recording(roll_interval_s=2)

        def tailed() -> dict | None:
            sessions = {s["session_id"]: s for s in daemon.vehicle()["sessions"]}
            return sessions if sessions.get(sid, {}).get("lag_s") is not None else None

        sessions = wait_for(tailed, 20, "the new session to be tailed")
        assert sessions[old]["backlog_bytes"] > 0  # tailed before the backlog was through
        pi.stop_recording(sid)
    finally:
        if daemon is not None:
            daemon.stop()
        pi.stop()


def test_status_command_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qsensor_topside", "status", "--status-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_two_vehicles_each_in_its_own_folder_and_the_status_command(
    pi: PiService, tmp_path: Path
) -> None:
    other = PiService(tmp_path / "pi-b", tmp_path / "pi-b.log")
    try:
        sid_a = pi.start_recording(roll_interval_s=2)
        sid_b = other.start_recording(roll_interval_s=2)
        daemon = Daemon(
            pi.url,
            tmp_path / "top",
            tmp_path / "top.log",
            name="rov-a",
            more=(("rov-b", other.url),),
        )
        try:
            with Watch(daemon) as watch:
                wait_for(
                    lambda: (
                        daemon.vehicle(0)["chunks_verified"] >= 1
                        and daemon.vehicle(1)["chunks_verified"] >= 1
                    ),
                    20,
                    "a verified chunk from each vehicle",
                )
                wait_for(lambda: len(watch.samples) > 4, 10, "status samples")
            command = ["qsensor_topside", "status", "--status-port", str(daemon.status_port)]
            result = subprocess.run(
                [sys.executable, "-m", *command],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert "rov-a" in result.stdout and "rov-b" in result.stdout
            assert sid_a in result.stdout and sid_b in result.stdout
            assert "link up" in result.stdout
            lags = [s["sessions"][0]["lag_s"] for s in watch.samples if s["sessions"]]
            assert any(lag is not None for lag in lags)
            pi.stop_recording(sid_a)
            other.stop_recording(sid_b)
            finish(pi, daemon, sid_a)
            wait_for(
                lambda: mirror_equals_pi(other.sessions_dir(), tmp_path / "top" / "rov-b"),
                30,
                "the second vehicle's mirror",
            )
            assert not list((tmp_path / "top" / "rov-a").glob(f"{sid_b}*"))
        finally:
            daemon.stop()
    finally:
        other.stop()


@pytest.mark.timeout(90)
def test_low_disk_stops_fetching_keeps_verified_and_alerts(pi: PiService, tmp_path: Path) -> None:
    sid = pi.start_recording(roll_interval_s=2)
    top = tmp_path / "top"
    first = Daemon(pi.url, top, tmp_path / "top1.log")
    try:
        wait_for(lambda: first.verified() >= 2, 20, "chunks verified")
    finally:
        first.stop()
    kept = {p.name: p.read_bytes() for p in (first.folder / sid).glob("chunk_*.csv")}
    starved = Daemon(pi.url, top, tmp_path / "top2.log", "--min-free", "1000000G")
    try:
        status = wait_for(lambda: (s := starved.status())["alerts"] and s, 15, "a disk alert")
        assert "disk low" in status["alerts"][0]
        assert status["vehicles"][0]["disk_alert"]
        time.sleep(3)  # chunks are sealed meanwhile, none is fetched
        assert {p.name for p in (first.folder / sid).glob("chunk_*.csv")} == set(kept)
        assert "fetching stopped" in starved.output()
    finally:
        starved.stop()
    assert {p.name: p.read_bytes() for p in (first.folder / sid).glob("chunk_*.csv")} == kept
    again = Daemon(pi.url, top, tmp_path / "top3.log")
    try:
        assert not again.status()["alerts"]
        pi.stop_recording(sid)
        finish(pi, again, sid)
    finally:
        again.stop()
