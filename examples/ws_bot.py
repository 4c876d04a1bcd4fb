"""A websocket bot loop that sleeps ``retry_after`` when a circuit refuses it.

Runs offline against the embedded Kraken simulator: ``python examples/ws_bot.py``.
The public socket answers its first three dials with 503; the breaker opens after
``failureThreshold`` failed dials, refuses the next calls without dialing, and the loop
sleeps until a probe may go.  A refused call returns at once, so a loop that does not
sleep on CircuitOpenError spins.
"""

from __future__ import annotations

import asyncio

import ccxt

import ccxt_breaker
import ccxt_breaker.pro
from ccxt_breaker.testing import Fault, KrakenSimulator


async def main() -> None:
    async with KrakenSimulator() as sim:
        exchange = ccxt_breaker.pro.kraken(
            {
                **sim.ccxt_config(),
                "options": {
                    "circuitBreaker": {
                        "failureThreshold": 3,
                        "resetTimeout": 1000,
                        "successThreshold": 1,
                    }
                },
            }
        )
        sim.faults.add(Fault.http(503), endpoint="connect", group="ws-public", times=3)
        turns = 0
        while True:
            turns += 1
            try:
                ticker = await exchange.watch_ticker("BTC/USD")
            except ccxt_breaker.CircuitOpenError as e:
                # nothing was dialed; sleep until a probe may go
                wait = e.retry_after if e.retry_after is not None else 1.0
                print(f"turn {turns}: circuit {e.group!r} open, sleeping {wait:.1f}s")
                await asyncio.sleep(wait)
                continue
            except ccxt.NetworkError as e:
                print(f"turn {turns}: dial failed: {type(e).__name__}")
                continue
            print(f"turn {turns}: BTC/USD last {ticker['last']}")
            break
        state = exchange.circuit_breakers["ws-public"].state.value
        print(f"ws-public is {state}; dials that reached Kraken: {sim.dials()}; turns: {turns}")
        await exchange.close()


if __name__ == "__main__":
    asyncio.run(main())
