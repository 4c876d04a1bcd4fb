"""One named circuit breaker: the pure machine plus a clock, counters, events and logs.

The ccxt hook drives it through ``admit``/``settle``; users drive it through
``call()``, ``guard()`` and ``async with``, which follow the same rules.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import ccxt

from ._config import BreakerConfig, Clock, SystemClock
from ._errors import FAILURE, NEUTRAL, SUCCESS, rejection, verdict
from ._events import CallRejected, Listener, StateChanged, emit
from ._kraken import CALL, named_limit
from ._machine import OPEN, CircuitState, Machine

__all__ = ["SHADOW", "CircuitBreaker"]

logger = logging.getLogger("ccxt_breaker")

# The permit of a call that shadow mode let through: it matches no generation, so the
# machine ignores its outcome, exactly as it would have been ignored had it been refused.
SHADOW = -1
# Endpoints counted one by one; any further ones share the "*" counters.
MAX_ENDPOINTS = 256
# Longest error message kept in snapshots, events and CircuitOpenError.
MAX_MESSAGE = 300

P = ParamSpec("P")
T = TypeVar("T")

# The `async with breaker:` blocks open in this task, innermost first, as linked
# (breaker, permit, counters, started, outer) entries.
_Guard = tuple["CircuitBreaker", int, list[int], float, "_Guard | None"]
_GUARDS: ContextVar[_Guard | None] = ContextVar("ccxt_breaker_guards", default=None)

LimitHandler = Callable[["CircuitBreaker", str, float, dict[str, str]], None]


def _no_scrub(message: str) -> str:
    return message


class CircuitBreaker:
    """Guards one group of endpoints.

    Read ``state``, ``retry_after`` and ``snapshot()``; steer with ``reset()`` and
    ``force_open()``; guard any coroutine with ``await breaker.call(fn, ...)``,
    ``@breaker.guard`` or ``async with breaker:``.
    """

    __slots__ = (
        "_clock",
        "_endpoints",
        "_listeners",
        "_on_change",
        "_on_limit",
        "_opened_by",
        "_scrub",
        "config",
        "exchange_id",
        "group",
        "last_error",
        "last_failure_time",
        "machine",
        "timed",
    )

    def __init__(
        self,
        group: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        exchange_id: str = "kraken",
        scrub: Callable[[str], str] = _no_scrub,
        on_limit: LimitHandler | None = None,
        on_change: Callable[[], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.group = group
        self.config = config or BreakerConfig()
        self.exchange_id = exchange_id
        self._clock = clock or SystemClock()
        self.machine = Machine(self.config, rand)
        self._scrub = scrub
        self._on_limit = on_limit
        self._on_change = on_change  # told of every transition before anyone else
        self.timed = self.config.slow_call_duration is not None
        self._listeners: tuple[Listener, ...] = ()
        self._endpoints: dict[str, list[int]] = {}  # endpoint -> [calls, failures, rejected]
        self._opened_by: dict[str, str] | None = None
        self.last_error: dict[str, str] | None = None
        self.last_failure_time: float | None = None

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.group!r} {self.machine.state.value}>"

    # --- reading -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """``'closed'``, ``'open'`` or ``'half_open'`` (a str enum)."""
        return self.machine.state

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call may go: 0 when one may go now, ``None`` while forced open."""
        return self.machine.retry_after(self._clock.monotonic())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serializable picture of this breaker; contains no credentials."""
        m = self.machine
        now, wall = self._clock.monotonic(), self._clock.time()
        counters = self._endpoints.values()
        return {
            "group": self.group,
            "state": m.state.value,
            "reason": m.reason,
            "forced": m.forced,
            "shadow_mode": self.config.shadow_mode,
            "failure_count": m.failure_count,
            "success_count": m.success_count,
            "half_open_in_flight": m.in_flight,
            "reopen_count": m.reopen_count,
            "generation": m.generation,
            "last_failure_time": self.last_failure_time,
            "opened_at": None if m.opened_at is None else wall - (now - m.opened_at),
            "retry_after": m.retry_after(now),
            "last_error": self.last_error,
            "opened_by": self._opened_by,
            "calls": sum(c[0] for c in counters),
            "failures": sum(c[1] for c in counters),
            "rejected": sum(c[2] for c in counters),
            "endpoints": {
                path: {"calls": c[0], "failures": c[1], "rejected": c[2]}
                for path, c in self._endpoints.items()
            },
        }

    # --- steering ------------------------------------------------------------------

    def reset(self) -> None:
        """Close the circuit and forget its counts; ends a forced open."""
        self._change(self.machine.reset, None)

    def force_open(self) -> None:
        """Open the circuit and keep it open until :meth:`reset`."""
        cause = {"type": "ForcedOpen", "message": "force_open() was called"}
        self._change(lambda: self.machine.force_open(self._clock.monotonic()), cause)

    def trip(self, seconds: float, cause: dict[str, str]) -> None:
        """Open at once for at least ``seconds`` (a limit the exchange named)."""
        now = self._clock.monotonic()
        self._change(lambda: self.machine.trip(now, now + seconds), cause)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every transition and rejection of this breaker."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = tuple(x for x in self._listeners if x is not listener)

    # --- guarding any coroutine ------------------------------------------------------

    async def call(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` under this breaker, with the same verdict rules;
        counted under the endpoint ``fn.__name__``."""
        try:
            name = fn.__name__
            counters = self._endpoints[name]
        except (AttributeError, KeyError):  # a first call, or a callable without a name
            name = getattr(fn, "__name__", "call")
            counters = self.counters(name)
        m = self.machine
        if not m.quick:
            return await self._guarded(counters, name, fn, args, kwargs)
        # Closed with no window: admitted, nothing to time (see the ccxt hook). This path is
        # written out here and in guard(): awaiting a shared coroutine would cost as much
        # again as the path itself (BENCHMARKS.md, P2).
        permit = m.generation
        counters[0] += 1
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.settle_error(permit, counters, 0.0, exc, responded=None)
            raise
        if m.failure_count:  # a quick success only ends a failure run
            self.settle(permit, counters, 0.0, SUCCESS)
        return result

    def guard(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]:
        """``fn`` guarded as :meth:`call` guards it, for use as ``@breaker.guard``.

        The endpoint (``fn.__name__``) is looked up once, here, so a guarded call costs
        less than ``call()``. Works on functions and on methods in a class body.
        """
        if not callable(fn):
            raise TypeError(f"guard() takes an async callable, not {type(fn).__name__}")
        name = getattr(fn, "__name__", "call")
        counters = self.counters(name)
        m = self.machine
        breaker = self

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            if not m.quick:
                return await breaker._guarded(counters, name, fn, args, kwargs)
            permit = m.generation  # as in call()
            counters[0] += 1
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                breaker.settle_error(permit, counters, 0.0, exc, responded=None)
                raise
            if m.failure_count:
                breaker.settle(permit, counters, 0.0, SUCCESS)
            return result

        return guarded

    async def _guarded(
        self,
        counters: list[int],
        name: str,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """The general path of call() and guard(): any state, windows, slow-call timing."""
        permit = self.admit(counters, name)
        started = self.start(counters)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.settle_error(permit, counters, started, exc, responded=None)
            raise
        self.settle(permit, counters, started, SUCCESS)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        counters = self._endpoints.get("async with") or self.counters("async with")
        m = self.machine
        if m.quick:  # as in call()
            counters[0] += 1
            _GUARDS.set((self, m.generation, counters, 0.0, _GUARDS.get()))
        else:
            permit = self.admit(counters, None)
            _GUARDS.set((self, permit, counters, self.start(counters), _GUARDS.get()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        guard = _GUARDS.get()
        # blocks in one task exit in reverse order, so this block's entry is on top
        if guard is None or guard[0] is not self:
            raise RuntimeError(f"{self!r} exited a block it did not enter")
        _, permit, counters, started, outer = guard
        _GUARDS.set(outer)
        if exc is None:
            m = self.machine
            if not m.quick or m.failure_count:  # as in call()
                self.settle(permit, counters, started, SUCCESS)
        else:
            self.settle_error(permit, counters, started, exc, responded=None)

    # --- the call protocol, shared with the ccxt hook ---------------------------------

    def counters(self, endpoint: str) -> list[int]:
        """The ``[calls, failures, rejected]`` counters of ``endpoint``, made on first use."""
        counters = self._endpoints.get(endpoint)
        if counters is None:
            if len(self._endpoints) >= MAX_ENDPOINTS:
                endpoint = "*"
            counters = self._endpoints.setdefault(endpoint, [0, 0, 0])
        return counters

    def admit(self, counters: list[int], endpoint: str | None) -> int:
        """A permit for a new call, or :class:`CircuitOpenError` once the rejection is
        counted and reported (shadow mode lets it through with the ``SHADOW`` permit)."""
        m = self.machine
        if m.state is CircuitState.CLOSED:  # the hot path: no clock, no transition
            return m.generation
        now = self._clock.monotonic()  # one reading serves the permit and the rejection
        old, generation = m.state, m.generation
        permit = m.acquire(now)
        if m.generation != generation:
            self._announce(old, None)
        if permit is not None:
            return permit
        counters[2] += 1
        shadow = self.config.shadow_mode
        if self._listeners:
            event = CallRejected(
                self.group,
                endpoint,
                m.state.value,
                m.retry_after(now),
                shadow,
                self._clock.time(),
            )
            emit(self._listeners, event)
        if shadow:
            return SHADOW
        raise rejection(
            self.group, endpoint, m.retry_after(now), self._opened_by, self.exchange_id
        )

    def start(self, counters: list[int]) -> float:
        """Count an attempt as sent; returns its start time when slow calls are timed."""
        counters[0] += 1
        return self._clock.monotonic() if self.timed else 0.0

    def release(self, permit: int) -> None:
        """Give back a permit that was never used for a request."""
        self.machine.release(permit)

    def settle(
        self,
        permit: int,
        counters: list[int],
        started: float,
        kind: int,
        error: dict[str, str] | None = None,
        limit: tuple[str, float] | None = None,
    ) -> None:
        """Record the outcome of an attempt that holds ``permit``."""
        m = self.machine
        if kind == SUCCESS and not self.timed and m.on_quick_success(permit):
            return
        slow = False
        if self.timed:
            duration = self.config.slow_call_duration
            slow = duration is not None and self._clock.monotonic() - started >= duration
        if kind == SUCCESS:
            old, generation = m.state, m.generation
            m.on_success(permit, self._clock.monotonic(), slow)
        elif kind == NEUTRAL:
            m.release(permit)
            return
        else:
            counters[1] += 1
            self.last_error = error
            self.last_failure_time = self._clock.time()
            old, generation = m.state, m.generation
            m.on_failure(permit, self._clock.monotonic(), slow)
        if m.generation != generation:
            self._announce(old, error)
        if limit is not None:
            scope, seconds = limit
            if scope == CALL or self._on_limit is None:
                self.trip(seconds, error or {})
            else:
                self._on_limit(self, scope, seconds, error or {})

    def settle_error(
        self,
        permit: int,
        counters: list[int],
        started: float,
        exc: BaseException,
        *,
        responded: bool | None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        """Judge ``exc`` and record it; never raises."""
        try:
            kind = verdict(exc, responded)
            if kind != FAILURE:
                if isinstance(exc, ccxt.InvalidNonce):
                    logger.warning(
                        "%s %s: invalid nonce (not counted; Kraken locks keys out on repeated "
                        "bad nonces, check the nonce source and clock)",
                        self.exchange_id,
                        self.group,
                    )
                self.settle(permit, counters, started, kind)
                return
            message = str(exc)
            limit = named_limit(
                message, status, headers, self._clock.time(), self.config.lockout_duration
            )
            error = self.summary(type(exc).__name__, message, secrets)
            self.settle(permit, counters, started, FAILURE, error, limit)
        except Exception:  # a bug here must never replace the caller's own exception
            logger.exception("ccxt_breaker failed to record an outcome")
            self.machine.release(permit)

    def summary(self, kind: str, message: str, secrets: tuple[str, ...] = ()) -> dict[str, str]:
        """``{type, message}`` with credentials scrubbed and the message cut short."""
        message = self._scrub(message)
        for secret in secrets:
            if secret:
                message = message.replace(secret, "***")
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        return {"type": kind, "message": message}

    # --- internals -----------------------------------------------------------------

    def _change(self, action: Callable[[], None], cause: dict[str, str] | None) -> None:
        m = self.machine
        old, generation = m.state, m.generation
        action()
        if m.generation != generation:
            self._announce(old, cause)

    def _announce(self, old: CircuitState, cause: dict[str, str] | None) -> None:
        if self._on_change is not None:
            self._on_change()
        m = self.machine
        new = m.state
        retry_after = m.retry_after(self._clock.monotonic())
        if new is OPEN:
            self._opened_by = cause
        logger.log(
            logging.WARNING if new is OPEN else logging.INFO,
            "%s circuit %r %s -> %s (%s)%s retry_after=%s",
            self.exchange_id,
            self.group,
            old.value,
            new.value,
            m.reason,
            f" cause={cause['type']}: {cause['message']}" if cause else "",
            "none (forced)" if retry_after is None else f"{retry_after:.3f}s",
        )
        if self._listeners:
            event = StateChanged(
                self.group, old.value, new.value, m.reason, cause, retry_after, self._clock.time()
            )
            emit(self._listeners, event)
