"""Inspect and steer breakers: snapshots, events, group_of, force_open and reset.

Runs offline against the embedded Kraken simulator: ``python examples/inspect_state.py``.
"""

from __future__ import annotations

import asyncio
import json

import ccxt

import ccxt_breaker
from ccxt_breaker.testing import Fault, KrakenSimulator


def on_event(event: ccxt_breaker.Event) -> None:
    if isinstance(event, ccxt_breaker.StateChanged):
        print(f"event: {event.group} {event.old_state} -> {event.new_state} ({event.reason})")


async def main() -> None:
    async with KrakenSimulator() as sim:
        exchange = ccxt_breaker.kraken(
            {
                **sim.ccxt_config(),
                "rateLimit": 50,  # the simulator is fast; keep ccxt's default against Kraken
                "options": {"circuitBreaker": {"failureThreshold": 1, "resetTimeout": 300}},
            }
        )
        breakers = exchange.circuit_breakers
        breakers.add_listener(on_event)
        print("groups:", list(breakers))
        print("AddOrder is guarded by", breakers.group_of("AddOrder"))

        sim.faults.add(Fault.http(520), endpoint="Ticker", times=1)
        try:
            await exchange.fetch_ticker("BTC/USD")
        except ccxt.ExchangeNotAvailable as e:
            print("ticker failed:", type(e).__name__)
        snapshot = breakers.snapshot()["public"]
        print(
            json.dumps(
                {k: snapshot[k] for k in ("state", "failures", "retry_after", "last_error")},
                indent=2,
            )
        )

        await asyncio.sleep(0.35)  # past resetTimeout: the next call is a probe
        await exchange.fetch_ticker("BTC/USD")
        await exchange.fetch_ticker("BTC/USD")
        print("public is", breakers["public"].state)

        breakers["trading"].force_open()  # a kill switch: no order goes out until reset()
        try:
            await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
        except ccxt_breaker.CircuitOpenError as e:
            print("order refused, retry_after =", e.retry_after)
        breakers["trading"].reset()
        order = await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
        print("order placed:", order["id"] is not None)
        await exchange.close()


if __name__ == "__main__":
    asyncio.run(main())
