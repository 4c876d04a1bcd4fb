"""Serve /metrics, /status and the dashboard beside a running bot.

Runs offline: a small bot trades against the embedded Kraken simulator, which breaks now
and then (a private-API outage, a trading rate limit, Cloudflare errors on public answers),
while ``status_app`` shows its breakers::

    python examples/metrics_server.py                 # until Ctrl-C; open http://127.0.0.1:8000/
    python examples/metrics_server.py --duration 5    # exits by itself after 5 s

``/status`` is JSON, ``/metrics`` Prometheus text (with ``ccxt-breaker[prometheus]``), and
``/`` the dashboard. In a bot of your own, only ``serve()`` matters: the app runs on the
bot's own event loop, beside its exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import ccxt
from aiohttp import web

import ccxt_breaker
from ccxt_breaker.testing import Fault, KrakenSimulator
from ccxt_breaker.web import status_app

ORDER = ("BTC/USD", "limit", "buy", 0.001, 40_000)  # far below the market: it rests


async def serve(exchange: Any, host: str, port: int) -> web.AppRunner:
    """Serve ``status_app(exchange)`` on ``host:port`` from the running event loop, the
    bot's; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(status_app(exchange))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def bot(exchange: Any) -> None:
    """Read a ticker and the balance, place an order and cancel it; again and again."""

    async def trade() -> None:
        order = await exchange.create_order(*ORDER)
        await exchange.cancel_order(order["id"], ORDER[0])

    steps: list[Callable[[], Any]] = [
        lambda: exchange.fetch_ticker("BTC/USD"),
        exchange.fetch_balance,
        trade,
    ]
    while True:
        for step in steps:
            try:
                await step()
            except ccxt_breaker.CircuitOpenError:
                pass  # refused, nothing was sent: the next round tries again
            except ccxt.NetworkError:
                pass  # sent, and Kraken failed: the breaker counted it
        await asyncio.sleep(0.1)


async def break_kraken(sim: KrakenSimulator, every: float) -> None:
    """A fault every 0.4 s, all over again every ``every`` seconds."""
    script: list[tuple[str, Callable[[], object]]] = [
        (
            "private API unavailable for 1 s",
            lambda: sim.faults.add(
                Fault.kraken_error("EService:Unavailable"), group="private", seconds=1
            ),
        ),
        (
            "trading rate limit, Retry-After 1 s",
            lambda: sim.faults.add(
                Fault.too_many_requests(1, error="EOrder:Rate limit exceeded"),
                endpoint="AddOrder",
                times=1,
            ),
        ),
        (
            "Cloudflare 520 on public answers",
            lambda: sim.faults.add(Fault.http(520), group="public", times=3),
        ),
    ]
    while True:
        for what, add in script:
            await asyncio.sleep(0.4)
            print(f"fault: {what}", flush=True)
            add()
        await asyncio.sleep(every - 0.4 * len(script))


def on_event(event: ccxt_breaker.Event) -> None:
    if isinstance(event, ccxt_breaker.StateChanged):
        print(f"event: {event.group} {event.old_state} -> {event.new_state} ({event.reason})")


async def main(host: str, port: int, duration: float | None) -> int:
    async with KrakenSimulator() as sim:
        exchange = ccxt_breaker.kraken(
            {
                **sim.ccxt_config(),
                "rateLimit": 50,  # the simulator is fast; keep ccxt's default against Kraken
                "options": {
                    "circuitBreaker": {
                        "name": "example-bot",
                        "failureThreshold": 3,
                        "resetTimeout": 1000,
                    }
                },
            }
        )
        exchange.circuit_breakers.add_listener(on_event)
        try:
            runner = await serve(exchange, host, port)
        except OSError as e:  # the port is taken
            print(f"cannot serve on {host}:{port}: {e.strerror}", file=sys.stderr)
            await exchange.close()
            return 1
        url = "http://{}:{}".format(*runner.addresses[0][:2])
        print(f"Dashboard on {url}/ (JSON on {url}/status, Prometheus text on {url}/metrics)")
        print("Ctrl-C stops it" if duration is None else f"stopping in {duration:g} s", flush=True)
        tasks = [asyncio.create_task(bot(exchange)), asyncio.create_task(break_kraken(sim, 20))]
        try:
            if duration is None:
                await asyncio.Event().wait()  # forever
            else:
                await asyncio.sleep(duration)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            await exchange.close()
        states = ", ".join(f"{g} {b.state.value}" for g, b in exchange.circuit_breakers.items())
        print(f"final: {states}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="keep it local (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    parser.add_argument("--duration", type=float, help="stop after SECONDS (default: never)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.host, args.port, args.duration)))
