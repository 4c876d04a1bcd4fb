"""Shared test parts: exchanges pointed at the one fake, ``KrakenSimulator``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import ccxt.async_support

import ccxt_breaker
from ccxt_breaker.testing import FakeClock, KrakenSimulator
from ccxt_breaker.testing._simulator import strict_nonces

__all__ = ["PLAIN_KEY", "api", "exchange_config", "make_exchange", "plain_exchange", "until"]

# A second key for plain ccxt beside a guarded exchange: nonces and order books stay apart.
PLAIN_KEY = "plain-ccxt-key"


def api(section: str) -> Any:
    """The ``api`` argument of ``fetch2`` for a section, as this ccxt spells it.

    ccxt 4.5.0 passes a string ('public'); later releases pass a list (['public']).
    """
    default = inspect.signature(ccxt.async_support.kraken.sign).parameters["api"].default
    return [section] if isinstance(default, list) else section


def exchange_config(
    sim: KrakenSimulator, clock: FakeClock | None = None, **breaker: Any
) -> dict[str, Any]:
    """A ccxt config pointed at ``sim``, with ccxt's rate limiter off and these breaker
    options (``clock`` becomes the breakers' clock)."""
    if clock is not None:
        breaker["clock"] = clock
    return {
        **sim.ccxt_config(),
        "enableRateLimit": False,
        "timeout": 2000,
        "timeout_on_exit": 0,  # ccxt sleeps this long in close()
        "options": {"circuitBreaker": breaker},
    }


def make_exchange(
    sim: KrakenSimulator, clock: FakeClock | None = None, *, cls: Any = None, **breaker: Any
) -> Any:
    """``ccxt_breaker.kraken`` (or ``cls``) pointed at ``sim``, with strictly rising nonces."""
    exchange = (cls or ccxt_breaker.kraken)(exchange_config(sim, clock, **breaker))
    strict_nonces(exchange)
    return exchange


def plain_exchange(sim: KrakenSimulator, **config: Any) -> Any:
    """Plain ``ccxt.async_support.kraken`` on the simulator's second key (``PLAIN_KEY``)."""
    base = exchange_config(sim)
    base.update(sim.ccxt_config(PLAIN_KEY), options={}, **config)
    exchange = ccxt.async_support.kraken(base)
    strict_nonces(exchange)
    return exchange


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait, in real time, until ``condition()`` holds (a request reached the server)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.002)
