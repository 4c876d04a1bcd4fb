"""Half-open exactness: however many calls arrive at once, exactly halfOpenMaxCalls go out."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from ..support import exchange_config, until

CALLS = 10_000
OPEN_TIME = 30.0  # the default resetTimeout, in seconds of the fake clock
CAUSE = {"type": "Test", "message": "opened by the test"}


def exchange_with(sim: KrakenSimulator, clock: FakeClock, probes: int, **config: Any) -> Any:
    """A guarded exchange that opens on one failure and closes on ``probes`` probe
    successes, with ``probes`` half-open permits."""
    settings = exchange_config(
        sim, clock, failureThreshold=1, halfOpenMaxCalls=probes, successThreshold=probes
    )
    return ccxt_breaker.kraken({**settings, **config})


async def open_circuit(sim: KrakenSimulator, exchange: Any) -> None:
    sim.faults.add(Fault.http(503), endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()


@pytest.mark.parametrize("rate_limit", [False, True], ids=["no-rate-limit", "enableRateLimit"])
@pytest.mark.parametrize("probes", [1, 3])
async def test_exactly_max_calls_reach_the_server(
    sim: KrakenSimulator, clock: FakeClock, probes: int, rate_limit: bool
) -> None:
    """At half-open, of 10,000 concurrent calls exactly halfOpenMaxCalls reach the server."""
    # every other one is refused with CircuitOpenError in its first step
    exchange = exchange_with(sim, clock, probes, enableRateLimit=rate_limit, rateLimit=5)
    breaker = exchange.circuit_breakers["public"]
    await open_circuit(sim, exchange)
    clock.advance(OPEN_TIME)
    gate = Fault.hold()  # probes are held at the server, in flight
    sim.faults.add(gate, endpoint="Time")

    tasks = [asyncio.create_task(exchange.publicGetTime()) for _ in range(CALLS)]
    await asyncio.sleep(0)  # every task has now run its first step, and no more
    refused = [t for t in tasks if t.done()]
    # only the calls still running could send: once they are all at the server, no
    # other request can follow
    await until(lambda: sim.count("Time") == 1 + probes)
    in_flight = breaker.snapshot()["half_open_in_flight"]
    gate.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await exchange.close()

    assert (len(refused), in_flight) == (CALLS - probes, probes)
    assert all(isinstance(t.exception(), ccxt_breaker.CircuitOpenError) for t in refused)
    assert sum(isinstance(r, ccxt_breaker.CircuitOpenError) for r in results) == CALLS - probes
    assert (sim.count("Time"), breaker.state) == (1 + probes, "closed")
    assert breaker.snapshot()["rejected"] == CALLS - probes


async def test_rejection_happens_without_suspending(sim: KrakenSimulator, clock: FakeClock) -> None:
    """A call refused at half-open raises on its very first step: it awaits nothing."""
    exchange = ccxt_breaker.kraken(exchange_config(sim, clock))
    breaker = exchange.circuit_breakers["public"]
    breaker._trip(0.0, CAUSE)
    clock.advance(OPEN_TIME)
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Time")
    probe = asyncio.create_task(exchange.publicGetTime())
    await until(lambda: sim.count("Time") == 1)
    refused = exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
        refused.send(None)
    gate.release()
    await probe
    await exchange.close()

    assert (caught.value.group, caught.value.endpoint, sim.count("Time")) == ("public", "Time", 1)


@pytest.mark.parametrize("probes", [1, 3])
async def test_calls_queued_while_closed_let_out_exactly_max_calls(
    sim: KrakenSimulator, clock: FakeClock, probes: int
) -> None:
    """Calls queued while closed and let out at half-open send exactly halfOpenMaxCalls."""
    # the permit each took before the queue went stale; every other one is refused unsent, and
    # counted once
    calls = 200
    # the next token is a minute away: the first call passes, the rest wait in the queue
    exchange = exchange_with(sim, clock, probes, enableRateLimit=True, rateLimit=60_000)
    breaker = exchange.circuit_breakers["public"]
    sim.faults.add(Fault.http(503), endpoint="Time", times=1)
    tasks = [asyncio.create_task(exchange.publicGetTime()) for _ in range(calls)]
    await until(lambda: breaker.state == "open")
    queued = len(exchange.throttler.queue)
    gate = Fault.hold()  # probes are held at the server, in flight
    sim.faults.add(gate, endpoint="Time")
    clock.advance(OPEN_TIME)
    exchange.throttler.config.update(capacity=1e9, refillRate=1e9)  # let the queue out
    await until(lambda: sim.count("Time") == 1 + probes)
    await until(lambda: sum(t.done() for t in tasks) == calls - probes)
    in_flight = breaker.snapshot()["half_open_in_flight"]
    gate.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await exchange.close()

    refused = sum(isinstance(r, ccxt_breaker.CircuitOpenError) for r in results)
    assert (queued, in_flight, refused) == (calls - 1, probes, calls - 1 - probes)
    assert (sim.count("Time"), breaker.state) == (1 + probes, "closed")
    assert breaker.snapshot()["rejected"] == calls - 1 - probes
