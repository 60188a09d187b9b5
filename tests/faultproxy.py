"""A small TCP fault proxy for tests: sits between a client and a server on 127.0.0.1.

It can cut the link (close every connection and reset new ones until restored), point at a
new server port (a restarted service), and corrupt one byte of one HTTP response body in
transit (a digit inside the body of the next response whose headers hold a marker), so the
body stays well-formed and only a checksum can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from typing import Any

_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)")
_DIGITS = b"0123456789"


class _Corruption:
    """Finds the next response with `marker` in its headers and flips one digit of its body."""

    def __init__(self, marker: bytes, skip: int, arm: object) -> None:
        self.arm = arm  # the corrupt_next_body() call this scanner serves
        self.marker = marker.lower()
        self.skip = skip
        self.buffer = b""
        self.done = False
        self.where: str | None = None

    def feed(self, data: bytes) -> bytes:
        """Returns the bytes that can go on now (held back while a match is undecided)."""
        self.buffer += data
        out = b""
        while not self.done:
            lowered = self.buffer.lower()
            at = lowered.find(self.marker)
            if at < 0:  # (a marker split between two reads is missed: the next one counts)
                out += self.buffer
                self.buffer = b""
                return out
            head_end = lowered.find(b"\r\n\r\n", at)
            if head_end < 0:
                return out  # wait for the rest of the headers
            start = lowered.rfind(b"http/1.1 ", 0, at)
            length = _CONTENT_LENGTH.search(lowered, max(start, 0), head_end)
            body = head_end + 4
            size = int(length.group(1)) if length else 0
            first, end = body + min(self.skip, size // 2), body + min(size, self.skip + 512)
            if len(self.buffer) < end:
                return out  # wait for enough of the body
            digit = next((i for i in range(first, end) if self.buffer[i] in _DIGITS), None)
            if digit is None:  # nothing to corrupt quietly here: look at the next one
                out += self.buffer[:end]
                self.buffer = self.buffer[end:]
                continue
            flipped = _DIGITS[(_DIGITS.index(self.buffer[digit]) + 1) % 10]
            self.where = f"byte {digit - body} of a {size}-byte body"
            self.buffer = self.buffer[:digit] + bytes([flipped]) + self.buffer[digit + 1 :]
            self.done = True
        out += self.buffer
        self.buffer = b""
        return out


class FaultProxy:
    """Run with `with FaultProxy(port) as proxy:`; the proxy listens on `proxy.port`."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.down = False
        self.connections = 0
        self._armed: tuple[bytes, int] | None = None
        self.corrupted: list[str] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start)
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def cut(self) -> None:
        """The link dies: open connections are reset, new ones too, until restore()."""
        self.down = True
        self._call(self._abort_all)

    def restore(self) -> None:
        self.down = False

    def retarget(self, port: int) -> None:
        """Send new connections to another port (the service restarted elsewhere)."""
        self.target_port = port

    def corrupt_next_body(self, marker: bytes, skip: int = 16) -> None:
        """Flip one digit in the body of the next response whose headers contain `marker`."""
        self._armed = (marker, skip)

    def _call(self, factory: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self._abort_all()
        if self._server is not None:
            self._server.close()

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update({writer, up_writer})
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, downstream=False),
                self._pipe(up_reader, writer, downstream=True),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        scanner: _Corruption | None = None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not self.down:
                data = await reader.read(65536)
                if not data:
                    break
                if scanner is not None and scanner.arm is not self._armed:
                    data, scanner = scanner.buffer + data, None  # done elsewhere: let go
                if downstream and self._armed is not None:
                    scanner = scanner or _Corruption(*self._armed, arm=self._armed)
                    data = scanner.feed(data)
                    if scanner.done:
                        self._armed = None
                        self.corrupted.append(scanner.where or "")
                        scanner = None
                if self.down:
                    break
                writer.write(data)
                await writer.drain()
        if self.down:
            writer.transport.abort()
        else:
            writer.close()
