"""``python -m ccxt_breaker demo --processes N --redis URL``: several bot processes on one
API key, sharing their breakers through Redis, against the embedded simulator.

Each bot is a process of its own (spawned, as separate bots are): it reads its balance,
polls a ticker and places and cancels an order at its own pace.  Part way through, the
simulator answers one balance request with ``EGeneral:Temporary lockout``: the bot that
gets it opens every keyed circuit, and through Redis so does every other bot, which then
sends nothing on the key until the lockout is over.  The demo prints each bot's
transitions as they happen and counts the keyed requests that reached Kraken while the key
was locked out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import sys
import time
import uuid
from collections import Counter
from typing import Any, TextIO

__all__ = ["run_processes_demo"]

KEYED = ("private", "trading", "funding", "earn")
ORDER = ("BTC/USD", "limit", "buy", 0.001, 40_000)
# The time an open takes to reach every bot, at most (sharedState's promise).
PROPAGATION = 0.1


def _bot(index: int, config: dict[str, Any], events: Any, stop: Any, pace: float) -> None:
    """One bot process: its loops, and its transitions sent to the parent."""
    logging.getLogger("ccxt_breaker").addHandler(logging.NullHandler())
    asyncio.run(_bot_main(index, config, events, stop, pace))


async def _bot_main(
    index: int, config: dict[str, Any], events: Any, stop: Any, pace: float
) -> None:
    import ccxt

    from .._events import StateChanged
    from .._hook import kraken

    exchange = kraken(config)
    last = 0

    def nonce() -> int:  # several processes sign with one key: microseconds, rising
        nonlocal last
        last = max(last + 1, time.time_ns() // 1000)
        return last

    exchange.nonce = nonce

    def report(event: Any) -> None:
        if isinstance(event, StateChanged):
            cause = (event.cause or {}).get("message", "")
            events.put(
                (
                    "transition",
                    index,
                    time.time(),
                    event.group,
                    event.old_state,
                    event.new_state,
                    event.reason,
                    cause,
                )
            )

    exchange.circuit_breakers.add_listener(report)
    seen: Counter[str] = Counter()
    try:
        await exchange.load_markets()
        events.put(("ready", index))
        step = 0
        while not stop.is_set():
            calls = [exchange.fetch_balance(), exchange.fetch_ticker("BTC/USD")]
            if step % 3 == index % 3:
                calls.append(exchange.create_order(*ORDER))
            for call in calls:
                try:
                    result = await call
                except ccxt.BaseError as exc:
                    seen[type(exc).__name__] += 1
                else:
                    seen["ok"] += 1
                    if isinstance(result, dict) and result.get("id"):
                        with contextlib.suppress(ccxt.BaseError):
                            await exchange.cancel_order(result["id"], ORDER[0])
            step += 1
            await asyncio.sleep(pace)
    finally:
        events.put(("summary", index, dict(seen)))
        await exchange.close()


async def run_processes_demo(
    processes: int,
    redis_url: str,
    duration: float = 20.0,
    *,
    pace: float = 0.2,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run ``processes`` bots on one key for about ``duration`` s; returns the summary."""
    from ._faults import Fault
    from ._simulator import KrakenSimulator

    out = sys.stdout if out is None else out
    lockout_at, lockout = duration * 0.3, max(1.0, duration * 0.4)
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    events, stop = context.Queue(), context.Event()
    async with KrakenSimulator(rate_limits=False) as sim:
        config = {
            **sim.ccxt_config(),
            "enableRateLimit": False,
            "timeout": 3000,
            "options": {
                "circuitBreaker": {
                    "lockoutDuration": round(lockout * 1000),
                    "resetTimeout": 1000,
                    "sharedState": {"url": redis_url, "namespace": namespace},
                }
            },
        }
        bots = [
            context.Process(target=_bot, args=(i + 1, config, events, stop, pace), daemon=True)
            for i in range(processes)
        ]
        for bot in bots:
            bot.start()
        print(
            f"{processes} bot processes on one API key, sharing breakers at {_where(redis_url)}",
            file=out,
            flush=True,
        )
        loop = asyncio.get_running_loop()
        ready, summaries = 0, dict[int, dict[str, int]]()
        transitions: list[tuple[Any, ...]] = []
        start: float | None = None
        locked: float | None = None
        try:
            while len(summaries) < processes:
                try:
                    message = await loop.run_in_executor(None, events.get, True, 0.1)
                except queue.Empty:
                    message = None
                now = time.time()
                if message is not None and message[0] == "ready":
                    ready += 1
                    if ready == processes:
                        start = now
                        print(
                            f"all {processes} bots running; a lockout comes at {lockout_at:.1f} s",
                            file=out,
                            flush=True,
                        )
                elif message is not None and message[0] == "transition":
                    _, index, at, group, old, new, reason, cause = message
                    transitions.append(message)
                    offset = at - start if start else 0.0
                    why = (
                        f" {cause}" if new == "open" and cause and "(shared)" not in reason else ""
                    )
                    print(
                        f"{offset:6.2f} s  bot {index}  {group:<8} {old} -> {new} ({reason}){why}",
                        file=out,
                        flush=True,
                    )
                elif message is not None and message[0] == "summary":
                    summaries[message[1]] = message[2]
                if start is not None and locked is None and now - start >= lockout_at:
                    locked = now
                    sim.faults.add(
                        Fault.kraken_error("EGeneral:Temporary lockout"),
                        endpoint="BalanceEx",
                        times=1,
                    )
                    print(
                        f"{now - start:6.2f} s  Kraken locks the key out "
                        "(EGeneral:Temporary lockout for the next balance request)",
                        file=out,
                        flush=True,
                    )
                if locked is not None and now - locked >= lockout * 0.9:
                    stop.set()  # before the lockout ends: every request after it is a miss
                if start is not None and now - start > duration + 10:
                    stop.set()
        finally:
            stop.set()
            for bot in bots:
                bot.join(10)
                if bot.is_alive():
                    bot.kill()
        answered = [r for r in sim.requests if r.error == "EGeneral:Temporary lockout"]
        after = [
            r for r in sim.requests if answered and r.time > answered[0].time and r.group in KEYED
        ]
        # requests already on their way when the lockout was answered cannot know of it
        late = [r for r in after if r.time - answered[0].time > PROPAGATION]
    refused = sum(s.get("CircuitOpenError", 0) for s in summaries.values())
    opened = {m[1] for m in transitions if m[5] == "open" and m[3] == "private"}
    summary = {
        "bots": processes,
        "bots_opened": len(opened),
        "locked_out": bool(answered),
        "keyed_requests_in_flight": len(after) - len(late),
        "keyed_requests_later": len(late),
        "refused_unsent": refused,
    }
    print(
        f"\nsummary: {len(opened)} of {processes} bots opened their keyed circuits. Keyed "
        f"requests that reached Kraken after the lockout: {len(after) - len(late)} within "
        f"{PROPAGATION * 1000:.0f} ms (already on their way), {len(late)} later. Calls "
        f"refused unsent: {refused}.",
        file=out,
        flush=True,
    )
    return summary


def _where(url: str) -> str:
    """The URL without a password, for the screen."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
