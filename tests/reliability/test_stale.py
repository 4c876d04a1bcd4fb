"""Stale results: a call ending after one or more transitions changes nothing in the new state.

A call holds the permit of the generation it started in; every transition starts a new
generation, so its late success, failure or cancellation is ignored, whatever it would
have moved: a probe count, a run of failures, or a half-open slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import pytest

from ccxt_breaker import CircuitBreaker
from ccxt_breaker._config import BreakerConfig
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from ..support import make_exchange, until

# The machine's own view; cumulative statistics (calls, failures, last_error) may grow.
STATE_KEYS = (
    "state",
    "failure_count",
    "success_count",
    "half_open_in_flight",
    "generation",
    "reopen_count",
    "retry_after",
    "opened_by",
    "forced",
)

ROWS = [
    pytest.param(outcome, later, id=f"late-{outcome}-after-{later}")
    for outcome in ("failure", "success", "cancelled")
    for later in ("open", "half_open", "closed_again")
]
OPEN_TIME = 10.0
CONFIG = {"failureThreshold": 3, "successThreshold": 2, "resetTimeout": OPEN_TIME * 1000}


def state_of(breaker: CircuitBreaker) -> dict[str, Any]:
    snapshot = breaker.snapshot()
    return {key: snapshot[key] for key in STATE_KEYS}


async def bring_to(
    later: str,
    clock: FakeClock,
    fail: Callable[[], Awaitable[None]],
    succeed: Callable[[], Awaitable[None]],
) -> None:
    """From closed, through real calls, to a state whose counts a stale result would move."""
    for _ in range(3):  # failureThreshold
        await fail()
    if later == "open":
        return
    clock.advance(OPEN_TIME)
    await succeed()  # one probe success of two: a late success would close, a failure reopen
    if later == "half_open":
        return
    await succeed()
    await fail()  # failure_count 1: a late success would reset it, a late failure make it 2


async def finish(late: asyncio.Task[Any], outcome: str, answer: Callable[[], None]) -> Any:
    """End the late call as ``outcome`` says, and return what its caller got."""
    if outcome == "cancelled":
        late.cancel()
    else:
        answer()
    return (await asyncio.gather(late, return_exceptions=True))[0]


@pytest.mark.parametrize("form", ["call", "guard", "async with"])
@pytest.mark.parametrize(("outcome", "later"), ROWS)
async def test_stale_result_of_guarded_call(
    clock: FakeClock, outcome: str, later: str, form: str
) -> None:
    """A guarded call from closed that ends after the transitions counts for nothing."""
    # breaker.call(), a breaker.guard function or `async with breaker`; its caller still gets its
    # own result, error or cancellation
    breaker = CircuitBreaker(
        "stale",
        BreakerConfig(failure_threshold=3, success_threshold=2, reset_timeout=OPEN_TIME),
        clock=clock,
    )
    release = asyncio.Event()
    late_error = ccxt.ExchangeNotAvailable("late")

    async def slow() -> str:
        await release.wait()
        if outcome == "failure":
            raise late_error
        return "late answer"

    async def block() -> str:
        async with breaker:
            return await slow()

    async def down() -> None:
        raise ccxt.ExchangeNotAvailable("down")

    async def fail() -> None:
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await breaker.call(down)

    async def succeed() -> None:
        await breaker.call(asyncio.sleep, 0)

    forms = {"call": lambda: breaker.call(slow), "guard": breaker.guard(slow), "async with": block}
    late = asyncio.create_task(forms[form]())
    await asyncio.sleep(0)  # one step: the late call holds its permit, and waits
    await bring_to(later, clock, fail, succeed)
    before = state_of(breaker)
    result = await finish(late, outcome, release.set)

    assert state_of(breaker) == before
    expected = {"failure": late_error, "success": "late answer"}
    if outcome == "cancelled":
        assert type(result) is asyncio.CancelledError
    else:
        assert result is expected[outcome]


# The late call's endpoint, and what its held request is answered with: its normal answer
# (a success), or EService:Unavailable once the simulator is in maintenance (a failure).
LATE = "OpenOrders"
LATE_RESULT = {
    "failure": ccxt.ExchangeNotAvailable,
    "success": dict,
    "cancelled": asyncio.CancelledError,
}


@pytest.mark.parametrize(("outcome", "later"), ROWS)
async def test_stale_result_through_ccxt(
    sim: KrakenSimulator, clock: FakeClock, outcome: str, later: str
) -> None:
    """A ccxt call held from closed and ending after the transitions counts for nothing."""
    exchange = make_exchange(sim, clock, **CONFIG)
    breaker = exchange.circuit_breakers["private"]
    assert exchange.circuit_breakers.group_of(LATE) == "private"
    gate = Fault.hold()
    sim.faults.add(gate, endpoint=LATE)

    # Balance shares the late call's breaker.  Its answers are scripted, so that no request
    # after the late one reaches the engine: a later nonce would make the late one invalid.
    async def fail() -> None:
        sim.faults.add(Fault.http(503), endpoint="Balance", times=1)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.privatePostBalance()

    async def succeed() -> None:  # a business error: the exchange answered
        sim.faults.add(Fault.kraken_error("EOrder:Insufficient funds"), endpoint="Balance", times=1)
        with pytest.raises(ccxt.InsufficientFunds):
            await exchange.privatePostBalance()

    def answer() -> None:
        if outcome == "failure":
            sim.maintenance()
        gate.release()

    late = asyncio.create_task(exchange.privatePostOpenOrders())
    await until(lambda: sim.count(LATE) == 1)
    await bring_to(later, clock, fail, succeed)
    before = state_of(breaker)
    result = await finish(late, outcome, answer)
    gate.release()
    await exchange.close()

    assert state_of(breaker) == before
    assert type(result) is LATE_RESULT[outcome]
