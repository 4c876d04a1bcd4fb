"""Model-based test: random call sequences drive the pure machine and a reference model.

The reference model below is written from the README's semantics, not from the
machine's code: probes in flight are counted from the permits actually handed out,
the sliding window is a plain list of outcomes filtered on every read, and the open
time is the closed-form ``min(resetTimeout * multiplier ** reopens, cap)``.  Every step
also compares what the two return: the transition made, as ``(old, new, reason)``, or
``None`` when nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._machine import PROBE_WAIT, Machine, Transition

from .conftest import PROFILE

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BUCKETS = 20  # a time window is judged in this many equal buckets (README)

Change = tuple[str, str, str] | None  # (old state, new state, reason), or no transition


def change(transition: Transition | None) -> Change:
    """The machine's transition in the reference's terms."""
    if transition is None:
        return None
    return (transition.old.value, transition.new.value, transition.reason)


# A few window shapes keep the reference simple while covering count and time windows,
# failure-rate and slow-call-rate checks, alone and together.  The last one is small, so
# that outcomes leave it within a few calls, and its thresholds sit just over one half,
# so that a rate of exactly one half (1 of 2) is just under them.
WINDOWS: list[dict[str, Any]] = [
    {},
    {
        "failure_rate_threshold": 50.0,
        "sliding_window_type": "count",
        "sliding_window_size": 4,
        "minimum_number_of_calls": 2,
    },
    {
        "failure_rate_threshold": 50.0,
        "sliding_window_type": "time",
        "sliding_window_duration": 20.0,
        "minimum_number_of_calls": 2,
    },
    {
        "slow_call_duration": 1.0,
        "slow_call_rate_threshold": 50.0,
        "sliding_window_type": "count",
        "sliding_window_size": 5,
        "minimum_number_of_calls": 3,
    },
    {
        "failure_rate_threshold": 60.0,
        "slow_call_duration": 1.0,
        "slow_call_rate_threshold": 75.0,
        "sliding_window_type": "time",
        "sliding_window_duration": 10.0,
        "minimum_number_of_calls": 2,
    },
    {
        "failure_rate_threshold": 50.5,
        "slow_call_duration": 1.0,
        "slow_call_rate_threshold": 50.5,
        "sliding_window_type": "count",
        "sliding_window_size": 3,
        "minimum_number_of_calls": 2,
    },
]

# (resetTimeout, maxResetTimeout): seconds, and a fraction of one, where the logarithms
# of the growth check turn negative
OPEN_TIMES = [(10.0, 100.0), (0.25, 2.0)]

configs = st.builds(
    lambda window, open_time, failures, successes, probes, multiplier, jitter: BreakerConfig(
        failure_threshold=failures,
        success_threshold=successes,
        reset_timeout=open_time[0],
        half_open_max_calls=probes,
        reset_timeout_multiplier=multiplier,
        max_reset_timeout=open_time[1],
        reset_timeout_jitter=jitter,
        **window,
    ),
    st.sampled_from(WINDOWS),
    st.sampled_from(OPEN_TIMES),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([1.0, 1.5, 2.0]),
    st.sampled_from([0.0, 0.2]),
)

OUTCOMES = ["success", "failure", "neutral", "slow success", "slow failure"]


@dataclass
class Reference:
    """What the README says a breaker does, kept as plainly as possible."""

    config: BreakerConfig
    rand: float  # the jitter source's fixed value
    state: str = CLOSED
    forced: bool = False
    epoch: int = 0  # bumped by every transition; a permit is the epoch it was issued in
    failures: int = 0  # consecutive failures while closed
    successes: int = 0  # consecutive probe successes while half-open
    reopens: int = 0  # re-opens since the circuit last closed: the first open is none
    open_until: float = 0.0
    reason: str = "created"  # why the last transition happened
    outstanding: list[int] = field(default_factory=list)  # epochs of permits not yet returned
    window: list[tuple[float, bool, bool]] = field(default_factory=list)  # (time, failed, slow)

    # --- reading ------------------------------------------------------------------

    def in_flight(self) -> int:
        if self.state != HALF_OPEN:
            return 0
        return sum(epoch == self.epoch for epoch in self.outstanding)

    def permitted(self, now: float) -> bool:
        """Whether a call made now would get a permit (after a poll)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return not self.forced and now >= self.open_until
        return self.in_flight() < self.config.half_open_max_calls

    def retry_after(self, now: float) -> float | None:
        if self.state == CLOSED:
            return 0.0
        if self.state == OPEN:
            return None if self.forced else max(0.0, self.open_until - now)
        return 0.0 if self.permitted(now) else PROBE_WAIT

    # --- the call protocol --------------------------------------------------------

    def poll(self, now: float) -> Change:
        if self.state == OPEN and not self.forced and now >= self.open_until:
            return self.enter(HALF_OPEN, "open time elapsed")
        return None

    def acquire(self) -> int | None:
        if self.state == OPEN:
            return None
        if self.state == HALF_OPEN and self.in_flight() >= self.config.half_open_max_calls:
            return None
        self.outstanding.append(self.epoch)
        return self.epoch

    def finish(self, epoch: int, now: float, outcome: str) -> Change:
        self.outstanding.remove(epoch)
        if epoch != self.epoch or outcome == "neutral":
            return None  # stale results and neutral outcomes count for nothing
        failed, slow = "failure" in outcome, outcome.startswith("slow")
        if self.state == HALF_OPEN:
            if failed:
                return self.open(now, "probe failed")
            if slow:
                return self.open(now, "slow probe")
            self.successes += 1
            if self.successes >= self.config.success_threshold:
                return self.enter(CLOSED, "probes succeeded")
            return None
        self.failures = self.failures + 1 if failed else 0
        if self.failures >= self.config.failure_threshold:
            return self.open(now, "consecutive failures")
        return self.judge_window(now, failed, slow)

    def judge_window(self, now: float, failed: bool, slow: bool) -> Change:
        config = self.config
        if config.failure_rate_threshold is None and config.slow_call_duration is None:
            return None
        self.window.append((now, failed, slow))
        if config.sliding_window_type == "count":
            live = self.window[-config.sliding_window_size :]
        else:
            width = config.sliding_window_duration / BUCKETS
            oldest = int(now // width) - BUCKETS
            live = [record for record in self.window if int(record[0] // width) > oldest]
        calls = len(live)
        failures = sum(record[1] for record in live)
        slows = sum(record[2] for record in live)
        if calls < config.minimum_number_of_calls:
            return None
        rate = config.failure_rate_threshold
        if rate is not None and 100 * failures >= rate * calls:
            return self.open(now, "failure rate")
        if config.slow_call_duration is not None and (
            100 * slows >= config.slow_call_rate_threshold * calls
        ):
            return self.open(now, "slow-call rate")
        return None

    # --- orders -------------------------------------------------------------------

    def trip(self, now: float, until: float) -> Change:
        if self.state == OPEN:  # extended in the same epoch: no transition
            self.open_until = max(self.open_until, until)
            return None
        return self.open(now, "limit named by the exchange", until)

    def force_open(self, now: float) -> Change:
        made = self.open(now, "forced open")
        self.forced = True
        return made

    def reset(self) -> Change:
        return self.enter(CLOSED, "reset")

    # --- transitions --------------------------------------------------------------

    def open(self, now: float, reason: str, until: float = 0.0) -> Change:
        config = self.config
        if self.state != CLOSED:  # a failed probe, or a trip or force while not closed
            self.reopens += 1
        if self.reopens == 0:
            duration = config.reset_timeout
        else:
            grown = min(
                config.reset_timeout * config.reset_timeout_multiplier**self.reopens,
                config.max_reset_timeout,
            )
            jittered = grown * (1 + config.reset_timeout_jitter * (2 * self.rand - 1))
            duration = min(max(jittered, config.reset_timeout), config.max_reset_timeout)
        self.open_until = max(now + duration, until)
        return self.enter(OPEN, reason)

    def enter(self, state: str, reason: str) -> Change:
        made = (self.state, state, reason)
        self.epoch += 1
        self.state = state
        self.reason = reason
        self.forced = False
        self.successes = 0
        if state != OPEN:
            self.failures = 0
        if state == CLOSED:
            self.reopens = 0
            self.window = []
        return made


class MachineVersusModel(RuleBasedStateMachine):
    """Drives :class:`Machine` and :class:`Reference` with the same random steps."""

    machine: Machine
    model: Reference

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.permits: list[tuple[int, int]] = []  # (machine permit, model epoch) per call

    @initialize(config=configs, rand=st.sampled_from([0.0, 0.5, 1.0]))
    def build(self, config: BreakerConfig, rand: float) -> None:
        self.machine = Machine(config, rand=lambda: rand)
        self.model = Reference(config, rand)

    def admit(self) -> tuple[int, int] | None:
        """Poll, then take a permit, as the breaker does for every call."""
        self.poll()
        permit = self.machine.acquire()
        expected = self.model.acquire()
        assert (permit is not None) == (expected is not None)
        return None if permit is None or expected is None else (permit, expected)

    def end(self, call: tuple[int, int], outcome: str) -> None:
        permit, epoch = call
        expected = self.model.finish(epoch, self.now, outcome)
        slow = outcome.startswith("slow")
        if outcome == "neutral":
            self.machine.release(permit)
            actual = None
        elif "failure" in outcome:
            actual = change(self.machine.on_failure(permit, self.now, slow))
        else:
            actual = change(self.machine.on_success(permit, self.now, slow))
        assert actual == expected

    @rule()
    def poll(self) -> None:
        """A poll alone, as reading a breaker before a call might do."""
        assert change(self.machine.poll(self.now)) == self.model.poll(self.now)

    @rule(outcome=st.sampled_from(OUTCOMES))
    def call(self, outcome: str) -> None:
        """A call that ends at once, if admitted: the common case."""
        call = self.admit()
        if call is not None:
            self.end(call, outcome)

    @rule()
    def acquire(self) -> None:
        """A call that stays in flight until a later ``finish``."""
        call = self.admit()
        if call is not None:
            self.permits.append(call)

    @precondition(lambda self: bool(self.permits))
    @rule(pick=st.integers(0, 10_000), outcome=st.sampled_from(OUTCOMES))
    def finish(self, pick: int, outcome: str) -> None:
        self.end(self.permits.pop(pick % len(self.permits)), outcome)

    # Orders are rare (one draw in four acts), so that runs of calls reach the windows.
    @rule(
        order=st.sampled_from(["trip", "trip", "force_open", "reset"]),
        seconds=st.sampled_from([0.0, 5.0, 100.0]),
        acts=st.integers(0, 3),
    )
    def order(self, order: str, seconds: float, acts: int) -> None:
        if acts:
            return
        if order == "trip":
            actual = change(self.machine.trip(self.now, self.now + seconds))
            expected = self.model.trip(self.now, self.now + seconds)
        elif order == "force_open":
            actual = change(self.machine.force_open(self.now))
            expected = self.model.force_open(self.now)
        else:
            actual = change(self.machine.reset())
            expected = self.model.reset()
        assert actual == expected

    # the edges of the reset timeout (10 s, 0.25 s) and of the time windows (10 s, 20 s), the
    # bucket widths (0.5 s and 1 s), and any quarter second up to the longest open time
    @rule(
        seconds=st.one_of(
            st.sampled_from([0.0, 0.25, 0.5, 1.0, 9.5, 10.0, 10.5, 19.0, 20.0, 21.0]),
            st.integers(0, 4 * 120).map(lambda quarters: quarters / 4),
        )
    )
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def agrees_with_model(self) -> None:
        m, model = self.machine, self.model
        actual = (
            m.state.value,
            m.reason,
            m.forced,
            m.failure_count,
            m.success_count,
            m.in_flight,
            m.generation,
            m.reopen_count,
        )
        expected = (
            model.state,
            model.reason,
            model.forced,
            model.failures,
            model.successes,
            model.in_flight(),
            model.epoch,
            model.reopens,
        )
        assert actual == expected
        retry_after = m.retry_after(self.now)
        assert retry_after == pytest.approx(model.retry_after(self.now))
        assert (retry_after == 0) == model.permitted(self.now)


def test_machine_matches_reference_model() -> None:
    """Random steps: machine and reference agree on state, counts, admission and transitions."""
    # the counts compared include the re-open count
    run_state_machine_as_test(MachineVersusModel, settings=PROFILE)


gaps = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 9.5, 10.0, 19.0, 20.0]),
    st.integers(0, 4 * 30).map(lambda quarters: quarters / 4),
)


@PROFILE
@given(
    window=st.sampled_from(WINDOWS[1:]),
    calls=st.lists(st.tuples(gaps, st.sampled_from(OUTCOMES)), max_size=80),
)
def test_windows_open_exactly_when_the_reference_does(
    window: dict[str, Any], calls: list[tuple[float, str]]
) -> None:
    """While closed, the rate windows open exactly when the reference's plain list says so."""
    config = BreakerConfig(
        failure_threshold=1000, reset_timeout=10.0, max_reset_timeout=100.0, **window
    )
    machine, model = Machine(config), Reference(config, 0.5)
    now = 1000.0
    for gap, outcome in calls:
        now += gap
        assert machine.poll(now) is None
        permit, epoch = machine.acquire(), model.acquire()
        assert permit is not None
        assert epoch is not None
        expected = model.finish(epoch, now, outcome)
        slow = outcome.startswith("slow")
        if outcome == "neutral":
            machine.release(permit)
            actual = None
        elif "failure" in outcome:
            actual = change(machine.on_failure(permit, now, slow))
        else:
            actual = change(machine.on_success(permit, now, slow))
        assert actual == expected
        assert machine.state.value == model.state
        if model.state == OPEN:  # start over, closed with an empty window
            assert change(machine.reset()) == model.reset() == (OPEN, CLOSED, "reset")
