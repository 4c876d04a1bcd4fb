"""Soak under a fake clock: many calls against a flapping service, and a long open period.

Memory is measured with tracemalloc after a warm-up and must stay flat; the breaker's
log lines are silenced so that pytest's log capture does not count as growth.  The work
a rejection does is measured in Python lines run, which no loaded machine can skew.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import logging
import random
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker import CircuitBreaker, CircuitOpenError, Event, StateChanged
from ccxt_breaker._breaker import MAX_ENDPOINTS, Counters
from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._errors import Verdict
from ccxt_breaker.testing import FakeClock, KrakenSimulator

from ..support import exchange_config
from .conftest import heavy, only_heavy

SOAK = BreakerConfig(
    failure_threshold=5,
    success_threshold=2,
    reset_timeout=5.0,
    half_open_max_calls=2,
    failure_rate_threshold=50.0,
    slow_call_duration=0.5,
    slow_call_rate_threshold=80.0,
    sliding_window_type="time",
    sliding_window_duration=10.0,
    minimum_number_of_calls=10,
    max_reset_timeout=60.0,
    history_size=8,  # full within the warm-up: its bound is pinned in test_inspection
)
DOWN = {"type": "ExchangeNotAvailable", "message": "kraken 503 Service Unavailable"}
MAX_IN_FLIGHT = 8
SLOW = 0.02  # the share of calls that stay out for SLOW_CALLS more calls: past transitions
SLOW_CALLS = (500, 5000)
CANCELLED = 0.05  # the share of settled calls that end cancelled (neutral)
CHECK_EVERY = 100  # calls between two checks of the books outside half-open
# Allocator noise (free lists, list over-allocation) moves the traced total by a few hundred
# bytes either way; a leak of one byte per call would add 15 KB even to the default soak.
NOISE = 4096

Call = tuple[int, Counters, float]  # permit, counters, start time
# The machine's own view; cumulative statistics (calls, failures, last_error) may grow.
STATE_KEYS = (
    "state",
    "failure_count",
    "success_count",
    "half_open_in_flight",
    "generation",
    "reopen_count",
    "retry_after",
)


def traced() -> int:
    """The memory traced now, less what this file holds itself (the calls still out)."""
    own = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    snapshot = tracemalloc.take_snapshot().filter_traces(own)
    return sum(stat.size for stat in snapshot.statistics("filename"))


def flat(growth: int, warm: int) -> bool:
    """Under 1% growth over the memory traced at warm-up (and above the allocator's noise)."""
    return growth < max(0.01 * warm, NOISE)


class Soak:
    """Calls against a flapping service, through the breaker's own protocol, with the
    breaker's books checked as they go: up to 8 quick calls in flight, and slow ones that
    end after some transitions (often while the probes are out)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        self.breaker = CircuitBreaker("soak", SOAK, clock=self.clock, rand=self.rng.random)
        self.breaker.add_listener(self.on_event)
        self.generation = 0  # followed through the StateChanged events
        self.quick: list[Call] = []
        self.slow: list[tuple[int, int, Call]] = []  # a heap of (the call it ends at, seq, call)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.generation += 1

    def state(self) -> dict[str, Any]:
        snapshot = self.breaker.snapshot()
        return {key: snapshot[key] for key in STATE_KEYS}

    def check_permits(self) -> None:
        """Every half-open slot taken is held by a call still out in this generation, and
        every new generation was announced."""
        state = self.state()
        out = itertools.chain(self.quick, (call for _, _, call in self.slow))
        probes = sum(permit == self.generation for permit, _, _ in out)
        expected = probes if state["state"] == "half_open" else 0
        assert (state["generation"], state["half_open_in_flight"]) == (self.generation, expected)
        assert expected <= SOAK.half_open_max_calls

    def call(self, i: int) -> None:
        """Make call number ``i``, and end the calls whose time has come."""
        down = i % 3700 >= 3000  # up for 3,000 calls, down for 700, in turn
        self.clock.advance(self.rng.choice((0.01, 0.01, 0.01, 0.6)) if down else 0.01)
        endpoint = f"Endpoint{i}"  # a new name every call: the counters must stay bounded
        breaker, rng = self.breaker, self.rng
        counters = breaker._counters(endpoint)
        try:
            permit = breaker._admit(counters, endpoint)
        except CircuitOpenError:
            pass
        else:
            call = (permit, counters, breaker._begin(counters))
            if rng.random() < SLOW:
                heapq.heappush(self.slow, (i + rng.randrange(*SLOW_CALLS), i, call))
            else:
                self.quick.append(call)
            if breaker.state == "half_open":
                self.check_permits()
        failing = 0.9 if down else 0.02
        while self.slow and self.slow[0][0] <= i:
            self.settle(heapq.heappop(self.slow)[2], failing)
        if self.slow and breaker.state == "half_open" and rng.random() < 0.5:
            self.settle(heapq.heappop(self.slow)[2], failing)
        while self.quick and (len(self.quick) > MAX_IN_FLIGHT or rng.random() < 0.5):
            self.settle(self.quick.pop(rng.randrange(len(self.quick))), failing)
        if i % CHECK_EVERY == 0:
            self.check_permits()

    def settle(self, call: Call, failing: float) -> None:
        """End ``call`` cancelled, failed or answered; a stale one must change nothing."""
        permit, counters, started = call
        stale = permit != self.generation
        before = self.state() if stale else None
        roll = self.rng.random()
        if roll < CANCELLED:
            self.breaker._settle(permit, counters, started, Verdict.NEUTRAL)
        elif roll < CANCELLED + failing:
            self.breaker._settle(permit, counters, started, Verdict.FAILURE, DOWN)
        else:
            self.breaker._settle(permit, counters, started, Verdict.SUCCESS)
        if stale:
            assert self.state() == before
        elif self.breaker.state == "half_open":
            self.check_permits()


def soak(calls: int, *, seed: int = 7) -> tuple[CircuitBreaker, int, int, int]:
    """Run ``calls`` calls; returns the breaker and the memory traced at three points."""
    run = Soak(seed)
    marks: list[int] = []
    traced()  # the filters compile their patterns on first use, and keep them
    for i in range(calls):
        if i in (calls // 4, calls // 2, calls - 1):
            marks.append(traced())
        run.call(i)
    return run.breaker, marks[0], marks[1], marks[2]


def run_soak(calls: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="ccxt_breaker")
    tracemalloc.start()
    try:
        breaker, warm, middle, end = soak(calls)
    finally:
        tracemalloc.stop()
    snapshot = breaker.snapshot()
    growth = max(middle, end) - warm
    assert flat(growth, warm), f"memory grew {growth} bytes over {warm} after warm-up"
    assert len(snapshot["endpoints"]) == MAX_ENDPOINTS + 1  # the rest share "*"
    assert snapshot["calls"] + snapshot["rejected"] == calls
    assert snapshot["generation"] > 10  # it did flap


def test_soak_default(caplog: pytest.LogCaptureFixture) -> None:
    """20,000 calls against a flapping service keep memory flat and the books exact."""
    # the counters stay bounded, every half-open slot is held by a call still out, and a
    # stale result changes nothing
    run_soak(20_000, caplog)


@heavy
@only_heavy
def test_soak_one_million_calls(caplog: pytest.LogCaptureFixture) -> None:
    """1,000,000 calls against a flapping service keep memory flat and the books exact."""
    # the counters stay bounded, every half-open slot is held by a call still out, and a
    # stale result changes nothing
    run_soak(1_000_000, caplog)


# --- a long open period ------------------------------------------------------------------

REJECTIONS = 100_000
BLOCK = 10_000
TRACED = 100  # rejections whose Python lines are counted, after the warm-up and at the end
Refusals = tuple[Callable[[], Awaitable[Any]], CircuitBreaker, Callable[[], Awaitable[None]]]


async def guarded_refusals(sim: KrakenSimulator, clock: FakeClock) -> Refusals:
    breaker = CircuitBreaker("long-open", BreakerConfig(), clock=clock)
    breaker._trip(10 * 86_400.0, {"type": "Test", "message": "opened for the test"})

    async def never_called() -> None:
        raise AssertionError("an open circuit ran the call")

    async def close() -> None:
        pass

    return lambda: breaker.call(never_called), breaker, close


async def ccxt_refusals(sim: KrakenSimulator, clock: FakeClock) -> Refusals:
    exchange = ccxt_breaker.kraken(exchange_config(sim, clock))
    breaker = exchange.circuit_breakers["public"]
    breaker.force_open()
    return exchange.publicGetTime, breaker, exchange.close


async def reject(call: Callable[[], Awaitable[Any]], times: int) -> None:
    for _ in range(times):
        with contextlib.suppress(CircuitOpenError):
            await call()


def depth(exc: BaseException) -> int:
    """The frames in ``exc``'s traceback."""
    frames, tb = 0, exc.__traceback__
    while tb is not None:
        frames, tb = frames + 1, tb.tb_next
    return frames


async def work(call: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """What a rejection costs: the Python lines that ``TRACED`` rejections run, counted with
    a trace function, and the depth of one rejection's traceback.  The garbage collector is
    paused meanwhile, so that no finalizer of an older object runs among the lines."""
    lines = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        lines += event == "line"
        return trace

    previous, collecting = sys.gettrace(), gc.isenabled()
    gc.collect()
    gc.disable()
    sys.settrace(trace)
    try:
        await reject(call, TRACED)
    finally:
        sys.settrace(previous)
        if collecting:
            gc.enable()
    try:
        await call()
    except CircuitOpenError as exc:
        return lines, depth(exc)
    raise AssertionError("the open circuit let the call through")


@pytest.mark.parametrize(
    "refusals", [guarded_refusals, ccxt_refusals], ids=["breaker.call", "ccxt-hook"]
)
async def test_long_open_period_stays_flat(
    sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture, refusals: Any
) -> None:
    """100,000 rejections in one open period keep memory flat and each rejection's work equal."""
    # the last rejection runs as many Python lines, with as deep a traceback, as the first
    caplog.set_level(logging.CRITICAL, logger="ccxt_breaker")
    call, breaker, close = await refusals(sim, clock)
    await reject(call, BLOCK)  # warm-up: routes, counters and caches are made
    first = await work(call)
    memory: list[int] = []
    tracemalloc.start()
    traced()  # the filters compile their patterns on first use, and keep them
    try:
        for _ in range(REJECTIONS // BLOCK):
            await reject(call, BLOCK)
            memory.append(traced())
    finally:
        tracemalloc.stop()
    last = await work(call)
    await close()
    warm = memory[0]
    growth = max(memory[1:]) - warm

    assert breaker.snapshot()["rejected"] == BLOCK + REJECTIONS + 2 * (TRACED + 1)
    assert flat(growth, warm), f"memory grew {growth} bytes over {warm} after warm-up"
    assert last == first, "(Python lines per rejection, traceback depth)"
