"""What a dark Q-Series sensor reads, and when its lines reach the host.

A small parametric model shaped after a real 30-minute freerun recording: a dark value near
0.0100 with correlated noise (6 decimals), a sensor temperature that warms slowly and is
quantised by its ADC in ~0.42 C steps (2 decimals), a supply voltage that flickers between
~0.021 V steps (3 decimals), and a USB adapter that hands bytes to the host on a 16 ms grid
(which is why the real receive intervals alternate between ~1.024 s and ~1.040 s).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

VALUE_DECIMALS = 6  # with the factory calibration

_DARK_RANGE = (0.00995, 0.01010)
_DARK_SD_AT_125 = 1.5e-5  # line-to-line sd with 125 readings averaged
_DARK_AR = 0.7  # lag-1 correlation between consecutive lines

_TEMP_START_RANGE = (26.3, 27.0)
_TEMP_WARMUP_C, _TEMP_WARMUP_TAU_S = 0.7, 900.0
_TEMP_WANDER_SD, _TEMP_WANDER_TAU_S = 0.15, 300.0
_TEMP_DITHER_SD = 0.05
_TEMP_STEP_C = 0.4155  # one ADC step of the temperature channel

_VIN_CENTRE_RANGE = (7.495, 7.515)
_VIN_NOISE_SD = 0.006
_VIN_STEP_V = 0.0208
_VIN_ORIGIN_V = 7.494  # a level of the supply channel

USB_TICK_S = 0.016  # FTDI-style latency timer: short packets leave on this grid


@dataclass(frozen=True, slots=True)
class Sample:
    value: str
    temp_c: str
    vin: str


def _quantise(x: float, origin: float, step: float) -> float:
    return origin + round((x - origin) / step) * step


class ValueModel:
    """Dark value, temperature and supply voltage as functions of device time (seconds)."""

    def __init__(self, rng: random.Random, start_s: float) -> None:
        self._rng = rng
        self._start = start_s
        self._dark = rng.uniform(*_DARK_RANGE)
        self._dark_state = 0.0
        self._temp_base = rng.uniform(*_TEMP_START_RANGE)
        self._temp_wander = 0.0
        self._vin_centre = rng.uniform(*_VIN_CENTRE_RANGE)
        self._last_t = start_s

    def _advance(self, t: float) -> None:
        dt = max(0.0, t - self._last_t)
        self._last_t = max(self._last_t, t)
        keep = math.exp(-dt / _TEMP_WANDER_TAU_S)
        self._temp_wander = self._temp_wander * keep + _TEMP_WANDER_SD * math.sqrt(
            1 - keep * keep
        ) * self._rng.gauss(0, 1)

    def temperature(self, t: float) -> str:
        self._advance(t)
        warm = _TEMP_WARMUP_C * (1 - math.exp(-(t - self._start) / _TEMP_WARMUP_TAU_S))
        true = self._temp_base + warm + self._temp_wander + self._rng.gauss(0, _TEMP_DITHER_SD)
        return f"{_quantise(true, 0.0, _TEMP_STEP_C):.2f}"

    def supply(self) -> str:
        true = self._vin_centre + self._rng.gauss(0, _VIN_NOISE_SD)
        return f"{_quantise(true, _VIN_ORIGIN_V, _VIN_STEP_V):.3f}"

    def dark(self, averaging: int) -> str:
        """One averaged reading: noise shrinks with the square root of the averaging count."""
        innovation = math.sqrt(1 - _DARK_AR * _DARK_AR) * self._rng.gauss(0, 1)
        self._dark_state = _DARK_AR * self._dark_state + innovation
        sd = _DARK_SD_AT_125 * math.sqrt(125 / max(1, averaging))
        return f"{self._dark + sd * self._dark_state:.{VALUE_DECIMALS}f}"

    def sample(self, t: float, averaging: int) -> Sample:
        return Sample(self.dark(averaging), self.temperature(t), self.supply())


@dataclass(frozen=True, slots=True)
class UsbLatency:
    """Delivery time of bytes the device sent at `t`: the next tick of the adapter's timer.

    The grid is fixed, so the jitter it adds never accumulates.
    """

    phase_s: float
    tick_s: float = USB_TICK_S

    def deliver_at(self, t: float) -> float:
        ticks = math.ceil((t - self.phase_s) / self.tick_s - 1e-9)
        return self.phase_s + ticks * self.tick_s


_GARBAGE_PRINTABLE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,;:#@%&*"


def garbage_line(rng: random.Random) -> bytes:
    """A complete line no data grammar can match: it starts with a non-ASCII byte."""
    body = bytearray([rng.randint(0x80, 0xFE)])
    for _ in range(rng.randint(4, 30)):
        if rng.random() < 0.3:
            body.append(rng.randint(0x80, 0xFE))
        else:
            body.append(ord(rng.choice(_GARBAGE_PRINTABLE)))
    return bytes(body) + b"\r\n"
