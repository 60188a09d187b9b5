"""The value, timing and garbage models, and how they compare with a real recording."""

from __future__ import annotations

import csv
import itertools
import random
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsensor_core.sensor.grammar import DataLineGrammar, classify
from qsensor_core.sensor.models import LineKind
from qsensor_core.simulator.values import USB_TICK_S, UsbLatency, ValueModel, garbage_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BURN_IN = SHARED / "burn_in_30min_freerun_125avg_125hz.csv"
PERIOD_AT_34000_PPM = 1.034


def simulated(count: int, seed: int = 11) -> list[tuple[float, str, str, str]]:
    """(receive time, value, temp, vin) for `count` lines at 125/125 with +34000 ppm."""
    model = ValueModel(random.Random(seed), 0.0)
    usb = UsbLatency(phase_s=0.005)
    rows = []
    for k in range(count):
        t = 4.0 + k * PERIOD_AT_34000_PPM
        sample = model.sample(t, averaging=125)
        rows.append((usb.deliver_at(t), sample.value, sample.temp_c, sample.vin))
    return rows


def real() -> list[dict[str, str]]:
    if not BURN_IN.exists():
        pytest.skip(f"{BURN_IN} not present")
    with BURN_IN.open(newline="") as f:
        return list(csv.DictReader(f))


def test_usb_latency_quantises_without_accumulating() -> None:
    usb = UsbLatency(phase_s=0.003)
    for k in range(5000):
        t = k * PERIOD_AT_34000_PPM
        assert 0 <= usb.deliver_at(t) - t < USB_TICK_S + 1e-9
    times = [row[0] for row in simulated(400)]
    intervals = Counter(round(b - a, 3) for a, b in itertools.pairwise(times))
    assert set(intervals) == {1.024, 1.040}
    mean = (times[-1] - times[0]) / (len(times) - 1)
    assert mean == pytest.approx(PERIOD_AT_34000_PPM, abs=1e-3)


def test_statistics_resemble_the_real_burn_in_loosely() -> None:
    rows = real()
    sim = simulated(len(rows))
    real_values = [float(r["value"]) for r in rows]
    sim_values = [float(v) for _, v, _, _ in sim]
    assert statistics.mean(sim_values) == pytest.approx(statistics.mean(real_values), abs=2e-4)
    ratio = statistics.stdev(sim_values) / statistics.stdev(real_values)
    assert 0.3 < ratio < 3

    sim_temps = [float(t) for _, _, t, _ in sim]
    assert min(sim_temps) > 25.0 and max(sim_temps) < 29.5
    steps = {round(abs(b - a), 1) for a, b in itertools.pairwise(sim_temps)}
    assert steps <= {0.0, 0.4}  # the ADC's ~0.42 C steps, as in the recording
    changes = sum(a != b for a, b in itertools.pairwise(sim_temps))
    assert changes < len(sim_temps) * 0.2  # mostly steady

    real_vins = Counter(r["Vin"] for r in rows)
    sim_vins = Counter(v for _, _, _, v in sim)
    assert 2 <= len(sim_vins) <= 4
    assert all(abs(float(v) - 7.5) < 0.05 for v in sim_vins)
    assert len(real_vins) == 2


def test_printed_formats_match_the_device() -> None:
    for _, value, temp, vin in simulated(200):
        assert len(value.split(".")[1]) == 6
        assert len(temp.split(".")[1]) == 2
        assert len(vin.split(".")[1]) == 3


def test_noise_shrinks_with_more_averaging() -> None:
    def spread(averaging: int) -> float:
        model = ValueModel(random.Random(5), 0.0)
        return statistics.stdev(float(model.dark(averaging)) for _ in range(2000))

    assert spread(1250) < spread(125) / 2


@given(seed=st.integers(0, 2**32), preamble=st.sampled_from(["", "Q", "$", "x:"]))
def test_garbage_is_one_whole_line_no_grammar_can_match(seed: int, preamble: str) -> None:
    line = garbage_line(random.Random(seed))
    assert line.endswith(b"\r\n")
    body = line[:-2]
    assert b"\r" not in body and b"\n" not in body and b"\x1b" not in body
    text = body.decode("latin-1")
    for tag in (None, "A", "Z"):
        for temp in (True, False):
            for vin in (True, False, None):
                grammar = DataLineGrammar(polled_tag=tag, preamble=preamble, temp=temp, vin=vin)
                assert classify(text, grammar)[0] == LineKind.UNKNOWN


def test_real_intervals_alternate_like_the_usb_model() -> None:
    """The recording's two interval clusters are 64 and 65 ticks of the adapter's timer."""
    stamps = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in real()]
    intervals = Counter(round(b - a, 3) for a, b in itertools.pairwise(stamps))
    common = {interval for interval, _ in intervals.most_common(3)}
    assert common <= {1.023, 1.024, 1.025, 1.039, 1.040, 1.041}
    assert any(abs(i - 64 * USB_TICK_S) < 0.002 for i in common)
    assert any(abs(i - 65 * USB_TICK_S) < 0.002 for i in common)
