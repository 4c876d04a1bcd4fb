"""What users see and steer: snapshots, events, logs, manual control, guarding coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt
import pytest

import ccxt_breaker
import ccxt_breaker.pro
from ccxt_breaker import CallRejected, CircuitBreaker, CircuitOpenError, StateChanged
from ccxt_breaker._config import BreakerConfig
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from .support import make_exchange, until

GROUPS = ["public", "private", "trading", "funding", "earn"]
REQUIRED = {
    "group",
    "state",
    "failure_count",
    "success_count",
    "last_failure_time",
    "opened_at",
    "retry_after",
    "last_error",
    "calls",
    "failures",
    "rejected",
    "endpoints",
}

Build = Callable[..., Any]


@pytest.fixture
async def build(sim: KrakenSimulator, clock: FakeClock) -> AsyncIterator[Build]:
    """``build(**breaker)``: ccxt_breaker.kraken on the simulator and the fake clock, with
    these breaker options; every exchange it made is closed at teardown."""
    made: list[Any] = []

    def factory(**breaker: Any) -> Any:
        exchange = make_exchange(sim, clock, **breaker)
        made.append(exchange)
        return exchange

    yield factory
    await asyncio.gather(*(exchange.close() for exchange in made))


def down(sim: KrakenSimulator, endpoint: str, times: int | None = 1) -> None:
    """The next ``times`` requests to ``endpoint`` (every one, for None) answer HTTP 503."""
    sim.faults.add(Fault.http(503), endpoint=endpoint, times=times)


# --- inspection -----------------------------------------------------------------------


async def test_every_group_exists_before_the_first_call(build: Build) -> None:
    """Inspection shows all five default groups, closed, before any call is made."""
    snapshot = build().circuit_breakers.snapshot()
    assert list(snapshot) == GROUPS
    assert {s["state"] for s in snapshot.values()} == {"closed"}
    assert all(set(s) >= REQUIRED for s in snapshot.values())


@pytest.mark.parametrize(
    "make",
    [
        lambda: ccxt_breaker.kraken(),
        lambda: ccxt_breaker.pro.kraken(),
        lambda: ccxt_breaker.kraken({"options": {"circuitBreaker": False}}),
        lambda: ccxt_breaker.pro.kraken({"options": {"circuitBreaker": False}}),
    ],
    ids=["kraken", "pro", "kraken disabled", "pro disabled"],
)
def test_camel_case_twin_is_the_same_registry(make: Callable[[], Any]) -> None:
    """exchange.circuitBreakers is the very object exchange.circuit_breakers returns."""
    exchange = make()
    # ccxt's constructor copies every snake_case attribute to a camelCase twin
    assert exchange.circuitBreakers is exchange.circuit_breakers
    assert isinstance(exchange.circuitBreakers, ccxt_breaker.BreakerRegistry)
    assert exchange.circuit_breakers is exchange.circuit_breakers  # stable across reads


def test_reading_a_disabled_registry_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading circuit_breakers without breakers gives one shared empty registry per class."""
    # and builds no new one per read
    exchange = ccxt_breaker.kraken({"options": {"circuitBreaker": False}})
    first = exchange.circuit_breakers
    built: list[object] = []
    original = ccxt_breaker.BreakerRegistry.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ccxt_breaker.BreakerRegistry, "__init__", counting)
    reads = [exchange.circuit_breakers for _ in range(3)]
    other = ccxt_breaker.kraken({"options": {"circuitBreaker": False}}).circuit_breakers
    assert (built, all(r is first for r in reads), other is first) == ([], True, True)


def test_disabled_registry_is_empty_but_answers_group_of() -> None:
    """Disabled breakers leave an empty, all-closed registry that still answers group_of."""
    registry = ccxt_breaker.kraken({"options": {"circuitBreaker": False}}).circuit_breakers
    assert (len(registry), registry.snapshot(), registry.all_closed) == (0, {}, True)
    assert registry.group_of("AddOrder") == "trading"


async def test_all_closed_follows_the_states(
    build: Build, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """all_closed is True only while no circuit is open, forced open or half-open."""
    exchange = build(failureThreshold=1, successThreshold=1)
    breakers = exchange.circuit_breakers
    seen = [breakers.all_closed]
    breakers["earn"].force_open()
    seen.append(breakers.all_closed)
    breakers["earn"].reset()
    seen.append(breakers.all_closed)
    down(sim, "Time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    seen.append(breakers.all_closed)
    clock.advance(30)
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Time")
    probe = asyncio.create_task(exchange.publicGetTime())
    await until(lambda: sim.count("Time") == 2)
    seen.append((breakers["public"].state, breakers.all_closed))
    gate.release()
    await probe
    seen.append(breakers.all_closed)
    assert seen == [True, False, True, False, ("half_open", False), True]


async def test_snapshot_is_json_and_counts_per_endpoint(
    build: Build, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """snapshot() is JSON and counts attempts, their outcomes, refusals and transitions."""
    exchange = build(failureThreshold=2)
    down(sim, "Ticker", times=2)
    await exchange.publicGetTime()
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTicker()
    snap = json.loads(json.dumps(exchange.circuit_breakers.snapshot()))["public"]
    assert snap["endpoints"] == {
        "Time": {"calls": 1, "successes": 1, "failures": 0, "neutral": 0, "rejected": 0},
        "Ticker": {"calls": 2, "successes": 0, "failures": 2, "neutral": 0, "rejected": 1},
    }
    totals = ("calls", "successes", "failures", "neutral", "rejected")
    assert tuple(snap[key] for key in totals) == (3, 1, 2, 0, 1)
    assert snap["transitions"] == [{"from_state": "closed", "to_state": "open", "count": 1}]
    assert snap["state"] == "open"
    assert snap["opened_at"] == pytest.approx(clock.time())
    assert snap["last_failure_time"] == pytest.approx(clock.time())
    assert snap["retry_after"] == 30.0
    assert snap["last_error"]["type"] == "ExchangeNotAvailable"
    assert sim.count("Ticker") == 2


async def test_state_compares_as_a_string(build: Build) -> None:
    """breaker.state is a str enum: 'closed', 'open' or 'half_open'."""
    breaker = build().circuit_breakers["trading"]
    assert breaker.state == "closed"
    breaker.force_open()
    assert breaker.state == ccxt_breaker.CircuitState.OPEN == "open"


# --- steering and the error a bot sees --------------------------------------------------


async def test_force_open_until_reset(build: Build, sim: KrakenSimulator, clock: FakeClock) -> None:
    """force_open refuses every call, with retry_after None, until reset()."""
    exchange = build()
    breaker = exchange.circuit_breakers["public"]
    breaker.force_open()
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as caught:
        await exchange.publicGetTime()
    assert caught.value.retry_after is None
    assert "reset()" in str(caught.value)
    breaker.reset()
    await exchange.publicGetTime()
    assert sim.count("Time") == 1


async def test_circuit_open_error_carries_what_a_bot_needs(
    build: Build, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """CircuitOpenError names group, endpoint, retry_after, its cause, and that nothing was sent."""
    exchange = build(failureThreshold=1)
    sim.faults.add(Fault.kraken_error("EService:Unavailable"), endpoint="AddOrder", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostAddOrder()
    clock.advance(5)
    with pytest.raises(ccxt.NetworkError) as caught:
        await exchange.privatePostAddOrder()
    error = caught.value
    assert isinstance(error, CircuitOpenError)
    assert (error.group, error.endpoint, error.retry_after) == ("trading", "AddOrder", 25.0)
    assert error.last_error == {
        "type": "ExchangeNotAvailable",
        "message": 'kraken {"error": ["EService:Unavailable"]}',
    }
    assert "not sent" in str(error)
    assert "safe to retry" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.group, str(copy)) == (error.group, str(error))
    assert sim.count("AddOrder") == 1


def test_circuit_open_error_built_by_hand_equals_the_breakers() -> None:
    """A CircuitOpenError built by hand equals the breaker's in fields, args, text and pickle."""
    breaker = CircuitBreaker("public", clock=FakeClock())
    breaker.force_open()
    with pytest.raises(CircuitOpenError) as caught:
        breaker._admit(breaker._counters("Time"), "Time")
    raised = caught.value
    by_keyword = CircuitOpenError(
        group="public", endpoint="Time", retry_after=None, last_error=raised.last_error
    )
    by_position = CircuitOpenError("public", "Time", None, raised.last_error, "kraken")
    for error in (by_keyword, by_position, pickle.loads(pickle.dumps(raised))):
        assert error.args == raised.args
        assert (error.group, error.endpoint, error.retry_after, error.exchange_id) == (
            "public",
            "Time",
            None,
            "kraken",
        )
        assert error.last_error == {"type": "ForcedOpen", "message": "force_open() was called"}
        assert (str(error), repr(error)) == (str(raised), repr(raised))
    assert CircuitOpenError("earn").endpoint is None  # the fields after the group are optional


# --- logs and events ----------------------------------------------------------------------


async def test_transitions_are_logged(
    build: Build, sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening logs a WARNING naming group, cause and retry_after; other changes log INFO."""
    exchange = build(failureThreshold=1, successThreshold=1)
    down(sim, "Time")
    with caplog.at_level(logging.INFO, "ccxt_breaker"):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTime()
        clock.advance(30)
        await exchange.publicGetTime()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "ccxt_breaker"]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "INFO"]
    opened = lines[0][1]
    assert "'public'" in opened
    assert "ExchangeNotAvailable" in opened
    assert "retry_after=30.000s" in opened
    assert "open -> half_open (open time elapsed)" in lines[1][1]
    assert "half_open -> closed (probes succeeded)" in lines[2][1]


@pytest.mark.parametrize("shadow", [False, True])
async def test_refusals_are_logged_at_debug_only_on_one_line(
    build: Build, sim: KrakenSimulator, caplog: pytest.LogCaptureFixture, shadow: bool
) -> None:
    """A refused call logs one DEBUG line, without the response that opened the circuit;
    at INFO and above it logs nothing."""
    exchange = build(failureThreshold=1, shadowMode=shadow)
    sim.faults.add(Fault.http(503), endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    caplog.clear()
    with caplog.at_level(logging.INFO, "ccxt_breaker"), contextlib.suppress(CircuitOpenError):
        await exchange.publicGetTime()
    assert [r for r in caplog.records if r.name == "ccxt_breaker"] == []
    with caplog.at_level(logging.DEBUG, "ccxt_breaker"), contextlib.suppress(CircuitOpenError):
        await exchange.publicGetTime()
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    expected = "would refuse (shadow mode) Time (sent)" if shadow else "refused Time (not sent)"
    assert line == f"kraken circuit 'public' {expected}, retry_after=30.000s"


async def test_listeners_get_frozen_events(
    build: Build, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Sync and async listeners receive frozen StateChanged and CallRejected events."""
    exchange = build(failureThreshold=1)
    seen: list[Any] = []
    async_seen: list[Any] = []

    async def async_listener(event: Any) -> None:
        async_seen.append(event)

    exchange.circuit_breakers.add_listener(seen.append)
    exchange.circuit_breakers.add_listener(async_listener)
    down(sim, "Time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(CircuitOpenError):
        await exchange.publicGetTime()
    await until(lambda: len(async_seen) == 2)
    assert [type(e) for e in seen] == [StateChanged, CallRejected]
    assert async_seen == seen
    change, rejection = seen
    assert (change.group, change.old_state, change.new_state, change.reason) == (
        "public",
        "closed",
        "open",
        "consecutive failures",
    )
    assert (rejection.endpoint, rejection.retry_after, rejection.shadow) == ("Time", 30.0, False)
    with pytest.raises(AttributeError):
        change.group = "x"


async def test_a_raising_listener_never_breaks_a_call(
    build: Build, sim: KrakenSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged, and the caller still gets ccxt's own outcome."""
    exchange = build(failureThreshold=1)

    def bad(event: Any) -> None:
        raise RuntimeError("listener bug")

    exchange.circuit_breakers.add_listener(bad)
    down(sim, "Time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(CircuitOpenError):
        await exchange.publicGetTime()
    assert any("listener" in r.getMessage() for r in caplog.records)


async def test_shadow_mode_records_but_never_rejects(build: Build, sim: KrakenSimulator) -> None:
    """Shadow mode sends every call yet records states, events and would-be rejections."""
    exchange = build(failureThreshold=1, shadowMode=True)
    events: list[Any] = []
    exchange.circuit_breakers.add_listener(events.append)
    down(sim, "Time", times=None)
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.publicGetTime()
    snap = exchange.circuit_breakers["public"].snapshot()
    assert sim.count("Time") == 3
    assert (snap["state"], snap["rejected"], snap["shadow_mode"]) == ("open", 2, True)
    assert [getattr(e, "shadow", None) for e in events] == [None, True, True]


# --- guarding any coroutine ---------------------------------------------------------------


def breaker(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("ws", BreakerConfig(**config), clock=clock)


TRIPPED = {"type": "T", "message": "m"}


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
    """@breaker.guard wraps functions and methods with call()'s name, verdicts and refusals."""
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
    connect = {"calls": 4, "successes": 2, "failures": 2, "neutral": 0, "rejected": 1}
    assert guard.snapshot()["endpoints"]["connect"] == connect
    with pytest.raises(TypeError, match="async callable"):
        guard.guard("connect")  # type: ignore[arg-type]


async def test_guard_probes_at_half_open(clock: FakeClock) -> None:
    """At half-open a guarded function takes a probe permit; calls past the limit never run."""
    guard = breaker(clock, failure_threshold=1, half_open_max_calls=2, success_threshold=2)
    release = asyncio.Event()
    ran = 0

    @guard.guard
    async def probe() -> None:
        nonlocal ran
        ran += 1
        await release.wait()

    guard._trip(0.0, TRIPPED)
    clock.advance(30)
    tasks = [asyncio.create_task(probe()) for _ in range(5)]
    await until(lambda: sum(t.done() for t in tasks) == 3)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["CircuitOpenError"] * 3
    assert (ran, guard.state) == (2, "closed")


@pytest.mark.parametrize("form", ["call", "guard", "async with"])
async def test_success_ends_the_failure_run(clock: FakeClock, form: str) -> None:
    """Through call, guard and async with, a success ends the run of consecutive failures."""
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


async def test_async_with_nests(clock: FakeClock) -> None:
    """Nested async-with blocks settle their own permits: a caught inner error is inner's only."""
    outer = breaker(clock, failure_threshold=1)
    inner = CircuitBreaker("inner", BreakerConfig(failure_threshold=1), clock=clock)
    async with outer:
        with contextlib.suppress(ConnectionResetError):
            async with inner:
                raise ConnectionResetError
    assert (outer.state, inner.state) == ("closed", "open")
    assert (outer.snapshot()["failures"], inner.snapshot()["failures"]) == (0, 1)


async def test_async_with_interleaves(clock: FakeClock) -> None:
    """Concurrent async-with blocks, both inside at once, each settle their own permit."""
    guard = breaker(clock, failure_threshold=1, half_open_max_calls=2, success_threshold=2)
    guard._trip(0.0, TRIPPED)
    clock.advance(30)
    both_inside = asyncio.Barrier(2)

    async def block(fail: bool) -> None:
        async with guard:
            await both_inside.wait()
            if fail:
                raise ValueError("not evidence")  # neutral: releases the probe

    results = await asyncio.gather(block(True), block(False), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ValueError", "NoneType"]
    assert guard.snapshot()["half_open_in_flight"] == 0
    assert guard.snapshot()["success_count"] == 1


async def fail() -> None:
    raise ccxt.ExchangeNotAvailable("kraken 503")


async def succeed() -> None:
    return None


async def outcome(b: CircuitBreaker, fn: Callable[[], Any]) -> None:
    with contextlib.suppress(ccxt.BaseError):
        await b.call(fn)


async def then_half_open(b: CircuitBreaker, clock: FakeClock) -> None:
    await outcome(b, fail)
    clock.advance(60.0)


async def reach_created(b: CircuitBreaker, clock: FakeClock) -> None:
    return None


async def reach_consecutive_failures(b: CircuitBreaker, clock: FakeClock) -> None:
    await outcome(b, fail)


async def reach_failure_rate(b: CircuitBreaker, clock: FakeClock) -> None:
    for fn in (succeed, fail):
        await outcome(b, fn)


async def reach_slow_call_rate(b: CircuitBreaker, clock: FakeClock) -> None:
    async def slow() -> None:
        clock.advance(2.0)

    for fn in (succeed, slow):
        await outcome(b, fn)


async def reach_open_time_elapsed(b: CircuitBreaker, clock: FakeClock) -> None:
    await then_half_open(b, clock)
    gate = asyncio.Event()
    probe = asyncio.ensure_future(b.call(gate.wait))  # poll() half-opens on this call
    await asyncio.sleep(0)
    gate.set()
    await probe


async def reach_probes_succeeded(b: CircuitBreaker, clock: FakeClock) -> None:
    await then_half_open(b, clock)
    await outcome(b, succeed)


async def reach_probe_failed(b: CircuitBreaker, clock: FakeClock) -> None:
    await then_half_open(b, clock)
    await outcome(b, fail)


async def reach_slow_probe(b: CircuitBreaker, clock: FakeClock) -> None:
    async def slow() -> None:
        clock.advance(2.0)

    await then_half_open(b, clock)
    await outcome(b, slow)


async def reach_limit(b: CircuitBreaker, clock: FakeClock) -> None:
    b._trip(90.0, {"type": "DDoSProtection", "message": "EAPI:Rate limit exceeded"})


async def reach_forced_open(b: CircuitBreaker, clock: FakeClock) -> None:
    b.force_open()


async def reach_reset(b: CircuitBreaker, clock: FakeClock) -> None:
    await outcome(b, fail)
    b.reset()


REASONS = [
    # (how, config, the last transition's (old, new, reason), or None for no transition)
    (reach_created, {}, None, "created"),
    (reach_consecutive_failures, {}, ("closed", "open"), "consecutive failures"),
    (
        reach_failure_rate,
        {"failure_threshold": 5, "failure_rate_threshold": 50.0, "minimum_number_of_calls": 2},
        ("closed", "open"),
        "failure rate",
    ),
    (
        reach_slow_call_rate,
        {"slow_call_duration": 1.0, "slow_call_rate_threshold": 50.0, "minimum_number_of_calls": 2},
        ("closed", "open"),
        "slow-call rate",
    ),
    (reach_open_time_elapsed, {"success_threshold": 2}, ("open", "half_open"), "open time elapsed"),
    (reach_probes_succeeded, {}, ("half_open", "closed"), "probes succeeded"),
    (reach_probe_failed, {}, ("half_open", "open"), "probe failed"),
    (reach_slow_probe, {"slow_call_duration": 1.0}, ("half_open", "open"), "slow probe"),
    (reach_limit, {}, ("closed", "open"), "limit named by the exchange"),
    (reach_forced_open, {}, ("closed", "open"), "forced open"),
    (reach_reset, {}, ("open", "closed"), "reset"),
]


@pytest.mark.parametrize(
    ("how", "config", "moved", "reason"), REASONS, ids=[r[-1] for r in REASONS]
)
async def test_every_reason_reaches_events_and_snapshots(
    clock: FakeClock,
    how: Callable[[CircuitBreaker, FakeClock], Any],
    config: dict[str, Any],
    moved: tuple[str, str] | None,
    reason: str,
) -> None:
    """Each of the eleven reasons a breaker gives reaches its StateChanged event and snapshot()."""
    # in the words the README and the logs use
    base = {"failure_threshold": 1, "success_threshold": 1, "reset_timeout_jitter": 0.0}
    b = CircuitBreaker("g", BreakerConfig(**{**base, **config}), clock=clock)
    changes: list[StateChanged] = []
    b.add_listener(lambda e: changes.append(e) if isinstance(e, StateChanged) else None)
    await how(b, clock)
    last = None if not changes else (changes[-1].old_state, changes[-1].new_state)
    reasons = {changes[-1].reason if changes else "created", b.snapshot()["reason"]}
    assert (last, reasons) == (moved, {reason})


# --- error summaries ------------------------------------------------------------------------

NGINX_503 = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    "<hr><center>cloudflare</center>\r\n</body>\r\n</html>"
)
STATUS = "kraken GET https://api.kraken.com/0/private/Balance 503 Service Unavailable"


@pytest.mark.parametrize(
    ("message", "summary"),
    [
        pytest.param(
            f"{STATUS} {NGINX_503}",
            f"{STATUS}: 503 Service Temporarily Unavailable (HTML page)",
            id="nginx-page-as-its-title",
        ),
        pytest.param(
            f"{STATUS} <html><body><h1>503</h1></body></html>",
            f"{STATUS} (HTML page)",
            id="no-title-keeps-the-status",
        ),
        pytest.param(
            f"{STATUS} <html><title>  </title></html>",
            f"{STATUS} (HTML page)",
            id="blank-title-keeps-the-status",
        ),
        pytest.param(
            "<!DOCTYPE html>\n<HTML><head><TITLE lang='en'> api.kraken.com |\n"
            " 520: Web server is returning an unknown error </TITLE></head></HTML>",
            "api.kraken.com | 520: Web server is returning an unknown error (HTML page)",
            id="page-alone-any-case",
        ),
        pytest.param(
            "kraken 502 <body>Tom &amp; Jerry&#39;s</body>",
            "kraken 502 (HTML page)",
            id="body-alone-is-a-page",
        ),
        pytest.param(
            "<head><title>Tom &amp; Jerry&#39;s&nbsp;page</title></head>",
            "Tom & Jerry's page (HTML page)",
            id="title-unescaped",
        ),
        pytest.param("<html></html>", "(HTML page)", id="bare-markup"),
        pytest.param(
            'kraken {\n  "error": [\n    "EService:Unavailable"\n  ]\n}',
            'kraken { "error": [ "EService:Unavailable" ] }',
            id="json-on-one-line",
        ),
        pytest.param("kraken 520 ", "kraken 520", id="trailing-space"),
        pytest.param(
            "price <headline> and <bodyguard> <title>x</title>",
            "price <headline> and <bodyguard> <title>x</title>",
            id="no-page-no-summary",
        ),
    ],
)
def test_error_summary_is_one_line_and_an_html_page_its_title(message: str, summary: str) -> None:
    """An error summary collapses whitespace and tells an HTML page by its title."""
    # or, when the page has none, by the status before it
    assert CircuitBreaker("g")._summary("ExchangeNotAvailable", message) == {
        "type": "ExchangeNotAvailable",
        "message": summary,
    }


def redact_secret(message: str) -> str:
    return message.replace("KEY-registry-1234", "***")


@pytest.mark.parametrize(
    ("message", "secrets", "summary"),
    [
        pytest.param(
            f"{STATUS} KEY-registry-1234 <html><title>KEY-registry-1234</title></html>",
            (),
            f"{STATUS} ***: *** (HTML page)",
            id="exchange-credentials-in-status-and-title",
        ),
        pytest.param(
            "<html><title>sign: AbC/sign+1==</title></html>",
            ("AbC/sign+1==",),
            "sign: *** (HTML page)",
            id="signing-header-in-title",
        ),
        pytest.param(
            "<html><title>&#75;EY-registry-1234</title></html>",
            (),
            "*** (HTML page)",
            id="credential-made-by-unescaping",
        ),
        pytest.param(
            "pass: correct\r\n  horse, yes",
            ("correct horse",),
            "pass: ***, yes",
            id="made-by-collapsing",
        ),
        pytest.param(
            "pass: battery   staple, yes",
            ("battery   staple",),
            "pass: ***, yes",
            id="holding-a-run-of-spaces",
        ),
        pytest.param(
            f"{STATUS} <html><title>{'x' * 500} KEY-registry-1234</title></html>",
            (),
            f"{STATUS}: {'x' * (297 - len(STATUS) - 2)}...",
            id="cut-to-300",
        ),
    ],
)
def test_error_summary_is_scrubbed_and_cut(
    message: str, secrets: tuple[str, ...], summary: str
) -> None:
    """A summary holds no exchange credential or signing header, and is cut to 300 characters."""
    # neither before nor after it is made one line
    b = CircuitBreaker("g", scrub=redact_secret)
    made = b._summary("ExchangeNotAvailable", message, secrets)["message"]
    assert (made, len(made) <= 300) == (summary, True)


async def test_html_error_page_is_summarised_but_the_callers_error_is_ccxts(
    build: Build, sim: KrakenSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A Cloudflare 503 page is summarised as its status and title; the caller gets ccxt's error."""
    # the one-line summary reaches last_error, opened_by, the log line and the rejection;
    # the caller's exception is ccxt's own, page and all
    exchange = build(failureThreshold=1)
    sim.faults.add(Fault.http(503), endpoint="Balance", times=1)
    with (
        caplog.at_level(logging.WARNING, "ccxt_breaker"),
        pytest.raises(ccxt.ExchangeNotAvailable) as caught,
    ):
        await exchange.privatePostBalance()
    raw = str(caught.value)
    assert raw.endswith(f" 503 Service Unavailable {NGINX_503}")  # ccxt's own, untouched
    status = raw[: raw.index(" <html>")]
    summary = f"{status}: 503 Service Temporarily Unavailable (HTML page)"
    snapshot = exchange.circuit_breakers["private"].snapshot()
    assert (
        snapshot["last_error"]
        == snapshot["opened_by"]
        == {
            "type": "ExchangeNotAvailable",
            "message": summary,
        }
    )
    [line] = [r.getMessage() for r in caplog.records if r.name == "ccxt_breaker"]
    assert f"cause=ExchangeNotAvailable: {summary} retry_after=" in line
    assert "\n" not in line
    with pytest.raises(CircuitOpenError) as refused:
        await exchange.privatePostBalance()
    assert refused.value.last_error == {"type": "ExchangeNotAvailable", "message": summary}
    assert "503" not in str(refused.value)  # the message carries no response


async def test_guarded_html_error_is_summarised_but_raised_as_is(clock: FakeClock) -> None:
    """A guarded coroutine's HTML error is summarised in last_error but raised as is."""
    # the caller gets the very exception, its text untouched
    b = CircuitBreaker("g", BreakerConfig(failure_threshold=1), clock=clock)
    error = ccxt.ExchangeNotAvailable(f"{STATUS} {NGINX_503}")

    async def down() -> None:
        raise error

    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await b.call(down)
    assert (caught.value, str(caught.value)) == (error, f"{STATUS} {NGINX_503}")
    assert b.last_error == {
        "type": "ExchangeNotAvailable",
        "message": f"{STATUS}: 503 Service Temporarily Unavailable (HTML page)",
    }


# --- reset, retry_after, name, repr ---------------------------------------------------------


async def open_by_failure(b: CircuitBreaker) -> None:
    await outcome(b, fail)


async def open_by_trip(b: CircuitBreaker) -> None:
    b._trip(90.0, {"type": "DDoSProtection", "message": "EAPI:Rate limit exceeded"})


async def open_by_force(b: CircuitBreaker) -> None:
    await outcome(b, fail)
    b.force_open()


@pytest.mark.parametrize("how", [open_by_failure, open_by_trip, open_by_force])
async def test_reset_forgets_last_error_and_opened_by(
    clock: FakeClock, how: Callable[[CircuitBreaker], Any]
) -> None:
    """After reset() the snapshot shows no last_error and no opened_by."""
    # and the next open names only its own cause
    b = CircuitBreaker("g", BreakerConfig(failure_threshold=1), clock=clock)
    await how(b)
    assert b.snapshot()["opened_by"] is not None
    b.reset()
    snapshot = b.snapshot()
    assert (snapshot["last_error"], snapshot["opened_by"], b.last_error) == (None, None, None)
    b._trip(10.0, TRIPPED)
    assert (b.snapshot()["opened_by"], b.snapshot()["last_error"]) == (TRIPPED, None)


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.000162439, 30.0),  # 29.999837561 s
        (0.0006, 30.0),  # 29.9994 s: up, so that waiting it is always enough
        (10.5, 19.5),
        (1.2345678, 28.766),
        (29.9999999, 0.001),  # a tenth of a microsecond: still refused, so not 0
    ],
)
async def test_retry_after_is_rounded_up_to_the_millisecond(
    clock: FakeClock, elapsed: float, expected: float
) -> None:
    """The wait is given in whole milliseconds, rounded up, wherever a breaker reports it."""
    # breaker.retry_after, the snapshot, CallRejected and CircuitOpenError
    b = CircuitBreaker("g", BreakerConfig(failure_threshold=1), clock=clock)
    events: list[Any] = []
    b.add_listener(events.append)
    await outcome(b, fail)
    clock.advance(elapsed)
    with pytest.raises(CircuitOpenError) as caught:
        await b.call(succeed)
    rejected = events[-1]
    assert isinstance(rejected, CallRejected)
    seen = (
        b.retry_after,
        b.snapshot()["retry_after"],
        rejected.retry_after,
        caught.value.retry_after,
        caught.value.args[2],
    )
    assert seen == (expected,) * 5


@pytest.mark.parametrize(
    ("open_for", "expected", "logged"),
    [
        (12.3454321, 12.346, "retry_after=12.346s"),
        (30.0000000001, 30.0, "retry_after=30.000s"),
        (None, None, "retry_after=none (forced)"),
    ],
)
async def test_state_changed_and_log_round_retry_after(
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    open_for: float | None,
    expected: float | None,
    logged: str,
) -> None:
    """StateChanged and the log line give retry_after rounded up to the millisecond."""
    # and None (logged as none) while forced open
    b = CircuitBreaker("g", BreakerConfig(reset_timeout=1.0), clock=clock)
    events: list[Any] = []
    b.add_listener(events.append)
    with caplog.at_level(logging.WARNING, "ccxt_breaker"):
        if open_for is None:
            b.force_open()
        else:
            b._trip(open_for, TRIPPED)
    [change] = events
    assert change.retry_after == expected
    assert caplog.records[-1].getMessage().endswith(logged)


@pytest.mark.parametrize(
    ("name", "label", "snapshot_name"),
    [(None, "kraken", None), ("market-maker", "kraken[market-maker]", "market-maker")],
)
async def test_name_labels_logs_snapshots_events_and_rejections(
    build: Build,
    sim: KrakenSimulator,
    caplog: pytest.LogCaptureFixture,
    name: str | None,
    label: str,
    snapshot_name: str | None,
) -> None:
    """The config's name labels log lines, snapshots, both events and CircuitOpenError's message."""
    # log lines read kraken[name]; without a name, all read as before
    exchange = build(failureThreshold=1, **({} if name is None else {"name": name}))
    events: list[Any] = []
    exchange.circuit_breakers.add_listener(events.append)
    down(sim, "Balance")
    with caplog.at_level(logging.INFO, "ccxt_breaker"), pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostBalance()
    with pytest.raises(CircuitOpenError) as caught:
        await exchange.privatePostBalance()
    [line] = [r.getMessage() for r in caplog.records if r.name == "ccxt_breaker"]
    assert line.startswith(f"{label} circuit 'private' closed -> open (consecutive failures)")
    assert {s["name"] for s in exchange.circuit_breakers.snapshot().values()} == {snapshot_name}
    assert [(type(e), e.name) for e in events] == [(StateChanged, name), (CallRejected, name)]
    error = caught.value
    assert str(error).startswith(f"{label} circuit 'private' is open: Balance was not sent")
    assert (error.name, len(error.args)) == (name, 5 if name is None else 6)
    assert pickle.loads(pickle.dumps(error)).name == name


def test_name_is_scrubbed_where_a_credential_set_later_could_show(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A credential set after construction that the name holds is scrubbed wherever it shows."""
    # in the log line, the StateChanged event and the snapshot
    b = CircuitBreaker("g", clock=clock, scrub=redact_secret, name="mm KEY-registry-1234")
    events: list[Any] = []
    b.add_listener(events.append)
    with caplog.at_level(logging.WARNING, "ccxt_breaker"):
        b.force_open()
    assert caplog.records[-1].getMessage().startswith("kraken[mm ***] circuit 'g'")
    assert (events[0].name, b.snapshot()["name"], b.name) == (
        "mm ***",
        "mm ***",
        "mm KEY-registry-1234",
    )


def test_registry_repr_lists_states_or_nothing() -> None:
    """The registry's repr lists each group's state, and is <BreakerRegistry> when off."""
    on = ccxt_breaker.kraken().circuit_breakers
    on["trading"].force_open()
    off = ccxt_breaker.kraken({"options": {"circuitBreaker": False}}).circuit_breakers
    assert (repr(on), repr(off)) == (
        "<BreakerRegistry public=closed, private=closed, trading=open, funding=closed, "
        "earn=closed>",
        "<BreakerRegistry>",
    )


async def test_history_keeps_the_last_history_size_transitions(clock: FakeClock) -> None:
    """A breaker keeps its last historySize transitions, oldest first, JSON-ready."""
    b = breaker(clock, failure_threshold=1, history_size=3)
    start = clock.time()
    for _ in range(5):  # ten transitions: open, then reset a second later
        b.force_open()
        clock.advance(1.0)
        b.reset()
    history = json.loads(json.dumps(b.history()))
    assert [(e["old_state"], e["new_state"], e["reason"], e["time"]) for e in history] == [
        ("open", "closed", "reset", start + 4.0),
        ("closed", "open", "forced open", start + 4.0),
        ("open", "closed", "reset", start + 5.0),
    ]
    assert history[1]["cause"] == {"type": "ForcedOpen", "message": "force_open() was called"}


def test_history_size_zero_keeps_nothing(clock: FakeClock) -> None:
    """historySize 0 keeps no transitions at all."""
    b = breaker(clock, history_size=0)
    b.force_open()
    assert b.history() == []


def test_registry_history_merges_the_groups_by_time(clock: FakeClock) -> None:
    """circuit_breakers.history() merges every group's transitions, oldest first."""
    breakers = ccxt_breaker.kraken(
        {"options": {"circuitBreaker": {"clock": clock}}}
    ).circuit_breakers
    breakers["private"].force_open()
    clock.advance(1.0)
    breakers["public"].force_open()
    clock.advance(1.0)
    breakers["private"].reset()
    merged = [(e["group"], e["new_state"]) for e in breakers.history()]
    assert merged == [("private", "open"), ("public", "open"), ("private", "closed")]
