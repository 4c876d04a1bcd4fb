"""ccxt_breaker.sync.kraken and install() on sync ccxt.kraken: the hook for threads."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from unittest import mock

import ccxt
import ccxt.async_support
import pytest
from ccxt.base.exchange import Exchange as SyncExchange

import ccxt_breaker
import ccxt_breaker.sync
from ccxt_breaker import CircuitOpenError
from ccxt_breaker._hook import BreakerMixin, SyncBreakerMixin
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET, FakeClock, Fault, KrakenSimulator

from .support import until

T = TypeVar("T")
GROUPS = ["public", "private", "trading", "funding", "earn"]


class Simulator:
    """A simulator served from a thread of its own, so that sync ccxt can block on it;
    ``run(fn)`` runs ``fn`` on the simulator's loop and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = KrakenSimulator(rate_limits=False)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    def run(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served() -> Iterator[Simulator]:
    simulator = Simulator()
    yield simulator
    simulator.close()


def sync_kraken(served: Simulator, clock: FakeClock | None = None, **breaker: Any) -> Any:
    """``ccxt_breaker.sync.kraken`` pointed at the simulator, rate limiter off."""
    if clock is not None:
        breaker["clock"] = clock
    config = {**served.sim.ccxt_config(), "enableRateLimit": False, "timeout": 5000}
    return ccxt_breaker.sync.kraken({**config, "options": {"circuitBreaker": breaker}})


def fail(served: Simulator, endpoint: str, fault: Fault | None = None, times: int = 0) -> None:
    def add() -> None:
        served.sim.faults.add(fault or Fault.http(503), endpoint=endpoint, times=times or None)

    served.run(add)


def test_the_sync_class_is_a_drop_in_for_ccxt_kraken(served: Simulator) -> None:
    """ccxt_breaker.sync.kraken is a ccxt.kraken with the same answers, groups and API."""
    exchange = sync_kraken(served)
    plain = ccxt.kraken({**served.sim.ccxt_config(), "enableRateLimit": False})
    assert isinstance(exchange, ccxt.kraken)
    assert not inspect.iscoroutinefunction(getattr(exchange, "close", None))  # sync, as ccxt's
    # the simulator answers its wall clock's second: two calls may straddle a tick
    ours = exchange.fetch_time()
    assert 0 <= plain.fetch_time() - ours <= 1000
    assert exchange.fetch_balance()["total"] == plain.fetch_balance()["total"]
    breakers = exchange.circuit_breakers
    assert list(breakers) == GROUPS
    assert exchange.circuitBreakers is breakers
    assert breakers.group_of("AddOrder") == "trading"
    snapshot = breakers.snapshot()
    assert snapshot["public"]["endpoints"]["Time"]["successes"] == 1
    assert snapshot["private"]["successes"] == 1


def test_failures_open_the_circuit_and_an_open_circuit_sends_nothing(served: Simulator) -> None:
    """Two 503s open 'public'; the next call raises CircuitOpenError and is never sent."""
    exchange = sync_kraken(served, failureThreshold=2)
    exchange.load_markets()  # a public call, needed by fetch_balance below
    fail(served, "Time")
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable) as raised:
            exchange.fetch_time()
        assert not isinstance(raised.value, CircuitOpenError)
    with pytest.raises(CircuitOpenError) as refused:
        exchange.fetch_time()
    assert (refused.value.group, refused.value.endpoint) == ("public", "Time")
    assert served.run(lambda: served.sim.count("Time")) == 2
    assert exchange.fetch_balance()["total"]  # another group is not affected


def test_fifty_threads_in_half_open_send_exactly_the_permitted_probes(served: Simulator) -> None:
    """With 50 threads calling at once in half-open, exactly halfOpenMaxCalls are sent,
    round after round (a race lost once in a round shows as a fourth probe)."""
    clock = FakeClock()
    exchange = sync_kraken(
        served, clock, failureThreshold=1, halfOpenMaxCalls=3, successThreshold=3
    )
    breaker = exchange.circuit_breakers["public"]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can
    try:
        for _ in range(8):
            served.run(served.sim.reset_log)
            fail(served, "Time", times=1)
            with pytest.raises(ccxt.ExchangeNotAvailable):
                exchange.fetch_time()
            clock.advance(3600)  # past the open time: the next calls are probes
            outcomes = _probe_from_threads(served, exchange, 50, held=3)
            assert outcomes.count("answered") == 3
            assert served.run(lambda: served.sim.count("Time")) == 1 + 3
            assert breaker.state == "closed"
    finally:
        sys.setswitchinterval(interval)


def _probe_from_threads(served: Simulator, exchange: Any, threads: int, held: int) -> list[str]:
    """``fetch_time()`` from ``threads`` threads at once (through ``exchange``, or in turn
    through each of a list of them) while the server holds every request; once
    ``threads - held`` were refused and ``held`` reached the server, the server answers.
    Returns each thread's outcome: 'answered' or 'refused'."""
    gate = Fault.hold()
    served.run(lambda: served.sim.faults.add(gate, endpoint="Time"))
    start = threading.Barrier(threads)
    exchanges = exchange if isinstance(exchange, list) else [exchange]
    turn = iter(range(threads))

    def probe() -> str:
        mine = exchanges[next(turn) % len(exchanges)]
        start.wait()
        try:
            mine.fetch_time()
        except CircuitOpenError:
            return "refused"
        return "answered"

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(probe) for _ in range(threads)]
        sent = 0
        for _ in range(2000):
            sent = served.run(lambda: served.sim.count("Time")) - 1
            if sum(f.done() for f in futures) >= threads - held and sent >= held:
                break
            threading.Event().wait(0.005)
        done = [f.result() for f in futures if f.done()]
        served.run(gate.release)
        assert (done, sent) == (["refused"] * (threads - held), held)
        return [f.result(10) for f in futures]


def test_admission_takes_the_breakers_lock_and_io_runs_without_it(served: Simulator) -> None:
    """A call waits for the breakers' lock before it is admitted, and does not hold the
    lock while its request is out."""
    exchange = sync_kraken(served)
    lock = exchange.circuit_breakers._lock
    gate = Fault.hold()
    served.run(lambda: served.sim.faults.add(gate, endpoint="Time"))
    caller = threading.Thread(target=exchange.fetch_time)
    with lock:
        caller.start()
        caller.join(0.3)
        assert caller.is_alive()
        assert served.run(lambda: served.sim.count("Time")) == 0
    for _ in range(2000):  # now admitted: it reaches the server, which holds it
        if served.run(lambda: served.sim.count("Time")) == 1:
            break
        threading.Event().wait(0.005)
    assert lock.acquire(blocking=False)  # free while the request is out
    lock.release()
    served.run(gate.release)
    caller.join(10)
    assert exchange.circuit_breakers["public"].snapshot()["successes"] == 1


def test_a_refused_call_keeps_its_turn_in_ccxts_throttle(served: Simulator) -> None:
    """A refused sync call is paced by ccxt's throttle as any call is (and never sent), so
    a caller that retries at once does not spin."""
    exchange = sync_kraken(served)
    exchange.enableRateLimit = True
    exchange.circuit_breakers["public"].force_open()
    with mock.patch("time.sleep") as slept:  # ccxt's sync throttle sleeps with it
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                exchange.fetch_time()
    delays = [call.args[0] for call in slept.call_args_list]
    assert len(delays) == 2  # the first call had nothing to wait for
    assert all(delay == pytest.approx(exchange.rateLimit / 1000, abs=0.1) for delay in delays)
    assert served.run(lambda: served.sim.count("Time")) == 0


def test_a_refused_retry_ends_the_call_without_ccxts_retry_delay(served: Simulator) -> None:
    """When ccxt's own retry loop would retry into an open circuit, the call ends at once
    with the error of the attempt that was sent, without sleeping the retry delay."""
    exchange = sync_kraken(served, failureThreshold=1)
    exchange.options["maxRetriesOnFailure"] = 3
    exchange.options["maxRetriesOnFailureDelay"] = 60_000
    fail(served, "Time")
    with (
        mock.patch.object(SyncExchange, "sleep") as slept,
        pytest.raises(ccxt.ExchangeNotAvailable) as raised,
    ):
        exchange.fetch_time()
    assert not isinstance(raised.value, CircuitOpenError)  # a request did go out
    assert slept.call_count == 0
    assert served.run(lambda: served.sim.count("Time")) == 1


def test_ccxts_retry_goes_out_while_the_circuit_stays_closed(served: Simulator) -> None:
    """A retry that the circuit allows is slept and sent, as in plain ccxt."""
    exchange = sync_kraken(served, failureThreshold=5)
    exchange.options["maxRetriesOnFailure"] = 2
    exchange.options["maxRetriesOnFailureDelay"] = 1
    fail(served, "Time", times=2)
    assert exchange.fetch_time() > 0
    assert served.run(lambda: served.sim.count("Time")) == 3
    snapshot = exchange.circuit_breakers["public"].snapshot()
    assert (snapshot["calls"], snapshot["failures"], snapshot["successes"]) == (3, 2, 1)


def test_keyboard_interrupt_in_a_probe_gives_its_permit_back(served: Simulator) -> None:
    """A KeyboardInterrupt while a probe is out is neutral: the permit returns, unjudged."""
    clock = FakeClock()
    exchange = sync_kraken(served, clock, failureThreshold=1, halfOpenMaxCalls=1)
    breaker = exchange.circuit_breakers["public"]
    fail(served, "Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_time()
    clock.advance(120)
    with (
        mock.patch.object(SyncExchange, "fetch", side_effect=KeyboardInterrupt),
        pytest.raises(KeyboardInterrupt),
    ):
        exchange.fetch_time()
    snapshot = breaker.snapshot()
    assert (snapshot["state"], snapshot["half_open_in_flight"], snapshot["neutral"]) == (
        "half_open",
        0,
        1,
    )
    assert exchange.fetch_time() > 0  # the permit was free again


def test_a_429_with_retry_after_opens_for_that_long(served: Simulator) -> None:
    """A 429's Retry-After reaches the sync hook through on_rest_response, as in async."""
    clock = FakeClock()
    exchange = sync_kraken(served, clock, failureThreshold=5)
    fail(served, "Time", Fault.too_many_requests(90), times=1)
    with pytest.raises(ccxt.RateLimitExceeded):
        exchange.fetch_time()
    breaker = exchange.circuit_breakers["public"]
    assert breaker.state == "open"
    assert breaker.retry_after == pytest.approx(90, abs=1)


def test_credentials_never_reach_snapshots_or_errors(served: Simulator) -> None:
    """An error message quoting the key and the secret leaves neither in the snapshot or in
    the CircuitOpenError that follows."""
    exchange = sync_kraken(served, failureThreshold=1)
    fail(
        served,
        "BalanceEx",
        Fault.kraken_error(f"EService:Deadline elapsed {DEFAULT_API_KEY} {DEFAULT_SECRET}"),
    )
    with pytest.raises(ccxt.BaseError):
        exchange.fetch_balance()
    with pytest.raises(CircuitOpenError) as refused:
        exchange.fetch_balance()
    text = f"{exchange.circuit_breakers.snapshot()} {refused.value} {refused.value.last_error}"
    assert DEFAULT_API_KEY not in text
    assert DEFAULT_SECRET not in text


def test_steering_from_another_thread_is_seen_by_the_calling_threads(served: Simulator) -> None:
    """force_open() and reset() from a kill-switch thread take effect on the next call."""
    exchange = sync_kraken(served)
    breaker = exchange.circuit_breakers["trading"]
    opener = threading.Thread(target=breaker.force_open)
    opener.start()
    opener.join()
    with pytest.raises(CircuitOpenError):
        exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
    closer = threading.Thread(target=breaker.reset)
    closer.start()
    closer.join()
    assert exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)["id"]
    assert served.run(lambda: served.sim.count("AddOrder")) == 1


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Until ``condition()`` holds (news through Redis arrives by pub/sub)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_sync_and_an_async_client_on_one_key_share_their_circuits(
    served: Simulator, store_url: str
) -> None:
    """With sharedState ("process" or Redis), failures of a sync and an async client on one
    key count together, and the circuit they open refuses both, unsent (freqtrade's two
    clients)."""
    options = {"failureThreshold": 3, "sharedState": store_url}
    config = {**served.sim.ccxt_config(), "enableRateLimit": False, "timeout": 5000}
    sync = sync_kraken(served, **options)

    async def scenario() -> None:
        async_ = ccxt_breaker.kraken({**config, "options": {"circuitBreaker": options}})
        try:
            fail(served, "Time")
            for _ in range(2):
                with pytest.raises(ccxt.ExchangeNotAvailable):
                    await async_.publicGetTime()
            with pytest.raises(ccxt.ExchangeNotAvailable):
                sync.publicGetTime()  # the third failure, on the other client
            assert sync.circuit_breakers["public"].state == "open"
            await until(lambda: async_.circuit_breakers["public"].state == "open")
            sent = served.run(lambda: served.sim.count("Time"))
            with pytest.raises(CircuitOpenError):
                await async_.publicGetTime()
            with pytest.raises(CircuitOpenError):
                sync.publicGetTime()
            assert served.run(lambda: served.sim.count("Time")) == sent == 3
            sync.circuit_breakers["public"].reset()  # and back, from the sync side
            await until(lambda: async_.circuit_breakers["public"].state == "closed")
        finally:
            await async_.close()

    asyncio.run(scenario())


def test_threads_of_two_sync_clients_share_the_half_open_probes(
    served: Simulator, store_url: str
) -> None:
    """With sharedState ("process" or Redis), 50 threads calling through two sync clients
    on one key send exactly halfOpenMaxCalls probes between them."""
    clock = FakeClock()
    options = {"failureThreshold": 1, "halfOpenMaxCalls": 3, "successThreshold": 3}
    first = sync_kraken(served, clock, sharedState=store_url, **options)
    second = sync_kraken(served, clock, sharedState=store_url, **options)
    fail(served, "Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        first.fetch_time()
    wait_for(lambda: second.circuit_breakers["public"].state == "open")
    clock.advance(3600)
    outcomes = _probe_from_threads(served, [first, second], 50, held=3)
    assert outcomes.count("answered") == 3
    assert served.run(lambda: served.sim.count("Time")) == 1 + 3
    wait_for(
        lambda: (
            (first.circuit_breakers["public"].state, second.circuit_breakers["public"].state)
            == ("closed", "closed")
        )
    )


def test_a_sync_client_goes_on_locally_when_redis_is_down(served: Simulator) -> None:
    """With Redis unreachable, a sync client's breakers count, open and refuse on their own,
    and its calls go on."""
    shared = {"url": "redis://127.0.0.1:1/0", "timeout": 100}
    exchange = sync_kraken(served, failureThreshold=2, sharedState=shared)
    assert exchange.fetch_time() > 0
    fail(served, "Time")
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_time()
    with pytest.raises(CircuitOpenError):
        exchange.fetch_time()
    assert served.run(lambda: served.sim.count("Time")) == 3
    assert exchange.circuit_breakers["public"].snapshot()["shared_state"] == "degraded"


# --- install() and the mixin ------------------------------------------------------------


def test_install_guards_sync_kraken_built_with_the_flag(
    served: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """After install(), ccxt.kraken with the flag gets breakers (and no warning); without
    the flag it stays plain ccxt."""
    config = {**served.sim.ccxt_config(), "enableRateLimit": False}
    ccxt_breaker.install()
    try:
        with caplog.at_level(logging.WARNING, logger="ccxt_breaker"):
            guarded = ccxt.kraken({**config, "options": {"circuitBreaker": True}})
            plain = ccxt.kraken(config)
    finally:
        ccxt_breaker.uninstall()
    assert isinstance(guarded, ccxt.kraken)
    assert isinstance(guarded, SyncBreakerMixin)
    assert type(plain) is ccxt.kraken
    assert caplog.records == []
    fail(served, "Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        guarded.fetch_time()
    assert guarded.circuit_breakers["public"].snapshot()["failures"] == 1


def test_install_puts_the_hook_under_a_bots_own_sync_subclass(served: Simulator) -> None:
    """A bot's ccxt.kraken subclass built with the flag runs its overrides around the hook."""

    class Bot(ccxt.kraken):  # type: ignore[misc]
        def fetch2(self, *args: Any, **kwargs: Any) -> Any:
            self.seen = True
            return super().fetch2(*args, **kwargs)

    ccxt_breaker.install()
    try:
        bot = Bot({**served.sim.ccxt_config(), "options": {"circuitBreaker": True}})
    finally:
        ccxt_breaker.uninstall()
    mro = type(bot).__mro__
    assert [mro.index(c) for c in (Bot, SyncBreakerMixin, ccxt.kraken)] == sorted(
        mro.index(c) for c in (Bot, SyncBreakerMixin, ccxt.kraken)
    )
    bot.fetch_time()
    assert bot.seen
    assert bot.circuit_breakers["public"].snapshot()["successes"] == 1


@pytest.mark.parametrize(
    ("bases", "message"),
    [
        ((ccxt.kraken, SyncBreakerMixin), "must come before a ccxt sync exchange class"),
        ((SyncBreakerMixin, ccxt.async_support.kraken), "is for ccxt's sync classes"),
        ((BreakerMixin, ccxt.kraken), "must come before a ccxt async exchange class"),
    ],
)
def test_a_mixin_in_the_wrong_place_fails_when_the_class_is_made(
    bases: tuple[type, ...], message: str
) -> None:
    """Each mixin checks, when a class is made, that it sits before a ccxt class of its kind."""
    with pytest.raises(TypeError, match=message):
        type("Bad", bases, {})


def test_a_reset_just_before_exit_reaches_redis(redis_url: str) -> None:
    """A sync client's reset() right before the process exits still reaches Redis (the
    other processes must not stay refused), and the exit reports no pending task."""
    code = (
        "import sys, ccxt_breaker.sync\n"
        "options = {'circuitBreaker': {'sharedState': sys.argv[1]}}\n"
        "e = ccxt_breaker.sync.kraken({'options': options})\n"
        "e.circuit_breakers['public'].force_open()\n"
        "e.circuit_breakers['public'].reset()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "Task was destroyed" not in run.stderr
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    [key] = [k for k in client.keys("ccxt_breaker:*") if k.endswith(":public")]
    assert client.hget(key, "s") == "closed"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
# forking a process with threads (the simulator's, the Redis one) is the case under test;
# Python 3.12+ warns about it
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_goes_on_locally_at_once(served: Simulator, redis_url: str) -> None:
    """In a child forked after a sync client started sharing on Redis, the client's
    breakers go on locally at once: a probe does not wait for the parent's Redis thread,
    which did not survive the fork."""
    clock = FakeClock()
    exchange = sync_kraken(
        served, clock, failureThreshold=1, successThreshold=1, sharedState=redis_url
    )
    assert exchange.fetch_time() > 0  # the store is started and synced here
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  # the child reports through the pipe
        outcome = "failed"
        try:
            breaker = exchange.circuit_breakers["public"]
            breaker._trip(1.0, {"type": "Test", "message": "opened in the child"})
            clock.advance(30.0)  # the next call is a probe, which asks the store
            started = time.monotonic()
            exchange.fetch_time()
            outcome = f"{breaker.state.value} {time.monotonic() - started:.3f}"
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    if not select.select([read], [], [], 30)[0]:  # a child stuck on a lock held at fork
        os.kill(child, signal.SIGKILL)
    with os.fdopen(read) as pipe:
        outcome = pipe.read()
    os.waitpid(child, 0)
    state, seconds = outcome.split()
    assert state == "closed"
    # a probe that waited for the dead loop would take the timeout plus a second (1.1 s)
    assert float(seconds) < 0.8


def test_keyboard_interrupt_while_asking_redis_for_a_probe_gives_the_permit_back(
    served: Simulator, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt while a sync thread waits for Redis to grant a probe gives the
    local probe permit back: the next call is still a probe, not refused."""
    clock = FakeClock()
    exchange = sync_kraken(
        served,
        clock,
        failureThreshold=1,
        halfOpenMaxCalls=1,
        successThreshold=1,
        sharedState=redis_url,
    )
    assert exchange.fetch_time() > 0  # started and synced
    breaker = exchange.circuit_breakers["public"]
    breaker._trip(1.0, {"type": "Test", "message": "opened by the test"})
    clock.advance(30.0)
    store = breaker._shared.store

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(store, "step_now", interrupted)
        with pytest.raises(KeyboardInterrupt):
            exchange.fetch_time()
    assert exchange.fetch_time() > 0  # the one probe permit was free again
    assert breaker.state == "closed"
