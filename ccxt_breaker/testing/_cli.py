"""Run the simulator on its own: ``python -m ccxt_breaker simulate --port 8321``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Mapping

from ._simulator import KrakenSimulator
from ._state import TIERS

__all__ = ["main", "serve"]


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tier: str = "starter",
    rate_limits: bool = True,
    credentials: Mapping[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve a :class:`KrakenSimulator` until cancelled, announcing its URL and a ccxt config."""
    simulator = KrakenSimulator(
        host=host, port=port, tier=tier, rate_limits=rate_limits, credentials=credentials
    )
    if announce is None:
        announce = functools.partial(print, flush=True)  # a piped stdout would hold the URL
    async with simulator as sim:
        config = json.dumps(sim.ccxt_config(), indent=4)
        announce(f"Kraken simulator listening on {sim.url}")
        announce(f"exchange = ccxt.async_support.kraken({config})")
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """The ``simulate`` command line; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m ccxt_breaker simulate",
        description="Serve a fake Kraken REST API that ccxt's kraken class can talk to.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument(
        "--tier",
        choices=sorted(TIERS),
        default="starter",
        help="Kraken verification tier for the per-key counters",
    )
    parser.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="do not enforce the per-key REST and order counters",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, tier=args.tier, rate_limits=args.rate_limits))
    return 0
