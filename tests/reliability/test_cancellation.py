"""Cancellation matrix: a cancelled call is never counted and always gives its probe slot back.

Every combination of where the call is (at the server through the ccxt hook, in ccxt's
rate-limit queue, inside ``breaker.call()`` or a ``breaker.guard`` function, inside
``async with breaker``), the state it
is cancelled in (closed, open, half-open) and how it is cancelled (``asyncio.timeout``,
``asyncio.wait_for``, ``task.cancel()``, a failing TaskGroup sibling).
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

from ..support import Backend, FakeClock, Reply, exchange_config

Start = Callable[[], Coroutine[Any, Any, Any]]
Arrived = Callable[[], Awaitable[None]]

CAUSE = {"type": "Test", "message": "opened by the test"}
WAIT_FOR_TIMEOUT = 0.3  # real seconds; the call arrives at its hold point well before


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (in real time) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "the call never reached its hold point"
        await asyncio.sleep(0.002)


# --- where the call is when it is cancelled ----------------------------------------------


class HookAtServer:
    """A ccxt call whose request is held at the server."""

    def __init__(self, backend: Backend, clock: FakeClock) -> None:
        self.backend = backend
        self.exchange = ccxt_breaker.kraken(exchange_config(backend.url, clock,
                                                            failureThreshold=3))
        self.breaker = self.exchange.circuit_breakers["public"]

    async def fail_once(self) -> None:
        self.backend.script("Time", Reply(503, "<html>down</html>"))
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await self.exchange.publicGetTime()

    def hold(self) -> None:
        self.backend.gate = asyncio.Event()
        self.sent = self.backend.hits["Time"]

    def start(self) -> Coroutine[Any, Any, Any]:
        return self.exchange.publicGetTime()

    async def arrived(self) -> None:
        await until(lambda: self.backend.hits["Time"] == self.sent + 1)

    async def close(self) -> None:
        if self.backend.gate is not None:
            self.backend.gate.set()
        await self.exchange.close()


class HookInQueue(HookAtServer):
    """A ccxt call waiting in ccxt's rate-limit queue (enableRateLimit=True)."""

    def __init__(self, backend: Backend, clock: FakeClock) -> None:
        self.backend = backend
        config = exchange_config(backend.url, clock, failureThreshold=3)
        config.update(enableRateLimit=True, rateLimit=60_000)  # the next token is a minute away
        self.exchange = ccxt_breaker.kraken(config)
        self.breaker = self.exchange.circuit_breakers["public"]

    def hold(self) -> None:
        self.sent = self.backend.hits["Time"]

    async def arrived(self) -> None:
        await until(lambda: len(self.exchange.throttler.queue) == 1)
        assert self.backend.hits["Time"] == self.sent

    async def close(self) -> None:
        self.exchange.throttler.running = False  # stop ccxt's refill loop waiting a minute
        self.exchange.throttler.queue.clear()
        await asyncio.sleep(0.01)
        await self.exchange.close()


class BreakerCall:
    """``await breaker.call(fn)`` with ``fn`` suspended."""

    def __init__(self, backend: Backend, clock: FakeClock) -> None:
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


TARGETS = [HookAtServer, HookInQueue, BreakerCall, GuardedCall, AsyncWith]


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
    watcher = asyncio.create_task(arrived())
    try:
        await asyncio.wait_for(start(), WAIT_FOR_TIMEOUT)
    except BaseException as exc:
        assert watcher.done(), "the call had not arrived when wait_for expired"
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
        SiblingFailed]


MECHANISMS = [
    pytest.param(by_timeout, is_timeout, id="asyncio.timeout"),
    pytest.param(by_wait_for, is_timeout, id="wait_for"),
    pytest.param(by_task_cancel, is_cancelled, id="task.cancel"),
    pytest.param(by_task_group, is_sibling_group, id="TaskGroup"),
]


@pytest.mark.parametrize(("cancel", "expected"), MECHANISMS)
@pytest.mark.parametrize("state", ["closed", "open", "half_open"])
@pytest.mark.parametrize("target_type", TARGETS, ids=lambda t: t.__name__)
async def test_cancellation_is_neutral(backend: Backend, clock: FakeClock, target_type: Any,
                                       state: str, cancel: Any, expected: Any) -> None:
    """The caller sees the cancellation unchanged, nothing is counted, no transition happens,
    and a half-open probe slot is given back so the next call is admitted as a probe."""
    target = target_type(backend, clock)
    breaker: CircuitBreaker = target.breaker
    events: list[Any] = []
    await target.fail_once()  # failure_count 1: a reset by the cancellation would show
    if state == "half_open":
        breaker.trip(0.0, CAUSE)
        clock.advance(30.0)
    breaker.add_listener(events.append)
    target.hold()
    before: list[dict[str, Any]] = []

    async def arrived() -> None:
        await target.arrived()
        if state == "open":  # the call started while closed; its circuit opens meanwhile
            breaker.trip(0.0, CAUSE)
        before.append({**breaker.snapshot(), "events": len(events)})

    seen = await cancel(target.start, arrived)
    after = {**breaker.snapshot(), "events": len(events)}
    admitted = asyncio.create_task(target.start())
    await asyncio.sleep(0)
    refused = admitted.done() and isinstance(admitted.exception(), ccxt_breaker.CircuitOpenError)
    admitted.cancel()
    await asyncio.gather(admitted, return_exceptions=True)
    await target.close()

    assert expected(seen), f"the caller saw {seen!r}"
    # while the probe is out its slot is taken; the cancellation must give it back
    slots = [(s.pop("half_open_in_flight"), s.pop("retry_after")) for s in (before[0], after)]
    probing = state == "half_open"
    assert slots == ([(1, PROBE_WAIT), (0, 0.0)] if probing else [(0, slots[0][1])] * 2)
    assert after == before[0]
    assert after["state"] == state
    assert refused == (state == "open")
