"""The README's promises, attacked the way users break them.

Each test is one of the contract breaks the first version had (issue #12, cases 1-9 and
11; case 10 is in test_verdicts.py): a bot subclasses the class, patches it, copies it,
wraps its methods, cancels it or shuts down with a call in flight.  Each failed on the
hook that read ccxt's frames and wrote a shortcut into the instance.  Case 12 came later:
pickle and deepcopy, which plain ccxt instances support, failed on the breakers' lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import hashlib
import pickle
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from unittest import mock

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from ccxt.async_support.base.exchange import Exchange

import ccxt_breaker
import ccxt_breaker.pro
import ccxt_breaker.sync
from ccxt_breaker._hook import BreakerMixin
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from .support import PLAIN_KEY, exchange_config, make_exchange, plain_exchange, until

CAUSE = {"type": "Test", "message": "opened by the test"}
HANG = 30.0  # bounds a wait that only a broken hook would leave hanging
ORDER = {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "volume": "0.01", "price": "1"}

Wrap = Callable[[Awaitable[Any]], Awaitable[Any]]


def shield(awaitable: Awaitable[Any]) -> Awaitable[Any]:
    return asyncio.shield(awaitable)


def wait_for(awaitable: Awaitable[Any]) -> Awaitable[Any]:
    return asyncio.wait_for(awaitable, 30)  # a new task on 3.11, the same task on 3.12+


async def in_task(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.ensure_future(awaitable)


def half_open(exchange: Any, clock: FakeClock, group: str) -> None:
    """Open ``group`` for one second and let the second pass: the next call is a probe."""
    exchange.circuit_breakers[group]._trip(1.0, CAUSE)
    clock.advance(30.0)


async def test_cancelled_in_the_retry_delay_gives_the_probe_back(
    sim: KrakenSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 1: a call cancelled in ccxt's delay before a retry gives back the probe it took."""
    config = exchange_config(sim, clock, failureThreshold=1, resetTimeout=1000)
    config["options"].update(maxRetriesOnFailure=1, maxRetriesOnFailureDelay=60_000)
    exchange = ccxt_breaker.kraken(config)
    breaker = exchange.circuit_breakers["public"]
    # The first attempt hangs until the test lets it time out (what ccxt raises when its
    # timeout expires), and ccxt's delay before the retry says when it has begun: no
    # real-time timer decides the order of events.
    attempt_out, give_up, in_delay = asyncio.Event(), asyncio.Event(), asyncio.Event()
    fetch, sleep = Exchange.fetch, Exchange.sleep

    async def hanging_fetch(self: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        if "/Time" not in url or attempt_out.is_set():
            return await fetch(self, url, *args, **kwargs)
        attempt_out.set()
        await give_up.wait()
        raise ccxt.RequestTimeout(f"kraken GET {url}")

    async def delay(self: Any, milliseconds: Any) -> Any:
        in_delay.set()
        return await sleep(self, milliseconds)  # a minute: the test cancels it first

    monkeypatch.setattr(Exchange, "fetch", hanging_fetch)
    monkeypatch.setattr(Exchange, "sleep", delay)
    call = asyncio.ensure_future(exchange.publicGetTime())
    await asyncio.wait_for(attempt_out.wait(), HANG)
    # While the attempt hangs, the group opens (another call fails) and its open time
    # passes: when the attempt times out, ccxt's retry takes the half-open probe.
    sim.faults.add(Fault.http(503), endpoint="Ticker", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTicker()
    clock.advance(5.0)
    give_up.set()
    await asyncio.wait_for(in_delay.wait(), HANG)
    assert (breaker.state, breaker.snapshot()["half_open_in_flight"]) == ("half_open", 1)
    with pytest.raises(TimeoutError):  # the bot's own wait_for expires in the delay
        await asyncio.wait_for(call, 0)
    assert (breaker.state, breaker.snapshot()["half_open_in_flight"]) == ("half_open", 0)
    await exchange.publicGetTime()  # admitted as the probe
    assert breaker.snapshot()["half_open_in_flight"] == 0
    await exchange.close()


@pytest.mark.parametrize("wrap", [shield, wait_for, in_task])
async def test_a_fetch_override_in_another_task_keeps_the_call_together(
    sim: KrakenSimulator, clock: FakeClock, wrap: Wrap
) -> None:
    """Case 2: a fetch() override via shield, wait_for or its own task keeps a call together."""
    # one AddOrder is sent, the caller gets its error (not "was not sent, so it is safe to retry"),
    # and the refusal of the retry counts once

    class Bot(ccxt_breaker.kraken):
        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            return await wrap(super().fetch(*args, **kwargs))

    config = exchange_config(sim, clock, failureThreshold=1)
    config["options"]["maxRetriesOnFailure"] = 2
    exchange = Bot(config)
    sim.faults.add(Fault.http(503), endpoint="AddOrder")
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder(ORDER)
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    snapshot = exchange.circuit_breakers["trading"].snapshot()
    assert (sim.count("AddOrder"), snapshot["calls"], snapshot["rejected"]) == (1, 1, 1)


async def test_stacked_fetch_overrides_keep_the_call_together(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Case 3: under stacked fetch() overrides, a refused retry still raises the sent error."""
    cls: type = ccxt_breaker.kraken
    for _ in range(4):

        class Level(cls):  # type: ignore[valid-type,misc]
            async def fetch(self, *args: Any, **kwargs: Any) -> Any:
                return await super().fetch(*args, **kwargs)

        cls = Level
    config = exchange_config(sim, clock, failureThreshold=1)
    config["options"]["maxRetriesOnFailure"] = 2
    exchange = cls(config)
    sim.faults.add(Fault.http(503), endpoint="AddOrder")
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.privatePostAddOrder(ORDER)
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    assert sim.count("AddOrder") == 1


@pytest.fixture(params=["guarded", "plain"])
def either(request: pytest.FixtureRequest, sim: KrakenSimulator, clock: FakeClock) -> Any:
    """``ccxt_breaker.kraken`` and plain ccxt, to show the first behaves as the second."""
    if request.param == "guarded":
        return make_exchange(sim, clock)
    return plain_exchange(sim)


async def test_a_patched_fetch2_stubs_the_implicit_methods(
    sim: KrakenSimulator, either: Any
) -> None:
    """Case 4: patching fetch2 with an AsyncMock stubs every implicit call, as in plain ccxt."""
    stub = mock.AsyncMock(return_value={"error": [], "result": {"stubbed": True}})
    with mock.patch.object(either, "fetch2", stub):
        result = await either.privatePostBalance()
    await either.close()
    assert (result, stub.await_count, sim.requests) == (
        {"error": [], "result": {"stubbed": True}},
        1,
        [],
    )


async def test_a_patched_request_is_an_async_mock(sim: KrakenSimulator, either: Any) -> None:
    """Case 6: patching request makes an AsyncMock, as in plain ccxt; unified methods use it."""
    with mock.patch.object(either, "request") as patched:
        assert isinstance(patched, mock.AsyncMock)
        patched.return_value = {"error": [], "result": {"unixtime": 1, "rfc1123": "x"}}
        assert await either.fetch_time() == 1000
    await either.close()
    assert sim.requests == []


async def test_a_copy_signs_with_its_own_key(sim: KrakenSimulator, clock: FakeClock) -> None:
    """Case 5: a copy.copy given another key signs with that key, not the original's."""
    original = make_exchange(sim, clock)
    twin = copy.copy(original)
    twin.apiKey = PLAIN_KEY
    await twin.privatePostBalance()
    await original.privatePostBalance()
    await original.close()
    expected = [hashlib.sha256(k.encode()).hexdigest()[:8] for k in (PLAIN_KEY, sim.api_key)]
    assert [r.key_id for r in sim.requests] == expected
    assert [r.status for r in sim.requests] == [200, 200]
    assert twin.circuit_breakers is original.circuit_breakers


@pytest.fixture
def installed() -> Iterator[None]:
    ccxt_breaker.install()
    yield
    ccxt_breaker.uninstall()


@pytest.mark.usefixtures("installed")
async def test_under_install_a_bots_overrides_run_around_the_hook(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Case 7: under install(), a bot's fetch2() and fetch() overrides see refused calls."""
    calls: list[str] = []
    attempts: list[str] = []

    class Bot(ccxt.async_support.kraken):
        async def fetch2(self, path: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().fetch2(path, *args, **kwargs)
            except ccxt.BaseError as exc:
                calls.append(type(exc).__name__)
                raise

        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().fetch(*args, **kwargs)
            except ccxt.BaseError as exc:
                attempts.append(type(exc).__name__)
                raise

    config = exchange_config(sim, clock, failureThreshold=1)
    # the next token is a minute away: the test hands out the ones it needs
    config.update(enableRateLimit=True, rateLimit=60_000)
    exchange = Bot(config)
    assert isinstance(exchange, BreakerMixin)
    sim.faults.add(Fault.http(503), endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError):  # refused before the queue
        await exchange.publicGetTime()
    exchange.circuit_breakers["public"].reset()
    exchange.throttler.config["tokens"] = 0  # one token: the first goes, the second waits
    first = asyncio.ensure_future(exchange.publicGetTime())
    queued = asyncio.ensure_future(exchange.publicGetTime())
    await until(lambda: sim.count("Time") == 2)  # the first went out
    assert len(exchange.throttler.queue) == 1  # the second waits in ccxt's queue
    exchange.circuit_breakers["public"].force_open()
    exchange.throttler.config.update(capacity=1e9, refillRate=1e9)  # let the queue out
    await first
    with pytest.raises(ccxt_breaker.CircuitOpenError):  # refused after the queue
        await queued
    await exchange.close()
    assert calls == ["ExchangeNotAvailable", "CircuitOpenError", "CircuitOpenError"]
    assert attempts == ["ExchangeNotAvailable", "CircuitOpenError"]


async def test_a_sent_calls_error_does_not_claim_it_was_not_sent(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Case 8: a sent order whose retry is refused raises plain ccxt's error, never "not sent"."""
    # with the __context__ plain ccxt gives it, never a CircuitOpenError saying "was not sent"
    config = exchange_config(sim, clock, failureThreshold=1)
    config["options"]["maxRetriesOnFailure"] = 2
    guarded = ccxt_breaker.kraken(config)
    plain = plain_exchange(sim)
    sim.faults.add(Fault.http(503), endpoint="AddOrder")
    errors = []
    for exchange in (guarded, plain):
        with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
            await exchange.privatePostAddOrder(ORDER)
        errors.append(caught.value)
        await exchange.close()
    mine, theirs = errors
    assert type(mine.__context__) is type(theirs.__context__)
    assert "safe to retry" not in "".join(traceback.format_exception(mine))


async def test_a_request_wrapped_at_start_up_still_refuses_before_the_queue(
    sim: KrakenSimulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 9: with request wrapped at start-up, calls are still refused before the queue."""
    queued: list[Any] = []
    throttle = Exchange.throttle

    async def spy(self: Any, cost: Any = None) -> Any:
        queued.append(cost)
        return await throttle(self, cost)

    monkeypatch.setattr(Exchange, "throttle", spy)
    config = exchange_config(sim, clock)
    config.update(enableRateLimit=True, rateLimit=400)
    exchange = ccxt_breaker.kraken(config)
    inner = exchange.request

    async def logged(*args: Any, **kwargs: Any) -> Any:
        return await inner(*args, **kwargs)

    exchange.request = logged
    exchange.circuit_breakers["public"].force_open()
    for _ in range(3):
        with pytest.raises(ccxt_breaker.CircuitOpenError):
            await exchange.publicGetTime()
    await exchange.close()
    assert (queued, sim.requests) == ([], [])


async def test_a_call_closed_from_another_context_at_shutdown(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Case 11: a call closed from another context at shutdown ends quietly, probe given back."""
    exchange = make_exchange(sim, clock)
    half_open(exchange, clock, "public")
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="OHLC")
    pending = exchange.publicGetOHLC({"pair": "XBTUSD"})
    task = asyncio.ensure_future(pending, loop=None)  # runs in a copy of this context
    await until(lambda: sim.count("OHLC") == 1)
    contextvars.Context().run(pending.close)  # raises if the hook's cleanup does
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gate.release()
    breaker = exchange.circuit_breakers["public"]
    assert (breaker.state, breaker.snapshot()["half_open_in_flight"]) == ("half_open", 0)
    await exchange.publicGetTime()  # the next call is admitted as the probe
    await exchange.close()


class PicklableBot(ccxt_breaker.kraken):  # type: ignore[misc]
    """A bot's own subclass, at module level so that pickle can name it."""


def _flagged(cls: Any) -> Any:
    """``cls`` built under install() with the flag and a non-default public threshold."""
    ccxt_breaker.install()
    try:
        return cls({"options": {"circuitBreaker": {"groups": {"public": {"failureThreshold": 2}}}}})
    finally:
        ccxt_breaker.uninstall()


def _repickled(exchange: Any) -> Any:
    return pickle.loads(pickle.dumps(exchange))


@pytest.mark.parametrize("clone", [copy.deepcopy, _repickled], ids=["deepcopy", "pickle"])
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: ccxt_breaker.kraken(), id="drop-in"),
        pytest.param(lambda: ccxt_breaker.sync.kraken(), id="sync drop-in"),
        pytest.param(lambda: ccxt_breaker.pro.kraken(), id="pro drop-in"),
        pytest.param(lambda: PicklableBot(), id="subclass"),
        pytest.param(lambda: _flagged(ccxt.async_support.kraken), id="install()"),
        pytest.param(lambda: _flagged(ccxt.kraken), id="install() sync"),
        pytest.param(lambda: _flagged(ccxt.pro.kraken), id="install() pro"),
    ],
)
def test_a_deep_copy_gets_breakers_of_its_own(build: Any, clone: Any) -> None:
    """Case 12: pickle and deepcopy work as on plain ccxt; the copy's breakers are new and
    closed, built from the same options, and the original's stay as they were."""
    original = build()
    original.circuit_breakers["public"].force_open()
    twin = clone(original)
    assert type(twin) is type(original)
    registry = twin.circuit_breakers
    assert registry is not original.circuit_breakers
    assert twin.circuitBreakers is registry  # ccxt's camelCase name is the same object
    assert list(registry) == list(original.circuit_breakers)
    for group, breaker in registry.items():
        assert breaker.config == original.circuit_breakers[group].config
        assert breaker.state == "closed"
    assert original.circuit_breakers["public"].state == "open"
    original.circuit_breakers["public"].reset()


async def test_a_deep_copy_guards_its_own_calls(sim: KrakenSimulator, clock: FakeClock) -> None:
    """Case 12: a deepcopy's breakers guard the copy's calls, apart from the original's."""
    original = make_exchange(sim, clock)
    twin = copy.deepcopy(original)
    twin.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await twin.fetch_time()
    assert await original.fetch_time() > 0
    await original.close()
    await twin.close()
    assert [r.endpoint for r in sim.requests] == ["Time"]
    assert original.circuit_breakers["public"].snapshot()["rejected"] == 0


def test_a_deep_copy_with_shared_state_joins_the_same_circuits() -> None:
    """Case 12: with sharedState, a deepcopy's new breakers share the original's circuits."""
    original = ccxt_breaker.sync.kraken(
        {"apiKey": "deep-copy-key", "options": {"circuitBreaker": {"sharedState": "process"}}}
    )
    twin = copy.deepcopy(original)
    assert twin.circuit_breakers is not original.circuit_breakers
    original.circuit_breakers["private"].force_open()
    assert twin.circuit_breakers["private"].state == "open"
    twin.circuit_breakers["private"].reset()
    assert original.circuit_breakers["private"].state == "closed"


def test_an_instance_install_made_unpickles_with_breakers_where_install_never_ran() -> None:
    """Case 12: a pickled install() instance loads by its ccxt class name in a fresh process
    that never called install(), and has its breakers there."""
    data = pickle.dumps(_flagged(ccxt.async_support.kraken))
    code = (
        "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); "
        "print(type(e).__module__, e.circuit_breakers['public'].config.failure_threshold)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().split() == ["ccxt.async_support.kraken", "2"]


def test_breakers_alone_refuse_to_pickle_and_say_what_to_copy() -> None:
    """Case 12: a registry alone raises TypeError naming the exchange as what to copy."""
    registry = ccxt_breaker.kraken().circuit_breakers
    for clone in (copy.deepcopy, _repickled):
        with pytest.raises(TypeError, match="pickle or deepcopy the exchange"):
            clone(registry)
