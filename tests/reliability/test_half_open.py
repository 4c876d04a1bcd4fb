"""Half-open exactness: 10,000 concurrent calls through ccxt let exactly halfOpenMaxCalls out."""

from __future__ import annotations

import asyncio

import ccxt
import pytest

import ccxt_breaker

from ..support import Backend, FakeClock, Reply, exchange_config

CALLS = 10_000
RESET_TIMEOUT = 30.0


async def until(condition: object, seconds: float = 5.0) -> None:
    """Wait (in real time) until ``condition()`` holds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("rate_limit", [False, True], ids=["no-rate-limit", "enableRateLimit"])
@pytest.mark.parametrize("probes", [1, 3])
async def test_exactly_max_calls_reach_the_server(backend: Backend, clock: FakeClock,
                                                  probes: int, rate_limit: bool) -> None:
    """At half-open, of 10,000 concurrent calls exactly halfOpenMaxCalls reach the server
    and every other one is refused with CircuitOpenError in its first step."""
    config = exchange_config(backend.url, clock, failureThreshold=1, halfOpenMaxCalls=probes,
                             successThreshold=probes)
    config.update(enableRateLimit=rate_limit, rateLimit=5)
    exchange = ccxt_breaker.kraken(config)
    breaker = exchange.circuit_breakers["public"]
    backend.script("Time", Reply(503, "<html>down</html>"))
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    clock.advance(RESET_TIMEOUT)
    backend.gate = asyncio.Event()  # probes are held at the server, in flight

    tasks = [asyncio.create_task(exchange.publicGetTime()) for _ in range(CALLS)]
    await asyncio.sleep(0)  # every task has now run its first step, and no more
    refused = [t for t in tasks if t.done()]
    await until(lambda: backend.hits["Time"] == 1 + probes)
    await asyncio.sleep(0.05)  # room for any extra request to arrive
    in_flight = (backend.hits["Time"] - 1, breaker.snapshot()["half_open_in_flight"])
    backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await exchange.close()

    assert (len(refused), in_flight) == (CALLS - probes, (probes, probes))
    assert all(isinstance(t.exception(), ccxt_breaker.CircuitOpenError) for t in refused)
    assert sum(isinstance(r, ccxt_breaker.CircuitOpenError) for r in results) == CALLS - probes
    assert (backend.hits["Time"], breaker.state) == (1 + probes, "closed")
    assert breaker.snapshot()["rejected"] == CALLS - probes


async def test_rejection_happens_without_suspending(backend: Backend, clock: FakeClock) -> None:
    """A call refused at half-open raises on its very first step: it awaits nothing."""
    exchange = ccxt_breaker.kraken(exchange_config(backend.url, clock))
    breaker = exchange.circuit_breakers["public"]
    breaker.trip(0.0, {"type": "Test", "message": "opened by the test"})
    clock.advance(RESET_TIMEOUT)
    backend.gate = asyncio.Event()
    probe = asyncio.create_task(exchange.publicGetTime())
    await until(lambda: backend.hits["Time"] == 1)
    refused = exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
        refused.send(None)
    backend.gate.set()
    await probe
    await exchange.close()
    assert (caught.value.group, caught.value.endpoint, backend.hits["Time"]) == (
        "public", "Time", 1)


@pytest.mark.parametrize("probes", [1, 3])
async def test_calls_queued_since_all_closed_let_out_exactly_max_calls(
    backend: Backend, clock: FakeClock, probes: int
) -> None:
    """Calls that entered ccxt's queue while every circuit was closed (by the shortcut past
    the check before the queue), and leave it once the circuit is half-open, let exactly
    halfOpenMaxCalls out; every other one is refused unsent, and counted once."""
    calls = 200
    config = exchange_config(backend.url, clock, failureThreshold=1, halfOpenMaxCalls=probes,
                             successThreshold=probes)
    config.update(enableRateLimit=True, rateLimit=2)
    exchange = ccxt_breaker.kraken(config)
    breaker = exchange.circuit_breakers["public"]
    backend.script("Time", Reply(503, "<html>down</html>"))
    assert "request" in vars(exchange)  # every circuit closed: the shortcut is on
    tasks = [asyncio.create_task(exchange.publicGetTime()) for _ in range(calls)]
    await until(lambda: breaker.state == "open")
    backend.gate = asyncio.Event()  # probes are held at the server, in flight
    clock.advance(RESET_TIMEOUT)
    await until(lambda: backend.hits["Time"] == 1 + probes)
    await until(lambda: sum(t.done() for t in tasks) == calls - probes)
    in_flight = breaker.snapshot()["half_open_in_flight"]
    backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await exchange.close()

    refused = sum(isinstance(r, ccxt_breaker.CircuitOpenError) for r in results)
    assert (in_flight, refused) == (probes, calls - 1 - probes)
    assert (backend.hits["Time"], breaker.state) == (1 + probes, "closed")
    assert breaker.snapshot()["rejected"] == calls - 1 - probes
