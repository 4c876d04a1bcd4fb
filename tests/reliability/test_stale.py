"""Stale results: a call ending after one or more transitions changes nothing in the new state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker import CircuitBreaker
from ccxt_breaker._config import BreakerConfig

from ..support import Backend, FakeClock, Reply, exchange_config

DOWN = Reply(503, "<html>down</html>")
# The machine's own view; cumulative statistics (calls, failures, last_error) may grow.
STATE_KEYS = ("state", "failure_count", "success_count", "half_open_in_flight", "generation",
              "reopen_count", "retry_after", "opened_by", "forced")

ROWS = [
    pytest.param(outcome, later, id=f"late-{outcome}-after-{later}")
    for outcome in ("failure", "success")
    for later in ("open", "half_open", "closed_again")
]


def state_of(breaker: CircuitBreaker) -> dict[str, Any]:
    snapshot = breaker.snapshot()
    return {key: snapshot[key] for key in STATE_KEYS}


async def bring_to(later: str, clock: FakeClock, fail: Callable[[], Awaitable[None]],
                   succeed: Callable[[], Awaitable[None]]) -> None:
    """From closed, through real calls, to a state whose counts a stale result would move."""
    for _ in range(3):  # failureThreshold
        await fail()
    if later == "open":
        return
    clock.advance(10.0)
    await succeed()  # one probe success of two: a late success would close, a failure reopen
    if later == "half_open":
        return
    await succeed()
    await fail()  # failure_count 1: a late success would reset it, a late failure make it 2


CONFIG = {"failureThreshold": 3, "successThreshold": 2, "resetTimeout": 10_000}


@pytest.mark.parametrize("form", ["call", "guard"])
@pytest.mark.parametrize(("outcome", "later"), ROWS)
async def test_stale_result_of_guarded_call(clock: FakeClock, outcome: str, later: str,
                                            form: str) -> None:
    """A breaker.call(), or a call of a breaker.guard function, started in closed and ending
    after the transitions counts for nothing, and its caller still gets its own result or
    error."""
    breaker = CircuitBreaker("stale", BreakerConfig(failure_threshold=3, success_threshold=2,
                                                    reset_timeout=10.0), clock=clock)
    finish = asyncio.Event()
    late_error = ccxt.ExchangeNotAvailable("late")

    async def slow() -> str:
        await finish.wait()
        if outcome == "failure":
            raise late_error
        return "late answer"

    async def down() -> None:
        raise ccxt.ExchangeNotAvailable("down")

    async def fail() -> None:
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await breaker.call(down)

    async def succeed() -> None:
        await breaker.call(asyncio.sleep, 0)

    late = asyncio.create_task(breaker.call(slow) if form == "call" else breaker.guard(slow)())
    await asyncio.sleep(0)
    await bring_to(later, clock, fail, succeed)
    before = state_of(breaker)
    finish.set()
    result = (await asyncio.gather(late, return_exceptions=True))[0]

    assert state_of(breaker) == before
    assert result is (late_error if outcome == "failure" else "late answer")


@pytest.mark.parametrize(("outcome", "later"), ROWS)
async def test_stale_result_through_ccxt(backend: Backend, clock: FakeClock, outcome: str,
                                         later: str) -> None:
    """A slow ccxt call started in closed and answered after the transitions counts for
    nothing in the new state."""
    exchange = ccxt_breaker.kraken(exchange_config(backend.url, clock, **CONFIG))
    breaker = exchange.circuit_breakers["public"]
    body = "<html>late</html>" if outcome == "failure" else {"error": [], "result": {}}
    backend.script("Ticker", Reply(503 if outcome == "failure" else 200, body, delay=0.3))

    async def fail() -> None:
        backend.script("Time", DOWN)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTime()

    async def succeed() -> None:
        await exchange.publicGetTime()

    late = asyncio.create_task(exchange.publicGetTicker())
    for _ in range(1000):  # until the slow request is at the server
        if backend.hits["Ticker"]:
            break
        await asyncio.sleep(0.002)
    await bring_to(later, clock, fail, succeed)
    before = state_of(breaker)
    result = (await asyncio.gather(late, return_exceptions=True))[0]
    await exchange.close()

    assert state_of(breaker) == before
    assert isinstance(result, ccxt.ExchangeNotAvailable if outcome == "failure" else dict)
