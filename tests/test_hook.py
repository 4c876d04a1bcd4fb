"""The fetch2 hook: where calls are refused, ccxt's queue and retries, half-open, limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt
import ccxt.async_support
import pytest

import ccxt_breaker
from ccxt_breaker._hook import BreakerMixin

from .support import Backend, FakeClock, Reply, api, exchange_config, make_exchange

DOWN = Reply(503, "<html>down</html>")


async def test_open_circuit_refuses_before_the_queue(backend: Backend, clock: FakeClock) -> None:
    """A refused call never waits in ccxt's rate-limit queue nor spends a token."""
    config = exchange_config(backend.url, clock)
    config.update(enableRateLimit=True, rateLimit=60_000)
    exchange = ccxt_breaker.kraken(config)
    exchange.circuit_breakers["public"].force_open()
    throttled: list[Any] = []
    exchange.throttle = lambda cost=None: throttled.append(cost)
    started = time.perf_counter()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert time.perf_counter() - started < 0.05
    assert (throttled, backend.hits["Time"]) == ([], 0)
    await exchange.close()


async def test_call_queued_when_the_circuit_opened_is_refused(backend: Backend,
                                                              clock: FakeClock) -> None:
    """Calls already waiting in ccxt's queue when their circuit opens are refused unsent."""
    config = exchange_config(backend.url, clock, failureThreshold=1)
    config.update(enableRateLimit=True, rateLimit=40)
    exchange = ccxt_breaker.kraken(config)
    backend.always("Time", DOWN)
    results = await asyncio.gather(*(exchange.publicGetTime() for _ in range(5)),
                                   return_exceptions=True)
    await exchange.close()
    assert [type(r) for r in results] == [ccxt.ExchangeNotAvailable] + [
        ccxt_breaker.CircuitOpenError] * 4
    assert backend.hits["Time"] == 1
    assert exchange.circuit_breakers["public"].snapshot()["rejected"] == 4


async def test_every_retry_counts_and_stops_when_open(backend: Backend, clock: FakeClock) -> None:
    """ccxt's retries each count; once the circuit opens no further attempt goes out, and the
    caller gets the last attempt's error, since a request did go out."""
    config = exchange_config(backend.url, clock, failureThreshold=2)
    config["options"]["maxRetriesOnFailure"] = 5
    exchange = ccxt_breaker.kraken(config)
    backend.always("AddOrder", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder({"pair": "XBTUSD"})
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    assert backend.hits["AddOrder"] == 2
    assert exchange.circuit_breakers["trading"].snapshot()["calls"] == 2


async def test_ccxt_never_retries_a_rejection(backend: Backend, clock: FakeClock) -> None:
    """A CircuitOpenError is not retried by ccxt's loop, and no retry delay is slept."""
    config = exchange_config(backend.url, clock)
    config["options"].update(maxRetriesOnFailure=3, maxRetriesOnFailureDelay=10_000)
    exchange = ccxt_breaker.kraken(config)
    exchange.circuit_breakers["public"].force_open()
    started = time.perf_counter()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert time.perf_counter() - started < 1
    assert exchange.circuit_breakers["public"].snapshot()["rejected"] == 1
    await exchange.close()


async def test_retry_refused_mid_call_does_not_sleep(backend: Backend, clock: FakeClock) -> None:
    """When the circuit opens between ccxt's retries, the call ends at once with the last
    error instead of sleeping through the remaining retry delays."""
    config = exchange_config(backend.url, clock, failureThreshold=1)
    config["options"].update(maxRetriesOnFailure=3, maxRetriesOnFailureDelay=200)
    exchange = ccxt_breaker.kraken(config)
    backend.always("Time", DOWN)
    started = time.perf_counter()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    assert time.perf_counter() - started < 0.15
    assert backend.hits["Time"] == 1
    await exchange.close()


async def test_retry_that_succeeds_leaves_nothing_for_the_next_call(backend: Backend,
                                                                  clock: FakeClock) -> None:
    """The error a failed attempt leaves for ccxt's retry ends with its call: a later call
    that the circuit refuses gets CircuitOpenError, not that stale error."""
    config = exchange_config(backend.url, clock, failureThreshold=5)
    config["options"]["maxRetriesOnFailure"] = 1
    exchange = ccxt_breaker.kraken(config)
    backend.script("Time", DOWN)
    await exchange.publicGetTime()  # the retry answers
    breaker = exchange.circuit_breakers["public"]
    assert (breaker.snapshot()["calls"], breaker.snapshot()["failures"]) == (2, 1)
    breaker.force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert backend.hits["Time"] == 2
    await exchange.close()


async def test_attempts_are_matched_to_endpoints_by_url(backend: Backend,
                                                        clock: FakeClock) -> None:
    """An attempt finds its endpoint from its URL, query string and nested paths included,
    so its outcome lands on that endpoint's counters."""
    exchange = make_exchange(backend.url, clock)
    await exchange.publicGetTicker({"pair": "XBTUSD"})
    await exchange.publicGetTicker({"pair": "ETHUSD"})
    await exchange.privatePostEarnStrategies()
    snapshot = exchange.circuit_breakers.snapshot()
    await exchange.close()
    assert snapshot["public"]["endpoints"]["Ticker"]["calls"] == 2
    assert snapshot["earn"]["endpoints"]["Earn/Strategies"]["calls"] == 1


async def test_half_open_probe_closes_after_success_threshold(backend: Backend,
                                                              clock: FakeClock) -> None:
    """After the open time one probe goes; successThreshold probe successes close."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1, successThreshold=2)
    breaker = exchange.circuit_breakers["public"]
    backend.script("Time", DOWN)
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
    assert backend.hits["Time"] == 3
    await exchange.close()


async def test_half_open_admits_one_probe_among_concurrent_calls(backend: Backend,
                                                                 clock: FakeClock) -> None:
    """While the probe is in flight every other call is refused at once."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    breaker = exchange.circuit_breakers["public"]
    breaker.trip(0.0, {"type": "T", "message": "m"})
    clock.advance(30.0)
    backend.gate = asyncio.Event()
    probe = asyncio.ensure_future(exchange.publicGetTime())
    await asyncio.sleep(0.05)
    others = await asyncio.gather(*(exchange.publicGetTime() for _ in range(20)),
                                  return_exceptions=True)
    assert all(isinstance(r, ccxt_breaker.CircuitOpenError) for r in others)
    backend.gate.set()
    await probe
    assert backend.hits["Time"] == 1
    await exchange.close()


async def test_failed_probe_reopens_for_longer(backend: Backend, clock: FakeClock) -> None:
    """A failed probe re-opens the circuit, and the open time grows."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1, resetTimeoutJitter=0)
    backend.always("Time", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    clock.advance(30.0)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    breaker = exchange.circuit_breakers["public"]
    assert (breaker.state, breaker.retry_after) == ("open", 60.0)
    await exchange.close()


async def test_groups_are_independent(backend: Backend, clock: FakeClock) -> None:
    """An outage of the private API leaves market data flowing."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    backend.always("Balance", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostBalance()
    await exchange.publicGetTime()
    states = {g: b.state.value for g, b in exchange.circuit_breakers.items()}
    assert states == {"public": "closed", "private": "open", "trading": "closed",
                      "funding": "closed", "earn": "closed"}
    await exchange.close()


KEYED = {"private", "trading", "funding", "earn"}


@pytest.mark.parametrize(
    ("endpoint", "reply", "opened", "retry_after"),
    [
        ("Balance", Reply.kraken_error("EGeneral:Temporary lockout"), KEYED, 900.0),
        ("AddOrder", Reply.kraken_error("EGeneral:Temporary lockout"), KEYED, 900.0),
        ("Balance", Reply.kraken_error("EAPI:Rate limit exceeded"), KEYED - {"trading"}, 30.0),
        ("AddOrder", Reply.kraken_error("EOrder:Rate limit exceeded"), {"trading"}, 30.0),
        ("AddOrder", Reply.kraken_error("EOrder:Rate limit exceeded", status=429,
                                        headers={"Retry-After": "50"}), {"trading"}, 50.0),
        ("Ticker", Reply(429, "Too many requests", headers={"Retry-After": "120"}), {"public"},
         120.0),
        ("Balance", Reply.kraken_error("EGeneral:Too many requests", status=429,
                                       headers={"Retry-After": "45"}), {"private"}, 45.0),
        ("Ticker", Reply(429, "slow down"), {"public"}, 30.0),
        ("AddOrder", Reply.kraken_error("EService:Throttled: {throttled}"), {"trading"}, 90.0),
    ],
)
async def test_limits_open_their_domain_at_once(backend: Backend, clock: FakeClock,
                                                endpoint: str, reply: Reply, opened: set[str],
                                                retry_after: float) -> None:
    """Rate limits and lockouts open at once, across Kraken's limit domain, for the later of
    the time the exchange names and the normal open time."""
    if isinstance(reply.body, dict):
        reply.body["error"] = [e.format(throttled=int(clock.time()) + 90)
                               for e in reply.body["error"]]
    backend.script(endpoint, reply)
    exchange = make_exchange(backend.url, clock, resetTimeoutJitter=0)
    section = "public" if endpoint == "Ticker" else "private"
    with pytest.raises(ccxt.BaseError):
        await exchange.fetch2(endpoint, api(section), "GET" if section == "public" else "POST")
    await exchange.close()
    breakers = exchange.circuit_breakers
    assert {g for g, b in breakers.items() if b.state == "open"} == opened
    assert {round(breakers[g].retry_after or 0) for g in opened} == {retry_after}


async def test_lockout_duration_is_configurable(backend: Backend, clock: FakeClock) -> None:
    """lockoutDuration (ms) sets how long a temporary lockout keeps keyed groups open."""
    backend.script("Balance", Reply.kraken_error("EGeneral:Temporary lockout"))
    exchange = make_exchange(backend.url, clock, lockoutDuration=120_000)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.privatePostBalance()
    await exchange.close()
    assert exchange.circuit_breakers["funding"].retry_after == 120.0


async def test_concurrent_calls_keep_their_own_status_and_headers(backend: Backend,
                                                                  clock: FakeClock) -> None:
    """Each call's Retry-After is its own, even while other calls run concurrently."""
    exchange = make_exchange(
        backend.url, clock, endpoints={"Ticker": "tickers", "Depth": "books"})
    backend.script("Ticker", Reply(429, "x", headers={"Retry-After": "100"}, delay=0.05))
    backend.script("Depth", Reply(429, "x", headers={"Retry-After": "200"}))
    backend.script("Trades", Reply(200, {"error": [], "result": {}}, delay=0.02))
    await asyncio.gather(exchange.publicGetTicker(), exchange.publicGetDepth(),
                         exchange.publicGetTrades(), return_exceptions=True)
    await exchange.close()
    breakers = exchange.circuit_breakers
    assert (breakers["tickers"].retry_after, breakers["books"].retry_after) == (100.0, 200.0)
    assert breakers["public"].state == "closed"


async def test_disabled_groups_and_flag_pass_straight_through(backend: Backend) -> None:
    """circuitBreaker False, or a group with enabled False, adds no breaker at all."""
    config = exchange_config(backend.url)
    off = ccxt_breaker.kraken({**config, "options": {"circuitBreaker": False}})
    assert dict(off.circuit_breakers) == {}
    assert off.circuit_breakers.group_of("Ticker") == "public"
    backend.always("Time", DOWN)
    for _ in range(7):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await off.publicGetTime()
    partial = make_exchange(backend.url, groups={"public": {"enabled": False}})
    assert "public" not in partial.circuit_breakers
    await off.close()
    await partial.close()
    assert backend.hits["Time"] == 7


async def test_subclass_fetch2_still_sees_every_call(backend: Backend, clock: FakeClock) -> None:
    """A subclass that overrides fetch2 still gets every implicit call, refused ones
    included: the hook's stand-in for ccxt's request() steps aside for it."""
    seen: list[str] = []

    class Logged(ccxt_breaker.kraken):
        async def fetch2(self, path: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(path)
            return await super().fetch2(path, *args, **kwargs)

    exchange = Logged(exchange_config(backend.url, clock))
    await exchange.publicGetTime()
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert (seen, backend.hits["Time"]) == (["Time", "Time"], 1)
    await exchange.close()


@pytest.mark.parametrize("name", ["fetch2", "fetch"])
async def test_a_later_patch_of_ccxt_is_honoured(backend: Backend, clock: FakeClock,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 name: str) -> None:
    """The hook looks ccxt's methods up on every call, so a patch of ccxt's class made
    after import (as test suites do) still runs under the breaker."""
    original = getattr(ccxt.async_support.kraken, name)
    patched: list[str] = []

    async def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        patched.append(name)
        return await original(self, *args, **kwargs)

    exchange = make_exchange(backend.url, clock)
    monkeypatch.setattr(ccxt.async_support.kraken, name, spy)
    await exchange.publicGetTime()
    assert patched == [name]
    assert exchange.circuit_breakers["public"].snapshot()["calls"] == 1
    await exchange.close()


def test_mixin_must_sit_right_before_the_ccxt_class() -> None:
    """BreakerMixin put before anything but the ccxt exchange class fails when the class
    is made, with a message, not later on the first call."""

    class Other:
        pass

    with pytest.raises(TypeError, match="right before the ccxt exchange class"):
        type("Bad", (BreakerMixin, Other, ccxt.async_support.kraken), {})


# --- the shortcut while every circuit is closed ---------------------------------------------


def shortcut_on(exchange: Any) -> bool:
    return "request" in vars(exchange)


async def test_the_shortcut_lasts_only_while_every_circuit_is_closed(backend: Backend,
                                                                     clock: FakeClock) -> None:
    """With every circuit closed a call skips the hook above ccxt's queue; the first
    transition away removes that shortcut before any listener hears of it (so a call made
    from a listener is refused before the queue), and the return to all-closed restores it."""
    exchange = make_exchange(backend.url, clock)
    breakers = exchange.circuit_breakers
    heard: list[tuple[str, bool]] = []
    breakers.add_listener(
        lambda event: heard.append((event.new_state, shortcut_on(exchange)))
        if isinstance(event, ccxt_breaker.StateChanged) else None
    )
    assert (shortcut_on(exchange), breakers.all_closed) == (True, True)
    breakers["earn"].force_open()
    assert heard == [("open", False)]
    breakers["public"].force_open()
    breakers["earn"].reset()
    assert not shortcut_on(exchange)  # public is still open
    assert not breakers.all_closed
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    breakers["public"].reset()
    assert (shortcut_on(exchange), breakers.all_closed) == (True, True)
    await exchange.publicGetTime()
    assert (backend.hits["Time"], breakers["public"].snapshot()["calls"]) == (1, 1)
    await exchange.close()


async def test_a_request_of_the_users_own_is_kept(backend: Backend, clock: FakeClock) -> None:
    """A request() the user set on the instance or wrote in a subclass is never replaced,
    and still runs under the breaker."""
    seen: list[str] = []

    class Logged(ccxt_breaker.kraken):
        async def request(self, path: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(path)
            return await super().request(path, *args, **kwargs)

    exchange = Logged(exchange_config(backend.url, clock))
    assert not shortcut_on(exchange)
    await exchange.publicGetTime()
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    assert (seen, backend.hits["Time"]) == (["Time", "Time"], 1)
    await exchange.close()

    plain = make_exchange(backend.url, clock)
    hooked = type(plain).request

    async def own(path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"own {path}")
        return await hooked(plain, path, *args, **kwargs)

    plain.request = own
    plain.circuit_breakers["public"].force_open()
    plain.circuit_breakers["public"].reset()
    assert plain.request is own
    await plain.publicGetTime()
    assert (seen[-1], backend.hits["Time"]) == ("own Time", 2)
    await plain.close()


async def test_refused_retry_of_a_shortcut_call(backend: Backend, clock: FakeClock) -> None:
    """A call that came in by the shortcut and whose retry is refused (its own failure
    opened the circuit) gets its last sent attempt's error; ccxt's further retries are
    refused at once, unsent, uncounted and unreported."""
    config = exchange_config(backend.url, clock, failureThreshold=1)
    config["options"]["maxRetriesOnFailure"] = 3  # no delay: ccxt does not sleep between
    exchange = ccxt_breaker.kraken(config)
    rejections: list[Any] = []
    exchange.circuit_breakers.add_listener(
        lambda event: rejections.append(event)
        if isinstance(event, ccxt_breaker.CallRejected) else None
    )
    backend.always("Time", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.publicGetTime()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    snapshot = exchange.circuit_breakers["public"].snapshot()
    assert (backend.hits["Time"], snapshot["calls"], snapshot["rejected"]) == (1, 1, 1)
    assert len(rejections) == 1
    with pytest.raises(ccxt_breaker.CircuitOpenError):  # the next call: nothing stale
        await exchange.publicGetTime()
    await exchange.close()


async def test_a_failed_call_leaves_nothing_for_the_next_in_its_task(backend: Backend,
                                                                    clock: FakeClock) -> None:
    """A call that failed by the shortcut leaves its error for a retry that never comes; the
    next call in the same task, refused after ccxt's queue, gets CircuitOpenError and not
    that stale error."""
    config = exchange_config(backend.url, clock, failureThreshold=5)
    config.update(enableRateLimit=True, rateLimit=50)
    exchange = ccxt_breaker.kraken(config)
    backend.script("Time", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    asyncio.get_running_loop().call_later(0.01, exchange.circuit_breakers["public"].force_open)
    with pytest.raises(ccxt_breaker.CircuitOpenError):  # waits ~50 ms in the queue first
        await exchange.publicGetTime()
    assert backend.hits["Time"] == 1
    await exchange.close()


async def test_a_subclass_fetch_keeps_a_calls_retries_together(backend: Backend,
                                                               clock: FakeClock) -> None:
    """A subclass's own fetch() around the hook's does not hide a call's retries from it: a
    refused retry still ends the call with the last sent attempt's error, counted once."""
    attempts: list[str] = []

    class Logged(ccxt_breaker.kraken):
        async def fetch(self, url: str, *args: Any, **kwargs: Any) -> Any:
            attempts.append(url)
            return await super().fetch(url, *args, **kwargs)

    config = exchange_config(backend.url, clock, failureThreshold=2)
    config["options"]["maxRetriesOnFailure"] = 3
    exchange = Logged(config)
    backend.always("AddOrder", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder({"pair": "XBTUSD"})
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    snapshot = exchange.circuit_breakers["trading"].snapshot()
    assert (backend.hits["AddOrder"], snapshot["calls"], snapshot["rejected"]) == (2, 2, 1)
    assert len(attempts) == 4  # ccxt went round its loop; the last two were refused unsent
