"""The fetch2 hook: where calls are refused, ccxt's queue and retries, half-open, limits."""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress
from typing import Any

import ccxt
import ccxt.async_support
import pytest
from ccxt.async_support.base.exchange import Exchange

import ccxt_breaker
from ccxt_breaker._hook import BreakerMixin
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from .support import api, exchange_config, make_exchange, until

DOWN = Fault.http(503)
CAUSE = {"type": "Test", "message": "opened by the test"}


@pytest.fixture
def throttled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The costs of every call that entered ccxt's rate-limit queue."""
    costs: list[Any] = []
    original = Exchange.throttle

    async def throttle(self: Any, cost: Any = None) -> Any:
        costs.append(cost)
        return await original(self, cost)

    monkeypatch.setattr(Exchange, "throttle", throttle)
    return costs


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays ccxt's own sleep() was asked for (its retry delay), in milliseconds; the
    pause close() takes (timeout_on_exit, 0 in these tests) is left out."""
    delays: list[float] = []

    async def sleep(self: Any, milliseconds: float) -> None:
        if milliseconds:
            delays.append(milliseconds)

    monkeypatch.setattr(Exchange, "sleep", sleep)
    return delays


async def test_open_circuit_refuses_before_the_queue(
    sim: KrakenSimulator, clock: FakeClock, throttled: list[Any]
) -> None:
    """A refused call never enters ccxt's rate-limit queue, so it waits for nothing."""
    config = exchange_config(sim, clock)
    config.update(enableRateLimit=True, rateLimit=60_000)
    exchange = ccxt_breaker.kraken(config)
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert (throttled, sim.count("Time")) == ([], 0)


async def test_call_queued_when_the_circuit_opened_is_refused(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Calls already waiting in ccxt's queue when their circuit opens are refused unsent."""
    config = exchange_config(sim, clock, failureThreshold=1)
    # the next token is a minute away: the first call goes, the rest wait until let out
    config.update(enableRateLimit=True, rateLimit=60_000)
    exchange = ccxt_breaker.kraken(config)
    sim.faults.add(DOWN, endpoint="Time")
    calls = [asyncio.ensure_future(exchange.publicGetTime()) for _ in range(5)]
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await calls[0]
    queued = len(exchange.throttler.queue)
    exchange.throttler.config.update(capacity=1e9, refillRate=1e9)  # let the queue out
    results = await asyncio.gather(*calls[1:], return_exceptions=True)
    await exchange.close()
    assert queued == 4
    assert [type(r) for r in results] == [ccxt_breaker.CircuitOpenError] * 4
    assert sim.count("Time") == 1
    assert exchange.circuit_breakers["public"].snapshot()["rejected"] == 4


async def test_every_retry_counts_and_stops_when_open(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """ccxt's retries each count; once open no attempt goes out, and the last error is raised."""
    config = exchange_config(sim, clock, failureThreshold=2)
    config["options"]["maxRetriesOnFailure"] = 5
    exchange = ccxt_breaker.kraken(config)
    sim.faults.add(DOWN, endpoint="AddOrder")
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder({"pair": "XBTUSD"})
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    assert sim.count("AddOrder") == 2
    snapshot = exchange.circuit_breakers["trading"].snapshot()
    assert (snapshot["calls"], snapshot["failures"], snapshot["rejected"]) == (2, 2, 1)


async def test_ccxt_never_retries_a_rejection(
    sim: KrakenSimulator, clock: FakeClock, slept: list[float]
) -> None:
    """A call refused before the queue never reaches ccxt's retry loop: nothing is slept."""
    config = exchange_config(sim, clock)
    config["options"].update(maxRetriesOnFailure=3, maxRetriesOnFailureDelay=10_000)
    exchange = ccxt_breaker.kraken(config)
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert (slept, exchange.circuit_breakers["public"].snapshot()["rejected"]) == ([], 1)


async def test_retry_refused_mid_call_does_not_sleep(
    sim: KrakenSimulator, clock: FakeClock, slept: list[float]
) -> None:
    """When the circuit opens between retries, the call ends at once with the last error."""
    # the refused retries are neither sent nor counted twice
    config = exchange_config(sim, clock, failureThreshold=1)
    config["options"].update(maxRetriesOnFailure=3, maxRetriesOnFailureDelay=200)
    exchange = ccxt_breaker.kraken(config)
    sim.faults.add(DOWN, endpoint="Time")
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.publicGetTime()
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    snapshot = exchange.circuit_breakers["public"].snapshot()
    assert (slept, sim.count("Time"), snapshot["rejected"]) == ([], 1, 1)


async def test_retry_that_succeeds_leaves_nothing_for_the_next_call(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """A retried call's error ends with it: a later refused call gets CircuitOpenError."""
    config = exchange_config(sim, clock, failureThreshold=5)
    config["options"]["maxRetriesOnFailure"] = 1
    exchange = ccxt_breaker.kraken(config)
    sim.faults.add(DOWN, endpoint="Time", times=1)
    await exchange.publicGetTime()  # the retry answers
    breaker = exchange.circuit_breakers["public"]
    assert (breaker.snapshot()["calls"], breaker.snapshot()["failures"]) == (2, 1)
    breaker.force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert sim.count("Time") == 2


async def test_a_failed_call_leaves_nothing_for_the_next_in_its_task(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """After a failed call, the next in its task, refused in the queue, gets CircuitOpenError."""
    config = exchange_config(sim, clock, failureThreshold=5)
    config.update(enableRateLimit=True, rateLimit=50)
    exchange = ccxt_breaker.kraken(config)
    sim.faults.add(DOWN, endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    asyncio.get_running_loop().call_soon(exchange.circuit_breakers["public"].force_open)
    with pytest.raises(ccxt_breaker.CircuitOpenError):  # opens while the call is queued
        await exchange.publicGetTime()
    await exchange.close()
    assert sim.count("Time") == 1


async def test_attempts_count_under_their_calls_endpoint(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """An attempt counts under its call's endpoint, nested paths and query strings included."""
    exchange = make_exchange(sim, clock)
    await exchange.publicGetTicker({"pair": "XBTUSD"})
    await exchange.publicGetTicker({"pair": "ETHUSD"})
    with suppress(ccxt.BaseError):  # the simulator knows no Earn: a business error
        await exchange.privatePostEarnStrategies()
    snapshot = exchange.circuit_breakers.snapshot()
    await exchange.close()
    ticker = {"calls": 2, "successes": 2, "failures": 0, "neutral": 0, "rejected": 0}
    earn = {"calls": 1, "successes": 1, "failures": 0, "neutral": 0, "rejected": 0}
    assert snapshot["public"]["endpoints"] == {"Ticker": ticker}
    assert snapshot["earn"]["endpoints"] == {"Earn/Strategies": earn}


async def test_half_open_probe_closes_after_success_threshold(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """After the open time one probe goes; successThreshold probe successes close."""
    exchange = make_exchange(sim, clock, failureThreshold=1, successThreshold=2)
    breaker = exchange.circuit_breakers["public"]
    sim.faults.add(DOWN, endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
        await exchange.publicGetTime()
    assert caught.value.retry_after == pytest.approx(30.0)
    clock.advance(30.0)
    await exchange.publicGetTime()
    assert breaker.state == "half_open"
    await exchange.publicGetTime()
    assert breaker.state == "closed"
    assert sim.count("Time") == 3
    await exchange.close()


async def test_half_open_admits_one_probe_among_concurrent_calls(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """While the probe is in flight every other call is refused at once."""
    exchange = make_exchange(sim, clock, failureThreshold=1)
    exchange.circuit_breakers["public"]._trip(0.0, CAUSE)
    clock.advance(30.0)
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Time")
    probe = asyncio.ensure_future(exchange.publicGetTime())
    await until(lambda: sim.count("Time") == 1)
    others = await asyncio.gather(
        *(exchange.publicGetTime() for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, ccxt_breaker.CircuitOpenError) for r in others)
    gate.release()
    await probe
    assert sim.count("Time") == 1
    await exchange.close()


async def test_failed_probe_reopens_for_longer(sim: KrakenSimulator, clock: FakeClock) -> None:
    """A failed probe re-opens the circuit, and the open time grows."""
    exchange = make_exchange(sim, clock, failureThreshold=1, resetTimeoutJitter=0)
    sim.faults.add(DOWN, endpoint="Time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    clock.advance(30.0)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    breaker = exchange.circuit_breakers["public"]
    assert (breaker.state, breaker.retry_after) == ("open", 60.0)
    await exchange.close()


async def test_groups_are_independent(sim: KrakenSimulator, clock: FakeClock) -> None:
    """An outage of the private API leaves market data flowing."""
    exchange = make_exchange(sim, clock, failureThreshold=1)
    sim.faults.add(DOWN, endpoint="Balance")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostBalance()
    await exchange.publicGetTime()
    states = {g: b.state.value for g, b in exchange.circuit_breakers.items()}
    assert states == {
        "public": "closed",
        "private": "open",
        "trading": "closed",
        "funding": "closed",
        "earn": "closed",
    }
    await exchange.close()


KEYED = {"private", "trading", "funding", "earn"}
LOCKOUT = Fault.kraken_error("EGeneral:Temporary lockout")


@pytest.mark.parametrize(
    ("endpoint", "fault", "opened", "retry_after"),
    [
        ("Balance", LOCKOUT, KEYED, 900.0),
        ("AddOrder", LOCKOUT, KEYED, 900.0),
        ("Balance", Fault.kraken_error("EAPI:Rate limit exceeded"), KEYED - {"trading"}, 30.0),
        ("AddOrder", Fault.kraken_error("EOrder:Rate limit exceeded"), {"trading"}, 30.0),
        (
            "AddOrder",
            Fault.kraken_error(
                "EOrder:Rate limit exceeded", status=429, headers={"Retry-After": "50"}
            ),
            {"trading"},
            50.0,
        ),
        ("Ticker", Fault.too_many_requests(120), {"public"}, 120.0),
        (
            "Balance",
            Fault.kraken_error(
                "EGeneral:Too many requests", status=429, headers={"Retry-After": "45"}
            ),
            {"private"},
            45.0,
        ),
        ("Ticker", Fault.too_many_requests(None), {"public"}, 30.0),
        (
            "Balance",  # a 429 whose JSON error ccxt does not map: still the caller's limit
            Fault.kraken_error("EGeneral:Upstream busy", status=429, headers={"Retry-After": "70"}),
            {"private"},
            70.0,
        ),
        ("AddOrder", None, {"trading"}, 90.0),  # EService:Throttled, 90 s ahead
    ],
)
async def test_limits_open_their_domain_at_once(
    sim: KrakenSimulator,
    clock: FakeClock,
    endpoint: str,
    fault: Fault | None,
    opened: set[str],
    retry_after: float,
) -> None:
    """Limits and lockouts open their domain at once, for the named time or the open time."""
    # whichever is later
    sim.faults.add(fault or Fault.throttled(clock.time() + 90), endpoint=endpoint, times=1)
    exchange = make_exchange(sim, clock, resetTimeoutJitter=0)
    section = "public" if endpoint == "Ticker" else "private"
    with pytest.raises(ccxt.BaseError):
        await exchange.fetch2(endpoint, api(section), "GET" if section == "public" else "POST")
    await exchange.close()
    breakers = exchange.circuit_breakers
    assert {g for g, b in breakers.items() if b.state == "open"} == opened
    assert {round(breakers[g].retry_after or 0) for g in opened} == {retry_after}


async def test_lockout_duration_is_configurable(sim: KrakenSimulator, clock: FakeClock) -> None:
    """lockoutDuration (ms) sets how long a temporary lockout keeps keyed groups open."""
    sim.faults.add(LOCKOUT, endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock, lockoutDuration=120_000)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.privatePostBalance()
    await exchange.close()
    assert exchange.circuit_breakers["funding"].retry_after == 120.0


async def test_concurrent_calls_keep_their_own_status_and_headers(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Each call's Retry-After is its own, even when the answers arrive in reverse order."""
    exchange = make_exchange(sim, clock, endpoints={"Ticker": "tickers", "Depth": "books"})
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Ticker", times=1)
    sim.faults.add(Fault.too_many_requests(100), endpoint="Ticker", times=1)
    sim.faults.add(Fault.too_many_requests(200), endpoint="Depth", times=1)
    ticker = asyncio.ensure_future(exchange.publicGetTicker())
    await until(lambda: sim.count("Ticker") == 1)
    sim.faults.add(Fault.too_many_requests(100), endpoint="Ticker", times=1)
    with pytest.raises(ccxt.RateLimitExceeded):
        await exchange.publicGetDepth()
    gate.release()
    await ticker  # the held request itself is answered normally
    with pytest.raises(ccxt.RateLimitExceeded):
        await exchange.publicGetTicker()
    await exchange.close()
    breakers = exchange.circuit_breakers
    assert (breakers["tickers"].retry_after, breakers["books"].retry_after) == (100.0, 200.0)
    assert breakers["public"].state == "closed"


async def test_disabled_groups_and_flag_pass_straight_through(sim: KrakenSimulator) -> None:
    """circuitBreaker False, or a group with enabled False, adds no breaker at all."""
    config = exchange_config(sim)
    off = ccxt_breaker.kraken({**config, "options": {"circuitBreaker": False}})
    assert dict(off.circuit_breakers) == {}
    assert off.circuit_breakers.group_of("Ticker") == "public"
    sim.faults.add(DOWN, endpoint="Time")
    for _ in range(7):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await off.publicGetTime()
    partial = make_exchange(sim, groups={"public": {"enabled": False}})
    assert "public" not in partial.circuit_breakers
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await partial.publicGetTime()
    await off.close()
    await partial.close()
    assert sim.count("Time") == 8


async def test_subclass_fetch2_sees_every_call(sim: KrakenSimulator, clock: FakeClock) -> None:
    """A subclass that overrides fetch2 gets every implicit call, refused ones included."""
    seen: list[str] = []

    class Logged(ccxt_breaker.kraken):
        async def fetch2(self, path: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(path)
            return await super().fetch2(path, *args, **kwargs)

    exchange = make_exchange(sim, clock, cls=Logged)
    await exchange.publicGetTime()
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert (seen, sim.count("Time")) == (["Time", "Time"], 1)
    await exchange.close()


@pytest.mark.parametrize("name", ["fetch2", "fetch"])
async def test_a_later_patch_of_ccxt_is_honoured(
    sim: KrakenSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A patch of ccxt's class made after import (as test suites do) still runs guarded."""
    original = getattr(ccxt.async_support.kraken, name)
    patched: list[str] = []

    async def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        patched.append(name)
        return await original(self, *args, **kwargs)

    exchange = make_exchange(sim, clock)
    monkeypatch.setattr(ccxt.async_support.kraken, name, spy)
    await exchange.publicGetTime()
    assert patched == [name]
    assert exchange.circuit_breakers["public"].snapshot()["calls"] == 1
    await exchange.close()


def test_the_mixin_must_come_before_ccxt() -> None:
    """BreakerMixin after ccxt's class fails when the class is made, with a message."""
    with pytest.raises(TypeError, match="must come before a ccxt async exchange class"):
        type("Bad", (ccxt.async_support.kraken, BreakerMixin), {})


def test_the_mixin_may_sit_anywhere_before_ccxt() -> None:
    """BreakerMixin anywhere before the ccxt class makes a working exchange."""

    class Other:
        pass

    cls = type("Mixed", (BreakerMixin, Other, ccxt.async_support.kraken), {})
    exchange = cls({"timeout_on_exit": 0})
    assert sorted(exchange.circuit_breakers) == ["earn", "funding", "private", "public", "trading"]


async def test_a_subclass_fetch_keeps_a_calls_retries_together(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """A subclass's fetch() sees every attempt; a refused retry ends with the sent error."""
    # refused attempts included, and the refusal counted once
    attempts: list[str] = []

    class Logged(ccxt_breaker.kraken):
        async def fetch(self, url: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().fetch(url, *args, **kwargs)
            except ccxt.BaseError as exc:
                attempts.append(type(exc).__name__)
                raise

    config = exchange_config(sim, clock, failureThreshold=2)
    config["options"]["maxRetriesOnFailure"] = 3
    exchange = Logged(config)
    sim.faults.add(DOWN, endpoint="AddOrder")
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder({"pair": "XBTUSD"})
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    snapshot = exchange.circuit_breakers["trading"].snapshot()
    assert (sim.count("AddOrder"), snapshot["calls"], snapshot["rejected"]) == (2, 2, 1)
    assert attempts == ["ExchangeNotAvailable"] * 2 + ["CircuitOpenError"] * 2


@pytest.mark.parametrize("step", ["probe", "failure"])
async def test_a_breaker_change_waits_for_a_lock_another_thread_holds(
    sim: KrakenSimulator, clock: FakeClock, step: str
) -> None:
    """A probe's admission and a failure's count on the event loop wait while a kill
    switch's thread holds the breaker's lock, so the two never change the machine at once."""
    exchange = make_exchange(sim, clock, failureThreshold=1, successThreshold=1)
    breaker = exchange.circuit_breakers["public"]
    if step == "probe":
        breaker._trip(1.0, CAUSE)
        clock.advance(30.0)  # the next call is a probe
    else:
        sim.faults.add(DOWN, endpoint="Time", times=1)
    seen: list[str] = []
    held, leave = threading.Event(), threading.Event()

    def kill_switch() -> None:
        with breaker._lock:
            held.set()
            leave.wait(0.5)  # the loop reaches the lock meanwhile, and must wait there
            seen.append(breaker._machine.state.value)

    thread = threading.Thread(target=kill_switch)
    thread.start()
    held.wait(5)
    with suppress(ccxt.ExchangeNotAvailable):
        await exchange.fetch_time()
    thread.join(5)
    await exchange.close()
    assert seen == ["open" if step == "probe" else "closed"]  # unchanged while held
    assert breaker.state == ("closed" if step == "probe" else "open")
