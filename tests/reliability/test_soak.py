"""Soak under a fake clock: many calls against a flapping service, and a long open period.

Memory is measured with tracemalloc after a warm-up and must stay flat; the breaker's
log lines are silenced so that pytest's log capture does not count as growth.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker import CircuitBreaker, CircuitOpenError
from ccxt_breaker._breaker import MAX_ENDPOINTS
from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._errors import FAILURE, SUCCESS

from ..support import FakeClock, exchange_config
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
)
DOWN = {"type": "ExchangeNotAvailable", "message": "kraken 503 Service Unavailable"}
MAX_IN_FLIGHT = 8
# Allocator noise (free lists, list over-allocation) moves the traced total by a few hundred
# bytes either way; a leak of one byte per call would add 15 KB even to the default soak.
NOISE = 4096


def flat(growth: int, warm: int) -> bool:
    """Under 1% growth over the memory traced at warm-up (and above the allocator's noise)."""
    return growth < max(0.01 * warm, NOISE)


def soak(calls: int, *, seed: int = 7) -> tuple[CircuitBreaker, int, int, int]:
    """Run ``calls`` calls, up to 8 in flight, against a service that is up for 3,000 calls,
    down for 700, in turn; returns the breaker and the memory traced at three points."""
    rng = random.Random(seed)
    clock = FakeClock()
    breaker = CircuitBreaker("soak", SOAK, clock=clock, rand=rng.random)
    pending: list[tuple[int, list[int], float]] = []
    marks: list[int] = []
    warm_up = calls // 4
    for i in range(calls):
        if i in (warm_up, calls // 2, calls - 1):
            marks.append(tracemalloc.get_traced_memory()[0])
        down = i % 3700 >= 3000
        clock.advance(rng.choice((0.01, 0.01, 0.01, 0.6)) if down else 0.01)
        endpoint = f"Endpoint{i}"  # a new name every call: the counters must stay bounded
        counters = breaker.counters(endpoint)
        try:
            permit = breaker.admit(counters, endpoint)
        except CircuitOpenError:
            pass
        else:
            pending.append((permit, counters, breaker.start(counters)))
        while pending and (len(pending) > MAX_IN_FLIGHT or rng.random() < 0.5):
            permit, counters, started = pending.pop(rng.randrange(len(pending)))
            failed = rng.random() < (0.9 if down else 0.02)
            breaker.settle(permit, counters, started, FAILURE if failed else SUCCESS,
                           DOWN if failed else None)
        if i % 1000 == 0:
            probes = breaker.snapshot()["half_open_in_flight"]
            assert probes <= SOAK.half_open_max_calls
    return breaker, marks[0], marks[1], marks[2]


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
    """20,000 calls against a flapping service keep memory flat and the counters bounded."""
    run_soak(20_000, caplog)


@heavy
@only_heavy
def test_soak_one_million_calls(caplog: pytest.LogCaptureFixture) -> None:
    """1,000,000 calls against a flapping service keep memory flat and the counters bounded."""
    run_soak(1_000_000, caplog)


# --- a long open period ------------------------------------------------------------------

REJECTIONS = 100_000
BLOCK = 10_000
Refusals = tuple[Callable[[], Awaitable[Any]], CircuitBreaker, Callable[[], Awaitable[None]]]


async def guarded_refusals(clock: FakeClock) -> Refusals:
    breaker = CircuitBreaker("long-open", BreakerConfig(), clock=clock)
    breaker.trip(10 * 86_400.0, {"type": "Test", "message": "opened for the test"})

    async def never_called() -> None:
        raise AssertionError("an open circuit ran the call")

    async def close() -> None:
        pass

    return lambda: breaker.call(never_called), breaker, close


async def ccxt_refusals(clock: FakeClock) -> Refusals:
    exchange = ccxt_breaker.kraken(exchange_config("http://127.0.0.1:9", clock))
    breaker = exchange.circuit_breakers["public"]
    breaker.force_open()
    return exchange.publicGetTime, breaker, exchange.close


@pytest.mark.parametrize("refusals", [guarded_refusals, ccxt_refusals],
                         ids=["breaker.call", "ccxt-hook"])
async def test_long_open_period_stays_flat(clock: FakeClock, caplog: pytest.LogCaptureFixture,
                                           refusals: Any) -> None:
    """100,000 rejections in one open period keep memory flat and the cost per rejection flat
    (the last 10,000 cost less than 3x the first 10,000)."""
    caplog.set_level(logging.CRITICAL, logger="ccxt_breaker")
    tracemalloc.start()
    try:
        call, breaker, close = await refusals(clock)
        memory: list[int] = []
        seconds: list[float] = []
        for _ in range(REJECTIONS // BLOCK):
            started = time.perf_counter()
            for _ in range(BLOCK):
                with contextlib.suppress(ccxt_breaker.CircuitOpenError):
                    await call()
            seconds.append(time.perf_counter() - started)
            memory.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    await close()
    warm = memory[0]
    growth = max(memory[1:]) - warm

    assert breaker.snapshot()["rejected"] == REJECTIONS
    assert flat(growth, warm), f"memory grew {growth} bytes over {warm} after warm-up"
    assert seconds[-1] < 3 * seconds[0], f"per-block seconds: {seconds}"


