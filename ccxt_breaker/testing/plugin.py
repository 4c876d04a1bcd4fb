"""pytest fixtures for bots that trade on Kraken through ccxt; loaded automatically.

* ``kraken_simulator``: a running :class:`KrakenSimulator`, fresh for each test.
* ``kraken_factory``: builds exchanges pointed at that simulator (ccxt's rate limiter
  off unless the config says ``"enableRateLimit": True``) and closes them all at
  teardown::

      async def test_survives_outage(kraken_simulator, kraken_factory):
          kraken_simulator.faults.add(Fault.http(503), group="public", times=5)
          exchange = kraken_factory({"timeout": 500})
          ...

The fixtures are async and need pytest-asyncio (in ``auto`` or ``strict`` mode); without
it they fail with an install hint instead of breaking pytest for everyone else.

pytest loads this module at every start-up wherever the package is installed, so it
imports only pytest: ccxt, aiohttp's server and the simulator are imported by the
fixtures, in the tests that use them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from ._simulator import KrakenSimulator

__all__ = ["KrakenFactory", "kraken_factory", "kraken_simulator"]

_NEEDS_ASYNCIO = (
    "the kraken_simulator and kraken_factory fixtures need pytest-asyncio: "
    "pip install 'ccxt-breaker[test]' (or pytest-asyncio>=1.0)"
)


def _async_fixture(func: Callable[..., Any]) -> Any:
    try:
        import pytest_asyncio
    except ImportError:
        pass
    else:
        return pytest_asyncio.fixture(func)

    def unavailable() -> NoReturn:
        pytest.fail(_NEEDS_ASYNCIO, pytrace=False)

    unavailable.__name__ = func.__name__
    unavailable.__doc__ = func.__doc__
    return pytest.fixture(name=func.__name__)(unavailable)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class KrakenFactory:
    """Builds exchanges configured for one simulator; the ``kraken_factory`` fixture."""

    def __init__(self, simulator: KrakenSimulator) -> None:
        self.simulator = simulator
        self.made: list[Any] = []

    def __call__(self, config: Mapping[str, Any] | None = None, *, cls: Any = None) -> Any:
        """A new exchange of ``cls`` (default ``ccxt_breaker.kraken``).

        ``config`` is merged over the simulator's credentials and URLs (nested dicts
        merge key by key), so a test can still pass a wrong ``secret`` or its own
        ``options``. ccxt's rate limiter is off (``enableRateLimit: False``): it would
        make each call wait in real time. A test of the bot's own pacing turns it back
        on with ``{"enableRateLimit": True}``. ``timeout`` stays ccxt's unless you set it.
        """
        from ._simulator import strict_nonces

        if cls is None:
            # imported here so the plugin loads even when the breaker itself is broken
            from ccxt_breaker import kraken

            cls = kraken
        # ccxt sleeps 250 ms in close() so TLS transports can shut down; plain HTTP to
        # 127.0.0.1 has none, and the pause would dominate a suite of short tests.
        # Its rate limiter sleeps in real time between calls: off unless the test asks.
        base = {**self.simulator.ccxt_config(), "enableRateLimit": False, "timeout_on_exit": 0}
        exchange = cls(_merge(base, config or {}))
        strict_nonces(exchange)
        self.made.append(exchange)
        return exchange

    async def close_all(self) -> None:
        """Close every exchange made so far; ``close()`` is idempotent in ccxt."""
        made, self.made = self.made, []
        await asyncio.gather(*(exchange.close() for exchange in made))


@_async_fixture
async def kraken_simulator() -> AsyncIterator[KrakenSimulator]:
    """A running Kraken simulator on 127.0.0.1, fresh for each test."""
    from ._simulator import KrakenSimulator

    async with KrakenSimulator() as simulator:
        yield simulator


@_async_fixture
async def kraken_factory(kraken_simulator: KrakenSimulator) -> AsyncIterator[KrakenFactory]:
    """Build exchanges pointed at ``kraken_simulator``; all are closed at teardown.

    ``kraken_factory(config, cls=...)`` merges ``config`` over the simulator's
    credentials and URLs. ccxt's rate limiter is off, so tests never sleep in real time
    between calls; to test your bot's pacing, turn it on:
    ``kraken_factory({"enableRateLimit": True})``.
    """
    factory = KrakenFactory(kraken_simulator)
    try:
        yield factory
    finally:
        await factory.close_all()
