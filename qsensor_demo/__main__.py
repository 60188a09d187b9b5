"""The whole system on one machine: Pi service on a simulated sensor, topside live mirror.

Starts `qsensor-pi serve --simulate` and `qsensor-topside run` as real processes on loopback,
records a short session with sync markers while printing the live readings and the mirror's
lag, stops it, waits until the topside has verified every chunk, and checks that the topside
files are byte-identical to the Pi's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from qsensor_core.processes import stop_process

VEHICLE = "rov"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _process(name: str, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose output goes to `log`; stopped with SIGTERM, then killed if stuck."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc, 15)
            print(f"{name} stopped (exit {proc.returncode}); its log: {log}")


def _wait_for(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        time.sleep(0.2)
    raise SystemExit(f"demo failed: {what} not ready after {timeout_s:.0f} s")


def _record(pi: httpx.Client, topside: httpx.Client, seconds: float) -> str:
    started = pi.post("/record/start", json={"mission": "demo", "roll_interval_s": 5}).json()
    session_id = started["session_id"]
    print(f"recording session {session_id} for {seconds:.0f} s (chunks roll every 5 s)")
    sync_id = str(uuid.uuid4())
    pi.post(
        "/record/sync-marker",
        json={"session_id": session_id, "sync_id": sync_id, "marker_type": "START"},
    ).raise_for_status()
    last_seq = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        for row in pi.get("/recent", params={"seconds": 2}).json()["rows"]:
            if row["seq"] > last_seq:
                last_seq = row["seq"]
                print(
                    f"  #{row['seq']:<4} {row['timestamp']}  value={row['value']}"
                    f"  TempC={row.get('TempC') or '-'}  Vin={row.get('Vin') or '-'}"
                )
        print(f"  topside: {_mirror_line(topside, session_id)}")
    pi.post(
        "/record/sync-marker",
        json={"session_id": session_id, "sync_id": sync_id, "marker_type": "STOP"},
    ).raise_for_status()
    stopped = pi.post("/record/stop", json={"session_id": session_id}).json()
    print(f"stopped: {stopped['rows']} rows in {stopped['chunks']} chunks")
    return session_id


def _session_status(topside: httpx.Client, session_id: str) -> dict | None:
    vehicle = topside.get(f"/status/vehicles/{VEHICLE}").json()
    return next((s for s in vehicle["sessions"] if s["session_id"] == session_id), None)


def _mirror_line(topside: httpx.Client, session_id: str) -> str:
    with contextlib.suppress(httpx.HTTPError):
        status = _session_status(topside, session_id)
        if status:
            lag = status["lag_s"]
            lag_text = f"{lag:.2f} s" if lag is not None else "-"
            return (
                f"{status['chunks_verified']}/{status['chunks_total']} sealed chunks verified,"
                f" following {status['tail_chunk'] or '-'}, lag {lag_text}"
            )
    return "waiting for the first mirror pass"


def _compare(pi_dir: Path, top_dir: Path) -> int:
    """Count of files that differ between the Pi's session folder and the topside's copy."""
    differing = 0
    for pi_file in [*sorted(pi_dir.glob("*.csv")), pi_dir / "manifest.json"]:
        top_file = top_dir / pi_file.name
        same = top_file.exists() and top_file.read_bytes() == pi_file.read_bytes()
        digest = hashlib.sha256(pi_file.read_bytes()).hexdigest()[:16]
        print(f"  {pi_file.name:<20} sha256 {digest}...  {'identical' if same else 'DIFFERENT'}")
        differing += not same
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the recording")
    parser.add_argument("--data", type=Path, help="folder for the demo's files (default: temp)")
    args = parser.parse_args()
    root = args.data or Path(tempfile.mkdtemp(prefix="qsensor-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    pi_port, status_port = _free_port(), _free_port()
    pi_url = f"http://127.0.0.1:{pi_port}"
    print(f"qsensor demo: files under {root}")
    pi_args = ["qsensor_pi", "serve", "--simulate", "--host", "127.0.0.1"]
    pi_args += ["--port", str(pi_port), "--data", str(root / "pi"), "--sim-averaging", "25"]
    top_args = ["qsensor_topside", "run", "--vehicle", f"{VEHICLE}={pi_url}", "--no-progress"]
    top_args += ["--data", str(root / "topside"), "--status-port", str(status_port)]
    with (
        _process("Pi service", pi_args, root / "pi.log"),
        _process("topside daemon", top_args, root / "topside.log"),
        httpx.Client(base_url=pi_url, timeout=10) as pi,
        httpx.Client(base_url=f"http://127.0.0.1:{status_port}", timeout=10) as topside,
    ):
        health = _wait_for(
            "Pi service and simulated sensor",
            lambda: (h := pi.get("/instrument/health").json())["connected"] and h,
            60,
        )
        print(f"Pi service on {pi_url}: sensor {health['model']} firmware {health['firmware']}")
        _wait_for("topside daemon", lambda: topside.get("/status").status_code == 200, 30)
        print(f"topside daemon mirroring into {root / 'topside'}")
        session_id = _record(pi, topside, args.seconds)
        _wait_for(
            "topside verification",
            lambda: (s := _session_status(topside, session_id)) and s["complete"],
            60,
        )
        print("topside verified every chunk; comparing files:")
        differing = _compare(
            root / "pi" / "sessions" / session_id, root / "topside" / VEHICLE / session_id
        )
    if differing:
        print(f"demo FAILED: {differing} file(s) differ")
        return 1
    print("demo OK: the topside holds a byte-identical, verified copy of the session")
    return 0


if __name__ == "__main__":
    sys.exit(main())
