"""Turn breakers on in an existing bot from its config, without touching its ccxt calls.

``ccxt_breaker.install()`` runs once at start-up; the bot keeps building plain
``ccxt.async_support.kraken`` from a config file, which now carries the flag.  Kraken then
answers an order with ``EOrder:Rate limit exceeded``: a limit the exchange names, which
opens the trading circuit at its first occurrence, whatever ``failureThreshold`` says (the
default, 5, here).  The breaker's warning lands in the bot's own log.
Runs offline against the embedded Kraken simulator: ``python examples/existing_bot_flag.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import ccxt.async_support

import ccxt_breaker
from ccxt_breaker.testing import Fault, KrakenSimulator

# What a bot's JSON config (e.g. freqtrade's "ccxt_async_config") would hold; every
# setting left out keeps its default (failureThreshold: 5 failures in a row).
BOT_CONFIG = json.loads("""
{
  "options": {
    "circuitBreaker": {"resetTimeout": 1000}
  }
}
""")


async def existing_bot(config: dict[str, object]) -> None:
    """Stands for the bot: it knows nothing about ccxt_breaker."""
    exchange = ccxt.async_support.kraken(config)
    try:
        for _ in range(3):
            try:
                await exchange.create_order("BTC/USD", "limit", "buy", 0.001, 20_000)
            except ccxt.NetworkError as e:  # CircuitOpenError is one, too
                print(f"order failed: {type(e).__name__}: {str(e)[:90]}")
        states = {g: b.state.value for g, b in exchange.circuit_breakers.items()}
        print("breaker states:", states)
    finally:
        await exchange.close()


async def main() -> None:
    # the bot's own logging, which the breakers' transitions join
    logging.basicConfig(stream=sys.stdout, format="log: %(levelname)s %(name)s: %(message)s")
    ccxt_breaker.install()  # once, at start-up
    async with KrakenSimulator() as sim:
        sim.faults.add(Fault.kraken_error("EOrder:Rate limit exceeded"), endpoint="AddOrder")
        # rateLimit: the simulator is fast; keep ccxt's default against Kraken
        await existing_bot({**sim.ccxt_config(), "rateLimit": 50, **BOT_CONFIG})
        print("AddOrder requests that reached Kraken:", sim.count(endpoint="AddOrder"))


if __name__ == "__main__":
    asyncio.run(main())
