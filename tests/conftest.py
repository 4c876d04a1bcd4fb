from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET, FakeClock, KrakenSimulator

from .support import PLAIN_KEY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[KrakenSimulator]:
    """The simulator on the test's fake clock, with Kraken's per-key counters off (they
    decay only as the fake clock moves); a test about them turns them on."""
    simulator = KrakenSimulator(
        clock=clock.monotonic,
        wall_clock=clock.time,
        rate_limits=False,
        credentials={DEFAULT_API_KEY: DEFAULT_SECRET, PLAIN_KEY: DEFAULT_SECRET},
    )
    async with simulator:
        yield simulator


@pytest.fixture
async def build(clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """``build(**breaker)``: an exchange (``cls``, ccxt_breaker.kraken by default) with
    these breaker options on the fake clock (``breaker=False`` turns them off); closed at
    teardown."""
    made: list[Any] = []

    def factory(cls: Any = ccxt_breaker.kraken, breaker: Any = None, **options: Any) -> Any:
        option = {**options, "clock": clock} if breaker is None else breaker
        exchange = cls({"apiKey": "key-0123456789", "options": {"circuitBreaker": option}})
        made.append(exchange)
        return exchange

    yield factory
    await asyncio.gather(*(exchange.close() for exchange in made))
