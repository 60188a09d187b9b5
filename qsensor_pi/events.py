"""Fan-out of service events to SSE and WebSocket clients.

Producers run on the driver's and the recorder's worker threads; consumers are coroutines on
the event loop. A slow consumer never blocks a producer: when its queue is full it is cut off
(and can come back with `Last-Event-ID` to replay what it missed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    name: str  # SSE event name: state, chunk_sealed, marker, reading, session
    data: dict[str, Any]
    id: str | None = None


class SubscriberOverflow(Exception):
    """The subscriber fell too far behind and was dropped."""


@dataclass(eq=False)
class Subscription:
    names: frozenset[str] | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(1000))
    overflowed: bool = False

    def wants(self, event: Event) -> bool:
        return self.names is None or event.name in self.names

    async def get(self) -> Event:
        event = await self.queue.get()
        if event is None:
            raise SubscriberOverflow("event subscriber fell behind")
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self.get()


class EventHub:
    """Thread-safe publish, loop-side subscribe."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[Subscription] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> None:
        """Deliver to every interested subscriber; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        for sub in list(self._subs):
            if sub.overflowed or not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subs.discard(sub)
                _drop_oldest_and_close(sub)

    @contextlib.contextmanager
    def subscribe(self, names: frozenset[str] | None = None) -> Iterator[Subscription]:
        sub = Subscription(names)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)


def _drop_oldest_and_close(sub: Subscription) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        sub.queue.get_nowait()
    sub.queue.put_nowait(None)
