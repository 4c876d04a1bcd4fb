from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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
