"""Line framing and the serial link, over a real pty with pyserial on the driver's side."""

from __future__ import annotations

import contextlib
import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from qsensor_core.clock import Clock
from qsensor_core.sensor.link import MAX_LINE_BYTES, LineBuffer, LinkLost, SerialLink


def test_lines_split_on_crlf_and_lf_across_feeds() -> None:
    buf = LineBuffer()
    assert buf.feed(b"0.0100") == []
    assert buf.pending == "0.0100"
    assert buf.feed(b"73, 26.85\r\nnext\nEnter x: ") == ["0.010073, 26.85", "next"]
    assert buf.pending == "Enter x: "


def test_non_ascii_bytes_become_visible_escapes() -> None:
    assert LineBuffer().feed(b"\xe9ab\r\n") == ["\\xe9ab"]


def test_an_endless_line_is_cut_so_it_gets_counted() -> None:
    buf = LineBuffer()
    lines = buf.feed(b"x" * (MAX_LINE_BYTES + 10))
    assert lines == ["x" * MAX_LINE_BYTES] and buf.pending == "x" * 10


def test_mark_hides_what_was_acted_on_until_the_line_ends() -> None:
    buf = LineBuffer()
    buf.feed(b"Enter n: ")
    buf.mark()
    assert buf.unseen_pending == ""
    buf.feed(b"25")  # the device echoes the answer onto the prompt's line
    assert buf.unseen_pending == "25" and buf.pending == "Enter n: 25"
    assert buf.feed(b"\r\nEnter n: ") == ["Enter n: 25"]
    assert buf.unseen_pending == "Enter n: "  # the same prompt again is new


class Pty:
    """The master side of a pty; the slave path is what the link opens."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self) -> bytes:
        return os.read(self.master, 4096)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):  # a test may have closed it already
                os.close(fd)


@pytest.fixture
def pty_pair() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.close()


def _open(path: str, sink: list[tuple[str, int, int]]) -> SerialLink:
    return SerialLink(path, 9600, clock=Clock(), sink=lambda *a: sink.append(a), read_s=0.02)


def test_every_line_reaches_the_sink_once_stamped(pty_pair: Pty) -> None:
    seen: list[tuple[str, int, int]] = []
    link = _open(pty_pair.path, seen)
    try:
        link.begin_exchange()
        pty_pair.write(b"one\r\ntwo\r\nthree\r\n")
        assert link.expect(lambda s: s == "two", 2.0) == "two"
        assert link.expect(lambda s: s == "three", 2.0) == "three"  # kept for the next wait
        assert [line for line, _, _ in seen] == ["one", "two", "three"]
        assert all(mono > 0 and wall > 0 for _, mono, wall in seen)
    finally:
        link.close()


def test_a_prompt_without_line_break_matches_once(pty_pair: Pty) -> None:
    seen: list[tuple[str, int, int]] = []
    link = _open(pty_pair.path, seen)
    try:
        link.begin_exchange()
        pty_pair.write(b"Enter n: ")
        prompt = lambda s: "Enter n:" in s  # noqa: E731
        assert link.expect(prompt, 2.0, partial=prompt) == "Enter n: "
        assert link.expect(prompt, 0.2, partial=prompt) is None
        link.write(b"25\r")
        assert pty_pair.read() == b"25\r"
        pty_pair.write(b"25\r\n")
        assert link.expect(lambda s: s == "Enter n: 25", 2.0) == "Enter n: 25"
        assert [line for line, _, _ in seen] == ["Enter n: 25"]
    finally:
        link.close()


def test_lines_from_before_an_exchange_do_not_answer_it(pty_pair: Pty) -> None:
    seen: list[tuple[str, int, int]] = []
    link = _open(pty_pair.path, seen)
    try:
        pty_pair.write(b"stale\r\nSelect: ")
        for _ in range(100):  # one read may take only part of what was written
            if seen:
                break
            link.pump(0.1)
        assert [line for line, _, _ in seen] == ["stale"]
        link.begin_exchange()
        assert (
            link.expect(
                lambda s: "stale" in s or "Select:" in s, 0.2, partial=lambda s: "Select:" in s
            )
            is None
        )
        assert link.quiet_for(0.1)
        pty_pair.write(b"x")
        assert not link.quiet_for(0.5)
    finally:
        link.close()


def test_closing_the_master_is_a_lost_link(pty_pair: Pty) -> None:
    link = _open(pty_pair.path, [])
    try:
        os.close(pty_pair.master)
        with pytest.raises(LinkLost):
            for _ in range(50):
                link.pump(0.02)
    finally:
        link.close()


def test_a_path_that_now_leads_elsewhere_is_a_lost_link(tmp_path: Path) -> None:
    first, second = Pty(), Pty()
    path = tmp_path / "ttyQ"
    path.symlink_to(first.path)
    link = _open(str(path), [])
    try:
        path.unlink()
        path.symlink_to(second.path)
        with pytest.raises(LinkLost, match="another device"):
            for _ in range(100):
                link.pump(0.02)
    finally:
        link.close()
        first.close()
        second.close()


def test_opening_a_missing_port_is_a_lost_link(tmp_path: Path) -> None:
    with pytest.raises(LinkLost, match="cannot open"):
        _open(str(tmp_path / "nothing"), [])
