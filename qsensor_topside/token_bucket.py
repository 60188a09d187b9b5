"""Shared bandwidth accounting: one token bucket for every transfer, and a rate meter.

The bucket works on debt: a transfer reads a piece, then takes that many tokens and sleeps
until the bucket is no longer in debt. Over any window W the bytes taken are at most
`burst + rate * W + (one piece per concurrent transfer)`, which keeps the cap while letting
a single backlog transfer use the whole link. Time and sleep are injectable so the math is
tested without a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]


class TokenBucket:
    """Byte budget refilled at `rate` bytes/s up to `burst`; rate 0 means unlimited."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError(f"rate must not be negative: {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else default_burst(rate))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def reserve(self, n: int) -> float:
        """Take `n` tokens now and return how long the caller must wait before going on."""
        if self.unlimited:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, n: int) -> None:
        wait = self.reserve(n)
        if wait > 0:
            await self._sleep(wait)


def default_burst(rate: float) -> float:
    """A small burst: a twentieth of a second of budget, between 16 and 64 KiB."""
    return min(max(rate / 20, 16 * 1024), 64 * 1024)


class RateMeter:
    """Bytes per second over the last `window_s` seconds (the status API's "bandwidth in use")."""

    def __init__(self, window_s: float = 5.0, *, clock: Clock = time.monotonic) -> None:
        self.window_s = window_s
        self.total = 0
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()
        self._in_window = 0

    def add(self, n: int) -> None:
        now = self._clock()
        self._events.append((now, n))
        self._in_window += n
        self.total += n
        self._expire(now)

    def rate(self) -> float:
        self._expire(self._clock())
        return self._in_window / self.window_s

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window_s:
            self._in_window -= self._events.popleft()[1]
