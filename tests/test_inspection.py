"""What users see and steer: snapshots, events, logs, manual control, guarding coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import pickle
from typing import Any

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker import CallRejected, CircuitBreaker, CircuitOpenError, StateChanged
from ccxt_breaker._config import BreakerConfig

from .support import Backend, FakeClock, Reply, make_exchange

DOWN = Reply(503, "<html>down</html>")
REQUIRED = {"group", "state", "failure_count", "success_count", "last_failure_time", "opened_at",
            "retry_after", "last_error", "calls", "failures", "rejected", "endpoints"}


async def test_every_group_exists_before_the_first_call(backend: Backend) -> None:
    """Inspection shows all five default groups, closed, before any call is made."""
    exchange = make_exchange(backend.url)
    snapshot = exchange.circuit_breakers.snapshot()
    await exchange.close()
    assert list(snapshot) == ["public", "private", "trading", "funding", "earn"]
    assert {s["state"] for s in snapshot.values()} == {"closed"}
    assert all(set(s) >= REQUIRED for s in snapshot.values())


async def test_snapshot_is_json_and_counts_per_endpoint(backend: Backend,
                                                        clock: FakeClock) -> None:
    """snapshot() is JSON-serializable and counts calls, failures and rejections per endpoint."""
    exchange = make_exchange(backend.url, clock, failureThreshold=2)
    backend.script("Ticker", DOWN, DOWN)
    await exchange.publicGetTime()
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTicker()
    await exchange.close()
    snap = json.loads(json.dumps(exchange.circuit_breakers.snapshot()))["public"]
    assert snap["endpoints"] == {"Time": {"calls": 1, "failures": 0, "rejected": 0},
                                 "Ticker": {"calls": 2, "failures": 2, "rejected": 1}}
    assert (snap["calls"], snap["failures"], snap["rejected"]) == (3, 2, 1)
    assert snap["state"] == "open"
    assert snap["opened_at"] == pytest.approx(clock.time())
    assert snap["last_failure_time"] == pytest.approx(clock.time())
    assert snap["retry_after"] == 30.0
    assert snap["last_error"]["type"] == "ExchangeNotAvailable"


async def test_state_compares_as_a_string(backend: Backend) -> None:
    """breaker.state is a str enum: 'closed', 'open' or 'half_open'."""
    exchange = make_exchange(backend.url)
    breaker = exchange.circuit_breakers["trading"]
    assert breaker.state == "closed"
    breaker.force_open()
    assert breaker.state == ccxt_breaker.CircuitState.OPEN == "open"
    await exchange.close()


async def test_force_open_until_reset(backend: Backend, clock: FakeClock) -> None:
    """force_open refuses every call, with retry_after None, until reset()."""
    exchange = make_exchange(backend.url, clock)
    breaker = exchange.circuit_breakers["public"]
    breaker.force_open()
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as caught:
        await exchange.publicGetTime()
    assert caught.value.retry_after is None
    assert "reset()" in str(caught.value)
    breaker.reset()
    await exchange.publicGetTime()
    await exchange.close()
    assert backend.hits["Time"] == 1


async def test_circuit_open_error_carries_what_a_bot_needs(backend: Backend,
                                                          clock: FakeClock) -> None:
    """CircuitOpenError is an ExchangeNotAvailable with group, endpoint, retry_after and the
    error that opened the circuit, and says that nothing was sent."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    backend.script("AddOrder", Reply.kraken_error("EService:Unavailable"))
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostAddOrder()
    clock.advance(5)
    with pytest.raises(ccxt.NetworkError) as caught:
        await exchange.privatePostAddOrder()
    await exchange.close()
    error = caught.value
    assert isinstance(error, CircuitOpenError)
    assert (error.group, error.endpoint, error.retry_after) == ("trading", "AddOrder", 25.0)
    assert error.last_error == {"type": "ExchangeNotAvailable",
                                "message": 'kraken {"error": ["EService:Unavailable"]}'}
    assert "not sent" in str(error)
    assert "safe to retry" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.group, str(copy)) == (error.group, str(error))


def test_circuit_open_error_built_by_hand_equals_the_breakers() -> None:
    """A CircuitOpenError constructed by a bot's own tests, by keyword or by position, has
    the same fields, args, text and pickle as the one a breaker raises."""
    breaker = CircuitBreaker("public", clock=FakeClock())
    breaker.force_open()
    with pytest.raises(CircuitOpenError) as caught:
        breaker.admit(breaker.counters("Time"), "Time")
    raised = caught.value
    by_keyword = CircuitOpenError(
        group="public", endpoint="Time", retry_after=None, last_error=raised.last_error
    )
    by_position = CircuitOpenError("public", "Time", None, raised.last_error, "kraken")
    for error in (by_keyword, by_position, pickle.loads(pickle.dumps(raised))):
        assert error.args == raised.args
        assert (error.group, error.endpoint, error.retry_after, error.exchange_id) == (
            "public", "Time", None, "kraken")
        assert error.last_error == {"type": "ForcedOpen", "message": "force_open() was called"}
        assert (str(error), repr(error)) == (str(raised), repr(raised))
    assert CircuitOpenError("earn").endpoint is None  # the fields after the group are optional


async def test_transitions_are_logged(backend: Backend, clock: FakeClock,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """Opening logs a WARNING naming group, cause and retry_after; other changes log INFO."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1, successThreshold=1)
    backend.script("Time", DOWN)
    with caplog.at_level(logging.INFO, "ccxt_breaker"):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTime()
        clock.advance(30)
        await exchange.publicGetTime()
    await exchange.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "ccxt_breaker"]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "INFO"]
    opened = lines[0][1]
    assert "'public'" in opened
    assert "ExchangeNotAvailable" in opened
    assert "retry_after=30.000s" in opened
    assert "half_open -> closed" in lines[2][1]


async def test_listeners_get_frozen_events(backend: Backend, clock: FakeClock) -> None:
    """Sync and async listeners receive frozen StateChanged and CallRejected events."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    seen: list[Any] = []
    async_seen: list[Any] = []

    async def async_listener(event: Any) -> None:
        async_seen.append(event)

    exchange.circuit_breakers.add_listener(seen.append)
    exchange.circuit_breakers.add_listener(async_listener)
    backend.script("Time", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(CircuitOpenError):
        await exchange.publicGetTime()
    await asyncio.sleep(0)
    await exchange.close()
    assert [type(e) for e in seen] == [StateChanged, CallRejected]
    assert async_seen == seen
    change, rejection = seen
    assert (change.group, change.old_state, change.new_state, change.reason) == (
        "public", "closed", "open", "consecutive failures")
    assert (rejection.endpoint, rejection.retry_after, rejection.shadow) == ("Time", 30.0, False)
    with pytest.raises(AttributeError):
        change.group = "x"


async def test_a_raising_listener_never_breaks_a_call(backend: Backend, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged, and the caller still gets ccxt's own outcome."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)

    def bad(event: Any) -> None:
        raise RuntimeError("listener bug")

    exchange.circuit_breakers.add_listener(bad)
    backend.script("Time", DOWN)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert any("listener" in r.getMessage() for r in caplog.records)


async def test_shadow_mode_records_but_never_rejects(backend: Backend, clock: FakeClock) -> None:
    """In shadow mode calls always go out, while states, events and would-be rejections are
    recorded as if the breaker were live."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1, shadowMode=True)
    events: list[Any] = []
    exchange.circuit_breakers.add_listener(events.append)
    backend.always("Time", DOWN)
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTime()
    await exchange.close()
    snap = exchange.circuit_breakers["public"].snapshot()
    assert backend.hits["Time"] == 3
    assert (snap["state"], snap["rejected"], snap["shadow_mode"]) == ("open", 2, True)
    assert [getattr(e, "shadow", None) for e in events] == [None, True, True]


def breaker(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("ws", BreakerConfig(**config), clock=clock)


async def test_call_guards_any_coroutine(clock: FakeClock) -> None:
    """breaker.call applies the same verdicts and refuses without calling once open."""
    guard = breaker(clock, failure_threshold=2)
    calls: list[str] = []

    async def connect(kind: str) -> str:
        calls.append(kind)
        if kind == "down":
            raise ConnectionResetError("reset by peer")
        if kind == "business":
            raise ccxt.InsufficientFunds("no money")
        return "ok"

    assert await guard.call(connect, "up") == "ok"
    with pytest.raises(ccxt.InsufficientFunds):
        await guard.call(connect, "business")
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            await guard.call(connect, kind="down")
    with pytest.raises(CircuitOpenError) as caught:
        await guard.call(connect, "up")
    assert (caught.value.group, caught.value.endpoint) == ("ws", "connect")
    assert calls == ["up", "business", "down", "down"]


async def test_guard_decorates_functions_and_methods(clock: FakeClock) -> None:
    """@breaker.guard keeps the function's name, signature and coroutine-ness, binds as a
    method in a class body, counts under the function's name with call()'s verdicts, and
    refuses without calling once open; a non-callable is refused at decoration."""
    guard = breaker(clock, failure_threshold=2)
    calls: list[str] = []

    class Feed:
        def __init__(self, name: str) -> None:
            self.name = name

        @guard.guard
        async def connect(self, kind: str) -> str:
            """Open the feed."""
            calls.append(f"{self.name}:{kind}")
            if kind == "down":
                raise ConnectionResetError("reset by peer")
            if kind == "business":
                raise ccxt.InsufficientFunds("no money")
            return self.name

    feed = Feed("book")
    assert (Feed.connect.__name__, Feed.connect.__doc__) == ("connect", "Open the feed.")
    assert inspect.iscoroutinefunction(Feed.connect)
    assert await feed.connect("up") == "book"
    with pytest.raises(ccxt.InsufficientFunds):
        await feed.connect("business")
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            await feed.connect(kind="down")
    with pytest.raises(CircuitOpenError) as caught:
        await feed.connect("up")
    assert (caught.value.group, caught.value.endpoint) == ("ws", "connect")
    assert calls == ["book:up", "book:business", "book:down", "book:down"]
    assert guard.snapshot()["endpoints"]["connect"] == {"calls": 4, "failures": 2, "rejected": 1}
    with pytest.raises(TypeError, match="async callable"):
        guard.guard("connect")  # type: ignore[arg-type]


async def test_guard_probes_at_half_open(clock: FakeClock) -> None:
    """A guard function at half-open takes a probe permit like call(): concurrent calls
    beyond halfOpenMaxCalls are refused without running, and the probes' successes close
    the circuit."""
    guard = breaker(clock, failure_threshold=1, half_open_max_calls=2, success_threshold=2)
    release = asyncio.Event()
    ran = 0

    @guard.guard
    async def probe() -> None:
        nonlocal ran
        ran += 1
        await release.wait()

    guard.trip(0.0, {"type": "T", "message": "m"})
    clock.advance(30)
    tasks = [asyncio.create_task(probe()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["CircuitOpenError"] * 3
    assert (ran, guard.state) == (2, "closed")


@pytest.mark.parametrize("form", ["call", "guard", "async with"])
async def test_success_ends_the_failure_run(clock: FakeClock, form: str) -> None:
    """Through breaker.call, a breaker.guard function and async with, a success between
    failures resets the consecutive count (and counts the call), so failures that never
    reach the threshold in a row never open the circuit."""
    guard = breaker(clock, failure_threshold=3)

    async def attempt(ok: bool) -> None:
        if not ok:
            raise ConnectionResetError("reset by peer")

    guarded_attempt = guard.guard(attempt)

    async def guarded(ok: bool) -> None:
        if form == "call":
            await guard.call(attempt, ok)
        elif form == "guard":
            await guarded_attempt(ok)
        else:
            async with guard:
                await attempt(ok)

    outcomes = [False, False, True, False, False, True, False, False]
    for ok in outcomes:
        with pytest.raises(ConnectionResetError) if not ok else contextlib.nullcontext():
            await guarded(ok)
    snapshot = guard.snapshot()
    assert (guard.state, snapshot["failure_count"]) == ("closed", 2)
    name = "async with" if form == "async with" else "attempt"
    assert snapshot["endpoints"][name]["calls"] == len(outcomes)


async def test_async_with_guards_a_block(clock: FakeClock) -> None:
    """async with breaker: counts the block's outcome and refuses to enter once open."""
    guard = breaker(clock, failure_threshold=1, success_threshold=1)
    with pytest.raises(TimeoutError):
        async with guard:
            raise TimeoutError
    assert guard.state == "open"
    with pytest.raises(CircuitOpenError):
        async with guard:
            pytest.fail("the block ran while open")
    clock.advance(30)
    async with guard:
        pass
    assert guard.state == "closed"


async def test_async_with_nests_and_interleaves(clock: FakeClock) -> None:
    """Nested and concurrent async-with blocks each settle their own permit."""
    guard = breaker(clock, failure_threshold=1, half_open_max_calls=2, success_threshold=2)
    guard.trip(0.0, {"type": "T", "message": "m"})
    clock.advance(30)

    async def block(fail: bool) -> None:
        async with guard:
            await asyncio.sleep(0.01)
            if fail:
                raise ValueError("not evidence")  # neutral: releases the probe

    await asyncio.gather(block(True), block(False), return_exceptions=True)
    assert guard.snapshot()["half_open_in_flight"] == 0
    assert guard.snapshot()["success_count"] == 1
