"""The circuit breaker state machine: pure, synchronous, and free of I/O.

Every method takes ``now`` (seconds on a monotonic clock) from its caller, so the
machine never reads a clock and tests drive it with plain numbers.  Every method that
can change the state returns the :class:`Transition` it made, or ``None`` (as h11's
state machine does), so callers never compare before and after.

Transitions::

    CLOSED --(failureThreshold consecutive failures, a failure/slow-call rate
              over the window, or a trip)-----------------------------> OPEN
    OPEN ----(the open time has passed: poll())------------------------> HALF_OPEN
    HALF_OPEN --(successThreshold consecutive probe successes)---------> CLOSED
    HALF_OPEN --(a failed or slow probe, or a trip)--------------------> OPEN
    any -----(force_open)--> OPEN (forced, until reset)    any --(reset)--> CLOSED
    any -----(adopt_open / adopt_close: decided by another instance)--> OPEN / CLOSED

The call protocol is resilience4j's: ``acquire`` hands out a permit (the generation
it was issued in), and the caller returns it through exactly one of ``on_success``,
``on_failure`` or ``release``.  Every transition bumps the generation, so a result
that comes back after a transition is ignored (gobreaker's generation counter): a
call that started in one state never changes the counts of the next.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ._config import BreakerConfig

__all__ = ["PROBE_WAIT", "CircuitState", "Machine", "Transition"]

# What a half-open rejection tells the caller to wait: the probe's outcome is not
# scheduled, so this is an estimate, short enough to catch the close promptly.
PROBE_WAIT = 1.0


class CircuitState(enum.StrEnum):
    """The state of a circuit; compares equal to its string value."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Transition:
    """What one state change did: from ``old`` to ``new``, and why, in words."""

    old: CircuitState
    new: CircuitState
    reason: str


_FAILED, _SLOW = 1, 2


class _CountWindow:
    """The outcomes of the last ``size`` calls, in a ring."""

    __slots__ = ("calls", "failures", "next", "outcomes", "slow")

    def __init__(self, size: int) -> None:
        self.outcomes = bytearray(size)
        self.next = 0
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, outcome: int) -> None:
        if self.calls == len(self.outcomes):
            old = self.outcomes[self.next]
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        else:
            self.calls += 1
        self.outcomes[self.next] = outcome
        self.next = (self.next + 1) % len(self.outcomes)
        self.failures += outcome & _FAILED
        self.slow += (outcome & _SLOW) >> 1

    def totals(self, now: float) -> tuple[int, int, int]:
        return self.calls, self.failures, self.slow


class _TimeWindow:
    """Outcomes of the last ``duration`` seconds, in ``BUCKETS`` equal time buckets."""

    BUCKETS = 20
    __slots__ = ("calls", "failures", "slow", "stamps", "width")

    def __init__(self, duration: float) -> None:
        self.width = duration / self.BUCKETS
        # per bucket: its number on the time line, and its counts
        self.stamps = [-1] * self.BUCKETS
        self.calls = [0] * self.BUCKETS
        self.failures = [0] * self.BUCKETS
        self.slow = [0] * self.BUCKETS

    def add(self, now: float, outcome: int) -> None:
        number = int(now // self.width)
        i = number % self.BUCKETS
        if self.stamps[i] != number:
            self.stamps[i] = number
            self.calls[i] = self.failures[i] = self.slow[i] = 0
        self.calls[i] += 1
        self.failures[i] += outcome & _FAILED
        self.slow[i] += (outcome & _SLOW) >> 1

    def totals(self, now: float) -> tuple[int, int, int]:
        oldest = int(now // self.width) - self.BUCKETS
        live = [i for i, stamp in enumerate(self.stamps) if stamp > oldest]
        return (
            sum(self.calls[i] for i in live),
            sum(self.failures[i] for i in live),
            sum(self.slow[i] for i in live),
        )


class Machine:
    """One breaker's state. Methods take ``now``; none of them blocks or reads a clock."""

    __slots__ = (
        "_rand",
        "_window",
        "config",
        "failure_count",
        "forced",
        "generation",
        "in_flight",
        "open_until",
        "opened_at",
        "reason",
        "reopen_count",
        "state",
        "success_count",
    )

    def __init__(self, config: BreakerConfig, rand: Callable[[], float] = random.random) -> None:
        self.config = config
        self._rand = rand
        self.state = CLOSED
        self.generation = 0
        self.forced = False
        self.failure_count = 0  # consecutive failures while closed
        self.success_count = 0  # consecutive probe successes while half-open
        self.in_flight = 0  # probes out while half-open
        self.open_until = 0.0
        self.opened_at: float | None = None
        self.reopen_count = 0  # re-opens since the circuit last closed: 0 on the first open
        self.reason = "created"  # why the last transition happened, in words
        self._window = self._new_window()

    # --- the call protocol ---------------------------------------------------------

    def poll(self, now: float) -> Transition | None:
        """Move an open circuit whose open time has passed to half-open."""
        if self.state is OPEN and not self.forced and now >= self.open_until:
            return self._enter(HALF_OPEN, "open time elapsed")
        return None

    def refuses(self, now: float) -> bool:
        """Whether a call now is refused as things stand, with no transition due: open
        and not yet due (or forced), or half-open with every probe out. Changes nothing."""
        state = self.state
        if state is OPEN:
            return self.forced or now < self.open_until
        return state is HALF_OPEN and self.in_flight >= self.config.half_open_max_calls

    def acquire(self) -> int | None:
        """A permit (the current generation) for one call, or ``None`` to reject it.

        Call :meth:`poll` first: an open circuit whose time has come rejects until then.
        """
        state = self.state
        if state is CLOSED:
            return self.generation
        if state is OPEN or self.in_flight >= self.config.half_open_max_calls:
            return None
        self.in_flight += 1
        return self.generation

    def release(self, permit: int) -> None:
        """Give a permit back unjudged (cancelled, neutral, or never sent)."""
        if permit == self.generation and self.state is HALF_OPEN:
            self.in_flight -= 1

    def on_success(self, permit: int, now: float, slow: bool = False) -> Transition | None:
        """The call got a real answer from the exchange."""
        if permit != self.generation:
            return None
        if self.state is CLOSED:
            self.failure_count = 0
            return self._judge(now, _SLOW if slow else 0)
        if self.state is HALF_OPEN:
            self.in_flight -= 1
            if slow:
                return self._open(now, "slow probe")
            self.success_count += 1
            if self.success_count >= self.config.success_threshold:
                return self._enter(CLOSED, "probes succeeded")
        return None

    def on_failure(self, permit: int, now: float, slow: bool = False) -> Transition | None:
        """The call showed the exchange failing or overloaded."""
        if permit != self.generation:
            return None
        if self.state is CLOSED:
            self.failure_count += 1
            if self.failure_count >= self.config.failure_threshold:
                return self._open(now, "consecutive failures")
            return self._judge(now, _FAILED | (_SLOW if slow else 0))
        if self.state is HALF_OPEN:
            return self._open(now, "probe failed")  # a new generation: no probe is out
        return None

    # --- orders from outside the call protocol -------------------------------------

    def trip(self, now: float, until: float) -> Transition | None:
        """Open at once, for at least the normal open time and until ``until``.

        Used when the exchange itself names a limit: a lockout or a rate limit.  An open
        circuit stays open in the same generation, for the later of the two times.
        """
        if self.state is OPEN:
            self.open_until = max(self.open_until, until)
            return None
        return self._open(now, "limit named by the exchange", until)

    def force_open(self, now: float) -> Transition:
        """Open and stay open until :meth:`reset`."""
        transition = self._open(now, "forced open")
        self.forced = True
        return transition

    def reset(self) -> Transition:
        """Close, forgetting every count and the growth of the open time."""
        return self._enter(CLOSED, "reset")

    # --- states decided by another instance (shared state) ---------------------------

    def adopt_open(self, now: float, until: float, forced: bool, reason: str) -> Transition | None:
        """Open as another instance decided: until ``until``, or until reset when ``forced``.

        An open circuit stays in its generation and keeps the later of the two deadlines
        (an update that arrives late never shortens an open); a half-open one re-opens.
        """
        if self.state is OPEN:
            self.open_until = max(self.open_until, until)
            self.forced = self.forced or forced
            return None
        if self.state is not CLOSED:
            self.reopen_count += 1
        self.open_until = until
        self.opened_at = now
        transition = self._enter(OPEN, reason)
        self.forced = forced
        return transition

    def adopt_close(self, reason: str, failures: int) -> Transition | None:
        """Close as another instance decided, carrying the shared run of ``failures``; a
        closed circuit only takes the run."""
        transition = None if self.state is CLOSED else self._enter(CLOSED, reason)
        self.failure_count = failures
        return transition

    # --- reading -------------------------------------------------------------------

    def retry_after(self, now: float) -> float | None:
        """Seconds until a call may go; ``None`` while forced open."""
        if self.state is CLOSED:
            return 0.0
        if self.state is OPEN:
            return None if self.forced else max(0.0, self.open_until - now)
        return 0.0 if self.in_flight < self.config.half_open_max_calls else PROBE_WAIT

    # --- internals -----------------------------------------------------------------

    def _new_window(self) -> _CountWindow | _TimeWindow | None:
        config = self.config
        if not config.uses_window:
            return None
        if config.sliding_window_type == "time":
            return _TimeWindow(config.sliding_window_duration)
        return _CountWindow(config.sliding_window_size)

    def _judge(self, now: float, outcome: int) -> Transition | None:
        window = self._window
        if window is None:
            return None
        window.add(now, outcome)
        calls, failures, slow = window.totals(now)
        config = self.config
        if calls < config.minimum_number_of_calls:
            return None
        rate = config.failure_rate_threshold
        if rate is not None and failures * 100 >= rate * calls:
            return self._open(now, "failure rate")
        if config.slow_call_duration is not None and (
            slow * 100 >= config.slow_call_rate_threshold * calls
        ):
            return self._open(now, "slow-call rate")
        return None

    def _open_time(self) -> float:
        config = self.config
        if self.reopen_count == 0:
            return config.reset_timeout
        # compare logarithms: the multiplier's power overflows a float after enough reopens
        base, cap = config.reset_timeout, config.max_reset_timeout
        factor = config.reset_timeout_multiplier
        if self.reopen_count * math.log(factor) >= math.log(cap / base):
            grown = cap
        else:
            grown = base * factor**self.reopen_count
        jitter = config.reset_timeout_jitter * (2 * self._rand() - 1)
        return max(base, min(grown * (1 + jitter), cap))

    def _open(self, now: float, reason: str, until: float = 0.0) -> Transition:
        # an open from closed is the first (closing zeroed the count); any other re-opens
        if self.state is not CLOSED:
            self.reopen_count += 1
        self.open_until = max(now + self._open_time(), until)
        self.opened_at = now
        return self._enter(OPEN, reason)

    def _enter(self, state: CircuitState, reason: str) -> Transition:
        transition = Transition(self.state, state, reason)
        self.generation += 1
        self.state = state
        self.reason = reason
        self.in_flight = 0
        self.success_count = 0
        self.forced = False
        if state is not OPEN:
            self.failure_count = 0
        if state is CLOSED:
            self.reopen_count = 0
            self.opened_at = None
            self._window = self._new_window()
        return transition
