"""Live-mirror figures of `qsensor-topside` against the real `qsensor-pi` on loopback.

1. lag while recording at the daemon's default settings (the status API's `lag_s`: topside
   wall clock minus the newest mirrored row's timestamp), p50/p95 (target p95 <= 2 s);
2. bandwidth held against a cap while a backlog exists, over sliding 10 s windows, counted
   on the wire by a relay in front of the Pi and by the daemon (target <= 1.05x the cap and
   >= 0.9x while the backlog lasts);
3. catch-up throughput with no cap: a big pre-recorded session, written in the recording
   format (schema 1) into the Pi's data folder, mirrored from scratch (target >= 100 MB/s).

Run with `python -m benchmarks.mirror_bench` (options: --help). Prints figures; no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.pi_harness import cpu_seconds
from qsensor_core.clock import iso_utc
from qsensor_core.processes import stop_process
from qsensor_core.recording.csv_format import HEADER_BYTES, ChunkTally
from qsensor_core.recording.layout import chunk_name, new_session_id
from qsensor_core.recording.manifest import ChunkInfo, Manifest, write_manifest

KiB, MiB = 1024, 1024 * 1024
SIM_25HZ = ("--sim-averaging", "5", "--sim-adc-rate", "125", "--sim-time-scale", "0.05")


# -- processes ---------------------------------------------------------------------------------


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A process of ours with its output in a file; stop() ends it and what it started."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        children = [
            int(pid)
            for task in Path(f"/proc/{self.proc.pid}/task").glob("*/children")
            for pid in task.read_text().split()
        ]
        stop_process(self.proc, 15)
        for pid in children:  # the Pi's simulator outlives a signalled service
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self._out.close()


def start_pi(data: Path, log: Path, *extra: str) -> tuple[Child, str]:
    cmd = [sys.executable, "-m", "qsensor_pi", "serve", "--data", str(data), "--host"]
    pi = Child([*cmd, "127.0.0.1", "--port", "0", "--log-level", "warning", *extra], log)

    def url() -> str | None:
        if pi.proc.poll() is not None:
            raise RuntimeError(f"qsensor-pi exited: {pi.text()}")
        lines = [x for x in pi.text().splitlines() if "listening on http://" in x]
        return lines[0].split("listening on ")[1].strip() if lines else None

    return pi, _wait(url, 30, "qsensor-pi")


def start_daemon(url: str, data: Path, log: Path, *extra: str) -> tuple[Child, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "qsensor_topside", "run", "--vehicle", f"rov={url}"]
    daemon = Child([*cmd, "--data", str(data), "--status-port", str(port), *extra], log)
    status = f"http://127.0.0.1:{port}/status"

    def up() -> bool:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"qsensor-topside exited: {daemon.text()}")
        try:
            return httpx.get(status, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up, 20, "qsensor-topside")
    return daemon, status


def start_recording(url: str, roll_interval_s: float) -> str:
    body = {"roll_interval_s": roll_interval_s, "mission": "bench"}

    def attempt() -> str | None:
        reply = httpx.post(f"{url}/record/start", json=body, timeout=10)
        return reply.json()["session_id"] if reply.status_code == 200 else None

    return _wait(attempt, 30, "recording to start", interval=0.3)


def vehicle(status_url: str) -> dict:
    return httpx.get(status_url, timeout=10).json()["vehicles"][0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- a byte-counting relay ---------------------------------------------------------------------


class CountingRelay:
    """The tether: a TCP relay in a thread that holds almost nothing in flight and logs
    (time, bytes) as it hands the Pi's bytes to the daemon's socket."""

    BUFFER = 16 * KiB

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.events: list[tuple[float, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.BUFFER)
        writer.transport.set_write_buffer_limits(high=self.BUFFER)
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port, limit=self.BUFFER
        )
        await asyncio.gather(
            self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True)
        )

    async def _pipe(self, reader: Any, writer: Any, count: bool) -> None:
        try:
            while data := await reader.read(self.BUFFER):
                writer.write(data)
                await writer.drain()
                if count:
                    self.events.append((time.monotonic(), len(data)))
        except OSError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


# -- a pre-recorded session --------------------------------------------------------------------


def write_session(data: Path, chunks: int, chunk_bytes: int) -> tuple[str, int]:
    """A stopped session of `chunks` chunks of about `chunk_bytes`, in the recording format."""
    start_ns = (time.time_ns() // 10**9 - 3600) * 10**9
    session_id = new_session_id(start_ns)
    folder = data / "sessions" / session_id
    folder.mkdir(parents=True)
    infos, seq, total = [], 0, 0
    for index in range(chunks):
        first = seq
        lines, size = [HEADER_BYTES], len(HEADER_BYTES)
        while size < chunk_bytes:
            rows = _rows(start_ns, seq, ROWS_PER_SECOND - seq % ROWS_PER_SECOND)
            lines.append(rows)
            size += len(rows)
            seq += ROWS_PER_SECOND - seq % ROWS_PER_SECOND
        body = b"".join(lines)
        (folder / chunk_name(index)).write_bytes(body)
        tally = ChunkTally(
            size_bytes=len(body),
            rows=seq - first,
            readings=seq - first,
            first_seq=first,
            last_seq=seq - 1,
            first_timestamp=_stamp(start_ns, first),
            last_timestamp=_stamp(start_ns, seq - 1),
        )
        infos.append(ChunkInfo.from_tally(index, tally, sha256=hashlib.sha256(body).hexdigest()))
        total += len(body)
    manifest = Manifest(
        session_id=session_id,
        mission="bench-backlog",
        sensor_id="Q12345",
        sensor_config={},
        started_at=iso_utc(start_ns),
        stopped_at=_stamp(start_ns, seq),
        state="stopped",
        stop_reason="requested",
        roll_interval_s=60.0,
        max_chunk_bytes=16 * MiB,
        chunks=infos,
    )
    write_manifest(folder, manifest)
    return session_id, total


ROW_PERIOD_NS = 8_000_000
ROWS_PER_SECOND = 125  # start_ns is a whole second, so row k of a second is at k * 8 ms


def _stamp(start_ns: int, seq: int) -> str:
    """iso_utc of row `seq`, built from its whole second (iso_utc per row is slow)."""
    wall_ns = start_ns + seq * ROW_PERIOD_NS
    head, tail = _second(wall_ns // 10**9)
    return f"{head}{(wall_ns % 10**9) // 1000:06d}{tail}"


@functools.lru_cache(maxsize=4)
def _second(second: int) -> tuple[str, str]:
    text = iso_utc(second * 10**9)
    return text[:20], text[26:]


_VALUES = [f"{0.01 + i * 1e-5:.6f}" for i in range(977)]


def _rows(start_ns: int, first: int, count: int) -> bytes:
    """`count` consecutive rows from `first`, all within one second."""
    head, tail = _second((start_ns + first * ROW_PERIOD_NS) // 10**9)
    return "".join(
        f"{head}{(seq % ROWS_PER_SECOND) * 8000:06d}{tail},Q12345,freerun,{_VALUES[seq % 977]},"
        f"26.59,7.494,{seq},{seq * ROW_PERIOD_NS},{seq},,\n"
        for seq in range(first, first + count)
    ).encode()


# -- the three measurements --------------------------------------------------------------------


def bench_lag(work: Path, seconds: float) -> None:
    pi, url = start_pi(work / "lag-pi", work / "lag-pi.log", "--simulate", *SIM_25HZ)
    daemon = None
    try:
        sid = start_recording(url, roll_interval_s=10)
        daemon, status = start_daemon(url, work / "lag-top", work / "lag-top.log")
        time.sleep(3)  # first poll, first chunk
        lags: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sessions = {s["session_id"]: s for s in vehicle(status)["sessions"]}
            lag = sessions.get(sid, {}).get("lag_s")
            if lag is not None:
                lags.append(lag)
            time.sleep(0.1)
        print(
            f"lag while recording (25 rows/s, 10 s chunks, default settings), {len(lags)} samples:"
        )
        print(
            f"  p50 {percentile(lags, 0.5):.2f} s   p95 {percentile(lags, 0.95):.2f} s   "
            f"max {max(lags):.2f} s   (target p95 <= 2 s)"
        )
    finally:
        if daemon:
            daemon.stop()
        pi.stop()


def windows(events: list[tuple[float, int]], start: float, end: float, width: float) -> list[float]:
    """Bytes per second in every `width`-second window in [start, end), stepped by 0.5 s."""
    rates, t = [], start
    while t + width <= end:
        rates.append(sum(n for at, n in events if t <= at < t + width) / width)
        t += 0.5
    return rates


def bench_bandwidth(work: Path, cap: str, cap_bytes: int, backlog_bytes: int) -> None:
    data = work / "bw-pi"
    chunks = max(2, backlog_bytes // (4 * MiB))
    write_session(data, chunks, backlog_bytes // chunks)
    pi, url = start_pi(data, work / "bw-pi.log")
    relay = CountingRelay(int(url.rsplit(":", 1)[1]))
    daemon = None
    try:
        daemon, status = start_daemon(
            f"http://127.0.0.1:{relay.port}", work / "bw-top", work / "bw-top.log", "--bwlimit", cap
        )
        started = time.monotonic()
        samples: list[tuple[float, int]] = []
        while True:
            v = vehicle(status)
            samples.append((time.monotonic(), v["bytes_received"]))
            if v["backlog_bytes"] == 0 and v["chunks_pending"] == 0 and v["chunks_verified"]:
                break
            time.sleep(0.25)
        done = time.monotonic()
        daemon_events = [(t, b - a) for (_, a), (t, b) in itertools.pairwise(samples)]
        wire = windows(relay.events, started, done, 10.0)
        app = windows(daemon_events, started, done, 10.0)
        print(
            f"bandwidth with --bwlimit {cap} ({cap_bytes / KiB:.0f} KiB/s), backlog "
            f"{backlog_bytes / MiB:.1f} MiB fetched in {done - started:.1f} s, "
            f"{len(wire)} sliding 10 s windows:"
        )
        for label, rates in (("on the wire", wire), ("daemon count", app)):
            if rates:
                print(
                    f"  {label:13s} max {max(rates) / cap_bytes:.3f}x cap   "
                    f"min {min(rates) / cap_bytes:.3f}x cap   (targets <= 1.05x, >= 0.9x)"
                )
    finally:
        if daemon:
            daemon.stop()
        relay.close()
        pi.stop()


def bench_catch_up(work: Path, total_bytes: int) -> None:
    data = work / "cu-pi"
    chunks = max(1, total_bytes // (16 * MiB))
    made = time.monotonic()
    _, size = write_session(data, chunks, total_bytes // chunks)
    os.sync()  # a recorded session is on disk already, not dirty in the page cache
    print(
        f"catch-up: wrote a {size / MiB:.0f} MiB session ({chunks} chunks) in "
        f"{time.monotonic() - made:.1f} s"
    )
    pi, url = start_pi(data, work / "cu-pi.log")
    daemon = None
    try:
        launched = time.monotonic()
        daemon, status = start_daemon(url, work / "cu-top", work / "cu-top.log", "--bwlimit", "0")
        first, cpu_first = None, (0.0, 0.0)
        while True:
            v = vehicle(status)
            if first is None and v["bytes_received"] > 0:
                first = time.monotonic()
                cpu_first = cpu_seconds(daemon.proc.pid), cpu_seconds(pi.proc.pid)
            if v["chunks_verified"] == chunks and v["chunks_pending"] == 0:
                break
            time.sleep(0.05)
        done = time.monotonic()
        cpu_daemon = cpu_seconds(daemon.proc.pid) - cpu_first[0]
        cpu_pi = cpu_seconds(pi.proc.pid) - cpu_first[1]
        print(
            f"  uncapped on loopback: {size / (done - first) / 1e6:.0f} MB/s from first byte "
            f"to last chunk verified ({done - first:.2f} s); "
            f"{size / (done - launched) / 1e6:.0f} MB/s including daemon start-up "
            f"(target >= 100 MB/s)"
        )
        print(
            f"  CPU while fetching: daemon {cpu_daemon:.2f} s ({cpu_daemon * 1e9 / size:.1f} ms/MB)"
            f", Pi service {cpu_pi:.2f} s ({os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f}: other work on this machine slows the figure above)"
        )
    finally:
        if daemon:
            daemon.stop()
        pi.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mirror_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--lag-seconds", type=float, default=30.0)
    parser.add_argument("--cap", default="500K", help="bandwidth cap for the cap test")
    parser.add_argument("--backlog-mib", type=float, default=16.0, help="backlog for the cap test")
    parser.add_argument("--catch-up-mib", type=int, default=512)
    parser.add_argument("--only", choices=("lag", "bandwidth", "catch-up"))
    args = parser.parse_args(argv)
    from qsensor_topside.bwlimit import parse_bwlimit

    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "lag"):
            bench_lag(work, args.lag_seconds)
        if args.only in (None, "bandwidth"):
            bench_bandwidth(work, args.cap, parse_bwlimit(args.cap), int(args.backlog_mib * MiB))
        if args.only in (None, "catch-up"):
            bench_catch_up(work, args.catch_up_mib * MiB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
