"""One named circuit breaker: the pure machine plus a clock, counters, events and logs.

Users drive it through ``call()``, ``guard()`` and ``async with``; the ccxt hook drives
it through the private protocol below (``_admit``, ``_begin``, ``_settle``, ``_release``
and ``_trip``), which follows the same rules.  Every path goes through ``_admit`` and
``_settle``, so the closed fast path is written once, there.
"""

from __future__ import annotations

import functools
import html
import logging
import math
import random
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import asdict
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._config import BreakerConfig, Clock, SystemClock
from ._errors import Verdict, label, rejection, verdict
from ._events import CallRejected, Listener, StateChanged, emit
from ._machine import CLOSED, OPEN, CircuitState, Machine, Transition

if TYPE_CHECKING:
    from ._shared import SharedCircuit

__all__ = ["SHADOW", "CircuitBreaker", "Counters"]

logger = logging.getLogger("ccxt_breaker")

# The permit of a call that shadow mode let through: it matches no generation, so the
# machine ignores its outcome, exactly as it would have been ignored had it been refused.
SHADOW = -1
# Endpoints counted one by one; any further ones share the "*" counters.
MAX_ENDPOINTS = 256
# Longest error message kept in snapshots, events and CircuitOpenError.
MAX_MESSAGE = 300
# Where an HTML page starts in an error message (ccxt appends the body of an error
# answer to its message), and the page's title.
_PAGE = re.compile(r"<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)

SUCCESS, FAILURE, NEUTRAL = Verdict.SUCCESS, Verdict.FAILURE, Verdict.NEUTRAL
_ceil = math.ceil
DEBUG = logging.DEBUG
_debug = logger.isEnabledFor

P = ParamSpec("P")
T = TypeVar("T")

# The `async with breaker:` blocks open in this task, innermost first, as linked
# (breaker, permit, counters, started, outer) entries.
_Guard = tuple["CircuitBreaker", int, "Counters", float, "_Guard | None"]
_GUARDS: ContextVar[_Guard | None] = ContextVar("ccxt_breaker_guards", default=None)


def _no_scrub(message: str) -> str:
    return message


def _ms(seconds: float | None) -> float | None:
    """``seconds`` rounded up to the millisecond, as users read it.

    Up, so that waiting ``retry_after`` is always long enough and only a call that may go
    now reads 0; a nanosecond's tolerance keeps float noise (30.000000000000004) from
    adding a millisecond.
    """
    return None if seconds is None else _ceil(seconds * 1000 - 1e-6) / 1000


def _one_line(message: str) -> str:
    """``message`` on one line, and an HTML page in it (a Cloudflare or nginx error page,
    seven lines of markup) told by its title: the status line before it says the rest."""
    page = _PAGE.search(message)
    if page is None:
        return " ".join(message.split())
    found = _TITLE.search(message, page.start())
    title = " ".join(html.unescape(found.group(1)).split()) if found else ""
    head = " ".join(message[: page.start()].split())
    return f"{': '.join(part for part in (head, title) if part)} (HTML page)".lstrip()


class Counters:
    """What one endpoint did: attempts sent, how each ended (success, failure or neutral,
    once it has), and calls refused unsent."""

    __slots__ = ("calls", "failures", "neutral", "rejected", "successes")

    def __init__(self) -> None:
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.neutral = 0
        self.rejected = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "neutral": self.neutral,
            "rejected": self.rejected,
        }


class CircuitBreaker:
    """Guards one group of endpoints.

    Read ``state``, ``retry_after`` and ``snapshot()``; steer with ``reset()`` and
    ``force_open()``; guard any coroutine with ``await breaker.call(fn, ...)``,
    ``@breaker.guard`` or ``async with breaker:``.
    """

    __slots__ = (
        "_clock",
        "_endpoints",
        "_history",
        "_listeners",
        "_lock",
        "_machine",
        "_opened_by",
        "_plain",
        "_scrub",
        "_shared",
        "_timed",
        "_transitions",
        "config",
        "exchange_id",
        "group",
        "last_error",
        "last_failure_time",
        "name",
    )

    def __init__(
        self,
        group: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        exchange_id: str = "kraken",
        scrub: Callable[[str], str] = _no_scrub,
        rand: Callable[[], float] = random.random,
        name: str | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.group = group
        self.config = config or BreakerConfig()
        self.exchange_id = exchange_id
        self.name = name  # the config's `name`: which account, in logs and snapshots
        self._clock = clock or SystemClock()
        # Held wherever the machine changes: by the sync ccxt hook around each protocol
        # step, by steering, and by every step past the closed path's fast exits, so that
        # threads of a sync exchange, a kill switch in another thread and an event loop
        # change one machine in turn.  A closed call and a refusal take it nowhere: they
        # only read.
        self._lock = lock or threading.RLock()
        self._machine = Machine(self.config, rand)
        self._scrub = scrub
        self._timed = self.config.slow_call_duration is not None
        # no window and no timing: a closed success only ends a run of failures
        self._plain = not self.config.uses_window
        self._listeners: tuple[Listener, ...] = ()
        self._endpoints: dict[str, Counters] = {}
        # (from_state, to_state) -> how often, since the breaker was made
        self._transitions: dict[tuple[str, str], int] = {}
        # made at the first transition: an empty deque already holds a 64-slot block, half
        # the memory of a breaker that never trips
        self._history: deque[StateChanged] | None = None
        self._opened_by: dict[str, str] | None = None
        self.last_error: dict[str, str] | None = None
        self.last_failure_time: float | None = None
        # the tie to a circuit shared with other instances (sharedState), set by the registry
        self._shared: SharedCircuit | None = None

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.group!r} {self._machine.state.value}>"

    # --- reading -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """``'closed'``, ``'open'`` or ``'half_open'`` (a str enum)."""
        return self._machine.state

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call may go, rounded up to the millisecond: 0 when one may go
        now, ``None`` while forced open."""
        return _ms(self._machine.retry_after(self._clock.monotonic()))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serializable picture of this breaker; contains no credentials.

        Safe to take from another thread (a metrics scrape): the dicts are copied whole, in
        one step under the GIL, before they are read."""
        m = self._machine
        now, wall = self._clock.monotonic(), self._clock.time()
        endpoints = tuple(self._endpoints.items())
        counters = [c for _, c in endpoints]
        return {
            "group": self.group,
            "name": None if self.name is None else self._scrub(self.name),
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
            "retry_after": _ms(m.retry_after(now)),
            "last_error": self.last_error,
            "opened_by": self._opened_by,
            "calls": sum(c.calls for c in counters),
            "successes": sum(c.successes for c in counters),
            "failures": sum(c.failures for c in counters),
            "neutral": sum(c.neutral for c in counters),
            "rejected": sum(c.rejected for c in counters),
            "transitions": [
                {"from_state": old, "to_state": new, "count": count}
                for (old, new), count in tuple(self._transitions.items())
            ],
            "endpoints": {path: c.as_dict() for path, c in endpoints},
            "shared_state": None if self._shared is None else self._shared.store.status,
        }

    def history(self) -> list[dict[str, Any]]:
        """The last ``historySize`` transitions, oldest first, as JSON-ready dicts with the
        fields of :class:`StateChanged` (``time`` in epoch seconds)."""
        events = () if self._history is None else tuple(self._history)  # see snapshot()
        return [asdict(event) for event in events]

    # --- steering ------------------------------------------------------------------

    def reset(self) -> None:
        """Close the circuit and forget its counts and the errors behind them; ends a
        forced open."""
        with self._lock:
            self.last_error = self._opened_by = None
            self._announce(self._machine.reset(), None)
            if self._shared is not None:
                self._shared.reset()

    def force_open(self) -> None:
        """Open the circuit and keep it open until :meth:`reset`."""
        cause = {"type": "ForcedOpen", "message": "force_open() was called"}
        with self._lock:
            self._announce(self._machine.force_open(self._clock.monotonic()), cause)
            if self._shared is not None:
                self._shared.opened(True, "forced open", cause)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every transition and rejection of this breaker."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; a listener that was never added is ignored."""
        self._listeners = tuple(x for x in self._listeners if x is not listener)

    # --- guarding any coroutine ------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this breaker, with the same verdict rules;
        counted under the endpoint ``fn.__name__``."""
        name = getattr(fn, "__name__", "call")
        return await self._run(self._counters(name), name, fn, args, kwargs)

    def guard(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]:
        """``fn`` guarded as :meth:`call` guards it, for use as ``@breaker.guard``.

        The endpoint (``fn.__name__``) is looked up once, here. Works on functions and on
        methods in a class body, and keeps the function's name, docstring and signature.
        """
        if not callable(fn):
            raise TypeError(f"guard() takes an async callable, not {type(fn).__name__}")
        name = getattr(fn, "__name__", "call")
        counters = self._counters(name)
        run = self._run

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await run(counters, name, fn, args, kwargs)

        return guarded

    async def _run(
        self,
        counters: Counters,
        name: str,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        permit = self._admit(counters, name)
        if self._shared is not None and self._shared.asks():
            permit = await self._shared.admit(permit, counters, name)
        started = self._begin(counters)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(permit, counters, started, exc)
            raise
        self._settle(permit, counters, started, SUCCESS)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        counters = self._counters("async with")
        permit = self._admit(counters, None)
        if self._shared is not None and self._shared.asks():
            permit = await self._shared.admit(permit, counters, None)
        _GUARDS.set((self, permit, counters, self._begin(counters), _GUARDS.get()))
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
            self._settle(permit, counters, started, SUCCESS)
        else:
            self._settle_exception(permit, counters, started, exc)

    # --- the protocol of the ccxt hook: private to the package -------------------------

    def _counters(self, endpoint: str) -> Counters:
        """The counters of ``endpoint``, made on first use."""
        counters = self._endpoints.get(endpoint)
        if counters is None:
            if len(self._endpoints) >= MAX_ENDPOINTS:
                endpoint = "*"
            counters = self._endpoints.setdefault(endpoint, Counters())
        return counters

    def _admit(self, counters: Counters, endpoint: str | None, held: int | None = None) -> int:
        """A permit for a call, or :class:`CircuitOpenError` once the rejection is counted
        and reported (shadow mode lets the call through with the ``SHADOW`` permit).

        ``held`` is a permit the call took earlier (before ccxt's queue, or before a
        retry delay); it is kept while the circuit is still in the generation that issued
        it, and otherwise replaced, so a call that waited through a transition is
        judged again.
        """
        m = self._machine
        if held is not None and (held == m.generation or held == SHADOW):
            return held
        if m.state is CLOSED:  # the fast path: no clock, no transition
            return m.generation
        now = self._clock.monotonic()  # one reading serves the permit and the rejection
        if not m.refuses(now):  # (a refusal asks once, rather than poll and acquire)
            with self._lock:  # a probe's permit, while a kill switch may steer from a thread
                transition = m.poll(now)
                if transition is not None:
                    self._announce(transition, None)
                permit = m.acquire()
            if permit is not None:
                return permit
        counters.rejected += 1
        shadow = self.config.shadow_mode
        retry_after = m.retry_after(now)
        if retry_after:  # _ms() inline: a call more is a tenth of a rejection's cost
            retry_after = _ceil(retry_after * 1000 - 1e-6) / 1000
        name = self.name
        if self._listeners:
            event = CallRejected(
                self.group, endpoint, m.state.value, retry_after, shadow, self._clock.time(), name
            )
            emit(self._listeners, event)
        if _debug(DEBUG):  # off by default: a refused loop would log thousands a second
            logger.debug(
                "%s circuit %r %s %s (%s), retry_after=%s",
                label(self.exchange_id, name),
                self.group,
                "would refuse (shadow mode)" if shadow else "refused",
                endpoint or "a call",
                "not sent" if not shadow else "sent",
                "none (forced)" if retry_after is None else f"{retry_after:.3f}s",
            )
        if shadow:
            return SHADOW
        if name is None:  # five fields, as an unnamed rejection always had
            raise rejection(self.group, endpoint, retry_after, self._opened_by, self.exchange_id)
        raise rejection(self.group, endpoint, retry_after, self._opened_by, self.exchange_id, name)

    def _refuse(self, counters: Counters, endpoint: str | None, retry_after: float) -> int:
        """Refuse a call for a reason the machine does not know (every shared probe is out
        elsewhere), as :meth:`_admit` refuses; that keeps its own copy inline, where a
        call more costs a tenth of a rejection."""
        counters.rejected += 1
        shadow = self.config.shadow_mode
        state, wait = self._machine.state.value, _ms(retry_after)
        if self._listeners:
            event = CallRejected(
                self.group, endpoint, state, wait, shadow, self._clock.time(), self.name
            )
            emit(self._listeners, event)
        if shadow:
            return SHADOW
        if self.name is None:  # five fields, as an unnamed rejection always had
            raise rejection(self.group, endpoint, wait, self._opened_by, self.exchange_id)
        raise rejection(self.group, endpoint, wait, self._opened_by, self.exchange_id, self.name)

    def _begin(self, counters: Counters) -> float:
        """Count an attempt as sent; returns its start time when slow calls are timed."""
        counters.calls += 1
        return self._clock.monotonic() if self._timed else 0.0

    def _release(self, permit: int) -> None:
        """Give back a permit that no attempt used."""
        with self._lock:
            self._machine.release(permit)

    def _settle(
        self,
        permit: int,
        counters: Counters,
        started: float,
        kind: Verdict,
        error: dict[str, str] | None = None,
    ) -> None:
        """Record the outcome of an attempt that holds ``permit``; never raises."""
        m = self._machine
        if kind is SUCCESS:
            counters.successes += 1
            if self._plain and m.state is CLOSED and not m.failure_count and permit == m.generation:
                return  # the fast path: nothing would change, so no clock and no machine call
        with self._lock:  # past the fast path, the machine changes: see _admit
            try:
                shared = self._shared
                if kind is NEUTRAL:
                    counters.neutral += 1
                    if shared is not None:
                        shared.released(permit)
                    m.release(permit)
                    return
                now = self._clock.monotonic()
                duration = self.config.slow_call_duration
                slow = duration is not None and now - started >= duration
                before, streak, current = m.state, m.failure_count, permit == m.generation
                if kind is SUCCESS:
                    transition = m.on_success(permit, now, slow)
                else:
                    counters.failures += 1
                    self.last_error = error
                    self.last_failure_time = self._clock.time()
                    transition = m.on_failure(permit, now, slow)
                if transition is not None:
                    self._announce(transition, error)
                if shared is not None and current:
                    shared.settled(permit, before, streak, kind is SUCCESS, transition, error)
            except Exception:  # a bug here must never replace the caller's own outcome
                logger.exception("ccxt_breaker failed to record an outcome")
                m.release(permit)

    def _settle_exception(
        self, permit: int, counters: Counters, started: float, exc: BaseException
    ) -> None:
        """Judge ``exc``, raised by a guarded coroutine, and record it."""
        kind = verdict(exc)
        error = self._summary(type(exc).__name__, str(exc)) if kind is FAILURE else None
        self._settle(permit, counters, started, kind, error)

    def _trip(self, seconds: float, cause: dict[str, str]) -> None:
        """Open at once for at least ``seconds`` (a limit the exchange named)."""
        with self._lock:
            now = self._clock.monotonic()
            self._announce(self._machine.trip(now, now + seconds), cause)
            if self._shared is not None:
                self._shared.opened(False, "limit named by the exchange", cause)

    def _summary(self, kind: str, message: str, secrets: tuple[str, ...] = ()) -> dict[str, str]:
        """``{type, message}``: the message on one line, an HTML page told by its title,
        credentials scrubbed, and cut short. The exception itself is left as it is."""
        # scrubbed before (a secret may hold a run of spaces) and after (collapsing them,
        # or unescaping a title, may complete one) the message is made readable
        message = self._redact(_one_line(self._redact(message, secrets)), secrets)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        return {"type": kind, "message": message}

    # --- internals -----------------------------------------------------------------

    def _redact(self, message: str, secrets: tuple[str, ...]) -> str:
        message = self._scrub(message)
        for secret in secrets:
            if secret:
                message = message.replace(secret, "***")
        return message

    def _announce(self, transition: Transition | None, cause: dict[str, str] | None) -> None:
        if transition is None:  # a trip of a circuit already open, extended in place
            return
        new = transition.new
        retry_after = _ms(self._machine.retry_after(self._clock.monotonic()))
        if new is OPEN:
            self._opened_by = cause
        name = None if self.name is None else self._scrub(self.name)
        logger.log(
            logging.WARNING if new is OPEN else logging.INFO,
            "%s circuit %r %s -> %s (%s)%s retry_after=%s",
            label(self.exchange_id, name),
            self.group,
            transition.old.value,
            new.value,
            transition.reason,
            f" cause={cause['type']}: {cause['message']}" if cause else "",
            "none (forced)" if retry_after is None else f"{retry_after:.3f}s",
        )
        key = (transition.old.value, new.value)
        self._transitions[key] = self._transitions.get(key, 0) + 1
        event = StateChanged(
            self.group,
            transition.old.value,
            new.value,
            transition.reason,
            cause,
            retry_after,
            self._clock.time(),
            name,
        )
        history = self._history
        if history is None:
            history = self._history = deque(maxlen=self.config.history_size)
        history.append(event)
        if self._listeners:
            emit(self._listeners, event)
