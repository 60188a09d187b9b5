"""SessionRecorder on real files: rows, rolls, seals, markers, threads and the disk guard."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qsensor_core.clock import SYSTEM_CLOCK, iso_utc
from qsensor_core.recording import (
    HEADER,
    DiskFullError,
    Manifest,
    RecorderEvent,
    RecorderStopped,
    RecordingError,
    SessionRecorder,
    SessionStore,
    parse_chunk,
)
from qsensor_core.sensor.models import Reading

BURN_IN = Path(__file__).resolve().parents[2] / "shared/data/burn_in_30min_freerun_125avg_125hz.csv"
SYNC_ID = "5f0c1e2a-9b7d-4c3e-8a1f-0d2e3c4b5a69"


def _device_fields() -> list[tuple[str, str, str, str]]:
    """(sensor_id, value, TempC, Vin) from the real burn-in recording, or a stand-in line."""
    if not BURN_IN.exists():
        return [("SN-1", "0.010073", "26.85", "7.494")]
    with BURN_IN.open(newline="") as handle:
        return [(r[1], r[3], r[4], r[5]) for r in itertools.islice(csv.reader(handle), 1, 500)]


DEVICE_FIELDS = _device_fields()


def readings(n: int, start: int = 0) -> Iterator[Reading]:
    """Readings as the driver makes them: stamped on receipt, device text kept verbatim."""
    for seq in range(start, start + n):
        sensor_id, value, temp, vin = DEVICE_FIELDS[seq % len(DEVICE_FIELDS)]
        mono_ns, wall_ns = SYSTEM_CLOCK.now()
        yield Reading(seq, mono_ns, wall_ns, sensor_id, "freerun", value, temp, vin, value)


def expected_line(reading: Reading, seq: int) -> bytes:
    """The documented row layout, spelled out independently of the recorder's formatter."""
    return (
        f"{iso_utc(reading.wall_ns)},{reading.sensor_id},freerun,{reading.value},"
        f"{reading.temp_c},{reading.vin},{seq},{reading.mono_ns},{reading.seq},,\n"
    ).encode()


class Events:
    """Collects recorder events; lets a test wait for one."""

    def __init__(self) -> None:
        self.items: list[RecorderEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: RecorderEvent) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.items]

    def wait(self, predicate: Callable[[list[RecorderEvent]], bool], timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.items), timeout), self.kinds()


def start(tmp_path: Path, events: Events | None = None, **kwargs: object) -> SessionRecorder:
    options: dict[str, object] = {"roll_interval_s": 60.0, "min_free_bytes": 0}
    options.update(kwargs)
    return SessionRecorder.start(
        tmp_path,
        mission="dive-7",
        sensor_id=DEVICE_FIELDS[0][0],
        sensor_config={"averaging": 125, "adc_rate": 125},
        on_event=events,
        **options,  # type: ignore[arg-type]
    )


def check_sealed_session(session_dir: Path, manifest: Manifest) -> list[bytes]:
    """Every listed chunk matches its manifest entry; returns all data lines in order."""
    lines: list[bytes] = []
    for chunk in manifest.chunks:
        data = (session_dir / chunk.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == chunk.sha256
        assert len(data) == chunk.size_bytes
        assert data.startswith(HEADER.encode()) and data.endswith(b"\n")
        rows = parse_chunk(data)
        assert len(rows) == chunk.rows
        assert sum(r.is_marker for r in rows) == chunk.markers
        first_last = (rows[0].seq, rows[-1].seq) if rows else (None, None)
        assert first_last == (chunk.first_seq, chunk.last_seq)
        lines.extend(data.splitlines(keepends=True)[1:])
    assert manifest.totals.rows == len(lines)
    assert not [p for p in os.listdir(session_dir) if p.endswith((".open", ".tmp"))]
    return lines


def test_rows_are_byte_exact_with_a_header_in_every_chunk(tmp_path: Path) -> None:
    recorder = start(tmp_path, max_chunk_bytes=4096)
    sent = list(readings(300))
    for reading in sent:
        recorder.add_reading(reading)
    manifest = recorder.stop()
    lines = check_sealed_session(recorder.session_dir, manifest)
    assert len(manifest.chunks) > 3
    assert lines == [expected_line(r, seq) for seq, r in enumerate(sent)]
    assert manifest.totals.readings == 300 and manifest.totals.markers == 0
    assert manifest.state == "stopped" and manifest.stop_reason == "requested"


def test_silent_sensor_still_rolls_on_the_timer(tmp_path: Path) -> None:
    events = Events()
    recorder = start(tmp_path, events, roll_interval_s=1.0)
    events.wait(lambda items: sum(e.kind == "chunk_sealed" for e in items) >= 2)
    on_disk = json.loads((recorder.session_dir / "manifest.json").read_bytes())
    assert on_disk["state"] == "recording"
    assert [c["rows"] for c in on_disk["chunks"]][:2] == [0, 0]
    assert on_disk["chunks"][0]["first_seq"] is None
    assert (recorder.session_dir / on_disk["open_chunk"]).exists()
    for chunk in on_disk["chunks"]:
        assert (recorder.session_dir / chunk["name"]).read_text() == HEADER
    manifest = recorder.stop()
    check_sealed_session(recorder.session_dir, manifest)
    assert manifest.totals.rows == 0 and manifest.totals.chunks >= 3


def test_chunks_roll_at_the_size_limit(tmp_path: Path) -> None:
    recorder = start(tmp_path, max_chunk_bytes=1024)
    for reading in readings(200):
        recorder.add_reading(reading)
    manifest = recorder.stop()
    check_sealed_session(recorder.session_dir, manifest)
    assert all(c.size_bytes <= 1024 for c in manifest.chunks)
    assert len(manifest.chunks) >= 200 * 85 // 1024
    seqs = [(c.first_seq, c.last_seq) for c in manifest.chunks if c.rows]
    assert [b[0] for b in seqs[1:]] == [a[1] + 1 for a in seqs[:-1]]


def test_manifest_on_disk_tracks_each_seal_and_matches_stop(tmp_path: Path) -> None:
    events = Events()
    recorder = start(tmp_path, events, max_chunk_bytes=2048)
    for reading in readings(60):
        recorder.add_reading(reading)
    events.wait(lambda items: any(e.kind == "chunk_sealed" for e in items))
    sealed = next(e.chunk for e in events.items if e.kind == "chunk_sealed")
    assert sealed is not None
    data = (recorder.session_dir / sealed.name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sealed.sha256 and len(data) == sealed.size_bytes
    live = Manifest.model_validate_json((recorder.session_dir / "manifest.json").read_bytes())
    assert sealed in live.chunks and live.state == "recording"
    manifest = recorder.stop()
    assert Manifest.model_validate_json((recorder.session_dir / "manifest.json").read_bytes()) == (
        manifest
    )
    assert manifest.open_chunk is None and manifest.stopped_at is not None
    assert [e.kind for e in events.items][-1] == "stopped"
    told = [e.chunk for e in events.items if e.kind == "chunk_sealed"]
    assert told == manifest.chunks
    assert sorted(os.listdir(recorder.session_dir)) == [
        *(c.name for c in manifest.chunks),
        "manifest.json",
    ]


def test_manifest_readers_never_see_a_partial_manifest(tmp_path: Path) -> None:
    recorder = start(tmp_path, max_chunk_bytes=4096)
    path = recorder.session_dir / "manifest.json"
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(Manifest.model_validate_json(path.read_bytes()).totals.chunks)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for reading in readings(2000):
            recorder.add_reading(reading)
            if reading.seq % 100 == 99:  # let the recorder thread seal and rewrite in between
                time.sleep(0.02)
        manifest = recorder.stop()
    finally:
        done.set()
        thread.join()
    assert seen == sorted(seen) and len(set(seen)) > 5
    assert seen[-1] <= manifest.totals.chunks


def test_markers_are_rows_in_time_order_with_readings(tmp_path: Path) -> None:
    recorder = start(tmp_path)
    stream = readings(30)
    marks = []
    for reading in itertools.islice(stream, 10):
        recorder.add_reading(reading)
    marks.append(recorder.add_marker("START", SYNC_ID))
    for reading in itertools.islice(stream, 10):
        recorder.add_reading(reading)
    marks.append(recorder.add_marker("PERIODIC", SYNC_ID, 0))
    marks.append(recorder.add_marker("PERIODIC", SYNC_ID, 1))
    for reading in stream:
        recorder.add_reading(reading)
    marks.append(recorder.add_marker("STOP", SYNC_ID))
    manifest = recorder.stop()
    check_sealed_session(recorder.session_dir, manifest)
    rows = parse_chunk((recorder.session_dir / "chunk_00000.csv").read_bytes())
    assert [r.seq for r in rows] == list(range(34))
    assert [m.seq for m in marks] == [10, 21, 22, 33]
    timestamps = [r.timestamp for r in rows]
    assert timestamps == sorted(timestamps)
    marker_rows = [r for r in rows if r.is_marker]
    assert [r.mode for r in marker_rows] == [
        "SYNC_START",
        "SYNC_PERIODIC",
        "SYNC_PERIODIC",
        "SYNC_STOP",
    ]
    for row, mark in zip(marker_rows, marks, strict=True):
        assert row.value == str(int(SYNC_ID[:8], 16))
        assert row.sync_id == SYNC_ID and row.sensor_id == DEVICE_FIELDS[0][0]
        assert (row.timestamp, row.mono_ns) == (mark.timestamp, mark.mono_ns)
        assert row.sync_seq == mark.periodic_sequence and row.sensor_seq is None
    assert manifest.totals.markers == 4 and manifest.totals.readings == 30


def test_readings_and_markers_from_two_threads_lose_nothing(tmp_path: Path) -> None:
    recorder = start(tmp_path, roll_interval_s=1.0, max_chunk_bytes=64 * 1024)
    n_readings, n_markers = 20_000, 300
    errors: list[BaseException] = []

    def driver() -> None:
        try:
            for reading in readings(n_readings):
                recorder.add_reading(reading)
        except BaseException as exc:
            errors.append(exc)

    def api() -> None:
        try:
            for i in range(n_markers):
                recorder.add_marker("PERIODIC", SYNC_ID, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=driver), threading.Thread(target=api)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest = recorder.stop()
    assert not errors
    rows = [
        r
        for c in manifest.chunks
        for r in parse_chunk((recorder.session_dir / c.name).read_bytes())
    ]
    check_sealed_session(recorder.session_dir, manifest)
    assert [r.seq for r in rows] == list(range(n_readings + n_markers))
    assert [r.sensor_seq for r in rows if not r.is_marker] == list(range(n_readings))
    assert [r.sync_seq for r in rows if r.is_marker] == list(range(n_markers))
    assert (manifest.totals.readings, manifest.totals.markers) == (n_readings, n_markers)
    assert len(manifest.chunks) > 4


def test_open_chunk_reaches_the_os_within_a_second(tmp_path: Path) -> None:
    recorder = start(tmp_path)
    store = SessionStore(tmp_path)
    for reading in readings(5):
        recorder.add_reading(reading)
    deadline = time.monotonic() + 5
    tail = store.read_tail(recorder.session_id, 0, 0)
    while tail.data.count(b"\n") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
        tail = store.read_tail(recorder.session_id, 0, 0)
    assert tail.state == "open" and tail.data.count(b"\n") == 6
    assert recorder.status().unflushed_bytes == 0
    recorder.stop()


def test_start_is_refused_below_the_free_space_floor(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError, match=r"bytes free, \d+ bytes required") as info:
        start(tmp_path, min_free_bytes=2**62)
    assert info.value.free_bytes < info.value.min_free_bytes == 2**62
    assert SessionStore(tmp_path).list_sessions() == []


def test_free_space_floor_crossed_while_recording_stops_cleanly(tmp_path: Path) -> None:
    events = Events()
    recorder = start(tmp_path, events)
    for reading in readings(500):
        recorder.add_reading(reading)
    recorder.set_min_free_bytes(2**62)
    events.wait(lambda items: any(e.kind == "stopped" for e in items))
    assert events.kinds()[-2:] == ["disk_full", "stopped"]
    recorder.add_reading(next(readings(1)))
    with pytest.raises(RecorderStopped, match="disk_full"):
        recorder.add_marker("START", SYNC_ID)
    manifest = recorder.stop()
    assert (manifest.state, manifest.stop_reason) == ("stopped", "disk_full")
    assert "below the minimum" in (manifest.stop_detail or "")
    assert manifest.totals.rows == 500 and manifest.dropped_rows == 0
    check_sealed_session(recorder.session_dir, manifest)
    assert recorder.status().ignored_after_stop == 1


def test_stop_is_idempotent_and_ends_the_session(tmp_path: Path) -> None:
    recorder = start(tmp_path)
    recorder.add_reading(next(readings(1)))
    first = recorder.stop()
    assert recorder.stop() == first
    assert recorder.status().state == "stopped"
    assert sorted(os.listdir(recorder.session_dir)) == ["chunk_00000.csv", "manifest.json"]


def test_stop_from_an_event_callback_does_not_deadlock(tmp_path: Path) -> None:
    holder: dict[str, Manifest] = {}
    done = threading.Event()

    def on_event(event: RecorderEvent) -> None:
        if event.kind == "chunk_sealed" and "manifest" not in holder:
            holder["manifest"] = recorder.stop()
        if event.kind == "stopped":
            done.set()

    recorder = SessionRecorder.start(
        tmp_path,
        mission="m",
        sensor_id="SN",
        sensor_config={},
        roll_interval_s=1.0,
        min_free_bytes=0,
        on_event=on_event,
    )
    assert done.wait(10)
    assert holder["manifest"].state == "stopped"
    assert recorder.stop() == holder["manifest"]


def test_a_recorder_failing_to_finalise_leaves_the_session_to_recovery(tmp_path: Path) -> None:
    recorder = start(tmp_path)
    recorder.add_reading(next(readings(1)))
    reserve = recorder.session_dir / ".reserve"
    reserve.unlink()
    reserve.mkdir()
    (reserve / "x").touch()  # the space reserve can no longer be released
    with pytest.raises(RecordingError, match="failed before sealing"):
        recorder.stop()
    store = SessionStore(tmp_path)
    assert [s.state for s in store.list_sessions()] == ["interrupted"]  # its lock was released
    shutil.rmtree(reserve)
    assert store.recover() == [recorder.session_id]
    manifest = store.manifest(recorder.session_id)
    assert (manifest.state, manifest.totals.rows) == ("interrupted", 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"roll_interval_s": 0.5}, "roll_interval_s"),
        ({"roll_interval_s": 301}, "roll_interval_s"),
        ({"roll_interval_s": float("nan")}, "roll_interval_s"),
        ({"max_chunk_bytes": 100}, "max_chunk_bytes"),
        ({"min_free_bytes": -1}, "min_free_bytes"),
        ({"sensor_id": "SN\n1"}, "sensor_id"),
        ({"sensor_id": ""}, "sensor_id"),
        ({"mission": "x" * 201}, "mission"),
        ({"session_id": "../escape"}, "not a session id"),
        ({"session_id": "20261399T120000Z-0123abcd"}, "not a session id"),
        ({"sensor_config": {"when": object()}}, "JSON"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"mission": "m", "sensor_id": "SN", "sensor_config": {}}
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SessionRecorder.start(tmp_path, **options)  # type: ignore[arg-type]
    sessions = tmp_path / "sessions"
    assert not sessions.exists() or not list(sessions.iterdir())


def test_an_existing_session_id_is_refused(tmp_path: Path) -> None:
    recorder = start(tmp_path, session_id="20261121T120000Z-0123abcd")
    with pytest.raises(FileExistsError):
        start(tmp_path, session_id="20261121T120000Z-0123abcd")
    assert recorder.stop().session_id == "20261121T120000Z-0123abcd"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs the right to mount, else the test is skipped)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_filling_up_seals_what_was_written(small_fs: Path) -> None:
    events = Events()
    recorder = start(small_fs, events, roll_interval_s=1.0, max_chunk_bytes=256 * 1024)
    stream = readings(200_000)
    for reading in stream:
        recorder.add_reading(reading)
        if reading.seq % 200 == 0 and recorder.status().state != "recording":
            break
    accepted = recorder.status().rows
    manifest = recorder.stop()
    assert (manifest.state, manifest.stop_reason) == ("stopped", "disk_full")
    assert "No space left" in (manifest.stop_detail or "")
    assert "disk_full" in events.kinds() and events.kinds()[-1] == "stopped"
    lines = check_sealed_session(recorder.session_dir, manifest)
    assert [int(line.split(b",")[6]) for line in lines] == list(range(len(lines)))
    assert manifest.dropped_rows == accepted - manifest.totals.rows
    assert manifest.totals.rows > 1000
    assert sorted(os.listdir(recorder.session_dir)) == [
        *(c.name for c in manifest.chunks),
        "manifest.json",
    ]
