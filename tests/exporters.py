"""What the exporters' tests (test_prometheus, test_otel) share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import ccxt

import ccxt_breaker
from ccxt_breaker import CircuitBreaker

GROUPS = ["public", "private", "trading", "funding", "earn"]
STATES = ["closed", "open", "half_open"]
OUTCOMES = ["success", "failure", "neutral", "rejected"]
PAIRS = [(old, new) for old in STATES for new in STATES]

Build = Callable[..., Any]


class krakenx(ccxt_breaker.kraken):  # a second ccxt id, as another exchange would have
    def describe(self) -> Any:
        return self.deep_extend(super().describe(), {"id": "krakenx"})


async def ok() -> str:
    return "ok"


async def down() -> None:
    raise ccxt.ExchangeNotAvailable("kraken GET https://api.kraken.com/0/public/Time 503")


async def closed_by_user() -> None:
    raise ccxt.ExchangeClosedByUser("closed")


async def run(breaker: CircuitBreaker, *calls: Callable[[], Any]) -> None:
    """Each of ``calls`` through ``breaker``; its errors (a refusal too) are swallowed."""
    for fn in calls:
        with contextlib.suppress(ccxt.BaseError):
            await breaker.call(fn)
