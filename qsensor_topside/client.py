"""HTTP calls to one Pi, every body streamed through the daemon's shared token bucket.

URLs are relative to the vehicle's base URL, which may carry a path prefix (BlueOS serves
extensions under /extensionv2/<name>). Every answer is checked before it can touch the disk:
manifests against their X-Content-SHA256, tail bodies against X-Next-Offset, ranges against
Content-Range.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from qsensor_core.recording.layout import chunk_name
from qsensor_topside.remote import RemoteManifest, RemoteSession
from qsensor_topside.sse import SSEEvent, SSEParser
from qsensor_topside.store import PartWriter
from qsensor_topside.token_bucket import RateMeter, TokenBucket

_SESSIONS = TypeAdapter(list[RemoteSession])
PIECE_BYTES = 16 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class PiError(Exception):
    """The Pi answered, but not with what the contract promises (status, headers, body)."""


@dataclass(frozen=True)
class TailRead:
    """One answer of /record/tail: complete lines of a chunk from `offset`."""

    name: str
    offset: int
    body: bytes
    sealed: bool
    size: int | None  # whole chunk, when sealed
    sha256: str | None  # whole chunk, when sealed

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.body)


def make_http(base_url: str, *, timeout: float, rate: float) -> httpx.AsyncClient:
    """An HTTP client for one vehicle; with a cap, small socket buffers keep the link honest."""
    buffer = min(128 * 1024, max(8 * 1024, int(rate) // 16))  # about 1/16 s at the cap
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)] if rate else []
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        transport=httpx.AsyncHTTPTransport(socket_options=options),
        headers={"Accept-Encoding": "identity", "User-Agent": "qsensor-topside"},
    )


class PiClient:
    """The Pi's read-only API. Never deletes or changes anything on the Pi."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        bucket: TokenBucket,
        meters: tuple[RateMeter, ...],
        on_contact: Callable[[], None] = lambda: None,
    ) -> None:
        self.http = http
        self.bucket = bucket
        self.meters = meters
        self.on_contact = on_contact

    async def sessions(self) -> list[RemoteSession]:
        body = await self._get_body("record/sessions")
        try:
            return _SESSIONS.validate_json(body)
        except ValidationError as exc:
            raise PiError(f"session list is not valid: {_first_error(exc)}") from None

    async def manifest(self, session_id: str) -> tuple[RemoteManifest, bytes]:
        """The manifest and its exact bytes, checked against X-Content-SHA256 when sent."""
        async with self.http.stream("GET", f"files/{quote(session_id)}/manifest.json") as resp:
            self._expect(resp, 200)
            body = await self._read(resp)
            declared = resp.headers.get("x-content-sha256")
        if declared and hashlib.sha256(body).hexdigest() != declared.lower():
            raise PiError(f"manifest of {session_id} does not match its X-Content-SHA256")
        try:
            manifest = RemoteManifest.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise PiError(f"manifest of {session_id} is not valid: {exc}") from None
        if manifest.session_id != session_id:
            raise PiError(f"manifest of {session_id} names session {manifest.session_id}")
        return manifest, body

    async def download(self, session_id: str, name: str, part: PartWriter, size: int) -> None:
        """Append the rest of a sealed chunk to `part`, from `part.size` (HTTP Range)."""
        headers = {"Range": f"bytes={part.size}-"} if part.size else {}
        url = f"files/{quote(session_id)}/{quote(name)}"
        async with self.http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416:
                raise PiError(f"{name}: {part.size} bytes held is past the end of the chunk")
            self._expect(resp, 200, 206)
            if resp.status_code == 200:
                part.reset()  # the Pi sent the whole file
            else:
                check_content_range(resp.headers.get("content-range", ""), part.size, size, name)
            async for received in resp.aiter_bytes():
                for piece in self._pieces(received):
                    part.write(piece)  # on disk first: a crash while waiting keeps it
                    if part.size > size:
                        raise PiError(f"{name}: more bytes than the manifest's {size}")
                    await self._account(len(piece))

    async def tail(self, session_id: str, index: int, offset: int) -> TailRead | None:
        """Complete lines of chunk `index` from `offset`; None while that chunk does not exist."""
        params = {"session_id": session_id, "index": str(index), "offset": str(offset)}
        async with self.http.stream("GET", "record/tail", params=params) as resp:
            if resp.status_code == 404:
                await self._read(resp)
                return None
            self._expect(resp, 200)
            body = await self._read(resp)
            return parse_tail_answer(resp.headers, index, offset, body)

    async def events(self, parser: SSEParser, read_timeout: float) -> AsyncIterator[SSEEvent]:
        """The Pi's event stream, resuming after `parser.last_id` (Last-Event-ID)."""
        headers = {"Accept": "text/event-stream"}
        if parser.last_id:
            headers["Last-Event-ID"] = parser.last_id
        timeout = httpx.Timeout(read_timeout, connect=5.0)
        async with self.http.stream("GET", "events", headers=headers, timeout=timeout) as resp:
            self._expect(resp, 200)
            async for line in resp.aiter_lines():
                await self._account(len(line) + 1)
                event = parser.feed(line.rstrip("\r\n"))
                if event is not None:
                    yield event

    async def _get_body(self, url: str) -> bytes:
        async with self.http.stream("GET", url) as resp:
            self._expect(resp, 200)
            return await self._read(resp)

    async def _read(self, resp: httpx.Response) -> bytes:
        pieces = []
        async for received in resp.aiter_bytes():
            for piece in self._pieces(received):
                await self._account(len(piece))
                pieces.append(piece)
        return b"".join(pieces)

    def _pieces(self, data: bytes) -> list[bytes]:
        """Capped transfers take tokens in small pieces, so several share the link evenly."""
        if self.bucket.unlimited or len(data) <= PIECE_BYTES:
            return [data]
        return [data[i : i + PIECE_BYTES] for i in range(0, len(data), PIECE_BYTES)]

    async def _account(self, n: int) -> None:
        for meter in self.meters:
            meter.add(n)
        await self.bucket.acquire(n)

    def _expect(self, resp: httpx.Response, *codes: int) -> None:
        self.on_contact()
        if resp.status_code not in codes:
            raise PiError(f"GET {resp.request.url.path}: HTTP {resp.status_code}")


def parse_tail_answer(headers: httpx.Headers, index: int, offset: int, body: bytes) -> TailRead:
    """A /record/tail answer, checked: the chunk named, its state, and the body's length."""
    name = headers.get("x-chunk-name", "")
    state = headers.get("x-chunk-state", "")
    if not name.startswith(chunk_name(index)) or state not in {"open", "sealed"}:
        raise PiError(f"tail of chunk {index}: unexpected X-Chunk-Name/State {name!r}/{state!r}")
    sealed = state == "sealed"
    try:
        next_offset = int(headers["x-next-offset"])
        size = int(headers["x-chunk-size"]) if sealed else None
    except (KeyError, ValueError):
        raise PiError(f"tail of chunk {index}: missing or bad X-Next-Offset/X-Chunk-Size") from None
    sha256 = (headers.get("x-content-sha256", "").lower() or None) if sealed else None
    read = TailRead(chunk_name(index), offset, body, sealed, size, sha256)
    if next_offset != read.next_offset:
        raise PiError(f"tail of chunk {index}: X-Next-Offset {next_offset} != body end")
    return read


def check_content_range(header: str, start: int, size: int, name: str) -> None:
    """A 206 must start where the `.part` ends and be of the file the manifest describes."""
    match = _CONTENT_RANGE.match(header.strip())
    if not match or int(match.group(1)) != start:
        raise PiError(f"{name}: asked for bytes from {start}, got Content-Range {header!r}")
    total = match.group(3)
    if total != "*" and int(total) != size:
        raise PiError(f"{name}: Pi's file is {total} bytes, its manifest says {size}")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
