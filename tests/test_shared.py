"""sharedState: instances on one API key share one set of circuits, in one process
(``"process"``) and on a real redis-server.

The instances here live in one process and share the test's fake clock; the tests with
real OS processes are in test_shared_processes.py.  Redis delivers news by pub/sub, so
an instance sees another's transition a moment later: ``until()`` waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker import _shared
from ccxt_breaker._config import BreakerConfig, SharedState
from ccxt_breaker._shared import PREFIX, Record, SharedCircuit, key_id, open_store
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET, FakeClock, Fault, KrakenSimulator

from .redis_support import RedisServer
from .support import make_exchange, until

Make = Callable[..., Any]


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make(
    sim: KrakenSimulator, clock: FakeClock, namespace: str
) -> AsyncIterator[Callable[..., Any]]:
    """``make(url, **breaker)``: an exchange on ``sim`` sharing state at ``url`` in this
    test's namespace; closed at teardown."""
    made: list[Any] = []

    def factory(url: str, namespace: str = namespace, **breaker: Any) -> Any:
        shared = {"url": url, "namespace": namespace}
        exchange = make_exchange(sim, clock, sharedState=shared, **breaker)
        made.append(exchange)
        return exchange

    yield factory
    await asyncio.gather(*(exchange.close() for exchange in made))


async def fail(exchange: Any, times: int = 1, method: str = "fetch_balance") -> None:
    """``times`` calls that fail (the test scripted the fault), each one awaited."""
    for _ in range(times):
        with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[1]):  # ExchangeNotAvailable
            await getattr(exchange, method)()


async def settle(*exchanges: Any) -> None:
    """Let every store deliver what it has (Redis: one round trip through pub/sub)."""
    for exchange in exchanges:
        for breaker in exchange.circuit_breakers.values():
            if breaker._shared is not None:
                await breaker._shared.flush()
    await asyncio.sleep(0.05)


async def state_everywhere(group: str, state: str, *exchanges: Any) -> None:
    await until(lambda: all(e.circuit_breakers[group].state == state for e in exchanges), 2.0)


# --- semantics 1: an open anywhere is refused everywhere, unsent ----------------------


async def open_by_threshold(sim: KrakenSimulator, origin: Any) -> str:
    sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    await fail(origin, 3)
    sim.clear_faults()
    return "private"


async def open_by_lockout(sim: KrakenSimulator, origin: Any) -> str:
    sim.faults.add(Fault.kraken_error("EGeneral:Temporary lockout"), endpoint="BalanceEx", times=1)
    with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[2]):  # NetworkError
        await origin.fetch_balance()
    return "trading"  # a lockout bans the key: orders too


async def open_by_named_limit(sim: KrakenSimulator, origin: Any) -> str:
    sim.faults.add(Fault.kraken_error("EAPI:Rate limit exceeded"), endpoint="BalanceEx", times=1)
    with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[2]):
        await origin.fetch_balance()
    return "private"


async def open_by_rate(sim: KrakenSimulator, origin: Any) -> str:
    sim.faults.add(Fault.http(503), endpoint="BalanceEx", times=2)
    await fail(origin, 2)
    return "private"


async def open_by_force(sim: KrakenSimulator, origin: Any) -> str:
    origin.circuit_breakers["private"].force_open()
    return "private"


@pytest.mark.parametrize(
    "cause",
    [open_by_threshold, open_by_lockout, open_by_named_limit, open_by_rate, open_by_force],
    ids=["threshold", "lockout", "named-limit", "rate", "force_open"],
)
async def test_an_open_anywhere_is_refused_everywhere_unsent(
    make: Make, sim: KrakenSimulator, store_url: str, cause: Any
) -> None:
    """Whatever opened it, a circuit opened in one instance refuses in every sharing
    instance, which sends nothing first."""
    rate = {"failureRateThreshold": 50, "minimumNumberOfCalls": 2, "slidingWindowSize": 2}
    options = {"failureThreshold": 3, **(rate if cause is open_by_rate else {})}
    origin, other = make(store_url, **options), make(store_url, **options)
    await origin.load_markets()
    await other.load_markets()
    group = await cause(sim, origin)
    await settle(origin)
    await state_everywhere(group, "open", origin, other)
    sent = len(sim.requests)
    call = other.create_order if group == "trading" else other.fetch_balance
    args = ("BTC/USD", "limit", "buy", 0.001, 20_000) if group == "trading" else ()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as refused:
        await call(*args)
    assert len(sim.requests) == sent
    assert refused.value.group == group
    snapshot = other.circuit_breakers[group].snapshot()
    assert snapshot["shared_state"] == "connected"
    assert snapshot["opened_by"] == origin.circuit_breakers[group].snapshot()["opened_by"]


async def test_reset_is_shared(make: Make, store_url: str) -> None:
    """reset() in one instance closes the circuit in every sharing instance."""
    a, b = make(store_url), make(store_url)
    a.circuit_breakers["private"].force_open()
    await settle(a)
    await state_everywhere("private", "open", a, b)
    b.circuit_breakers["private"].reset()
    await settle(b)
    await state_everywhere("private", "closed", a, b)


async def test_a_kill_switch_in_another_thread_is_shared(make: Make, store_url: str) -> None:
    """force_open() and reset() called from a thread without an event loop (a kill switch)
    reach every sharing instance, as from the loop."""
    a, b = make(store_url), make(store_url)
    await a.load_markets()  # the stores listen from the first call on
    await b.load_markets()
    breaker = a.circuit_breakers["trading"]
    for steer, state in ((breaker.force_open, "open"), (breaker.reset, "closed")):
        await asyncio.to_thread(steer)
        await state_everywhere("trading", state, a, b)


# --- semantics 2: consecutive failures are counted across instances -------------------


async def test_failures_spread_over_instances_open_the_circuit_everywhere(
    make: Make, sim: KrakenSimulator, store_url: str
) -> None:
    """With failureThreshold 5, failures 2 + 2 in two instances open nothing; the fifth,
    in a third, opens the circuit in all three."""
    bots = [make(store_url, failureThreshold=5) for _ in range(3)]
    for bot in bots:
        await bot.load_markets()
    sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    await fail(bots[0], 2)
    await fail(bots[1], 2)
    await settle(*bots)
    assert [b.circuit_breakers["private"].state for b in bots] == ["closed"] * 3
    await fail(bots[2], 1)
    await settle(*bots)
    await state_everywhere("private", "open", *bots)


async def test_a_success_anywhere_ends_the_shared_run(
    make: Make, sim: KrakenSimulator, store_url: str
) -> None:
    """A success in any instance ends the shared run of failures: 4, a success, 4 stay
    closed."""
    a, b = make(store_url, failureThreshold=5), make(store_url, failureThreshold=5)
    await a.load_markets()
    await b.load_markets()
    rule = sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    await fail(a, 4)
    await settle(a, b)
    await until(lambda: b.circuit_breakers["private"].snapshot()["failure_count"] == 4)
    sim.faults.remove(rule)
    await b.fetch_balance()
    await settle(a, b)
    await until(lambda: a.circuit_breakers["private"].snapshot()["failure_count"] == 0)
    sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    await fail(a, 4)
    await settle(a, b)
    assert {a.circuit_breakers["private"].state, b.circuit_breakers["private"].state} == {"closed"}


# --- scope: keyed groups per key, public per namespace --------------------------------


async def test_public_is_shared_by_the_namespace_keyed_groups_by_the_key(
    make: Make, sim: KrakenSimulator, clock: FakeClock, namespace: str, store_url: str
) -> None:
    """In one namespace, instances on another key share `public` (limits per IP), not
    the keyed groups."""
    a = make(store_url)
    other_key = ccxt_breaker.kraken(
        {
            **sim.ccxt_config(),
            "apiKey": "another-key",
            "options": {
                "circuitBreaker": {
                    "clock": clock,
                    "sharedState": {"url": store_url, "namespace": namespace},
                }
            },
        }
    )
    try:
        a.circuit_breakers["public"].force_open()
        a.circuit_breakers["private"].force_open()
        await settle(a)
        await state_everywhere("public", "open", a, other_key)
        await asyncio.sleep(0.05)
        assert other_key.circuit_breakers["private"].state == "closed"
    finally:
        await other_key.close()


async def test_the_default_namespace_is_one_key_on_one_exchange(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Without a namespace, instances on one key share everything and other keys nothing."""

    def build(key: str) -> Any:
        options = {"circuitBreaker": {"clock": clock, "sharedState": "process"}}
        return ccxt_breaker.kraken({**sim.ccxt_config(), "apiKey": key, "options": options})

    a, same, other = build("key-a"), build("key-a"), build("key-b")
    a.circuit_breakers["public"].force_open()
    assert same.circuit_breakers["public"].state == "open"
    assert other.circuit_breakers["public"].state == "closed"
    for exchange in (a, same, other):
        await exchange.close()


# --- semantics 3: a closed success and a refusal cost no store command ----------------


def commands(server: Any) -> int:
    """Every command Redis ran so far (INFO commandstats), less the INFO calls."""
    stats = server.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


async def test_a_closed_success_and_a_refusal_cost_no_redis_command(
    make: Make, sim: KrakenSimulator, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INFO commandstats: 200 closed successes, and 200 refusals while open, run no Redis
    command at all."""
    import redis

    monkeypatch.setattr(_shared, "RESYNC", 3600.0)  # no periodic read inside the count
    server = redis.Redis.from_url(redis_url)
    exchange = make(redis_url)
    await exchange.load_markets()
    await exchange.fetch_balance()  # the first call reads the shared records
    before = commands(server)
    for _ in range(200):
        await exchange.fetch_balance()
    assert commands(server) - before == 0
    exchange.circuit_breakers["private"].force_open()
    await settle(exchange)
    before = commands(server)
    for _ in range(200):
        with pytest.raises(ccxt_breaker.CircuitOpenError):
            await exchange.fetch_balance()
    assert commands(server) - before == 0


async def test_a_failure_costs_one_redis_command(
    make: Make, sim: KrakenSimulator, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while closed is one script call; the success that ends the run, one more."""
    import redis

    monkeypatch.setattr(_shared, "RESYNC", 3600.0)
    server = redis.Redis.from_url(redis_url)
    exchange = make(redis_url)
    await exchange.load_markets()
    await exchange.fetch_balance()
    rule = sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    before = commands(server)
    await fail(exchange, 1)
    after_failure = commands(server)
    sim.faults.remove(rule)
    await exchange.fetch_balance()
    await settle(exchange)
    stats = server.info("commandstats")
    # a script call runs its own commands inside (HMGET, HSET, ...); the caller sends one
    assert stats["cmdstat_evalsha"]["calls"] >= 2
    assert after_failure > before
    assert exchange.circuit_breakers["private"].snapshot()["failure_count"] == 0


# --- semantics 4: half-open probes are limited across instances -----------------------


async def test_half_open_lets_exactly_max_probes_through_across_instances(
    make: Make, sim: KrakenSimulator, clock: FakeClock, store_url: str
) -> None:
    """Three half-open instances with 300 concurrent calls each send exactly
    halfOpenMaxCalls probes; successThreshold successes close every instance."""
    options = {"halfOpenMaxCalls": 2, "successThreshold": 2, "resetTimeout": 10_000}
    bots = [make(store_url, **options) for _ in range(3)]
    for bot in bots:
        await bot.load_markets()
    bots[0].circuit_breakers["public"]._trip(10.0, {"type": "Test", "message": "open"})
    await settle(*bots)
    await state_everywhere("public", "open", *bots)
    clock.advance(10.0)
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Ticker")
    sim.reset_log()
    calls = [asyncio.ensure_future(bot.fetch_ticker("BTC/USD")) for bot in bots for _ in range(300)]
    await until(lambda: sim.count("Ticker") >= 2)
    await asyncio.sleep(0.1)  # a third probe would have arrived by now
    assert sim.count("Ticker") == 2
    gate.release()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 2
    assert all(
        isinstance(o, ccxt_breaker.CircuitOpenError)
        for o in outcomes
        if isinstance(o, BaseException)
    )
    await settle(*bots)
    await state_everywhere("public", "closed", *bots)


async def test_a_cancelled_probe_gives_its_shared_permit_back(
    make: Make, sim: KrakenSimulator, clock: FakeClock, store_url: str
) -> None:
    """A probe cancelled in flight gives its shared permit back: another instance may
    probe at once."""
    a, b = make(store_url, resetTimeout=10_000), make(store_url, resetTimeout=10_000)
    await a.load_markets()
    await b.load_markets()
    a.circuit_breakers["public"]._trip(10.0, {"type": "Test", "message": "open"})
    await settle(a)
    await state_everywhere("public", "open", a, b)
    clock.advance(10.0)
    gate = Fault.hold()
    sim.faults.add(gate, endpoint="Ticker")
    sim.reset_log()
    probe = asyncio.ensure_future(a.fetch_ticker("BTC/USD"))
    await until(lambda: sim.count("Ticker") == 1)
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await b.fetch_ticker("BTC/USD")  # the one permit is out
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await settle(a)
    sim.clear_faults()
    await b.fetch_ticker("BTC/USD")
    assert sim.count("Ticker") == 2


class StubStore:
    """A store whose probe answers the test gives by hand; records what is submitted."""

    status = "connected"

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, tuple[Any, ...]]] = []
        self.answers: list[asyncio.Future[Record | None]] = []

    def attach(self, circuit: SharedCircuit) -> None:
        pass

    def start(self) -> bool:
        return True

    async def ready(self) -> None:
        pass

    def submit(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> asyncio.Future[Record | None]:
        self.sent.append((op, generation, args))
        future: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        if op == "probe":
            self.answers.append(future)
        else:
            future.set_result(None)
        return future

    async def close(self) -> None:
        pass


def granted(generation: int) -> Record:
    return Record("public", generation, "open", 0.0, False, 0, "", None, granted=True)


async def test_a_call_cancelled_while_asking_for_a_probe_leaks_no_permit(clock: FakeClock) -> None:
    """Cancelled while the store decides, a call gives back its local permit at once and
    its shared permit as soon as the store grants it."""
    breaker = ccxt_breaker.CircuitBreaker("public", BreakerConfig(reset_timeout=1.0), clock=clock)
    store = StubStore()
    breaker._shared = SharedCircuit(store, "public", breaker)
    breaker._trip(1.0, {"type": "Test", "message": "open"})
    clock.advance(1.0)

    async def ok() -> str:
        return "ok"

    call = asyncio.ensure_future(breaker.call(ok))
    await until(lambda: bool(store.answers))
    assert breaker.snapshot()["half_open_in_flight"] == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert breaker.snapshot()["half_open_in_flight"] == 0
    store.answers[0].set_result(granted(7))
    await asyncio.sleep(0)
    assert store.sent[-1][:2] == ("done", 7)
    assert store.sent[-1][2][:2] == ("release", 1)


async def test_a_probe_ending_neutral_gives_its_shared_permit_back(clock: FakeClock) -> None:
    """A granted probe that ends neutral (cancelled in flight) returns the shared permit."""
    breaker = ccxt_breaker.CircuitBreaker("public", BreakerConfig(reset_timeout=1.0), clock=clock)
    store = StubStore()
    breaker._shared = SharedCircuit(store, "public", breaker)
    breaker._trip(1.0, {"type": "Test", "message": "open"})
    clock.advance(1.0)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.ensure_future(breaker.call(hang))
    await until(lambda: bool(store.answers))
    store.answers[0].set_result(granted(0))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert store.sent[-1][0] == "done"
    assert store.sent[-1][2][:2] == ("release", True)
    assert breaker.snapshot()["half_open_in_flight"] == 0


async def test_a_denied_probe_is_refused_locally_and_counted(clock: FakeClock) -> None:
    """When every shared probe is out elsewhere, the call is refused unsent, with the
    local permit given back."""
    breaker = ccxt_breaker.CircuitBreaker("public", BreakerConfig(reset_timeout=1.0), clock=clock)
    store = StubStore()
    breaker._shared = SharedCircuit(store, "public", breaker)
    breaker._trip(1.0, {"type": "Test", "message": "open"})
    clock.advance(1.0)
    sent: list[str] = []

    async def ok() -> None:
        sent.append("sent")

    call = asyncio.ensure_future(breaker.call(ok))
    await until(lambda: bool(store.answers))
    store.answers[0].set_result(Record("public", 0, "open", 0.0, False, 0, "", None, granted=False))
    with pytest.raises(ccxt_breaker.CircuitOpenError) as refused:
        await call
    assert (sent, refused.value.retry_after) == ([], 1.0)
    snapshot = breaker.snapshot()
    assert (snapshot["half_open_in_flight"], snapshot["rejected"]) == (0, 1)


# --- semantics 5: atomic steps with a generation --------------------------------------


async def test_a_stale_update_loses(store_url: str, namespace: str) -> None:
    """A step carrying an older generation changes nothing: a late failure, a late open
    or a late probe result from a slow process loses; a forced open (an order) wins."""
    store = open_store(SharedState(store_url, namespace, 1.0), namespace)
    try:

        async def step(op: str, generation: int, *args: Any) -> Record:
            future = store.submit("k:private", op, generation, 1000.0, args)
            assert future is not None
            record = await future
            assert record is not None
            return record

        opened = await step("open", 0, 2000.0, 0, "forced open", "")
        assert (opened.generation, opened.state) == (1, "open")
        closed = await step("reset", 1)
        assert (closed.generation, closed.state) == (2, "closed")
        for op, args in [
            ("fail", (1, 3000.0, "", "")),
            ("open", (3000.0, 0, "late", "")),
            ("done", ("failure", 1, 1, 3000.0, "late", "")),
        ]:
            late = await step(op, 1, *args)
            assert (late.generation, late.state, late.failures) == (2, "closed", 0)
        current = await step("fail", 2, 1, 3000.0, "", "")
        assert (current.generation, current.state, current.until) == (3, "open", 3000.0)
        closed = await step("reset", 3)
        # force_open() is an order, not news: sent before its instance saw the reset, it wins
        forced = await step("open", 3, 0.0, 1, "forced open", "")
        assert (closed.generation, forced.generation, forced.state, forced.forced) == (
            4,
            5,
            "open",
            True,
        )
    finally:
        await store.close()


async def test_a_process_step_from_the_loop_waits_for_a_sync_threads_lock(
    namespace: str,
) -> None:
    """A step of the process store made on an event loop waits while a sync client's
    thread holds the namespace's lock, so the two never change one record at once."""
    store = open_store(SharedState("process", namespace, 1.0), namespace)
    seen: list[Any] = []
    held = threading.Event()

    def sync_thread() -> None:
        with store.lock:
            held.set()
            time.sleep(0.3)  # the loop reaches the lock meanwhile, and must wait there
            seen.append(_shared._SPACES[namespace].records.get("k:private"))

    thread = threading.Thread(target=sync_thread)
    thread.start()
    held.wait(5)
    future = store.submit("k:private", "open", 0, 1000.0, (2000.0, 0, "opened", ""))
    thread.join(5)
    await store.close()
    assert future is not None
    assert seen == [None]  # nothing written while the thread held the lock
    assert (await future).state == "open"


@pytest.fixture(params=["unix", "tls"])
def transport_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, reached over a unix socket or over TLS."""
    server = RedisServer(tmp_path, request.param).start()
    try:
        yield server
    finally:
        server.stop()


async def test_circuits_are_shared_over_a_unix_socket_and_over_tls(
    transport_server: RedisServer, make: Make, sim: KrakenSimulator
) -> None:
    """unix:// and rediss:// URLs reach a real redis-server: failures of two instances count
    together, and the open they cause refuses in both, unsent."""
    url = transport_server.url
    origin, other = make(url, failureThreshold=3), make(url, failureThreshold=3)
    await origin.load_markets()
    await other.load_markets()
    sim.faults.add(Fault.http(503), endpoint="BalanceEx")
    await fail(origin, 2)
    await fail(other, 1)  # the third failure, counted in Redis with the other two
    await settle(origin, other)
    await state_everywhere("private", "open", origin, other)
    sent = len(sim.requests)
    for exchange in (origin, other):
        with pytest.raises(ccxt_breaker.CircuitOpenError):
            await exchange.fetch_balance()
    assert len(sim.requests) == sent
    assert other.circuit_breakers["private"].snapshot()["shared_state"] == "connected"


async def test_steps_reach_redis_in_the_order_they_were_made(
    redis_url: str, namespace: str
) -> None:
    """A reset() sent right after a force_open() lands after it, so the circuit ends
    closed: the connection pool must not let the later step overtake."""
    store = open_store(SharedState(redis_url, namespace, 1.0), namespace)
    try:
        steps: list[Any] = []
        for n in range(30):
            steps.append(store.submit(f"k{n}:private", "open", 0, 1000.0, (0.0, 1, "forced", "")))
            steps.append(store.submit(f"k{n}:private", "reset", 1, 1000.0, ()))
        assert None not in steps
        await asyncio.gather(*steps)
        reads: list[Any] = [store.submit(f"k{n}:private", "read", 0, 1000.0, ()) for n in range(30)]
        records = await asyncio.gather(*reads)
        assert [(r.state, r.forced) for r in records] == [("closed", False)] * 30
    finally:
        await store.close()


async def test_open_times_are_wall_clock_deadlines(
    make: Make, clock: FakeClock, store_url: str
) -> None:
    """An open is shared as a wall-clock deadline: another instance opens until the same
    moment, whatever its monotonic clock reads."""
    a, b = make(store_url, resetTimeout=20_000), make(store_url, resetTimeout=20_000)
    a.circuit_breakers["private"]._trip(45.0, {"type": "Test", "message": "open"})
    await settle(a)
    await state_everywhere("private", "open", a, b)
    assert b.circuit_breakers["private"].retry_after == pytest.approx(45.0, abs=0.01)


# --- semantics 6: Redis down, slow or restarted ----------------------------------------


@pytest.fixture
async def own_redis(
    redis_server: RedisServer, sim: KrakenSimulator, clock: FakeClock, namespace: str
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(**breaker: Any) -> Any:
        shared = {"url": redis_server.url, "namespace": namespace, "timeout": 100}
        exchange = make_exchange(sim, clock, sharedState=shared, **breaker)
        made.append(exchange)
        return exchange

    yield factory
    redis_server.resume()
    await asyncio.gather(*(exchange.close() for exchange in made))


def shared_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "shared state" in r.getMessage()]


async def test_redis_down_the_breakers_go_on_locally_and_pick_up_again(
    own_redis: Make,
    redis_server: RedisServer,
    sim: KrakenSimulator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis killed: calls go on, failures still open circuits locally, one warning;
    Redis back: one warning, the local open written back, an open from elsewhere taken."""
    monkeypatch.setattr(_shared, "RETRY", 0.05)
    caplog.set_level(logging.WARNING, "ccxt_breaker")
    a, b = own_redis(failureThreshold=2), own_redis(failureThreshold=2)
    await a.load_markets()
    await b.load_markets()
    redis_server.kill()
    await until(lambda: a.circuit_breakers["private"].snapshot()["shared_state"] == "degraded")
    await b.fetch_balance()  # no Redis error reaches a caller
    sim.faults.add(Fault.http(503), endpoint="BalanceEx", times=2)
    await fail(a, 2)
    assert a.circuit_breakers["private"].state == "open"
    assert b.circuit_breakers["private"].state == "closed"
    assert len(shared_warnings(caplog)) == 2  # lost: one per store (a's and b's)
    redis_server.start()
    snapshot = b.circuit_breakers["private"].snapshot
    await until(
        lambda: (snapshot()["state"], snapshot()["shared_state"]) == ("open", "connected"), 5.0
    )
    await until(lambda: a.circuit_breakers["public"].snapshot()["shared_state"] == "connected")
    back = [m for m in shared_warnings(caplog) if "is back" in m]
    assert len(back) == 2
    # and an open made elsewhere after the restart reaches a
    b.circuit_breakers["trading"].force_open()
    await settle(b)
    await until(lambda: a.circuit_breakers["trading"].state == "open")


async def test_redis_slow_holds_no_call_past_the_timeout(
    own_redis: Make,
    redis_server: RedisServer,
    sim: KrakenSimulator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis paused (SIGSTOP): a failure waits for Redis at most the timeout (100 ms),
    the caller gets ccxt's own error, later calls do not wait at all; resumed, it is
    back."""
    monkeypatch.setattr(_shared, "RETRY", 0.05)
    caplog.set_level(logging.WARNING, "ccxt_breaker")
    waits: list[float] = []
    flush = SharedCircuit.flush

    async def timed(self: SharedCircuit) -> None:
        started = time.perf_counter()
        await flush(self)
        waits.append(time.perf_counter() - started)

    monkeypatch.setattr(SharedCircuit, "flush", timed)
    exchange = own_redis(failureThreshold=3)
    await exchange.load_markets()
    await exchange.fetch_balance()
    redis_server.pause()
    sim.faults.add(Fault.http(503), endpoint="AddOrder")
    started = time.perf_counter()
    with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[1]):
        await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
    held = time.perf_counter() - started
    assert waits[0] == pytest.approx(0.1, abs=0.05)  # the failure waited for Redis: 100 ms
    assert held < 1.0  # that, and the simulator's own round trip
    assert exchange.circuit_breakers["trading"].snapshot()["shared_state"] == "degraded"
    started = time.perf_counter()
    with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[1]):
        await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
    assert time.perf_counter() - started < 0.5
    assert waits[1] < 0.01  # degraded: nothing was sent, so nothing was awaited
    redis_server.resume()
    await until(
        lambda: exchange.circuit_breakers["trading"].snapshot()["shared_state"] == "connected",
        5.0,
    )
    assert [m.split(" at ")[0] for m in shared_warnings(caplog)] == [
        "ccxt_breaker lost its shared state",
        "ccxt_breaker shared state is back",
    ]


# --- semantics 7 and secrets: what Redis holds -----------------------------------------


async def test_keys_have_ttls_and_do_not_grow_with_calls(
    make: Make, sim: KrakenSimulator, redis_url: str, namespace: str
) -> None:
    """After hundreds of calls, failures and transitions, every key has a TTL, and the
    keys are one hash per circuit (plus a probe counter while probing)."""
    import redis

    server = redis.Redis.from_url(redis_url, decode_responses=True)
    exchange = make(redis_url, failureThreshold=2)
    await exchange.load_markets()
    for round_ in range(20):
        sim.faults.add(Fault.http(503), endpoint="BalanceEx", times=1)
        await fail(exchange, 1)
        for _ in range(10):
            await exchange.fetch_balance()
        exchange.circuit_breakers["trading"].force_open()
        exchange.circuit_breakers["trading"].reset()
        await settle(exchange)
        if round_ == 0:
            first = sorted(server.scan_iter(f"{PREFIX}:{namespace}:*"))
    keys = sorted(server.scan_iter(f"{PREFIX}:{namespace}:*"))
    assert keys == first
    assert len(keys) <= 2 * len(exchange.circuit_breakers)
    assert all(0 < server.ttl(key) <= 86_400 + 3600 for key in keys)


async def test_no_api_key_or_secret_reaches_redis_logs_or_snapshots(
    sim: KrakenSimulator, clock: FakeClock, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After a run with failures, limits, opens and resets, no Redis key, value or
    message, no log line and no snapshot holds the API key or the secret."""
    import redis

    caplog.set_level(logging.DEBUG, "ccxt_breaker")
    server = redis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = server.pubsub()
    pubsub.psubscribe(f"{PREFIX}:*")
    exchange = make_exchange(sim, clock, sharedState=redis_url, failureThreshold=2)
    try:
        await exchange.load_markets()
        sim.faults.add(Fault.http(503), endpoint="BalanceEx", times=2)
        await fail(exchange, 2)
        sim.faults.add(Fault.kraken_error("EGeneral:Temporary lockout"), endpoint="AddOrder")
        with pytest.raises(ccxt_breaker.CircuitOpenError.__mro__[2]):
            await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
        exchange.circuit_breakers["public"].force_open()
        await settle(exchange)
        snapshots = json.dumps(exchange.circuit_breakers.snapshot())
    finally:
        await exchange.close()
    held = []
    for key in server.scan_iter(f"{PREFIX}:*"):
        held.append(key)
        held.append(
            json.dumps(server.hgetall(key) if server.type(key) == "hash" else server.get(key))
        )
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        held.append(str(message["data"]))
    pubsub.close()
    text = "\n".join([*held, snapshots, *(r.getMessage() for r in caplog.records)])
    assert key_id("kraken", DEFAULT_API_KEY) in text  # the run did write
    for secret in (DEFAULT_API_KEY, DEFAULT_SECRET):
        assert secret not in text


async def test_a_redis_url_without_redis_py_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without redis-py, a Redis URL fails at construction naming the extra to install."""
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'ccxt-breaker\[redis\]'"):
        ccxt_breaker.kraken({"options": {"circuitBreaker": {"sharedState": "redis://h"}}})


async def test_snapshot_shows_the_shared_state_or_null(make: Make, store_url: str) -> None:
    """Each breaker's snapshot says "connected" with shared state, null without."""
    shared = make(store_url).circuit_breakers.snapshot()
    plain = ccxt_breaker.kraken({}).circuit_breakers.snapshot()
    assert {s["shared_state"] for s in shared.values()} == {"connected"}
    assert {s["shared_state"] for s in plain.values()} == {None}


async def test_install_flag_shares_with_the_drop_in_class(
    sim: KrakenSimulator, clock: FakeClock, namespace: str
) -> None:
    """A plain ccxt kraken built with the flag after install() shares state with a
    ccxt_breaker.kraken on the same key."""
    import ccxt.async_support

    options = {"clock": clock, "sharedState": {"url": "process", "namespace": namespace}}
    ccxt_breaker.install()
    try:
        plain = ccxt.async_support.kraken(
            {**sim.ccxt_config(), "options": {"circuitBreaker": dict(options)}}
        )
    finally:
        ccxt_breaker.uninstall()
    drop_in = ccxt_breaker.kraken({**sim.ccxt_config(), "options": {"circuitBreaker": options}})
    plain.circuit_breakers["trading"].force_open()
    assert drop_in.circuit_breakers["trading"].state == "open"
    await plain.close()
    await drop_in.close()
