"""Cancellation matrix: a cancelled call is never counted and always gives its probe slot back.

Every combination of where the call is when it is cancelled, the state it is cancelled in
(closed, open, half-open) and how (``asyncio.timeout``, ``asyncio.wait_for``,
``task.cancel()``, a failing TaskGroup sibling).  Where: through the ccxt hook at the
server, in ccxt's rate-limit queue, in ccxt's delay between retries, or at the server
through a subclass's ``fetch()`` that awaits the hook in ``asyncio.wait_for``; or inside
``breaker.call()``, a ``breaker.guard`` function or ``async with breaker``.

A subclass's ``fetch()`` that awaits the hook through ``asyncio.shield`` has its own
table: there the attempt outlives its cancelled caller, and is judged by its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker import CircuitBreaker
from ccxt_breaker._config import BreakerConfig
from ccxt_breaker._machine import PROBE_WAIT
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from ..support import exchange_config, make_exchange, until

Start = Callable[[], Coroutine[Any, Any, Any]]
Arrived = Callable[[], Awaitable[None]]

CAUSE = {"type": "Test", "message": "opened by the test"}
OPEN_TIME = 30.0  # the default resetTimeout, in seconds of the fake clock
RETRY_DELAY_MS = 60_000  # ccxt's real delay between retries: the test cancels well before
ATTEMPT_TIMEOUT = 3600.0  # a subclass's own wait_for around an attempt, never reached


# --- where the call is when it is cancelled ----------------------------------------------


class HookAtServer:
    """A ccxt call whose request is held at the server."""

    cls: Any = ccxt_breaker.kraken

    def __init__(self, sim: KrakenSimulator, clock: FakeClock) -> None:
        self.sim = sim
        self.exchange = make_exchange(sim, clock, cls=self.cls, failureThreshold=3)
        self.breaker: CircuitBreaker = self.exchange.circuit_breakers["public"]
        self.gate: Fault | None = None

    async def fail_once(self) -> None:
        self.sim.faults.add(Fault.http(503), endpoint="Time", times=1)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await self.exchange.publicGetTime()

    def hold(self) -> None:
        self.gate = Fault.hold()
        self.sim.faults.add(self.gate, endpoint="Time")
        self.sent = self.sim.count("Time")

    def start(self) -> Coroutine[Any, Any, Any]:
        return self.exchange.publicGetTime()

    async def arrived(self) -> None:
        await until(lambda: self.sim.count("Time") == self.sent + 1)

    async def close(self) -> None:
        if self.gate is not None:
            self.gate.release()
        await self.exchange.close()


class HookInQueue(HookAtServer):
    """A ccxt call waiting in ccxt's rate-limit queue (enableRateLimit=True)."""

    def __init__(self, sim: KrakenSimulator, clock: FakeClock) -> None:
        self.sim = sim
        config = exchange_config(sim, clock, failureThreshold=3)
        config.update(enableRateLimit=True, rateLimit=60_000)  # the next token is a minute away
        self.exchange = ccxt_breaker.kraken(config)
        self.breaker = self.exchange.circuit_breakers["public"]

    def hold(self) -> None:
        self.sent = self.sim.count("Time")  # fail_once spent the one token

    async def arrived(self) -> None:
        await until(lambda: len(self.exchange.throttler.queue) == 1)
        assert self.sim.count("Time") == self.sent

    async def close(self) -> None:
        await drain(self.exchange.throttler)
        await self.exchange.close()


async def drain(throttler: Any) -> None:
    """Let every future in ccxt's rate-limit queue out, so its loop ends before the test."""
    throttler.config.update(capacity=1e9, refillRate=1e9)
    await until(lambda: not throttler.running)


class RetryDelays(ccxt_breaker.kraken):  # type: ignore[misc]
    """Counts ccxt's delays between retries, so a test knows when a call sleeps in one."""

    delays = 0

    async def sleep(self, milliseconds: Any) -> Any:
        if milliseconds:  # close() sleeps for 0 ms
            self.delays += 1
        return await super().sleep(milliseconds)


class HookInRetryDelay(HookAtServer):
    """A ccxt call sleeping in ccxt's delay before its second attempt: its first attempt
    was answered ``EAPI:Invalid nonce``, which ccxt retries and the breaker does not count,
    so at half-open the permit is the one ``sleep()`` took for the retry."""

    cls = RetryDelays

    def hold(self) -> None:
        self.exchange.options.update(maxRetriesOnFailure=2, maxRetriesOnFailureDelay=RETRY_DELAY_MS)
        self.sim.faults.add(Fault.kraken_error("EAPI:Invalid nonce"), endpoint="Time", times=1)
        self.sent = self.sim.count("Time")
        self.delays = self.exchange.delays

    async def arrived(self) -> None:
        await until(lambda: self.exchange.delays == self.delays + 1)
        assert self.sim.count("Time") == self.sent + 1


class WaitForFetch(ccxt_breaker.kraken):  # type: ignore[misc]
    """A bot's subclass that bounds each attempt with its own ``asyncio.wait_for``."""

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        return await asyncio.wait_for(super().fetch(url, method, headers, body), ATTEMPT_TIMEOUT)


class SubclassWaitFor(HookAtServer):
    """A ccxt call held at the server inside a subclass's ``wait_for`` around ``fetch()``
    (on Python 3.11 the attempt runs in a task of its own)."""

    cls = WaitForFetch


class BreakerCall:
    """``await breaker.call(fn)`` with ``fn`` suspended."""

    def __init__(self, sim: KrakenSimulator, clock: FakeClock) -> None:
        self.breaker = CircuitBreaker("guarded", BreakerConfig(failure_threshold=3), clock=clock)
        self.entered = asyncio.Event()

    async def work(self) -> None:
        self.entered.set()
        await asyncio.Event().wait()

    async def fail_once(self) -> None:
        async def down() -> None:
            raise ccxt.ExchangeNotAvailable("down")

        with pytest.raises(ccxt.ExchangeNotAvailable):
            await self.breaker.call(down)

    def hold(self) -> None:
        pass

    def start(self) -> Coroutine[Any, Any, Any]:
        return self.breaker.call(self.work)

    async def arrived(self) -> None:
        await self.entered.wait()

    async def close(self) -> None:
        pass


class GuardedCall(BreakerCall):
    """A call of ``breaker.guard(fn)`` with ``fn`` suspended."""

    def start(self) -> Coroutine[Any, Any, Any]:
        return self.breaker.guard(self.work)()


class AsyncWith(BreakerCall):
    """``async with breaker:`` around a suspended body."""

    async def guarded(self) -> None:
        async with self.breaker:
            await self.work()

    def start(self) -> Coroutine[Any, Any, Any]:
        return self.guarded()


TARGETS = [
    HookAtServer,
    HookInQueue,
    HookInRetryDelay,
    SubclassWaitFor,
    BreakerCall,
    GuardedCall,
    AsyncWith,
]


# --- how it is cancelled: each returns what the caller saw --------------------------------


class SiblingFailed(Exception):
    """Raised by the TaskGroup sibling."""


async def by_timeout(start: Start, arrived: Arrived) -> BaseException | None:
    loop = asyncio.get_running_loop()

    async def expire(scope: asyncio.Timeout) -> None:
        await arrived()
        scope.reschedule(loop.time())

    expiry: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(None) as scope:
            expiry = loop.create_task(expire(scope))
            await start()
    except BaseException as exc:  # the test inspects whatever came out
        return exc
    finally:
        assert expiry is not None
        assert expiry.done()
    return None


async def by_wait_for(start: Start, arrived: Arrived) -> BaseException | None:
    # wait_for's expiry (cancel the call's task, wait for it, raise TimeoutError) taken
    # at the hold point itself, with no real-time timer to race
    call = asyncio.create_task(start())
    await arrived()
    try:
        await asyncio.wait_for(call, 0)
    except BaseException as exc:
        return exc
    return None


async def by_task_cancel(start: Start, arrived: Arrived) -> BaseException | None:
    task = asyncio.create_task(start())
    await arrived()
    task.cancel()
    try:
        await task
    except BaseException as exc:
        return exc
    return None


async def by_task_group(start: Start, arrived: Arrived) -> BaseException | None:
    async def sibling() -> None:
        await arrived()
        raise SiblingFailed

    try:
        async with asyncio.TaskGroup() as group:
            call = group.create_task(start())
            group.create_task(sibling())
    except BaseException as exc:
        assert call.cancelled(), f"the call ended with {call.exception()!r}, not cancelled"
        return exc
    return None


def is_timeout(seen: BaseException | None) -> bool:
    # asyncio turned the CancelledError that came out of the call into TimeoutError; any
    # other exception from the call would have come out instead
    return type(seen) is TimeoutError and isinstance(seen.__context__, asyncio.CancelledError)


def is_cancelled(seen: BaseException | None) -> bool:
    return type(seen) is asyncio.CancelledError


def is_sibling_group(seen: BaseException | None) -> bool:
    return isinstance(seen, BaseExceptionGroup) and [type(e) for e in seen.exceptions] == [
        SiblingFailed
    ]


MECHANISMS = [
    pytest.param(by_timeout, is_timeout, id="asyncio.timeout"),
    pytest.param(by_wait_for, is_timeout, id="wait_for"),
    pytest.param(by_task_cancel, is_cancelled, id="task.cancel"),
    pytest.param(by_task_group, is_sibling_group, id="TaskGroup"),
]
STATES = ["closed", "open", "half_open"]


# --- one cell -------------------------------------------------------------------------


def picture(breaker: CircuitBreaker, events: list[Any]) -> dict[str, Any]:
    """The breaker's snapshot, and how many events it has sent since the call began."""
    return {**breaker.snapshot(), "events": len(events)}


async def cancel_at_hold_point(
    target: Any, clock: FakeClock, state: str, cancel: Any
) -> tuple[BaseException | None, dict[str, Any], dict[str, Any], list[Any]]:
    """Cancel a call at its hold point in ``state``; returns what the caller saw, the
    breaker's picture just before and just after the cancellation, and its events."""
    breaker: CircuitBreaker = target.breaker
    events: list[Any] = []
    await target.fail_once()  # failure_count 1: a reset by the cancellation would show
    if state == "half_open":
        breaker._trip(0.0, CAUSE)
        clock.advance(OPEN_TIME)
    breaker.add_listener(events.append)
    target.hold()
    before: list[dict[str, Any]] = []

    async def arrived() -> None:
        await target.arrived()
        if state == "open":  # the call started while closed; its circuit opens meanwhile
            breaker._trip(0.0, CAUSE)
        before.append(picture(breaker, events))

    seen = await cancel(target.start, arrived)
    return seen, before[0], picture(breaker, events), events


async def refuses(target: Any) -> bool:
    """Whether a new call is refused on its first step (else it was admitted: cancel it)."""
    call = asyncio.create_task(target.start())
    await asyncio.sleep(0)  # one step: the breaker admits or refuses there
    refused = call.done() and isinstance(call.exception(), ccxt_breaker.CircuitOpenError)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    return refused


def without_outcomes(picture: dict[str, Any]) -> dict[str, Any]:
    """``picture`` without the tallies of how attempts ended (successes, neutral)."""
    tallies = ("successes", "neutral")
    endpoints = {
        path: {key: n for key, n in counts.items() if key not in tallies}
        for path, counts in picture["endpoints"].items()
    }
    return {key: v for key, v in picture.items() if key not in tallies} | {"endpoints": endpoints}


def slots(picture: dict[str, Any]) -> tuple[int, float | None]:
    """Take the half-open slot count and the retry_after that follows from it out."""
    return picture.pop("half_open_in_flight"), picture.pop("retry_after")


@pytest.mark.parametrize(("cancel", "expected"), MECHANISMS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("target_type", TARGETS, ids=lambda t: t.__name__)
async def test_cancellation_is_neutral(
    sim: KrakenSimulator,
    clock: FakeClock,
    target_type: Any,
    state: str,
    cancel: Any,
    expected: Any,
) -> None:
    """A cancelled call counts nothing, changes no state, and gives its half-open slot back."""
    # the caller sees the cancellation unchanged, and the next call is admitted as a probe
    target = target_type(sim, clock)
    seen, before, after, _ = await cancel_at_hold_point(target, clock, state, cancel)
    refused = await refuses(target)
    await target.close()

    assert expected(seen), f"the caller saw {seen!r}"
    # while the probe is out its slot is taken; the cancellation must give it back
    held, left = slots(before), slots(after)
    assert (held, left) == (((1, PROBE_WAIT), (0, 0.0)) if state == "half_open" else (held,) * 2)
    assert held[0] == (state == "half_open")
    assert without_outcomes(after) == without_outcomes(before)
    # a cancelled attempt is tallied as neutral; a call cancelled outside one, not at all
    assert (after["successes"], after["neutral"] - before["neutral"] in (0, 1)) == (
        before["successes"],
        True,
    )
    assert after["state"] == state
    assert refused == (state == "open")


# --- an attempt that outlives its caller ---------------------------------------------


class ShieldedFetch(ccxt_breaker.kraken):  # type: ignore[misc]
    """A bot's subclass that shields each attempt from its caller's cancellation."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.attempts: list[asyncio.Future[Any]] = []

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        attempt = asyncio.ensure_future(super().fetch(url, method, headers, body))
        self.attempts.append(attempt)
        return await asyncio.shield(attempt)


class SubclassShield(HookAtServer):
    """A ccxt call held at the server inside a subclass's ``asyncio.shield``."""

    cls = ShieldedFetch

    async def close(self) -> None:
        # a shielded attempt whose caller was cancelled still runs: let it end first
        if self.gate is not None:
            self.gate.release()
        await asyncio.gather(*self.exchange.attempts, return_exceptions=True)
        await super().close()


# What the shielded attempt's own answer (a success) changes once it is judged.
JUDGED: dict[str, dict[str, Any]] = {
    "closed": {"failure_count": 0},  # a success ends the run of failures
    "open": {},  # its permit is from before the trip: stale, ignored
    # one probe success of the two needed, and the slot is free again
    "half_open": {"success_count": 1, "half_open_in_flight": 0, "retry_after": 0.0},
}


@pytest.mark.parametrize(("cancel", "expected"), MECHANISMS)
@pytest.mark.parametrize("state", STATES)
async def test_shielded_attempt_outlives_its_cancelled_caller(
    sim: KrakenSimulator, clock: FakeClock, state: str, cancel: Any, expected: Any
) -> None:
    """A shielded attempt keeps its slot past its cancelled caller; its answer is judged later."""
    target = SubclassShield(sim, clock)
    seen, before, after, events = await cancel_at_hold_point(target, clock, state, cancel)
    assert target.gate is not None
    target.gate.release()
    answer = await target.exchange.attempts[-1]
    judged = picture(target.breaker, events)
    refused = await refuses(target)
    await target.close()

    assert expected(seen), f"the caller saw {seen!r}"
    assert after == before  # the attempt still holds its half-open slot
    assert before["half_open_in_flight"] == (state == "half_open")
    assert isinstance(answer, dict)
    assert without_outcomes(judged) == without_outcomes({**after, **JUDGED[state]})
    assert judged["successes"] == after["successes"] + 1  # tallied, even when stale
    assert refused == (state == "open")
