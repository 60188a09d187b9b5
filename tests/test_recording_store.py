"""SessionStore on real files: listing, the download allow-list, tail reads and crash recovery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qsensor_core.clock import SYSTEM_CLOCK
from qsensor_core.recording import (
    HEADER,
    InvalidName,
    Manifest,
    ManifestError,
    NotFound,
    OffsetOutOfRange,
    SessionRecorder,
    SessionStore,
    parse_chunk,
)
from qsensor_core.recording.manifest import write_manifest
from qsensor_core.sensor.models import Reading

SENSOR = "Q-SN 2150"


def reading(seq: int) -> Reading:
    mono_ns, wall_ns = SYSTEM_CLOCK.now()
    value = f"0.{seq:06d}"
    return Reading(seq, mono_ns, wall_ns, SENSOR, "polled", value, "26.85", None, value)


def record(data_dir: Path, rows: int, **kwargs: object) -> tuple[str, Manifest]:
    """A finished session of `rows` readings."""
    options: dict[str, object] = {"min_free_bytes": 0, "max_chunk_bytes": 2048}
    options.update(kwargs)
    recorder = SessionRecorder.start(
        data_dir, mission="harbour", sensor_id=SENSOR, sensor_config={"tag": "A"}, **options
    )  # type: ignore[arg-type]
    for seq in range(rows):
        recorder.add_reading(reading(seq))
    return recorder.session_id, recorder.stop()


def assert_whole(store: SessionStore, session_id: str) -> Manifest:
    """Nothing listed is torn: every listed chunk is complete and matches its entry."""
    manifest = store.manifest(session_id)
    seqs = []
    for chunk in manifest.chunks:
        data = store.sealed_file(session_id, chunk.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == chunk.sha256
        assert len(data) == chunk.size_bytes
        rows = parse_chunk(data)  # raises on a torn line or a missing header
        assert len(rows) == chunk.rows
        seqs.extend(r.seq for r in rows)
    assert seqs == list(range(len(seqs))) == list(range(manifest.totals.rows))
    assert manifest.open_chunk is None
    assert not [n for n in os.listdir(store.root / session_id) if n.endswith(".open")]
    return manifest


# ----- listing and manifests -----


def test_sessions_are_listed_oldest_first_with_their_state(tmp_path: Path) -> None:
    first, _ = record(tmp_path, 10, session_id="20261121T120000Z-00000001")
    second, _ = record(tmp_path, 3, session_id="20261121T110000Z-00000002")
    live = SessionRecorder.start(
        tmp_path,
        mission="m",
        sensor_id=SENSOR,
        sensor_config={},
        min_free_bytes=0,
        session_id="20261121T130000Z-00000003",
    )
    (tmp_path / "sessions" / "not-a-session").mkdir()
    store = SessionStore(tmp_path)
    listed = store.list_sessions()
    assert [s.session_id for s in listed] == [second, first, live.session_id]
    assert [s.state for s in listed] == ["stopped", "stopped", "recording"]
    assert listed[1].rows == 10 and listed[1].mission == "harbour"
    assert listed[2].open_chunk == "chunk_00000.csv.open"
    live.stop()
    assert store.list_sessions()[2].state == "stopped"


def test_a_session_with_an_unreadable_manifest_is_still_listed(tmp_path: Path) -> None:
    session_id, _ = record(tmp_path, 5)
    (tmp_path / "sessions" / session_id / "manifest.json").write_text("{not json")
    store = SessionStore(tmp_path)
    (summary,) = store.list_sessions()
    assert summary.state == "interrupted" and "not a valid manifest" in (
        summary.manifest_error or ""
    )
    with pytest.raises(ManifestError):
        store.manifest(session_id)


@pytest.mark.parametrize(
    "session_id", ["20261121T120000Z-ffffffff", "../sessions", "", "20261121T120000Z-FFFFFFFF", 7]
)
def test_unknown_or_malformed_session_ids_are_not_found(tmp_path: Path, session_id: object) -> None:
    record(tmp_path, 1)
    store = SessionStore(tmp_path)
    with pytest.raises(KeyError):
        store.manifest(session_id)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no such session"):
        store.sealed_file(session_id, "manifest.json")  # type: ignore[arg-type]


# ----- the download allow-list -----


def test_only_the_manifest_and_listed_chunks_can_be_fetched(tmp_path: Path) -> None:
    session_id, manifest = record(tmp_path, 50)
    store = SessionStore(tmp_path)
    folder = tmp_path / "sessions" / session_id
    assert store.sealed_file(session_id, "manifest.json") == (folder / "manifest.json").resolve()
    for chunk in manifest.chunks:
        assert store.sealed_file(session_id, chunk.name) == (folder / chunk.name).resolve()


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../manifest.json",
        "chunk_00000.csv/..",
        "/etc/passwd",
        "sub/chunk_00000.csv",
        "chunk_00000.csv.open",
        "chunk_0000.csv",
        "chunk_000000.csv",
        "CHUNK_00000.csv",
        "chunk_00000.csv ",
        ".lock",
        ".manifest.json.tmp",
        "",
        None,
    ],
)
def test_names_outside_the_allow_list_are_refused(tmp_path: Path, name: object) -> None:
    session_id, _ = record(tmp_path, 5)
    with pytest.raises(InvalidName, match="not a downloadable file name"):
        SessionStore(tmp_path).sealed_file(session_id, name)  # type: ignore[arg-type]


def test_well_formed_but_unlisted_chunks_are_not_found(tmp_path: Path) -> None:
    session_id, manifest = record(tmp_path, 5)
    folder = tmp_path / "sessions" / session_id
    (folder / "chunk_00042.csv").write_text(HEADER)  # on disk, but not in the manifest
    store = SessionStore(tmp_path)
    for name in ("chunk_00042.csv", f"chunk_{len(manifest.chunks):05d}.csv"):
        with pytest.raises(NotFound, match="not a sealed chunk"):
            store.sealed_file(session_id, name)


def test_a_listed_chunk_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    session_id, _ = record(tmp_path, 5)
    folder = tmp_path / "sessions" / session_id
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    (folder / "chunk_00000.csv").unlink()
    (folder / "chunk_00000.csv").symlink_to(outside)
    store = SessionStore(tmp_path)
    with pytest.raises(InvalidName, match="not a plain file"):
        store.sealed_file(session_id, "chunk_00000.csv")
    with pytest.raises(InvalidName, match="not a plain file"):
        store.read_tail(session_id, 0, 0)


# ----- tail reads -----


def test_tail_reads_return_whole_lines_only(tmp_path: Path) -> None:
    session_id, manifest = record(tmp_path, 40, max_chunk_bytes=16 * 1024)
    store = SessionStore(tmp_path)
    data = store.sealed_file(session_id, "chunk_00000.csv").read_bytes()
    offset, parts = 0, []
    while True:
        tail = store.read_tail(session_id, 0, offset, max_bytes=100)
        assert tail.data.endswith(b"\n") or (tail.data == b"" and tail.at_end)
        assert tail.data.count(b"\n") == 1  # each line is longer than half of max_bytes
        parts.append(tail.data)
        offset = tail.next_offset
        if tail.at_end:
            break
    assert b"".join(parts) == data
    assert (tail.state, tail.sha256, tail.rows) == ("sealed", manifest.chunks[0].sha256, 40)


def test_a_line_longer_than_max_bytes_is_still_returned_whole(tmp_path: Path) -> None:
    session_id, _ = record(tmp_path, 2)
    tail = SessionStore(tmp_path).read_tail(session_id, 0, 0, max_bytes=10)
    assert tail.data == HEADER.encode()


def test_bad_offsets_and_indices_are_refused(tmp_path: Path) -> None:
    session_id, manifest = record(tmp_path, 5)
    store = SessionStore(tmp_path)
    size = manifest.chunks[0].size_bytes
    assert store.read_tail(session_id, 0, size).data == b""
    with pytest.raises(OffsetOutOfRange, match="past the end"):
        store.read_tail(session_id, 0, size + 1)
    with pytest.raises(ValueError, match=">= 0"):
        store.read_tail(session_id, 0, -1)
    with pytest.raises(ValueError, match="start of a line"):
        store.read_tail(session_id, 0, 5)
    with pytest.raises(ValueError, match="chunk index"):
        store.read_tail(session_id, -1, 0)
    with pytest.raises(NotFound, match="no chunk 7"):
        store.read_tail(session_id, 7, 0)


def test_a_torn_line_in_the_open_chunk_is_never_returned(tmp_path: Path) -> None:
    recorder = SessionRecorder.start(
        tmp_path, mission="m", sensor_id=SENSOR, sensor_config={}, min_free_bytes=0
    )
    for seq in range(3):
        recorder.add_reading(reading(seq))
    recorder.flush()
    open_path = recorder.session_dir / "chunk_00000.csv.open"
    complete = open_path.read_bytes()
    with open_path.open("ab") as handle:  # what a reader can see mid-write
        handle.write(b"2026-11-21T12:00:00.000000+00:00,Q-SN")
    tail = SessionStore(tmp_path).read_tail(recorder.session_id, 0, 0)
    assert (tail.state, tail.data, tail.next_offset) == ("open", complete, len(complete))
    assert tail.name == "chunk_00000.csv"
    assert tail.size_bytes == len(complete) + 37 and tail.sha256 is None


def test_a_live_mirror_gets_every_chunk_exactly_across_seals(tmp_path: Path) -> None:
    """A reader tailing chunk after chunk while the recorder rolls: the rename race."""
    recorder = SessionRecorder.start(
        tmp_path,
        mission="m",
        sensor_id=SENSOR,
        sensor_config={},
        min_free_bytes=0,
        max_chunk_bytes=4096,
        roll_interval_s=1.0,
    )
    store = SessionStore(tmp_path)
    mirrored: dict[int, tuple[bytes, str | None]] = {}
    stop_mirror = threading.Event()

    def mirror() -> None:
        index, offset, parts = 0, 0, []
        while True:
            try:
                tail = store.read_tail(recorder.session_id, index, offset)
            except NotFound:  # the next chunk does not exist yet
                if stop_mirror.is_set():
                    return
                time.sleep(0.005)
                continue
            parts.append(tail.data)
            offset = tail.next_offset
            if tail.at_end:
                mirrored[index] = (b"".join(parts), tail.sha256)
                index, offset, parts = index + 1, 0, []
            elif not tail.data:
                time.sleep(0.002)

    thread = threading.Thread(target=mirror)
    thread.start()
    for seq in range(3000):
        recorder.add_reading(reading(seq))
        if seq % 300 == 0:
            time.sleep(0.05)
    manifest = recorder.stop()
    stop_mirror.set()
    thread.join(20)
    assert not thread.is_alive()
    assert sorted(mirrored) == [c.index for c in manifest.chunks]
    for chunk in manifest.chunks:
        data, sha256 = mirrored[chunk.index]
        assert sha256 == chunk.sha256 == hashlib.sha256(data).hexdigest()


# ----- crash recovery -----

CHILD = r"""
import sys, time
from pathlib import Path
from qsensor_core.clock import SYSTEM_CLOCK
from qsensor_core.recording import SessionRecorder
from qsensor_core.sensor.models import Reading

recorder = SessionRecorder.start(
    Path(sys.argv[1]), mission="crash", sensor_id="SN-CRASH", sensor_config={"averaging": 125},
    roll_interval_s=1.0, min_free_bytes=0,
)
print(recorder.session_id, flush=True)
seq = 0
while True:
    for _ in range(50):
        mono_ns, wall_ns = SYSTEM_CLOCK.now()
        value = f"0.{seq:06d}"
        recorder.add_reading(
            Reading(seq, mono_ns, wall_ns, "SN-CRASH", "freerun", value, "26.85", "7.494", value)
        )
        seq += 1
    if seq == 2000:
        recorder.flush()
        print("flushed", seq, flush=True)
    time.sleep(0.01)
"""


def crash_a_recording(data_dir: Path) -> tuple[str, int]:
    """Run a recorder in a child process and SIGKILL it once it has sealed a chunk."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        session_id = child.stdout.readline().strip()
        flushed = int(child.stdout.readline().split()[1])
        manifest_path = data_dir / "sessions" / session_id / "manifest.json"
        deadline = time.monotonic() + 15
        while not json.loads(manifest_path.read_bytes())["chunks"]:
            assert time.monotonic() < deadline, "the child never sealed a chunk"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    return session_id, flushed


def test_recovery_after_sigkill_seals_drops_the_torn_line_and_marks_interrupted(
    tmp_path: Path,
) -> None:
    session_id, flushed = crash_a_recording(tmp_path)
    store = SessionStore(tmp_path)
    folder = tmp_path / "sessions" / session_id
    assert store.manifest(session_id).state == "recording"  # what the dead recorder left
    assert store.list_sessions()[0].state == "interrupted"  # its recorder is gone
    open_chunks = sorted(folder.glob("*.open"))
    assert open_chunks
    torn = b"2026-11-21T12:00:00.000000+00:00,SN-CRASH,freerun,0.00"
    with open_chunks[-1].open("ab") as handle:  # a write cut short, as a power cut leaves it
        handle.write(torn)

    assert store.recover() == [session_id]

    manifest = assert_whole(store, session_id)
    assert manifest.state == "interrupted" and manifest.recovered_at is not None
    assert manifest.recovered_torn_bytes == len(torn)
    assert sum(c.torn_bytes_dropped for c in manifest.chunks) == len(torn)
    assert manifest.totals.rows >= flushed
    assert manifest.mission == "crash" and manifest.sensor_config == {"averaging": 125}
    assert manifest.stopped_at == [c.last_timestamp for c in manifest.chunks if c.rows][-1]
    for chunk in manifest.chunks:
        rows = parse_chunk(store.sealed_file(session_id, chunk.name).read_bytes())
        assert all(r.value == f"0.{r.sensor_seq:06d}" for r in rows)
    assert store.list_sessions()[0].state == "interrupted"
    assert sorted(n for n in os.listdir(folder) if n.startswith(".")) == []
    assert store.recover() == []  # nothing left to do


def test_recovery_leaves_a_live_session_alone(tmp_path: Path) -> None:
    recorder = SessionRecorder.start(
        tmp_path, mission="m", sensor_id=SENSOR, sensor_config={}, min_free_bytes=0
    )
    recorder.add_reading(reading(0))
    store = SessionStore(tmp_path)
    assert store.recover() == []
    assert (recorder.session_dir / "chunk_00000.csv.open").exists()
    recorder.add_reading(reading(1))
    manifest = recorder.stop()
    assert manifest.totals.rows == 2 and manifest.state == "stopped"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_lost_manifest_is_rebuilt_from_the_chunks(tmp_path: Path, damage: str) -> None:
    session_id, before = record(tmp_path, 120)
    path = tmp_path / "sessions" / session_id / "manifest.json"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b'{"schema_version": 1, "session_id": ')
    store = SessionStore(tmp_path)
    assert store.recover() == [session_id]
    after = assert_whole(store, session_id)
    assert [c.sha256 for c in after.chunks] == [c.sha256 for c in before.chunks]
    assert after.totals == before.totals
    assert after.state == "interrupted" and after.sensor_id == SENSOR
    assert after.started_at.startswith(before.started_at[:19])
    assert "rebuilt" in after.recovery_notes[0]
    assert (path.parent / ".manifest.json.corrupt").exists() == (damage == "corrupt")


def test_a_sealed_chunk_missing_from_the_manifest_is_added(tmp_path: Path) -> None:
    """The recorder died between renaming a chunk and rewriting the manifest."""
    session_id, complete = record(tmp_path, 100)
    folder = tmp_path / "sessions" / session_id
    assert len(complete.chunks) >= 3
    stale = complete.model_copy(
        update={"state": "recording", "stopped_at": None, "stop_reason": None}
    ).model_dump(exclude={"totals"})
    stale["chunks"] = complete.chunks[:-1]
    write_manifest(folder, Manifest.model_validate(stale))
    store = SessionStore(tmp_path)
    assert store.manifest(session_id).totals.chunks == len(complete.chunks) - 1
    assert store.recover() == [session_id]
    after = assert_whole(store, session_id)
    assert after.chunks == complete.chunks
    assert any("missing from the manifest" in note for note in after.recovery_notes)


def test_an_open_chunk_without_its_header_is_discarded(tmp_path: Path) -> None:
    """Killed between creating the next chunk and writing its header: nothing to keep."""
    session_id, complete = record(tmp_path, 20)
    folder = tmp_path / "sessions" / session_id
    next_index = len(complete.chunks)
    (folder / f"chunk_{next_index:05d}.csv.open").write_bytes(HEADER.encode()[:9])
    store = SessionStore(tmp_path)
    assert store.recover() == [session_id]
    after = assert_whole(store, session_id)
    assert after.chunks == complete.chunks and after.recovered_torn_bytes == 9
    assert after.state == "stopped"  # it had been stopped properly before
    assert any("without a complete header" in note for note in after.recovery_notes)


def test_an_unfinished_session_creation_is_cleaned_up(tmp_path: Path) -> None:
    staging = tmp_path / "sessions" / ".staging-20261121T120000Z-0123abcd"
    staging.mkdir(parents=True)
    (staging / "chunk_00000.csv.open").write_text(HEADER)
    store = SessionStore(tmp_path)
    assert store.recover() == []
    assert not staging.exists()
    assert store.list_sessions() == []
