"""The pure state machine, driven synchronously with plain numbers for time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._machine import PROBE_WAIT, CircuitState, Machine

BASE = BreakerConfig(failure_threshold=3, success_threshold=2, reset_timeout=10.0,
                     reset_timeout_jitter=0.0, max_reset_timeout=60.0)


def opened(config: BreakerConfig = BASE, now: float = 0.0) -> Machine:
    m = Machine(config)
    for _ in range(config.failure_threshold):
        m.on_failure(m.acquire(now) or 0, now)
    assert m.state is CircuitState.OPEN
    return m


def half_open(config: BreakerConfig = BASE) -> Machine:
    m = opened(config)
    m.acquire(config.reset_timeout)
    assert m.state is CircuitState.HALF_OPEN
    m.release(m.generation)
    return m


def steps(m: Machine, script: str, now: float = 0.0) -> None:
    """Run one call per letter: f=failure, s=success, n=neutral, w=slow success."""
    for letter in script:
        permit = m.acquire(now)
        assert permit is not None
        if letter == "f":
            m.on_failure(permit, now)
        elif letter == "s":
            m.on_success(permit, now)
        elif letter == "w":
            m.on_success(permit, now, slow=True)
        else:
            m.release(permit)


@pytest.mark.parametrize(
    ("script", "state", "failure_count"),
    [
        ("ff", CircuitState.CLOSED, 2),
        ("fff", CircuitState.OPEN, 3),
        ("ffsff", CircuitState.CLOSED, 2),
        ("ffnf", CircuitState.OPEN, 3),
        ("ffnnnn", CircuitState.CLOSED, 2),
        ("ffw", CircuitState.CLOSED, 0),
    ],
)
def test_closed_transitions(script: str, state: CircuitState, failure_count: int) -> None:
    """failureThreshold consecutive failures open; a success resets the run; neutral is ignored."""
    m = Machine(BASE)
    steps(m, script)
    assert (m.state, m.failure_count) == (state, failure_count)


def test_open_rejects_until_reset_timeout_then_half_opens() -> None:
    """An open circuit refuses every call until exactly resetTimeout has passed."""
    m = opened()
    assert m.acquire(9.999) is None
    assert m.retry_after(4.0) == pytest.approx(6.0)
    assert m.acquire(10.0) is not None
    assert m.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize("limit", [1, 3])
def test_half_open_admits_exactly_max_calls(limit: int) -> None:
    """Half-open hands out halfOpenMaxCalls permits at once and refuses the rest."""
    m = opened(replace(BASE, half_open_max_calls=limit))
    permits = [m.acquire(10.0) for _ in range(limit + 5)]
    assert sum(p is not None for p in permits) == limit
    assert m.retry_after(10.0) == PROBE_WAIT


def test_half_open_release_gives_the_slot_back() -> None:
    """A released probe (cancelled or neutral) frees its slot without changing counts."""
    m = half_open()
    permit = m.acquire(10.0)
    assert permit is not None
    assert m.acquire(10.0) is None
    m.release(permit)
    assert (m.state, m.success_count, m.in_flight) == (CircuitState.HALF_OPEN, 0, 0)
    assert m.acquire(10.0) is not None


@pytest.mark.parametrize(
    ("script", "state"),
    [("s", CircuitState.HALF_OPEN), ("ss", CircuitState.CLOSED), ("sf", CircuitState.OPEN),
     ("f", CircuitState.OPEN), ("w", CircuitState.OPEN), ("nss", CircuitState.CLOSED)],
)
def test_half_open_transitions(script: str, state: CircuitState) -> None:
    """successThreshold probe successes close; a failed or slow probe re-opens."""
    m = half_open()
    steps(m, script, now=10.0)
    assert m.state is state


def test_open_time_grows_on_reopen_and_resets_on_close() -> None:
    """Each consecutive re-open multiplies the open time, up to its cap; closing forgets it."""
    m = opened()
    durations = []
    now = 0.0
    for _ in range(5):
        durations.append(m.open_until - now)
        now = m.open_until
        steps(m, "f", now)  # the probe fails
    assert durations == [10.0, 20.0, 40.0, 60.0, 60.0]
    now = m.open_until
    steps(m, "ss", now)
    steps(m, "fff", now)
    assert m.open_until - now == 10.0


def test_first_open_time_is_exact_and_jitter_only_grows_later() -> None:
    """The first open lasts exactly resetTimeout; jitter moves only grown open times."""
    config = replace(BASE, reset_timeout_jitter=0.5)
    m = Machine(config, rand=lambda: 1.0)  # the largest jitter
    steps(m, "fff")
    assert m.open_until == 10.0
    steps(m, "f", now=10.0)
    assert m.open_until - 10.0 == pytest.approx(20.0 * 1.5)


def test_huge_number_of_reopens_stays_at_the_cap() -> None:
    """The growth never overflows: after thousands of re-opens the open time is the cap."""
    m = opened(replace(BASE, reset_timeout_multiplier=10.0))
    m.reopen_count = 5000
    steps(m, "f", now=m.open_until)
    assert m.retry_after(m.opened_at or 0.0) == 60.0


def test_stale_results_are_ignored() -> None:
    """A result carrying an older generation changes no count (gobreaker's generation)."""
    m = Machine(BASE)
    old = m.acquire(0.0)
    assert old is not None
    steps(m, "fff")
    m.on_failure(old, 0.0)
    m.on_success(old, 0.0)
    assert (m.state, m.failure_count) == (CircuitState.OPEN, 3)
    m.acquire(10.0)
    m.on_failure(old, 10.0)
    assert (m.state, m.in_flight) == (CircuitState.HALF_OPEN, 1)


def test_trip_opens_at_once_for_the_later_time() -> None:
    """A trip opens whatever the count, until the later of the named time and the open time."""
    m = Machine(BASE)
    m.trip(0.0, until=100.0)
    assert (m.state, m.open_until) == (CircuitState.OPEN, 100.0)
    m2 = Machine(BASE)
    m2.trip(0.0, until=3.0)
    assert m2.open_until == 10.0
    m2.trip(1.0, until=50.0)  # already open: extended, same generation
    assert (m2.open_until, m2.generation) == (50.0, 1)


def test_force_open_holds_until_reset() -> None:
    """force_open refuses every call with no retry time until reset closes the circuit."""
    m = Machine(BASE)
    m.force_open(0.0)
    assert m.acquire(1e9) is None
    assert m.retry_after(0.0) is None
    m.trip(0.0, until=5.0)
    assert m.forced
    m.reset()
    assert (m.state, m.acquire(0.0)) == (CircuitState.CLOSED, m.generation)


@pytest.mark.parametrize(
    ("window", "outcomes", "state"),
    [
        # 10 calls, 50 % threshold: 4 failures of 10 stay closed, 5 open
        ({"sliding_window_size": 10}, "ssssssffff", CircuitState.CLOSED),
        ({"sliding_window_size": 10}, "sssssfffff", CircuitState.OPEN),
        # below minimumNumberOfCalls the rate is not judged
        ({"sliding_window_size": 10, "minimum_number_of_calls": 10}, "sfsfsfsf",
         CircuitState.CLOSED),
        # the window slides: 2 of the last 4 fail, though only 3 of all 7 did
        ({"sliding_window_size": 4, "minimum_number_of_calls": 4}, "fsssfsf", CircuitState.OPEN),
    ],
)
def test_failure_rate_window(window: dict[str, int], outcomes: str, state: CircuitState) -> None:
    """A failure rate at or over failureRateThreshold across the window opens the circuit."""
    config = replace(BASE, failure_threshold=100, failure_rate_threshold=50.0,
                     minimum_number_of_calls=window.pop("minimum_number_of_calls", 4), **window)
    m = Machine(config)
    steps(m, outcomes)
    assert m.state is state


def test_time_window_forgets_old_calls() -> None:
    """A time-based window counts only the calls of the last slidingWindowDuration."""
    config = replace(BASE, failure_threshold=100, failure_rate_threshold=50.0,
                     sliding_window_type="time", sliding_window_duration=10.0,
                     minimum_number_of_calls=4)
    m = Machine(config)
    steps(m, "fff", now=0.0)
    steps(m, "ssss", now=20.0)  # the failures are out of the window by now
    assert m.state is CircuitState.CLOSED
    steps(m, "ffff", now=21.0)
    assert m.state is CircuitState.OPEN


def test_slow_call_rate_opens() -> None:
    """Slow successes at or over slowCallRateThreshold open the circuit."""
    config = replace(BASE, slow_call_duration=1.0, slow_call_rate_threshold=50.0,
                     sliding_window_size=4, minimum_number_of_calls=4)
    m = Machine(config)
    steps(m, "swsw")
    assert (m.state, m.reason) == (CircuitState.OPEN, "slow-call rate")
