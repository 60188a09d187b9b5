"""API latency of `qsensor-pi` while the sensor is being configured (target: < 100 ms).

Three clients each send 100 requests a second (one in flight at a time): GET /status and
GET /latest on kept-alive connections, as browsers and the topside mirror do, and GET /status
on a new connection per request. Meanwhile another client changes the averaging over and over with
POST /config, which takes a second or more on the device (menu round-trips at the
simulator's real delays). Baselines: the same load with the device idle, and while recording
at the device's fastest rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.pi_harness import BenchError, PiService, exit_on_sigterm, machine, quantile
from qsensor_core.simulator.process import SimulatorProcess

TARGET_MS = 100.0
PHASE_S = 6.0
REQUEST_INTERVAL_S = 0.01  # per client: a steady load, not a saturated 2-core machine
STALL_S = 0.02  # a probe waking up this late means the machine, not the service, was busy
CLIENTS = (  # (label, path, keep the connection alive)
    ("/status", "/status", True),
    ("/latest", "/latest", True),
    ("/status new", "/status", False),
)
AVERAGING_STEPS = (2, 1)  # alternated by the configuring client (500 Hz ADC: 250 and 500 lines/s)


@dataclass(frozen=True)
class Sample:
    client: str
    start: float  # perf_counter at send
    end: float  # perf_counter at answer

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


@dataclass(frozen=True)
class PhaseResult:
    name: str
    samples: dict[str, list[float]]  # client label -> latencies in ms
    seconds: float
    stalls_ms: list[float]  # the machine's, seen by StallProbe
    note: str = ""


_PROBE = """
import sys, time
while True:
    before = time.perf_counter()
    time.sleep(0.001)
    late = time.perf_counter() - before - 0.001
    if late > float(sys.argv[1]):
        print(late * 1000, flush=True)
"""


class StallProbe:
    """A separate process that sleeps 1 ms over and over and reports how late it woke up.

    Late wake-ups while the clients are slow mean the machine was busy (other work on a
    2-core machine), not that the service held its answers back.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> StallProbe:
        cmd = [sys.executable, "-c", _PROBE, str(STALL_S)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stalls_ms(self) -> list[float]:
        """Stop the probe; the wake-ups later than `STALL_S`, in ms."""
        assert self._proc is not None
        self._proc.kill()
        out, _ = self._proc.communicate()
        return [float(line) for line in out.split()]


class Hammer:
    """The `CLIENTS`, each sending a request every `REQUEST_INTERVAL_S` (or when the last one
    was answered, if that took longer), with a `StallProbe` watching the machine."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._samples: list[Sample] = []
        self._errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._loop, args=spec, daemon=True) for spec in CLIENTS
        ]
        self._probe = StallProbe()
        self.stalls_ms: list[float] = []

    def _loop(self, label: str, path: str, keepalive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
        with httpx.Client(base_url=self._url, timeout=10, limits=limits) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    answer = client.get(path)
                except httpx.HTTPError as exc:
                    self._errors.append(f"{label}: {exc!r}")
                    return  # reported by samples()
                end = time.perf_counter()
                if answer.status_code != 200:
                    self._errors.append(f"{label}: HTTP {answer.status_code}")
                self._samples.append(Sample(label, start, end))
                self._stop.wait(max(0.0, start + REQUEST_INTERVAL_S - time.perf_counter()))

    def __enter__(self) -> Hammer:
        self._probe.__enter__()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        self.stalls_ms = self._probe.stalls_ms()
        self._probe.__exit__()

    def samples(self) -> list[Sample]:
        if self._errors:
            raise BenchError(f"{len(self._errors)} failed requests, first: {self._errors[0]}")
        return list(self._samples)


def by_client(samples: Sequence[Sample]) -> dict[str, list[float]]:
    return {label: [s.ms for s in samples if s.client == label] for label, _, _ in CLIENTS}


def hammer_for(url: str, seconds: float, name: str) -> PhaseResult:
    with Hammer(url) as hammer:
        time.sleep(seconds)
    return PhaseResult(name, by_client(hammer.samples()), seconds, hammer.stalls_ms)


def configuring(url: str, client: httpx.Client, seconds: float) -> PhaseResult:
    """Hammer while POST /config changes the averaging; keep samples wholly inside a change."""
    spans: list[tuple[float, float]] = []
    t_end = time.monotonic() + seconds
    with Hammer(url) as hammer:
        step = 0
        while time.monotonic() < t_end:
            n = AVERAGING_STEPS[step % len(AVERAGING_STEPS)]
            start = time.perf_counter()
            client.post("/config", json={"averaging": n}).raise_for_status()
            spans.append((start, time.perf_counter()))
            step += 1
    inside = [s for s in hammer.samples() if _within(s, spans)]
    took = [(b - a) for a, b in spans]
    note = (
        f"{len(spans)} averaging changes, {statistics.mean(took):.2f} s each "
        f"({min(took):.2f}-{max(took):.2f} s); only requests sent and answered during one count"
    )
    return PhaseResult("configuring", by_client(inside), sum(took), hammer.stalls_ms, note)


def _within(sample: Sample, spans: Sequence[tuple[float, float]]) -> bool:
    return any(a <= sample.start and sample.end <= b for a, b in spans)


def recording(url: str, client: httpx.Client, seconds: float) -> PhaseResult:
    """Hammer while recording, once readings flow (the device restarts on start)."""
    client.post("/record/start", json={"mission": "latency-bench"}).raise_for_status()
    try:
        _wait_for(lambda: client.get("/status").json()["session"]["rows"] > 0, 15.0)
        rows_before = client.get("/status").json()["session"]["rows"]
        result = hammer_for(url, seconds, "recording")
        rows = client.get("/status").json()["session"]["rows"] - rows_before
    finally:
        client.post("/record/stop", json={"session_id": "current"}).raise_for_status()
        client.post("/sensor/stop").raise_for_status()
    return dataclasses.replace(result, note=f"{rows / seconds:.0f} lines/s being recorded")


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError("the service did not start receiving readings")
        time.sleep(0.1)


def print_table(results: Sequence[PhaseResult]) -> None:
    head = (
        f"{'phase':<12} {'client':<12} {'requests':>8} {'req/s':>6} "
        f"{'p50':>8} {'p95':>8} {'max':>8}"
    )
    print(head)
    print("-" * len(head))
    for phase in results:
        for label, ms in phase.samples.items():
            if len(ms) < 2:
                print(f"{phase.name:<12} {label:<12} {len(ms):>8}  (too few samples)")
                continue
            print(
                f"{phase.name:<12} {label:<12} {len(ms):>8} {len(ms) / phase.seconds:>6.0f} "
                f"{quantile(ms, 0.5):>6.2f}ms {quantile(ms, 0.95):>6.2f}ms {max(ms):>6.1f}ms"
            )
    for phase in results:
        if phase.note:
            print(f"{phase.name}: {phase.note}")
        if phase.stalls_ms:
            print(
                f"{phase.name}: the machine stalled {len(phase.stalls_ms)} times "
                f"(a 1 ms sleep in another process woke up to {max(phase.stalls_ms):.0f} ms late)"
            )


def verdict(phase: PhaseResult) -> str:
    """Against the target: the slowest answer of any client while a configuration ran."""
    worst = max((max(ms) for ms in phase.samples.values() if ms), default=float("nan"))
    mark = "PASS" if worst < TARGET_MS else "MISS"
    return f"{mark}: slowest answer while configuring {worst:.1f} ms (target < {TARGET_MS:.0f} ms)"


def keepalive_note(idle: PhaseResult) -> str | None:
    """Kept-alive requests far slower than new connections point at the TCP set-up, not the app."""
    kept = statistics.median(idle.samples["/status"])
    new = statistics.median(idle.samples["/status new"])
    if kept < max(10.0, 5 * new):
        return None
    return (
        f"note: idle GET /status takes {kept:.1f} ms on a kept-alive connection but {new:.1f} ms "
        "on a new one: the delay is in TCP (see docs/benchmarks.md), not in the handler"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="api_latency_bench", description=__doc__)
    ap.add_argument("--seconds", type=float, default=PHASE_S, help="length of each phase")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    rate = 1 / REQUEST_INTERVAL_S
    print(f"api latency: {args.seconds:g} s per phase, {len(CLIENTS)} clients at {rate:g} req/s")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="qsensor-latency-") as tmp:
        # Real device delays (time_scale 1): a configuration change takes as long as on the device.
        sim = SimulatorProcess(averaging=1, adc_rate=500, time_scale=1.0, seed=2)
        with sim, PiService(Path(tmp) / "data", sim.link) as service, service.client() as client:
            service.wait_connected(client)
            results = [hammer_for(service.url, args.seconds, "idle")]
            results.append(recording(service.url, client, args.seconds))
            results.append(configuring(service.url, client, args.seconds))
    print()
    print_table(results)
    if note := keepalive_note(results[0]):
        print(note)
    print(verdict(results[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
