"""The pure state machine, driven synchronously with plain numbers for time.

Every call that can change the state goes through :func:`act`, which checks the h11-style
contract on each of them: a :class:`Transition` comes back exactly when the machine made
one (its generation moved), it names the state before and after and the machine's own
reason, and ``None`` comes back exactly when nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._machine import PROBE_WAIT, CircuitState, Machine, Transition

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

BASE = BreakerConfig(
    failure_threshold=3,
    success_threshold=2,
    reset_timeout=10.0,
    reset_timeout_jitter=0.0,
    max_reset_timeout=60.0,
)
# a window config never opens on a run of consecutive failures
NO_RUNS = replace(BASE, failure_threshold=1000)


def act(m: Machine, method: Callable[..., Transition | None], *args: Any) -> Transition | None:
    """Call ``method`` and check the contract of what it returned."""
    old, generation = m.state, m.generation
    transition = method(*args)
    if transition is None:
        assert (m.state, m.generation) == (old, generation)
    else:
        assert m.generation == generation + 1
        assert transition == Transition(old, m.state, m.reason)
    return transition


def admit(m: Machine, now: float) -> int | None:
    """What the breaker does for every call: poll, then take a permit."""
    act(m, m.poll, now)
    return m.acquire()


def steps(m: Machine, script: str, now: float = 0.0) -> list[Transition]:
    """Run one call per letter and return the transitions they made: f=failure,
    s=success, n=neutral, w=slow success, x=slow failure."""
    made = []
    for letter in script:
        permit = admit(m, now)
        assert permit is not None
        if letter == "n":
            m.release(permit)
            continue
        if letter in "fx":
            transition = act(m, m.on_failure, permit, now, letter == "x")
        else:
            transition = act(m, m.on_success, permit, now, letter == "w")
        if transition is not None:
            made.append(transition)
    return made


def opened(config: BreakerConfig = BASE, now: float = 0.0) -> Machine:
    m = Machine(config)
    assert steps(m, "f" * config.failure_threshold, now)[-1].new is OPEN
    return m


def half_open(config: BreakerConfig = BASE) -> Machine:
    m = opened(config)
    assert act(m, m.poll, config.reset_timeout) == Transition(OPEN, HALF_OPEN, "open time elapsed")
    return m


def build(where: str) -> Machine:
    """A machine in one of the named situations; open ones opened at 0 until 10."""
    m = Machine(BASE)
    if where == "failing":
        steps(m, "ff")
    elif where == "open":
        m = opened()
    elif where == "half_open":
        m = half_open()
    elif where == "forced":
        act(m, m.force_open, 0.0)
    else:
        assert where == "closed"
    return m


# --- closed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "state", "failure_count", "made"),
    [
        ("ff", CLOSED, 2, []),
        ("fff", OPEN, 3, [Transition(CLOSED, OPEN, "consecutive failures")]),
        ("ffsff", CLOSED, 2, []),
        ("ffnf", OPEN, 3, [Transition(CLOSED, OPEN, "consecutive failures")]),
        ("ffnnnn", CLOSED, 2, []),
        ("ffw", CLOSED, 0, []),
        ("ffx", OPEN, 3, [Transition(CLOSED, OPEN, "consecutive failures")]),
    ],
)
def test_closed_transitions(
    script: str, state: CircuitState, failure_count: int, made: list[Transition]
) -> None:
    """failureThreshold consecutive failures open; a success resets the run; neutral is ignored."""
    m = Machine(BASE)
    assert steps(m, script) == made
    assert (m.state, m.failure_count) == (state, failure_count)


# --- open, and poll() ---------------------------------------------------------------


def test_open_rejects_until_reset_timeout_then_poll_half_opens() -> None:
    """Open refuses until resetTimeout; the poll then returns the move to half-open, once."""
    m = opened()
    assert act(m, m.poll, 9.999) is None
    assert m.acquire() is None
    assert m.retry_after(4.0) == pytest.approx(6.0)
    assert act(m, m.poll, 10.0) == Transition(OPEN, HALF_OPEN, "open time elapsed")
    assert act(m, m.poll, 10.0) is None
    assert m.acquire() == m.generation


def test_acquire_alone_never_half_opens() -> None:
    """acquire() moves nothing: an open circuit past its time refuses until poll()."""
    m = opened()
    assert m.acquire() is None
    assert m.state is OPEN
    assert act(m, m.poll, 1e9) is not None
    assert m.acquire() is not None


@pytest.mark.parametrize(
    ("where", "now"),
    [("closed", 1e9), ("failing", 1e9), ("open", 9.999), ("half_open", 1e9), ("forced", 1e9)],
)
def test_poll_returns_none_where_nothing_moves(where: str, now: float) -> None:
    """poll() returns None and changes nothing unless an unforced open time has passed."""
    m = build(where)
    before = (m.state, m.generation, m.failure_count, m.in_flight, m.open_until)
    assert act(m, m.poll, now) is None
    assert (m.state, m.generation, m.failure_count, m.in_flight, m.open_until) == before


# --- half-open ----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_half_open_admits_exactly_max_calls(limit: int) -> None:
    """Half-open hands out halfOpenMaxCalls permits at once and refuses the rest."""
    m = half_open(replace(BASE, half_open_max_calls=limit))
    permits = [admit(m, 10.0) for _ in range(limit + 5)]
    assert sum(p is not None for p in permits) == limit
    assert m.retry_after(10.0) == PROBE_WAIT


def test_half_open_release_gives_the_slot_back() -> None:
    """A released probe (cancelled or neutral) frees its slot without changing counts."""
    m = half_open()
    permit = m.acquire()
    assert permit is not None
    assert m.acquire() is None
    m.release(permit)
    assert (m.state, m.success_count, m.in_flight) == (HALF_OPEN, 0, 0)
    assert m.acquire() is not None


@pytest.mark.parametrize(
    ("script", "state", "made"),
    [
        ("s", HALF_OPEN, []),
        ("ss", CLOSED, [Transition(HALF_OPEN, CLOSED, "probes succeeded")]),
        ("sf", OPEN, [Transition(HALF_OPEN, OPEN, "probe failed")]),
        ("f", OPEN, [Transition(HALF_OPEN, OPEN, "probe failed")]),
        ("x", OPEN, [Transition(HALF_OPEN, OPEN, "probe failed")]),
        ("w", OPEN, [Transition(HALF_OPEN, OPEN, "slow probe")]),
        ("nss", CLOSED, [Transition(HALF_OPEN, CLOSED, "probes succeeded")]),
    ],
)
def test_half_open_transitions(script: str, state: CircuitState, made: list[Transition]) -> None:
    """successThreshold probe successes close; a failed or slow probe re-opens."""
    m = half_open()
    assert steps(m, script, now=10.0) == made
    assert m.state is state


# --- the open time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "cap", "multiplier", "durations"),
    [
        (10.0, 60.0, 2.0, [10.0, 20.0, 40.0, 60.0, 60.0]),
        # below one second the logarithms of the growth check are negative
        (0.1, 1.0, 2.0, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
        (0.25, 0.5, 1.5, [0.25, 0.375, 0.5, 0.5]),
        (0.5, 0.5, 2.0, [0.5, 0.5, 0.5]),
        (0.2, 5.0, 1.0, [0.2, 0.2, 0.2]),
    ],
)
def test_open_time_grows_on_reopen_up_to_the_cap(
    base: float, cap: float, multiplier: float, durations: list[float]
) -> None:
    """Each re-open multiplies the open time up to the cap, under 1 s too; closing resets it."""
    config = replace(
        BASE, reset_timeout=base, max_reset_timeout=cap, reset_timeout_multiplier=multiplier
    )
    m = opened(config)
    actual = []
    now = 0.0
    for _ in durations:
        actual.append(m.open_until - now)
        now = m.open_until
        assert steps(m, "f", now) == [Transition(HALF_OPEN, OPEN, "probe failed")]
    assert actual == pytest.approx(durations)
    now = m.open_until
    steps(m, "ss", now)
    steps(m, "fff", now)
    assert m.open_until - now == pytest.approx(base)


def probe_fails(m: Machine) -> None:
    """After the open time, one probe that fails: a re-open."""
    assert steps(m, "f", m.open_until)[-1].new is OPEN


def forced(m: Machine) -> None:
    act(m, m.force_open, m.opened_at or 0.0)


def tripped(m: Machine) -> None:
    act(m, m.trip, m.open_until, m.open_until + 5.0)


def closes(m: Machine) -> None:
    assert steps(m, "ss", m.open_until)[-1].new is CLOSED


REOPENS: list[tuple[str, list[Callable[[Machine], None]], int]] = [
    ("first open", [], 0),
    ("one failed probe", [probe_fails], 1),
    ("three failed probes", [probe_fails] * 3, 3),
    ("trip while half-open", [lambda m: act(m, m.poll, m.open_until), tripped], 1),
    ("forced while open", [forced], 1),
    ("closed again", [probe_fails, closes], 0),
    ("open again after closing", [probe_fails, closes, lambda m: steps(m, "fff", 100.0)], 0),
    ("reset", [probe_fails, lambda m: act(m, m.reset)], 0),
]


@pytest.mark.parametrize(("how", "after", "count"), REOPENS, ids=[r[0] for r in REOPENS])
def test_reopen_count_counts_reopens(
    how: str, after: list[Callable[[Machine], None]], count: int
) -> None:
    """reopen_count is 0 on the first open and counts each re-open since the circuit last closed."""
    # a re-open is a failed probe, a trip or a force while not closed
    m = opened()
    assert m.reopen_count == 0
    for step in after:
        step(m)
    assert m.reopen_count == count


@pytest.mark.parametrize("first", ["fff", "trip", "force_open"])
def test_reopen_count_is_zero_on_every_kind_of_first_open(first: str) -> None:
    """A first open by failures, a trip or force_open counts no re-open."""
    m = Machine(BASE)
    if first == "trip":
        act(m, m.trip, 0.0, 50.0)
    elif first == "force_open":
        act(m, m.force_open, 0.0)
    else:
        steps(m, first)
    assert (m.state, m.reopen_count) == (OPEN, 0)


def test_open_time_follows_reopen_count() -> None:
    """The open time is resetTimeout times multiplier to the power reopen_count, up to the cap."""
    # the first open lasts resetTimeout, the n-th re-open n doublings more
    m = opened()
    seen = [(m.reopen_count, m.open_until - (m.opened_at or 0.0))]
    for _ in range(4):
        probe_fails(m)
        seen.append((m.reopen_count, m.open_until - (m.opened_at or 0.0)))
    assert seen == [(0, 10.0), (1, 20.0), (2, 40.0), (3, 60.0), (4, 60.0)]


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


# --- stale results and orders -------------------------------------------------------


def test_stale_results_are_ignored() -> None:
    """A result of an older generation returns None and changes no count (gobreaker)."""
    m = Machine(BASE)
    old = m.acquire()
    assert old is not None
    steps(m, "fff")
    assert act(m, m.on_failure, old, 0.0) is None
    assert act(m, m.on_success, old, 0.0) is None
    assert (m.state, m.failure_count) == (OPEN, 3)
    admit(m, 10.0)
    assert act(m, m.on_failure, old, 10.0) is None
    assert act(m, m.on_success, old, 10.0, True) is None
    assert (m.state, m.in_flight) == (HALF_OPEN, 1)


def test_trip_opens_at_once_for_the_later_time() -> None:
    """A trip opens until the later time; tripping an open circuit extends it, returns None."""
    m = Machine(BASE)
    limit = Transition(CLOSED, OPEN, "limit named by the exchange")
    assert act(m, m.trip, 0.0, 100.0) == limit
    assert (m.state, m.open_until) == (OPEN, 100.0)
    m2 = Machine(BASE)
    assert act(m2, m2.trip, 0.0, 3.0) == limit
    assert m2.open_until == 10.0
    assert act(m2, m2.trip, 1.0, 50.0) is None
    assert (m2.open_until, m2.generation) == (50.0, 1)
    assert act(m2, m2.trip, 2.0, 20.0) is None  # never shortened
    assert m2.open_until == 50.0


def test_trip_of_a_half_open_circuit_reopens_it() -> None:
    """A limit named while probing re-opens the circuit, with a grown open time."""
    m = half_open()
    assert act(m, m.trip, 10.0, 0.0) == Transition(HALF_OPEN, OPEN, "limit named by the exchange")
    assert m.open_until == 30.0


def test_force_open_holds_until_reset() -> None:
    """force_open refuses with no retry time until reset; trips and polls return None."""
    m = Machine(BASE)
    assert act(m, m.force_open, 0.0) == Transition(CLOSED, OPEN, "forced open")
    assert admit(m, 1e9) is None
    assert m.retry_after(0.0) is None
    assert act(m, m.trip, 0.0, 5.0) is None
    assert m.forced
    assert act(m, m.reset) == Transition(OPEN, CLOSED, "reset")
    assert (m.state, m.acquire()) == (CLOSED, m.generation)


@pytest.mark.parametrize(
    ("where", "old"),
    [
        ("closed", CLOSED),
        ("failing", CLOSED),
        ("open", OPEN),
        ("half_open", HALF_OPEN),
        ("forced", OPEN),
    ],
)
def test_force_open_and_reset_from_every_state(where: str, old: CircuitState) -> None:
    """force_open and reset return their transition from every state, closed ones included."""
    m = build(where)
    assert act(m, m.force_open, 20.0) == Transition(old, OPEN, "forced open")
    assert (m.forced, m.retry_after(1e9)) == (True, None)
    m = build(where)
    permit = m.generation
    # closed -> closed is a transition too: a new generation, and the counts forgotten
    assert act(m, m.reset) == Transition(old, CLOSED, "reset")
    assert (m.failure_count, m.forced, m.reopen_count) == (0, False, 0)
    assert act(m, m.on_failure, permit, 0.0) is None
    assert m.failure_count == 0


# --- states decided by another instance -----------------------------------------------


@pytest.mark.parametrize(
    ("where", "old", "reopen_count"),
    [("closed", CLOSED, 0), ("failing", CLOSED, 0), ("half_open", HALF_OPEN, 1)],
)
def test_adopt_open_enters_open_until_the_given_deadline(
    where: str, old: CircuitState, reopen_count: int
) -> None:
    """A remote open opens a closed or half-open circuit until exactly its deadline."""
    m = build(where)
    permit = m.acquire()
    assert act(m, m.adopt_open, 12.0, 99.0, False, "consecutive failures") == Transition(
        old, OPEN, "consecutive failures"
    )
    assert (m.open_until, m.opened_at, m.forced, m.reopen_count) == (
        99.0,
        12.0,
        False,
        reopen_count,
    )
    assert m.refuses(98.0)
    assert not m.refuses(99.0)
    assert permit is not None
    assert act(m, m.on_failure, permit, 13.0) is None


def test_adopt_open_of_a_reopened_half_open_circuit_counts_one_more_reopen() -> None:
    """A remote open of a circuit half-open after re-opens grows its count by one."""
    m = half_open()
    assert steps(m, "f", 10.0) == [Transition(HALF_OPEN, OPEN, "probe failed")]
    assert act(m, m.poll, 1e6) == Transition(OPEN, HALF_OPEN, "open time elapsed")
    act(m, m.adopt_open, 1e6, 2e6, False, "remote")
    assert m.reopen_count == 2


def test_adopt_open_of_an_open_circuit_never_shortens_it() -> None:
    """An open circuit keeps its generation and the later deadline; forced sticks."""
    m = opened()
    assert act(m, m.adopt_open, 1.0, 50.0, False, "remote") is None
    assert act(m, m.adopt_open, 1.0, 20.0, False, "remote") is None
    assert (m.open_until, m.forced) == (50.0, False)
    assert act(m, m.adopt_open, 1.0, 0.0, True, "remote") is None
    assert act(m, m.adopt_open, 1.0, 0.0, False, "remote") is None
    assert (m.forced, m.retry_after(1e9)) == (True, None)


def test_adopt_open_forced_holds_until_reset() -> None:
    """A remote force_open refuses here until a reset, whatever the time."""
    m = Machine(BASE)
    assert act(m, m.adopt_open, 0.0, 0.0, True, "forced open") == Transition(
        CLOSED, OPEN, "forced open"
    )
    assert (m.refuses(1e9), act(m, m.poll, 1e9)) == (True, None)


@pytest.mark.parametrize(
    ("where", "old"), [("open", OPEN), ("half_open", HALF_OPEN), ("forced", OPEN)]
)
def test_adopt_close_closes_with_the_shared_run(where: str, old: CircuitState) -> None:
    """A remote close (probes or reset) closes and takes the shared run of failures."""
    m = build(where)
    assert act(m, m.adopt_close, "probes succeeded", 0) == Transition(
        old, CLOSED, "probes succeeded"
    )
    assert (m.failure_count, m.forced, m.reopen_count, m.in_flight) == (0, False, 0, 0)


def test_adopt_close_of_a_closed_circuit_only_takes_the_run() -> None:
    """A closed circuit takes the shared run, with no transition; the run then opens it."""
    m = Machine(BASE)
    assert act(m, m.adopt_close, "remote", 2) is None
    assert m.failure_count == 2
    assert steps(m, "f") == [Transition(CLOSED, OPEN, "consecutive failures")]


# --- the sliding windows ------------------------------------------------------------


RATE = [Transition(CLOSED, OPEN, "failure rate")]
SLOW = [Transition(CLOSED, OPEN, "slow-call rate")]
PAIR = {"sliding_window_size": 2, "minimum_number_of_calls": 2}  # judged from the 2nd call


def window_config(**window: Any) -> BreakerConfig:
    """NO_RUNS with a window: minimumNumberOfCalls 4 unless ``window`` says otherwise."""
    return replace(NO_RUNS, **{"minimum_number_of_calls": 4, **window})


@pytest.mark.parametrize(
    ("window", "outcomes", "made"),
    [
        # 10 calls, 50 % threshold: 4 failures of 10 stay closed, 5 open
        ({"sliding_window_size": 10}, "ssssssffff", []),
        ({"sliding_window_size": 10}, "sssssfffff", RATE),
        # below minimumNumberOfCalls the rate is not judged
        ({"sliding_window_size": 10, "minimum_number_of_calls": 10}, "sfsfsfsf", []),
        # the window slides: 2 of the last 4 fail, though only 3 of all 7 did
        ({"sliding_window_size": 4}, "fsssfsf", RATE),
        # a rate just under the threshold stays closed; one at it opens
        ({**PAIR, "failure_rate_threshold": 50.5}, "sf", []),
        ({**PAIR, "failure_rate_threshold": 50.0}, "sf", RATE),
        ({"sliding_window_size": 4, "failure_rate_threshold": 25.25}, "sssf", []),
        ({"sliding_window_size": 4, "failure_rate_threshold": 25.0}, "sssf", RATE),
    ],
)
def test_failure_rate_window(window: dict[str, Any], outcomes: str, made: list[Transition]) -> None:
    """A failure rate at or over the threshold opens the circuit; one just under does not."""
    m = Machine(window_config(**{"failure_rate_threshold": 50.0, **window}))
    assert steps(m, outcomes) == made
    assert m.state is (OPEN if made else CLOSED)


@pytest.mark.parametrize(
    ("window", "outcomes", "made"),
    [
        ({"sliding_window_size": 4}, "swsw", SLOW),
        # a slow failure is slow too
        ({"sliding_window_size": 4}, "sxsw", SLOW),
        # the slow call has left the window by the fifth call: 0 of the last 4 are slow
        ({"sliding_window_size": 4}, "wssss", []),
        ({"sliding_window_size": 4}, "wsssssw", []),
        # a rate just under the threshold stays closed; one at it opens
        ({**PAIR, "slow_call_rate_threshold": 50.5}, "sw", []),
        ({**PAIR, "slow_call_rate_threshold": 50.0}, "sw", SLOW),
        ({"sliding_window_size": 4, "slow_call_rate_threshold": 25.25}, "sssw", []),
        ({"sliding_window_size": 4, "slow_call_rate_threshold": 25.0}, "sssw", SLOW),
    ],
)
def test_slow_call_rate_window(
    window: dict[str, Any], outcomes: str, made: list[Transition]
) -> None:
    """A slow-call rate at or over the threshold opens; just under, or slow calls gone, not."""
    config = window_config(slow_call_duration=1.0, **{"slow_call_rate_threshold": 50.0, **window})
    m = Machine(config)
    assert steps(m, outcomes) == made
    assert m.state is (OPEN if made else CLOSED)


@pytest.mark.parametrize(
    ("script", "totals"),
    [
        ("ww", (2, 0, 2)),
        ("wwss", (4, 0, 2)),
        ("wwsss", (4, 0, 1)),
        ("wwssss", (4, 0, 0)),
        ("xfss", (4, 2, 1)),
        ("xfsss", (4, 1, 0)),
        ("xfssss", (4, 0, 0)),
        ("sxsss", (4, 1, 1)),
        ("wnnnnnnss", (3, 0, 1)),  # neutral outcomes never enter the window
    ],
)
def test_count_window_totals(script: str, totals: tuple[int, int, int]) -> None:
    """The count window counts only its last calls: failures and slow calls leave it."""
    config = window_config(
        sliding_window_size=4, failure_rate_threshold=100.0, slow_call_duration=1.0
    )
    m = Machine(config)
    assert steps(m, script) == []
    assert m._window is not None
    assert m._window.totals(0.0) == totals


def test_time_window_forgets_old_calls() -> None:
    """A time-based window counts only the calls of the last slidingWindowDuration."""
    config = window_config(
        failure_rate_threshold=50.0, sliding_window_type="time", sliding_window_duration=10.0
    )
    m = Machine(config)
    assert steps(m, "fff", now=0.0) == []
    assert steps(m, "ssss", now=20.0) == []  # the failures are out of the window by now
    assert steps(m, "ffff", now=21.0) == RATE


def test_time_window_minimum_calls_may_exceed_the_window_size() -> None:
    """A time window judges once minimumNumberOfCalls fit its duration, whatever the size."""
    config = window_config(
        failure_rate_threshold=50.0,
        sliding_window_type="time",
        sliding_window_duration=10.0,
        sliding_window_size=2,
        minimum_number_of_calls=5,
    )
    m = Machine(config)
    assert steps(m, "ffff") == []
    assert steps(m, "f") == RATE


def test_close_starts_an_empty_window() -> None:
    """A circuit that closes again forgets the outcomes that opened it."""
    m = Machine(window_config(sliding_window_size=4, failure_rate_threshold=50.0))
    assert steps(m, "ssff")[-1].reason == "failure rate"
    m.poll(10.0)
    assert steps(m, "ss", now=10.0) == [Transition(HALF_OPEN, CLOSED, "probes succeeded")]
    assert steps(m, "sss", now=10.0) == []
    assert m._window is not None
    assert m._window.totals(10.0) == (3, 0, 0)


def test_time_window_near_time_zero_counts_only_its_calls() -> None:
    """On a clock that starts near zero, a time window counts only the calls it saw."""
    # its unused buckets hold no failures and no slow calls
    config = window_config(
        failure_rate_threshold=50.0,
        slow_call_duration=1.0,
        sliding_window_type="time",
        sliding_window_duration=10.0,
    )
    m = Machine(config)
    assert steps(m, "ssss", now=0.0) == []
    assert m._window is not None
    assert m._window.totals(0.0) == (4, 0, 0)


def test_time_window_forgets_a_call_one_duration_later() -> None:
    """A call leaves a time window as soon as a whole slidingWindowDuration has passed."""
    # the window keeps 20 buckets, here of 0.5 s each
    config = window_config(
        failure_rate_threshold=50.0, sliding_window_type="time", sliding_window_duration=10.0
    )
    m = Machine(config)
    assert steps(m, "f", now=100.0) == []
    assert m._window is not None
    assert (m._window.totals(109.9), m._window.totals(110.0)) == ((1, 1, 0), (0, 0, 0))


def test_opened_at_is_set_only_while_not_closed() -> None:
    """opened_at (the snapshot's opened_at) is None until the first open and after a close."""
    m = Machine(BASE)
    assert m.opened_at is None
    m = opened(now=5.0)
    assert m.opened_at == 5.0
    act(m, m.reset)
    assert m.opened_at is None


def test_outcomes_are_slow_only_when_said() -> None:
    """on_success and on_failure count a call as slow only when told."""
    # a plain probe success closes, and plain failures never make a slow-call rate
    m = half_open(replace(BASE, success_threshold=1))
    permit = admit(m, 10.0)
    assert act(m, m.on_success, permit, 10.0) == Transition(HALF_OPEN, CLOSED, "probes succeeded")
    config = window_config(sliding_window_size=4, slow_call_duration=1.0)
    m = Machine(config)
    for _ in range(4):
        permit = admit(m, 0.0)
        assert permit is not None
        assert act(m, m.on_failure, permit, 0.0) is None
    assert m.state is CLOSED


@pytest.mark.parametrize("where", ["closed", "failing", "open", "half_open", "probing", "forced"])
@pytest.mark.parametrize("now", [0.0, 9.999, 10.0, 11.0])
def test_refuses_says_what_poll_and_acquire_would_do(where: str, now: float) -> None:
    """refuses(now) is True exactly when a call now would get no permit, and changes nothing."""
    # "probing": half-open with its one probe out
    machines = [build("half_open" if where == "probing" else where) for _ in range(2)]
    if where == "probing":
        for m in machines:
            assert m.acquire() is not None
    asked, acted = machines
    before = (asked.state, asked.generation, asked.in_flight, asked.open_until)
    answer = asked.refuses(now)
    assert (asked.state, asked.generation, asked.in_flight, asked.open_until) == before
    assert answer is (admit(acted, now) is None)
