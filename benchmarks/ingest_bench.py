"""Ingest capacity of `qsensor-pi`: lines per second recorded with nothing lost, and its CPU.

For each rate the real service process records the simulator for a fixed time through the
HTTP API; the sealed chunks are then compared line by line with the simulator's truth log
(every data line it wrote into the pty). Rates above the device's fastest (averaging 1 at
500 Hz = 500 lines/s) use the simulator's `--bench-speedup`.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import csv
import os
import statistics
import tempfile
import time
import tty
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.pi_harness import (
    BenchError,
    CpuMeter,
    PiService,
    child_pid,
    exit_on_sigterm,
    machine,
    quantile,
)
from qsensor_core.simulator.process import SimulatorProcess

TARGET_LINES_PER_S = 1000.0
TARGET_CPU_PERCENT = 20.0
RECORD_S = 15.0
ROLL_INTERVAL_S = 5.0  # a few chunks are sealed (fsync, sha256) inside the window
TAIL_GRACE_S = 0.5  # lines written this close to the stop request may miss the recording
ANCHOR_LINES = 8
READING_MODES = ("freerun", "polled")


@dataclass(frozen=True)
class Rate:
    averaging: int
    adc_rate: int
    speedup: float = 1.0

    @property
    def lines_per_s(self) -> float:
        return self.adc_rate / self.averaging * self.speedup


RATES = (  # 500 lines/s is the device's fastest; then 2 to 16 times faster
    Rate(1, 500),
    Rate(1, 500, 2.0),
    Rate(1, 500, 4.0),
    Rate(1, 500, 8.0),
    Rate(1, 500, 16.0),
)


@dataclass(frozen=True)
class Received:
    line: str  # the data line rebuilt from the recorded fields
    mono_ns: int  # when the service received it


@dataclass(frozen=True)
class Comparison:
    emitted: int  # truth lines that belonged in the recording
    recorded: int
    lost: int
    duplicated: int
    unmatched: int  # recorded lines the simulator never wrote (altered or made up)
    lag_ms: list[float]  # truth write -> service receive, per matched line


@dataclass(frozen=True)
class RunResult:
    rate: Rate
    comparison: Comparison
    lines_per_s: float
    service_cpu: float
    simulator_cpu: float
    rejected_lines: int
    line_bytes: float  # mean length of a data line, without CRLF

    @property
    def clean(self) -> bool:
        c = self.comparison
        return c.recorded > 0 and c.lost == c.duplicated == c.unmatched == 0


def pty_buffer_bytes() -> int:
    """What a pty holds for a reader that does not read, before writes would block."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        held = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                held += os.write(master, b"x" * 256)
        return held
    finally:
        os.close(master)
        os.close(slave)


def unseen_drop_risk(result: RunResult, buffer_bytes: int) -> str | None:
    """The simulator drops lines its client leaves unread only once the pty buffer is full;
    a line that waited less than the time to fill it proves that never happened."""
    c = result.comparison
    fill_ms = 1000 * buffer_bytes / (result.rate.lines_per_s * (result.line_bytes + 2))
    if max(c.lag_ms, default=0.0) < fill_ms:
        return None
    return (
        f"note: at {result.rate.lines_per_s:.0f} lines/s a line waited {max(c.lag_ms):.0f} ms, "
        f"enough to fill the pty buffer ({buffer_bytes} B, {fill_ms:.0f} ms): the simulator "
        "may have dropped lines that the truth log cannot show"
    )


def short_window(result: RunResult, seconds: float) -> str | None:
    """Fewer lines than the rate promises: the simulator stalled, so the row proves less."""
    expected = result.rate.lines_per_s * seconds
    if result.comparison.emitted >= 0.95 * expected:
        return None
    return (
        f"note: at {result.rate.lines_per_s:.0f} lines/s the simulator wrote only "
        f"{result.comparison.emitted} lines in the window, not ~{expected:.0f}"
    )


def recorded_lines(session_dir: Path) -> list[Received]:
    """Reading rows of the sealed chunks, in order, as the device line they came from."""
    out: list[Received] = []
    for chunk in sorted(session_dir.glob("chunk_*.csv")):
        with chunk.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["mode"] in READING_MODES:
                    fields = [row["value"], row["TempC"], row["Vin"]]
                    line = ", ".join(text for text in fields if text)
                    out.append(Received(line, int(row["mono_ns"])))
    return out


def _anchor(
    where: dict[str, list[int]], texts: list[str], written: list[int], got: Sequence[Received]
) -> int:
    """Truth index of the first recorded line: where the first few recorded lines follow each
    other (one line's text can repeat within seconds at high rates; a run of them does not),
    written closest to when the first was received."""
    run = [row.line for row in got[:ANCHOR_LINES]]
    spots = where[run[0]]
    in_a_row = [i for i in spots if texts[i : i + len(run)] == run] or spots
    return min(in_a_row, key=lambda i: abs(got[0].mono_ns - written[i]))


def compare(
    truth: Sequence[dict[str, str]], got: Sequence[Received], start_ns: int, stop_ns: int
) -> Comparison:
    """Match recorded lines to the truth log in order.

    From the first recorded line's place in the truth log, each recorded line matches the
    next truth line with the same text; truth lines skipped over are lost. Lines written from
    `start_ns` (the recording's start answer) to `stop_ns - TAIL_GRACE_S` belong in the
    recording even when nothing around them was.
    """
    texts = [row["line"] for row in truth]
    written = [int(row["mono_ns"]) for row in truth]
    where: dict[str, list[int]] = defaultdict(list)
    for index, text in enumerate(texts):
        where[text].append(index)
    head = bisect.bisect_left(written, start_ns)
    tail = bisect.bisect_left(written, stop_ns - int(TAIL_GRACE_S * 1e9))
    known = [row for row in got if row.line in where]
    first = nxt = _anchor(where, texts, written, known) if known else head
    lost = duplicated = unmatched = 0
    lags: list[float] = []
    for row in got:
        spots = where.get(row.line, [])
        k = bisect.bisect_left(spots, nxt)
        if k < len(spots):
            lost += spots[k] - nxt
            lags.append((row.mono_ns - written[spots[k]]) / 1e6)
            nxt = spots[k] + 1
        elif k > 0:
            duplicated += 1
        else:
            unmatched += 1
    lost += max(0, first - head) + max(0, tail - nxt)
    return Comparison(
        emitted=max(nxt, tail) - min(first, head),
        recorded=len(got),
        lost=lost,
        duplicated=duplicated,
        unmatched=unmatched,
        lag_ms=lags,
    )


def run_rate(rate: Rate, seconds: float) -> RunResult:
    """One recording at `rate`: fresh simulator, fresh service, fresh data folder."""
    with tempfile.TemporaryDirectory(prefix="qsensor-ingest-") as tmp:
        folder = Path(tmp)
        sim = SimulatorProcess(
            averaging=rate.averaging,
            adc_rate=rate.adc_rate,
            bench_speedup=rate.speedup,
            time_scale=0,  # instant menu and restart; the sampling period is unaffected
            truth_log=folder / "truth.csv",
            seed=1,
        )
        with sim, PiService(folder / "data", sim.link) as service, service.client() as client:
            service.wait_connected(client)
            answer = client.post(
                "/record/start",
                json={"mission": "ingest-bench", "roll_interval_s": ROLL_INTERVAL_S},
            )
            answer.raise_for_status()
            start_ns = time.monotonic_ns()
            meter = CpuMeter({"service": service.pid, "simulator": child_pid(sim.link)})
            time.sleep(seconds)
            cpu = meter.percent()
            stop_ns = time.monotonic_ns()
            if not sim.running:
                raise BenchError(f"the simulator exited during the recording: {sim.stderr()}")
            client.post("/record/stop", json={"session_id": "current"}).raise_for_status()
            stats = client.get("/status").json()["stats"]
            session = folder / "data" / "sessions" / answer.json()["session_id"]
            got = recorded_lines(session)
            service.stop()
            truth = sim.read_truth()
    comparison = compare(truth, got, start_ns, stop_ns)
    span_s = (got[-1].mono_ns - got[0].mono_ns) / 1e9 if len(got) > 1 else 0.0
    return RunResult(
        rate=rate,
        comparison=comparison,
        lines_per_s=(len(got) - 1) / span_s if span_s else 0.0,
        service_cpu=cpu["service"],
        simulator_cpu=cpu["simulator"],
        rejected_lines=stats["rejected"].get("unknown", 0),
        line_bytes=statistics.fmean(len(row["line"]) for row in truth) if truth else 0.0,
    )


def print_table(results: Sequence[RunResult]) -> None:
    head = (
        f"{'nominal/s':>9} {'emitted':>8} {'recorded':>8} {'lost':>5} {'dup':>4} {'bad':>4} "
        f"{'lines/s':>8} {'lag p50':>8} {'lag max':>8} {'svc CPU':>8} {'sim CPU':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r.comparison
        print(
            f"{r.rate.lines_per_s:>9.0f} {c.emitted:>8} {c.recorded:>8} {c.lost:>5} "
            f"{c.duplicated:>4} {c.unmatched:>4} {r.lines_per_s:>8.1f} "
            f"{quantile(c.lag_ms, 0.5):>6.1f}ms {max(c.lag_ms, default=0):>6.1f}ms "
            f"{r.service_cpu:>7.1f}% {r.simulator_cpu:>7.1f}%"
        )


def verdict(results: Sequence[RunResult]) -> str:
    """The highest rate sustained with nothing lost within the CPU budget, against the target."""
    good = [r for r in results if r.clean and r.service_cpu < TARGET_CPU_PERCENT]
    best = max(good, key=lambda r: r.lines_per_s, default=None)
    target = f"target >= {TARGET_LINES_PER_S:.0f} lines/s with < {TARGET_CPU_PERCENT:.0f} % CPU"
    if best is None:
        return f"MISS: no rate was recorded without loss within the CPU budget ({target})"
    mark = "PASS" if best.lines_per_s >= TARGET_LINES_PER_S else "MISS"
    return (
        f"{mark}: {best.lines_per_s:.0f} lines/s sustained, 0 lost, "
        f"{best.service_cpu:.1f} % of one core ({target})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ingest_bench", description=__doc__)
    ap.add_argument("--seconds", type=float, default=RECORD_S, help="recording time per rate")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    print(f"ingest: {args.seconds:g} s recordings, chunks rolled every {ROLL_INTERVAL_S:g} s")
    print(f"machine: {machine()}")
    results = []
    for rate in RATES:
        results.append(run_rate(rate, args.seconds))
        c = results[-1].comparison
        print(f"  {rate.lines_per_s:.0f} lines/s nominal: {c.recorded} recorded, {c.lost} lost")
    print()
    print_table(results)
    buffer_bytes = pty_buffer_bytes()
    for r in results:
        if r.rejected_lines:
            print(f"note: {r.rejected_lines} unknown lines rejected at {r.rate.lines_per_s:.0f}/s")
        for note in (unseen_drop_risk(r, buffer_bytes), short_window(r, args.seconds)):
            if note:
                print(note)
    print(verdict(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
