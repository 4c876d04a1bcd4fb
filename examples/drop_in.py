"""Swap ccxt's class for ccxt_breaker's and watch a group open and recover.

Runs offline against the embedded Kraken simulator: ``python examples/drop_in.py``.
"""

from __future__ import annotations

import asyncio

import ccxt

import ccxt_breaker
from ccxt_breaker.testing import Fault, KrakenSimulator


async def main() -> None:
    async with KrakenSimulator() as sim:
        # The only change to a bot: ccxt_breaker.kraken instead of ccxt.async_support.kraken.
        exchange = ccxt_breaker.kraken(
            {
                **sim.ccxt_config(),
                "rateLimit": 50,  # the simulator is fast; keep ccxt's default against Kraken
                "options": {"circuitBreaker": {"failureThreshold": 2, "resetTimeout": 500}},
            }
        )
        sim.faults.add(Fault.kraken_error("EService:Unavailable"), group="private", times=2)
        for attempt in range(6):
            try:
                balance = await exchange.fetch_balance()
                print(f"{attempt}: USD balance {balance['USD']['free']}")
            except ccxt_breaker.CircuitOpenError as e:
                # nothing was sent: safe to retry, even an order
                wait = e.retry_after or 0.0
                print(f"{attempt}: skipped, circuit {e.group!r} open, retry in {wait:.1f}s")
                await asyncio.sleep(wait)
            except ccxt.NetworkError as e:
                print(f"{attempt}: Kraken failed: {type(e).__name__}")
            # market data is unaffected by the private outage
            ticker = await exchange.fetch_ticker("BTC/USD")
            print(f"   BTC/USD last {ticker['last']}")
        print("private is", exchange.circuit_breakers["private"].state)
        print("requests sent to BalanceEx:", sim.count(endpoint="BalanceEx"))
        await exchange.close()


if __name__ == "__main__":
    asyncio.run(main())
