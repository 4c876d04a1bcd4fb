from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET, FakeClock, KrakenSimulator

from .redis_support import RedisServer, unavailable
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


@pytest.fixture(params=["process", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A sharedState URL, once for each store: this process's, and a real redis-server."""
    if request.param == "process":
        return "process"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def redis_url(redis_session_url: str) -> str:
    """The session's redis-server, its database emptied first: a circuit an earlier test
    left open must not leak into this one (CI also runs pytest several times against one
    server, and a forced open outlives a run)."""
    import redis

    redis.Redis.from_url(redis_session_url, socket_timeout=5).flushdb()
    return redis_session_url


@pytest.fixture(scope="session")
def redis_session_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session: CCXT_BREAKER_REDIS_URL's (CI starts one), or
    one started here when the binary is on PATH."""
    url = os.environ.get("CCXT_BREAKER_REDIS_URL")
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_timeout=5).ping()
        except Exception as e:
            unavailable(f"CCXT_BREAKER_REDIS_URL does not answer ({type(e).__name__})")
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill, pause and start again."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
