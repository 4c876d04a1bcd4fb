"""sharedState across real OS processes: three bot processes (spawned, as separate bots
are) on one API key, a real redis-server, and the simulator in this process."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from ccxt_breaker.testing import Fault, KrakenSimulator

from .shared_bot import Bot
from .support import until


@pytest.fixture(scope="module")
def bots() -> Iterator[list[Bot]]:
    """Three bot processes, started once for this module (each imports ccxt)."""
    context = multiprocessing.get_context("spawn")
    started = [Bot(context) for _ in range(3)]
    try:
        yield started
    finally:
        for bot in started:
            bot.stop()


@pytest.fixture
def shared(
    bots: list[Bot], sim: KrakenSimulator, redis_url: str
) -> Callable[..., Awaitable[list[Bot]]]:
    """The three bots, each with a fresh exchange on the simulator, sharing state on
    Redis in a namespace of this test's own."""

    async def build(**breaker: Any) -> list[Bot]:
        namespace = f"procs-{uuid.uuid4().hex[:12]}"
        config = {
            **sim.ccxt_config(),
            "enableRateLimit": False,
            "timeout": 5000,
            "options": {
                "circuitBreaker": {
                    **breaker,
                    "sharedState": {"url": redis_url, "namespace": namespace},
                }
            },
        }
        await asyncio.gather(*(bot.ask("build", config) for bot in bots))
        return bots

    return build


async def test_an_open_in_one_process_is_refused_in_the_others_unsent(
    shared: Any, sim: KrakenSimulator
) -> None:
    """force_open() in one process reaches the two others (median within 100 ms), which
    then refuse unsent; reset() reaches them too."""
    a, b, c = await shared()
    delays = []
    for _ in range(5):
        opened_at = await a.ask("force_open", "private")
        seen = await asyncio.gather(
            b.ask("wait", "private", "open", 5), c.ask("wait", "private", "open", 5)
        )
        assert None not in seen
        delays += [t - opened_at for t in seen]
        sent = sim.count("BalanceEx")
        assert await b.ask("call", "fetch_balance", []) == "CircuitOpenError"
        assert await c.ask("call", "fetch_balance", []) == "CircuitOpenError"
        assert sim.count("BalanceEx") == sent
        await a.ask("reset", "private")
        closed = await asyncio.gather(
            b.ask("wait", "private", "closed", 5), c.ask("wait", "private", "closed", 5)
        )
        assert None not in closed
    assert statistics.median(delays) <= 0.1
    assert max(delays) < 1.0


async def test_failures_spread_over_three_processes_open_the_circuit_everywhere(
    shared: Any, sim: KrakenSimulator
) -> None:
    """failureThreshold 5: two failures in each of two processes open nothing; one more
    in the third opens the circuit in all three."""
    a, b, c = await shared(failureThreshold=5)
    sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    for bot in (a, a, b, b):
        assert await bot.ask("call", "fetch_balance", []) == "ExchangeNotAvailable"
    assert [await bot.ask("state", "private") for bot in (a, b, c)] == ["closed"] * 3
    assert await c.ask("call", "fetch_balance", []) == "ExchangeNotAvailable"
    for bot in (a, b, c):
        assert await bot.ask("wait", "private", "open", 5) is not None
    sent = sim.count("BalanceEx")
    assert await a.ask("call", "fetch_balance", []) == "CircuitOpenError"
    assert sim.count("BalanceEx") == sent == 5


async def test_three_processes_with_1000_calls_each_send_exactly_max_probes(
    shared: Any, sim: KrakenSimulator
) -> None:
    """Half-open in three processes with 1,000 concurrent calls each: exactly
    halfOpenMaxCalls probes reach the server, and successThreshold successes close the
    circuit in every process."""
    a, b, c = await shared(
        failureThreshold=1, resetTimeout=1000, halfOpenMaxCalls=2, successThreshold=2
    )
    sim.faults.add(Fault.http(503), endpoint="Ticker", times=1)
    assert await a.ask("call", "fetch_ticker", ["BTC/USD"]) == "ExchangeNotAvailable"
    for bot in (a, b, c):
        assert await bot.ask("wait", "public", "open", 5) is not None
    await asyncio.sleep(1.1)  # past the open time, in every process
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Ticker")
    sent = sim.count("Ticker")
    bursts = [
        asyncio.ensure_future(bot.ask("burst", "fetch_ticker", ["BTC/USD"], 1000))
        for bot in (a, b, c)
    ]
    await until(lambda: sim.count("Ticker") - sent >= 2, 10)
    await asyncio.sleep(0.3)  # time for a third probe, were one let through
    assert sim.count("Ticker") - sent == 2
    gate.release()
    outcomes = [await burst for burst in bursts]
    assert sum(o.get("ok", 0) for o in outcomes) == 2
    assert sum(sum(o.values()) for o in outcomes) == 3000
    for bot in (a, b, c):
        assert await bot.ask("wait", "public", "closed", 5) is not None
