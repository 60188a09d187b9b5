"""SensorDriver: one worker thread owns the serial port and talks the Q-Series menu protocol.

Public methods hand a command to the worker as a `concurrent.futures.Future` and wait for it;
the worker interleaves commands with reading lines and sending polls. The device has no
checksum and no watchdog, and a prompt left unanswered hangs it, so every exchange the worker
starts is finished: it ends when the menu prompt is seen again (a known state), and a timeout
mid-prompt sends what completes the prompt, then resynchronises on the menu.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from qsensor_core.clock import SYSTEM_CLOCK, Clock
from qsensor_core.sensor import protocol
from qsensor_core.sensor.grammar import (
    DataLineGrammar,
    SettingsParseError,
    classify,
    parse_outputs_menu_line,
    parse_settings,
)
from qsensor_core.sensor.link import LinkLost, SerialLink
from qsensor_core.sensor.models import (
    DriverEvent,
    DriverState,
    DriverStats,
    LineKind,
    Mode,
    Reading,
    SensorConfig,
)

log = logging.getLogger(__name__)

__all__ = [
    "CommandRejected",
    "DriverStats",
    "DriverTimeouts",
    "InvalidState",
    "NotConnected",
    "SensorDriver",
    "SensorError",
    "SensorTimeout",
]

MAX_POLL_HZ = 100.0
MISSES_BEFORE_REARM = 3  # consecutive unanswered polls: the device may have restarted
MAX_HELD_LINES = 100_000


class SensorError(Exception):
    """Base of the driver's errors."""


class SensorTimeout(SensorError):
    """The device did not answer in time (the exchange was completed and resynchronised)."""


class CommandRejected(SensorError):
    """The device refused a value the driver sent."""


class NotConnected(SensorError):
    """No open link: never connected, disconnected, or reconnecting after a loss."""


class InvalidState(SensorError):
    """The command does not apply in the driver's current state."""


@dataclass(frozen=True)
class DriverTimeouts:
    """How long to wait for the device; defaults match the real instrument at 9600 baud."""

    read_s: float = 0.05  # port read timeout: how often the worker looks at its queue
    prompt_s: float = 3.0  # a prompt, settings line or confirmation printed at once
    menu_s: float = 6.0  # ~1 s pause, then the whole menu at 9600 baud
    esc_attempts: int = 3
    settle_s: float = 0.3  # quiet after a menu prompt proves it is current, not stale
    averaging_invalid_s: float = protocol.AVERAGING_INVALID_PAUSE_S
    adc_rate_invalid_s: float = protocol.ADC_RATE_INVALID_PAUSE_S
    mode_s: float = protocol.MODE_TIMEOUT_S
    restart_s: float = protocol.FIRST_DATA_AFTER_RESET_S
    poll_margin_s: float = 0.5  # added to 1.25 averaging periods for a poll reply
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0


@dataclass(frozen=True, slots=True)
class _Acquisition:
    mode: Mode
    poll_hz: float = 0.0
    tag: str = ""


@dataclass(slots=True)
class _Gap:
    """Readings stopped at `start_ns` (the last one before a link loss, or the loss)."""

    start_ns: int
    last_seq: int | None
    first_data_ns: int | None = None


@dataclass(slots=True)
class _Polls:
    interval_ns: int
    reply_timeout_ns: int  # after the device can answer: ~one averaging period
    ready_ns: int  # the device has no average to give before its restart completes
    next_due_ns: int
    deadline_ns: int | None = None  # of the query in flight
    consecutive_missed: int = 0


def _zero_per_kind() -> dict[LineKind, int]:
    return {kind: 0 for kind in LineKind if kind is not LineKind.DATA}


@dataclass(slots=True)
class _Counters:
    lines: int = 0
    data: int = 0
    rejected: dict[LineKind, int] = field(default_factory=_zero_per_kind)
    reconnects: int = 0
    polls: int = 0
    missed_polls: int = 0


def _is_menu_prompt(text: str) -> bool:
    return text.rstrip().endswith(protocol.MENU_PROMPT)


def _contains(*texts: str) -> Callable[[str], bool]:
    needles = tuple(t.strip() for t in texts)
    return lambda line: any(n in line for n in needles)


def _equals(text: str) -> Callable[[str], bool]:
    return lambda line: line.strip() == text


def _either(*matches: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda line: any(m(line) for m in matches)


def _is_settings(line: str) -> bool:
    try:
        parse_settings(line)
    except SettingsParseError:
        return False
    return True


def _check_averaging(n: int) -> tuple[Any, ...]:
    if isinstance(n, bool):
        raise ValueError("averaging must be an integer")
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"averaging must be an integer, not {n!r}") from None
    if not protocol.AVERAGING_MIN <= n <= protocol.AVERAGING_MAX:
        raise ValueError(f"averaging {n} outside {protocol.AVERAGING_MIN}-{protocol.AVERAGING_MAX}")
    return (n,)


def _check_adc_rate(rate: int) -> tuple[Any, ...]:
    if isinstance(rate, bool) or rate not in protocol.VALID_ADC_RATES:
        raise ValueError(f"ADC rate {rate!r} is not one of {protocol.VALID_ADC_RATES}")
    return (int(rate),)


def _check_tag(tag: str | None) -> str | None:
    if tag is not None and (
        not isinstance(tag, str) or len(tag) != 1 or tag not in protocol.VALID_TAGS
    ):
        raise ValueError(f"tag {tag!r} must be one upper-case letter A-Z")
    return tag


def _check_mode(mode: Mode, tag: str | None = None) -> tuple[Any, ...]:
    if mode not in ("freerun", "polled"):
        raise ValueError(f"mode {mode!r} must be 'freerun' or 'polled'")
    if mode == "freerun" and tag is not None:
        raise ValueError("a tag only applies to polled mode")
    return mode, _check_tag(tag)


def _check_polled(poll_hz: float, tag: str | None = None) -> tuple[Any, ...]:
    try:
        hz = float(poll_hz)
    except (TypeError, ValueError):
        raise ValueError(f"poll rate {poll_hz!r} is not a number") from None
    if isinstance(poll_hz, bool) or not math.isfinite(hz) or not 0 < hz <= MAX_POLL_HZ:
        raise ValueError(f"poll rate {poll_hz!r} Hz must be > 0 and <= {MAX_POLL_HZ}")
    return hz, _check_tag(tag)


def _no_args() -> tuple[Any, ...]:
    return ()


class _RejectLog:
    """Logs rejected lines at most once per second per kind, counting what it skipped."""

    def __init__(self) -> None:
        self._last: dict[LineKind, float] = {}
        self._skipped: dict[LineKind, int] = {}

    def __call__(self, kind: LineKind, line: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < 1.0:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        level = logging.WARNING if kind is LineKind.UNKNOWN else logging.DEBUG
        more = f" (+{skipped} more since last logged)" if skipped else ""
        log.log(level, "rejected %s line %r%s", kind.value, line[:200], more)


class SensorDriver:
    """Drives one Q-Series sensor on one serial port; see docs/driver.md."""

    def __init__(
        self,
        port: str,
        baud: int = 9600,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_reading: Callable[[Reading], None] | None = None,
        on_event: Callable[[DriverEvent], None] | None = None,
        reconnect: bool = True,
        timeouts: DriverTimeouts | None = None,
    ) -> None:
        if baud not in protocol.VALID_BAUDS:
            raise ValueError(f"baud {baud} is not one of {protocol.VALID_BAUDS}")
        self.port = port
        self.baud = baud
        self._clock = clock
        self._on_reading = on_reading
        self._on_event = on_event
        self._reconnect = reconnect
        self._t = timeouts or DriverTimeouts()
        self._lock = threading.Lock()  # guards the submission gate and the stats snapshot
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]]
        self._queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._accepting = False
        self._state = DriverState.DISCONNECTED
        self._config: SensorConfig | None = None
        self._reset_session()
        self._commands: dict[str, tuple[Callable[..., tuple[Any, ...]], Callable[..., Any]]] = {
            "read_config": (_no_args, self._op_read_config),
            "set_averaging": (_check_averaging, self._op_set_averaging),
            "set_adc_rate": (_check_adc_rate, self._op_set_adc_rate),
            "set_mode": (_check_mode, self._op_set_mode),
            "start_freerun": (_no_args, self._op_start_freerun),
            "start_polled": (_check_polled, self._op_start_polled),
            "pause": (_no_args, self._op_pause),
            "resume": (_no_args, self._op_resume),
            "stop": (_no_args, self._op_stop),
            "disconnect": (_no_args, self._op_disconnect),
        }

    def _reset_session(self) -> None:
        """Per-connection state (a manual connect starts again from seq 0)."""
        self._link: SerialLink | None = None
        self._grammar: DataLineGrammar | None = None
        self._held: list[tuple[str, int, int]] = []  # lines received before the config is known
        self._outputs: tuple[bool, bool] | None = None
        self._seq = 0
        self._counters = _Counters()
        self._acq: _Acquisition | None = None  # the acquisition running or paused
        self._paused = False
        self._polls: _Polls | None = None
        self._last_data_ns: int | None = None
        self._gap: _Gap | None = None  # open from a link loss until the first reading after it
        self._backoff_s = 0.0
        self._next_attempt_ns = 0
        self._running = True
        self._log_reject = _RejectLog()

    # ----------------------------------------------------------------- public interface

    @property
    def state(self) -> DriverState:
        return self._state

    @property
    def config(self) -> SensorConfig | None:
        return self._config

    @property
    def stats(self) -> DriverStats:
        with self._lock:
            c = self._counters
            return DriverStats(
                lines=c.lines,
                data=c.data,
                rejected=dict(c.rejected),
                reconnects=c.reconnects,
                polls=c.polls,
                missed_polls=c.missed_polls,
            )

    def connect(self) -> SensorConfig:
        """Open the port, bring the device to its menu, read its config (state IDLE)."""
        return self._call("connect")

    def read_config(self) -> SensorConfig:
        return self._call("read_config")

    def set_averaging(self, n: int) -> SensorConfig:
        return self._call("set_averaging", n)

    def set_adc_rate(self, rate: int) -> SensorConfig:
        return self._call("set_adc_rate", rate)

    def set_mode(self, mode: Mode, tag: str | None = None) -> SensorConfig:
        return self._call("set_mode", mode, tag)

    def start_freerun(self) -> None:
        self._call("start_freerun")

    def start_polled(self, poll_hz: float, tag: str | None = None) -> None:
        self._call("start_polled", poll_hz, tag)

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def stop(self) -> None:
        self._call("stop")

    def disconnect(self) -> None:
        """Leave the device sampling (X if it is in its menu), close the port. Idempotent."""
        worker = self._worker
        if worker is None or not worker.is_alive():
            return
        with contextlib.suppress(NotConnected):  # the worker may have ended meanwhile
            self._call("disconnect")  # InvalidState from a callback: it would join itself
        worker.join(timeout=5.0)

    def submit(self, command: str, *args: Any) -> Future[Any]:
        """Queue a public method by name and return its Future without waiting.

        Arguments are checked here, in the caller's thread (`ValueError` before anything is
        sent). `AsyncSensor` awaits these futures.
        """
        if command == "connect":
            return self._start_worker()
        try:
            check, op = self._commands[command]
        except KeyError:
            raise ValueError(f"unknown command {command!r}") from None
        checked = check(*args)
        future: Future[Any] = Future()
        with self._lock:
            if not self._accepting:
                future.set_exception(NotConnected(f"{self.port}: not connected"))
            else:
                self._queue.put((op, checked, future))
        return future

    def _call(self, command: str, *args: Any) -> Any:
        if threading.current_thread() is self._worker:
            raise InvalidState("driver methods cannot be called from on_reading/on_event")
        return self.submit(command, *args).result()

    def _start_worker(self) -> Future[Any]:
        future: Future[Any] = Future()
        ending = self._worker
        if ending is not None and not self._accepting:
            ending.join(timeout=5.0)  # a worker that lost its link is finishing
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                future.set_exception(InvalidState(f"{self.port}: already connected"))
                return future
            self._reset_session()
            self._queue = queue.Queue()
            self._queue.put((self._op_connect, (), future))
            self._accepting = True
            self._worker = threading.Thread(
                target=self._run, name=f"qsensor-driver {self.port}", daemon=True
            )
            self._worker.start()  # under the lock: a concurrent connect sees it alive
        return future

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        try:
            while self._running:
                item = self._next_command()
                if item is not None:
                    self._execute(*item)
                if not self._running:
                    break
                if self._link is not None:
                    self._background()
                elif self._state is DriverState.RECONNECTING:
                    self._try_reconnect()
        except Exception:
            log.exception("%s: driver worker failed", self.port)
            self._close_link()
            self._set_state(DriverState.DISCONNECTED)
        finally:
            self._end_worker()

    def _next_command(self) -> tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None:
        try:
            if self._link is not None:
                return self._queue.get_nowait()
            wait_s = max(0.0, (self._next_attempt_ns - self._clock.monotonic_ns()) / 1e9)
            return self._queue.get(timeout=min(wait_s, 0.5) or 0.001)
        except queue.Empty:
            return None

    def _execute(self, op: Callable[..., Any], args: tuple[Any, ...], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = op(*args)
        except LinkLost as exc:
            future.set_exception(NotConnected(f"{self.port}: link lost: {exc}"))
            self._link_lost(exc)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _end_worker(self) -> None:
        with self._lock:
            self._accepting = False
        self._release_held(self._grammar or self._last_grammar())
        while True:
            try:
                _, _, future = self._queue.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                future.set_exception(NotConnected(f"{self.port}: disconnected"))

    def _background(self) -> None:
        assert self._link is not None
        try:
            self._link.pump(self._read_timeout())
            if self._polls is not None:
                self._service_polls()
        except LinkLost as exc:
            self._link_lost(exc)

    # ------------------------------------------------------------------ lines

    def _on_line(self, line: str, mono_ns: int, wall_ns: int) -> None:
        """Sink for every received line (worker thread)."""
        if not line.strip():
            return  # blank separators carry nothing
        outputs = parse_outputs_menu_line(line)
        if outputs is not None:
            self._outputs = outputs
        if self._grammar is None and len(self._held) < MAX_HELD_LINES:
            self._held.append((line, mono_ns, wall_ns))
            return
        self._classify(line, mono_ns, wall_ns, self._grammar)

    def _classify(
        self, line: str, mono_ns: int, wall_ns: int, grammar: DataLineGrammar | None
    ) -> None:
        kind, fields = classify(line, grammar)
        with self._lock:
            self._counters.lines += 1
            if kind is LineKind.DATA:
                self._counters.data += 1
            else:
                self._counters.rejected[kind] += 1
        if fields is None or self._config is None:
            self._log_reject(kind, line)
            self._emit("rejected_line", detail=line[:200], line_kind=kind)
            return
        reading = Reading(
            seq=self._seq,
            mono_ns=mono_ns,
            wall_ns=wall_ns,
            sensor_id=self._config.serial_number,
            mode=self._config.mode,
            value=fields.value,
            temp_c=fields.temp_c,
            vin=fields.vin,
            raw=line,
        )
        self._seq += 1
        self._last_data_ns = mono_ns
        if self._gap is not None and self._gap.first_data_ns is None:
            self._gap.first_data_ns = mono_ns
        if self._polls is not None:
            self._polls.deadline_ns = None
            self._polls.consecutive_missed = 0
        if self._on_reading is not None:
            try:
                self._on_reading(reading)
            except Exception:
                log.exception("%s: on_reading callback failed", self.port)

    def _release_held(self, grammar: DataLineGrammar | None) -> None:
        held, self._held = self._held, []
        for line, mono_ns, wall_ns in held:
            self._classify(line, mono_ns, wall_ns, grammar)

    def _last_grammar(self) -> DataLineGrammar | None:
        return DataLineGrammar.for_config(self._config) if self._config else None

    def _apply_config(self, config: SensorConfig) -> None:
        self._config = config
        self._grammar = DataLineGrammar.for_config(config)
        self._release_held(self._grammar)

    # ------------------------------------------------------------------ events, state

    def _emit(self, kind: Any, **fields: Any) -> None:
        if self._on_event is None:
            return
        mono, wall = self._clock.now()
        event = DriverEvent(kind=kind, mono_ns=mono, wall_ns=wall, state=self._state, **fields)
        try:
            self._on_event(event)
        except Exception:
            log.exception("%s: on_event callback failed", self.port)

    def _set_state(self, state: DriverState) -> None:
        if state is self._state:
            return
        old, self._state = self._state, state
        log.info("%s: %s -> %s", self.port, old.value, state.value)
        self._emit("state", detail=f"{old.value} -> {state.value}")

    def _require(self, *allowed: DriverState, action: str) -> None:
        if self._state is DriverState.RECONNECTING:
            raise NotConnected(f"{self.port}: link lost, reconnecting; cannot {action}")
        if self._state not in allowed:
            raise InvalidState(f"cannot {action} while {self._state.value}")

    # ------------------------------------------------------------------ link

    def _open_link(self) -> SerialLink:
        self._link = SerialLink(
            self.port, self.baud, clock=self._clock, sink=self._on_line, read_s=self._t.read_s
        )
        return self._link

    def _close_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _link_lost(self, exc: Exception) -> None:
        first_loss = self._state is not DriverState.RECONNECTING
        self._close_link()
        self._polls = None
        if not self._reconnect:
            log.warning("%s: link lost: %s", self.port, exc)
            self._emit("link_lost", detail=str(exc))
            self._running = False
            self._set_state(DriverState.DISCONNECTED)
            return
        now = self._clock.monotonic_ns()
        if first_loss:
            log.warning("%s: link lost, reconnecting: %s", self.port, exc)
            self._gap = _Gap(
                start_ns=now if self._last_data_ns is None else self._last_data_ns,
                last_seq=self._seq - 1 if self._seq else None,
            )
            self._grammar = None  # hold lines until the device's config is read again
            self._backoff_s = self._t.backoff_initial_s
            self._emit("link_lost", detail=str(exc))
            self._set_state(DriverState.RECONNECTING)
        else:
            self._backoff_s = min(self._backoff_s * 2, self._t.backoff_max_s)
        self._next_attempt_ns = now + int(self._backoff_s * 1e9)

    def _try_reconnect(self) -> None:
        if self._clock.monotonic_ns() < self._next_attempt_ns:
            return
        previous = self._config
        try:
            self._open_link()
            self._enter_menu(settle=True)
            config = self._read_config()
            if previous is not None and config.serial_number != previous.serial_number:
                self._emit(
                    "error",
                    detail=f"device changed: serial {previous.serial_number!r} is now "
                    f"{config.serial_number!r}",
                )
            self._restore_acquisition()
        except (LinkLost, SensorError, ValueError) as exc:
            log.info("%s: reconnect attempt failed: %s", self.port, exc)
            self._link_lost(exc)
            return
        gap, self._gap = self._gap, None
        assert gap is not None
        end_ns = gap.first_data_ns or self._clock.monotonic_ns()
        with self._lock:
            self._counters.reconnects += 1
        self._emit(
            "link_restored",
            detail=f"reconnected to {self.port}",
            gap_s=(end_ns - gap.start_ns) / 1e9,
            last_seq_before_gap=gap.last_seq,
        )

    def _restore_acquisition(self) -> None:
        if self._acq is None:
            self._set_state(DriverState.IDLE)
        elif self._paused:
            self._set_state(DriverState.PAUSED)
        else:
            self._start(self._acq)

    def _writer(self) -> SerialLink:
        if self._link is None:
            raise NotConnected(f"{self.port}: not connected")
        return self._link

    # ------------------------------------------------------------------ exchanges

    def _enter_menu(self, *, settle: bool) -> None:
        """ESC until the menu prompt; `settle` also proves the prompt is not a stale one."""
        link = self._writer()
        link.begin_exchange()
        link.write(protocol.ESC)
        for _ in range(self._t.esc_attempts):
            if (
                link.expect(_is_menu_prompt, self._t.menu_s, partial=_is_menu_prompt, take=True)
                is None
            ):
                link.write(protocol.CR + protocol.ESC)  # CR ends any half-typed number first
                continue
            if not settle or link.quiet_for(self._t.settle_s):
                return
        raise SensorTimeout(f"{self.port}: no menu after ESC")

    def _expect_menu(self, timeout_s: float, after: str) -> None:
        link = self._writer()
        if link.expect(_is_menu_prompt, timeout_s, partial=_is_menu_prompt, take=True) is None:
            self._enter_menu(settle=True)
            raise SensorTimeout(f"{self.port}: menu did not return after {after}")

    def _answer_prompt(
        self, prompt: str, answer: bytes, *, completion: bytes, resync_s: float, what: str
    ) -> None:
        """Answer a prompt; if it never shows, complete it anyway and resynchronise."""
        link = self._writer()
        seen = _contains(prompt)
        if link.expect(seen, self._t.prompt_s, partial=seen) is not None:
            link.write(answer)
            return
        link.write(completion)
        self._expect_menu(resync_s, f"a missing {what}")
        raise SensorTimeout(f"{self.port}: no {what} within {self._t.prompt_s} s")

    def _read_config(self) -> SensorConfig:
        link = self._writer()
        link.begin_exchange()
        self._outputs = None
        link.write(protocol.CMD_SETTINGS)
        line = link.expect(_is_settings, self._t.prompt_s)
        if line is None:
            self._expect_menu(self._t.menu_s, "^")
            raise SensorTimeout(f"{self.port}: no settings line after ^")
        self._expect_menu(self._t.menu_s, "^")
        vin = self._outputs[1] if self._outputs is not None else None
        config = parse_settings(line, vin_output=vin)
        self._apply_config(config)
        return config

    def _number_exchange(
        self,
        command: bytes,
        prompt: str,
        value: int,
        *,
        ok: str,
        refusal: str,
        refusal_pause_s: float,
        label: str,
    ) -> None:
        """`A` or `R`: answer the number prompt, then wait for the confirmation or refusal."""
        link = self._writer()
        link.begin_exchange()
        link.write(command)
        letter = command.decode("ascii").strip()
        pause_s = refusal_pause_s + self._t.menu_s
        self._answer_prompt(
            prompt,
            f"{value}\r".encode(),
            completion=protocol.CR,
            resync_s=pause_s,
            what=f"{label} prompt",
        )
        refused = _contains(refusal)
        answer = link.expect(_either(_equals(ok), refused), self._t.prompt_s, partial=refused)
        if answer is None:
            self._expect_menu(pause_s, letter)
            raise SensorTimeout(f"{self.port}: no answer to {label} {value}")
        self._expect_menu(pause_s if refused(answer) else self._t.menu_s, letter)
        if refused(answer):
            self._read_config()
            raise CommandRejected(f"device refused {label} {value}: {answer.strip()!r}")

    def _mode_exchange(self, mode: Mode, tag: str) -> None:
        link = self._writer()
        link.begin_exchange()
        link.write(protocol.CMD_MODE)
        resync_s = self._t.mode_s + self._t.menu_s
        self._answer_prompt(
            protocol.MODE_PROMPT_2,
            b"0" if mode == "freerun" else b"1",
            completion=protocol.ESC,
            resync_s=resync_s,
            what="operating mode prompt",
        )
        errors = _contains(protocol.BAD_TAG, protocol.MODE_CONFUSED, protocol.MODE_TIMEOUT)
        if mode == "polled":
            either = _either(_contains(protocol.TAG_PROMPT_2), errors)
            found = link.expect(either, self._t.prompt_s, partial=either)
            if found is None:
                link.write(protocol.ESC)  # completes the tag prompt (as a bad tag)
                self._expect_menu(resync_s, "a missing tag prompt")
                raise SensorTimeout(f"{self.port}: no tag prompt after mode 1")
            if errors(found):
                self._expect_menu(self._t.menu_s, "M")
                raise CommandRejected(f"device refused mode {mode}: {found.strip()!r}")
            link.write(tag.encode("ascii"))
        done = _either(errors, _is_menu_prompt)
        refusal = link.expect(done, self._t.menu_s, partial=done, take=True)
        if refusal is None:
            self._expect_menu(resync_s, "M")
            raise SensorTimeout(f"{self.port}: menu did not return after M")
        if errors(refusal):
            self._expect_menu(resync_s, "M")
            raise CommandRejected(f"device refused mode {mode} {tag}: {refusal.strip()!r}")

    def _restart_device(self) -> int:
        """X: the device resets and samples in its saved mode. Returns when X was sent."""
        link = self._writer()
        link.begin_exchange()
        sent_ns = self._clock.monotonic_ns()
        link.write(protocol.CMD_EXIT)
        reset = _contains(*protocol.RESET_LINES)
        if link.expect(reset, self._t.prompt_s) is None:
            self._enter_menu(settle=True)
            raise SensorTimeout(f"{self.port}: device did not confirm the restart (X)")
        return sent_ns

    def _set_mode(self, mode: Mode, tag: str) -> SensorConfig:
        self._mode_exchange(mode, tag)
        if mode == "polled":
            return self._confirm(mode=mode, tag=tag)
        return self._confirm(mode=mode)

    def _start(self, acq: _Acquisition) -> None:
        config = self._config
        assert config is not None
        if config.mode != acq.mode or (acq.mode == "polled" and config.tag != acq.tag):
            config = self._set_mode(acq.mode, acq.tag)
        restarted_ns = self._restart_device()
        self._acq, self._paused = acq, False
        if acq.mode == "freerun":
            self._set_state(DriverState.FREERUN)
            return
        link = self._writer()
        ready = _contains(protocol.BANNER_POLLED_START)
        link.expect(ready, self._t.restart_s)  # absent in quiet mode
        link.write(protocol.polled_arm(acq.tag))
        period_ns = int(config.nominal_period_s * 1e9)
        self._polls = _Polls(
            interval_ns=int(1e9 / acq.poll_hz),
            reply_timeout_ns=int(period_ns * 1.25 + self._t.poll_margin_s * 1e9),
            ready_ns=restarted_ns + int(self._t.restart_s * 1e9),
            next_due_ns=self._clock.monotonic_ns(),
        )
        self._set_state(DriverState.POLLED)

    def _service_polls(self) -> None:
        polls, link = self._polls, self._link
        assert polls is not None and link is not None and self._acq is not None
        now = self._clock.monotonic_ns()
        if polls.deadline_ns is not None and now >= polls.deadline_ns:
            polls.deadline_ns = None
            polls.consecutive_missed += 1
            with self._lock:
                self._counters.missed_polls += 1
            if polls.consecutive_missed >= MISSES_BEFORE_REARM:
                log.warning("%s: %d polls unanswered, arming again", self.port, MISSES_BEFORE_REARM)
                link.write(protocol.polled_arm(self._acq.tag))
                polls.consecutive_missed = 0
        if polls.deadline_ns is None and now >= polls.next_due_ns:
            link.write(protocol.polled_query(self._acq.tag))
            polls.deadline_ns = max(now, polls.ready_ns) + polls.reply_timeout_ns
            polls.next_due_ns = max(polls.next_due_ns + polls.interval_ns, now)
            with self._lock:
                self._counters.polls += 1

    def _read_timeout(self) -> float:
        """Wake in time for the next poll or reply deadline."""
        polls = self._polls
        if polls is None:
            return self._t.read_s
        due = polls.next_due_ns if polls.deadline_ns is None else polls.deadline_ns
        return min(self._t.read_s, max(0.0, (due - self._clock.monotonic_ns()) / 1e9))

    # ------------------------------------------------------------------ commands

    def _op_connect(self) -> SensorConfig:
        self._set_state(DriverState.CONNECTING)
        in_menu = False
        try:
            self._open_link()
            self._enter_menu(settle=True)
            in_menu = True
            config = self._read_config()
        except LinkLost as exc:
            self._abandon_connect(leave_sampling=False)
            raise NotConnected(str(exc)) from exc
        except BaseException:
            self._abandon_connect(leave_sampling=in_menu)
            raise
        self._set_state(DriverState.IDLE)
        return config

    def _abandon_connect(self, *, leave_sampling: bool) -> None:
        if leave_sampling:
            self._leave_sampling()
        self._close_link()
        self._running = False
        self._set_state(DriverState.DISCONNECTED)

    def _op_read_config(self) -> SensorConfig:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="read the config")
        return self._read_config()

    def _op_set_averaging(self, n: int) -> SensorConfig:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="set averaging")
        self._number_exchange(
            protocol.CMD_AVERAGING,
            protocol.AVERAGING_PROMPT,
            n,
            ok=protocol.AVERAGING_OK.format(n=n),
            refusal=protocol.AVERAGING_INVALID,
            refusal_pause_s=self._t.averaging_invalid_s,
            label="averaging",
        )
        return self._confirm(averaging=n)

    def _op_set_adc_rate(self, rate: int) -> SensorConfig:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="set the ADC rate")
        self._number_exchange(
            protocol.CMD_ADC_RATE,
            protocol.ADC_RATE_PROMPT_2,
            rate,
            ok=protocol.ADC_RATE_OK.format(r=rate),
            refusal=protocol.ADC_RATE_INVALID,
            refusal_pause_s=self._t.adc_rate_invalid_s,
            label="ADC rate",
        )
        return self._confirm(adc_rate=rate)

    def _op_set_mode(self, mode: Mode, tag: str | None) -> SensorConfig:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="set the mode")
        if mode == "polled":
            return self._set_mode(mode, tag or self._current_tag())
        return self._set_mode(mode, "")

    def _confirm(self, **expected: Any) -> SensorConfig:
        """Read the settings back: the device's word, not ours, is the config."""
        config = self._read_config()
        wrong = {k: getattr(config, k) for k, v in expected.items() if getattr(config, k) != v}
        if wrong:
            raise SensorError(f"{self.port}: device reports {wrong} after setting {expected}")
        return config

    def _current_tag(self) -> str:
        tag = self._config.tag if self._config else ""
        if len(tag) != 1 or tag not in protocol.VALID_TAGS:
            raise ValueError(f"the device has no valid tag ({tag!r}); pass one")
        return tag

    def _op_start_freerun(self) -> None:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="start freerun")
        self._start(_Acquisition("freerun"))

    def _op_start_polled(self, poll_hz: float, tag: str | None) -> None:
        self._require(DriverState.IDLE, DriverState.PAUSED, action="start polling")
        self._start(_Acquisition("polled", poll_hz, tag or self._current_tag()))

    def _op_pause(self) -> None:
        if self._state is DriverState.PAUSED:
            return
        self._require(DriverState.FREERUN, DriverState.POLLED, action="pause")
        self._enter_menu(settle=False)
        self._polls = None
        self._paused = True
        self._set_state(DriverState.PAUSED)

    def _op_resume(self) -> None:
        if self._state in (DriverState.FREERUN, DriverState.POLLED):
            return
        self._require(DriverState.PAUSED, action="resume")
        assert self._acq is not None
        self._start(self._acq)

    def _op_stop(self) -> None:
        if self._state is DriverState.RECONNECTING:
            self._acq, self._paused = None, False  # after reconnecting, stay in the menu
            return
        self._require(
            DriverState.IDLE,
            DriverState.FREERUN,
            DriverState.POLLED,
            DriverState.PAUSED,
            action="stop",
        )
        if self._state in (DriverState.FREERUN, DriverState.POLLED):
            self._enter_menu(settle=False)
        self._polls = None
        self._acq, self._paused = None, False
        self._set_state(DriverState.IDLE)

    def _op_disconnect(self) -> None:
        if self._state in (DriverState.IDLE, DriverState.PAUSED):
            self._leave_sampling()
        self._close_link()
        self._running = False
        self._set_state(DriverState.DISCONNECTED)

    def _leave_sampling(self) -> None:
        """Best effort X so the device is not left parked in its menu."""
        if self._link is None:
            return
        try:
            self._link.begin_exchange()
            self._link.write(protocol.CMD_EXIT)
            if self._link.expect(_contains(*protocol.RESET_LINES), self._t.prompt_s) is None:
                log.warning("%s: no restart confirmation after X on disconnect", self.port)
        except LinkLost as exc:
            log.warning("%s: could not restart the device on disconnect: %s", self.port, exc)
