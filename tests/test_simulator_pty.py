"""The simulator as a driver sees it: a real pty opened with pyserial, in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from qsensor_core.sensor import protocol as p
from qsensor_core.sensor.grammar import DataLineGrammar, classify, parse_settings
from qsensor_core.sensor.models import LineKind
from qsensor_core.simulator.process import SimulatorError, SimulatorProcess

FAST = 0.05  # time scale: device delays 20x shorter


def read_until(port: serial.Serial, marker: bytes, timeout: float = 10.0) -> bytes:
    """Everything received up to and including `marker`; fails the test on timeout."""
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        assert time.monotonic() < deadline, f"no {marker!r} in {buf[-300:]!r}"
        buf += port.read(port.in_waiting or 1)
    return buf


def data_lines(port: serial.Serial, grammar: DataLineGrammar, count: int) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + 15
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} data lines"
        line = port.readline().decode("latin-1").removesuffix("\r\n")
        if grammar.match(line):
            got.append(line)
    return got


def enter_menu(port: serial.Serial) -> None:
    port.write(p.ESC)
    read_until(port, p.MENU_PROMPT.encode() + p.EOL)


def settings_over(port: serial.Serial) -> str:
    port.write(p.CMD_SETTINGS)
    text = read_until(port, p.MENU_PROMPT.encode() + p.EOL).decode()
    return next(line for line in text.split("\r\n") if line.count(",") > 15)


def test_restart_prints_banner_and_streams(tmp_path: Path) -> None:
    with SimulatorProcess(time_scale=FAST, averaging=25) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        enter_menu(port)
        port.write(p.CMD_EXIT)
        text = read_until(port, p.BANNER_FREERUN_START[1].encode()).decode()
        assert text.index(p.RESET_LINES[0]) < text.index(p.BANNER_TITLE)
        assert "Unit ID Q12345   \r\n" in text
        data_lines(port, DataLineGrammar(polled_tag=None), 2)
        port.close()


def test_freerun_period_follows_averaging_over_rate(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    with SimulatorProcess(averaging=25, adc_rate=125, truth_log=truth, time_scale=FAST) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        data_lines(port, DataLineGrammar(polled_tag=None), 12)
        port.close()
        rows = sim.read_truth()
    mono = [int(r["mono_ns"]) / 1e9 for r in rows]
    span = (mono[-1] - mono[0]) / (len(mono) - 1)
    assert 0.18 < span < 0.22  # nominal 25/125 = 0.2 s, loosely (shared CI machines)


def test_polled_reply_after_arming(tmp_path: Path) -> None:
    with SimulatorProcess(mode="polled", tag="C", averaging=12, time_scale=FAST) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        read_until(port, p.BANNER_POLLED_START.encode())
        port.write(p.polled_arm("C"))
        replies = []
        for _ in range(3):
            port.write(p.polled_query("C"))
            replies.append(port.readline().decode().removesuffix("\r\n"))
        port.close()
    grammar = DataLineGrammar(polled_tag="C")
    assert all(grammar.match(r) for r in replies), replies


def test_truth_log_matches_what_pyserial_received(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    with SimulatorProcess(
        averaging=12, truth_log=truth, garbage_rate=0.5, seed=3, time_scale=FAST
    ) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        grammar = DataLineGrammar(polled_tag=None)
        received: list[str] = []
        garbage = 0
        while len(received) < 20:
            raw = port.readline()
            assert raw.endswith(b"\r\n"), raw
            line = raw[:-2].decode("latin-1")
            if grammar.match(line):
                received.append(line)
            elif raw[0] >= 0x80:
                garbage += 1
                assert classify(line, grammar)[0] == LineKind.UNKNOWN
        port.close()
        rows = sim.read_truth()
    assert garbage > 0
    assert [r["line"] for r in rows[: len(received)]] == received
    assert [int(r["sim_seq"]) for r in rows] == list(range(len(rows)))
    assert truth.read_text().splitlines()[0] == "sim_seq,wall_ns,mono_ns,line"


def test_unplug_closes_the_port_and_it_comes_back(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    with SimulatorProcess(
        averaging=12,
        time_scale=FAST,
        unplug_after=1.0,
        unplug_for=1.0,
        truth_log=truth,
        mode="polled",
        tag="A",
    ) as sim:
        port = serial.Serial(sim.link, 9600, timeout=0.2)
        read_until(port, p.BANNER_POLLED_START.encode())
        port.write(p.polled_arm("A"))
        with pytest.raises(serial.SerialException):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                port.write(p.polled_query("A"))
                port.read(100)
        port.close()
        assert not os.path.lexists(sim.link)
        deadline = time.monotonic() + 5
        while not os.path.exists(sim.link):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        port = serial.Serial(sim.link, 9600, timeout=1)
        grammar = DataLineGrammar(polled_tag="A")
        port.write(p.polled_query("A"))
        time.sleep(0.5)
        unarmed = port.read(port.in_waiting).decode().split("\r\n")
        assert not any(grammar.match(line) for line in unarmed)  # powered on afresh: not armed
        port.write(p.polled_arm("A") + p.polled_query("A"))
        assert grammar.match(port.readline().decode().strip())
        port.close()
        before = len(sim.read_truth())
    assert before >= 2  # sim_seq runs on across the replug


def test_state_file_keeps_menu_settings_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "eeprom.json"
    with SimulatorProcess(state=state, time_scale=FAST) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        enter_menu(port)
        port.write(p.CMD_AVERAGING)
        read_until(port, p.AVERAGING_PROMPT.encode())
        port.write(b"77\r")
        read_until(port, p.MENU_PROMPT.encode())
        port.close()
    assert json.loads(state.read_text())["averaging"] == 77
    with SimulatorProcess(state=state, time_scale=FAST) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        enter_menu(port)
        assert parse_settings(settings_over(port)).averaging == 77
        port.close()
    with SimulatorProcess(state=state, averaging=5, time_scale=FAST) as sim:
        port = serial.Serial(sim.link, 9600, timeout=1)
        enter_menu(port)
        assert parse_settings(settings_over(port)).averaging == 5  # explicit option wins
        port.close()


def test_sigterm_removes_the_link_and_exits_zero(tmp_path: Path) -> None:
    link = tmp_path / "ttyQ"
    link.symlink_to("/nonexistent-old-target")  # an old link is replaced
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsensor_core.simulator", "--link", str(link)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(link)
        assert os.readlink(link).startswith("/dev/pts/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.lexists(link)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    "args",
    [["--adc-rate", "100"], ["--averaging", "0"], ["--tag", "5"], ["--garbage-rate", "2"]],
)
def test_bad_options_exit_non_zero(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qsensor_core.simulator", "--link", str(tmp_path / "l"), *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode != 0
    assert done.stderr
    assert not os.path.lexists(tmp_path / "l")


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "ttyQ"
    target.write_text("keep me")
    with pytest.raises(SimulatorError, match="not a symlink"):
        SimulatorProcess(link=target).start()
    assert target.read_text() == "keep me"


def test_process_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="bogus"):
        SimulatorProcess(bogus=1)


def test_process_can_be_restarted_on_the_same_link(tmp_path: Path) -> None:
    sim = SimulatorProcess(time_scale=FAST)
    with sim:
        first = os.readlink(sim.link)
    assert not os.path.lexists(sim.link)
    with sim:
        assert os.readlink(sim.link).startswith("/dev/pts/")
        assert sim.running
    assert first.startswith("/dev/pts/")
    assert sim.returncode == 0


def test_simulator_exits_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    starter = (
        "import subprocess, sys, time;"
        f"sim = subprocess.Popen([sys.executable, '-m', 'qsensor_core.simulator', '--link', "
        f"{str(tmp_path / 'tty')!r}], stdout=subprocess.PIPE);"
        "sim.stdout.readline(); print(sim.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    sim_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{sim_pid}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{sim_pid}/stat").read_text().split()[2]
        if state == "Z":
            break
        time.sleep(0.1)
    alive = Path(f"/proc/{sim_pid}").exists() and (
        Path(f"/proc/{sim_pid}/stat").read_text().split()[2] != "Z"
    )
    if alive:
        os.kill(sim_pid, signal.SIGKILL)
    assert not alive, "an orphaned simulator kept running"
