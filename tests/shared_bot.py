"""A bot process for the multi-process tests: builds an exchange on the simulator with
shared state and runs the commands its parent sends down a pipe.

Started with ``multiprocessing``'s spawn: a fresh interpreter, as a second bot is.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Bot", "run"]


def run(conn: Connection) -> None:
    asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    import ccxt_breaker

    loop = asyncio.get_running_loop()
    exchange: Any = None
    events: list[tuple[float, str, str, str]] = []
    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            if exchange is not None:
                await exchange.close()
            conn.send("stopped")
            return
        if command == "build":
            if exchange is not None:
                await exchange.close()
            exchange = ccxt_breaker.kraken(args[0])
            last = 0

            def nonce() -> int:  # several processes sign with one key: microseconds
                nonlocal last
                last = max(last + 1, time.time_ns() // 1000)
                return last

            exchange.nonce = nonce
            events.clear()

            def record(event: Any) -> None:
                if isinstance(event, ccxt_breaker.StateChanged):
                    events.append((time.time(), event.group, event.old_state, event.new_state))

            exchange.circuit_breakers.add_listener(record)
            await exchange.load_markets()
            result: Any = "built"
        elif command == "call":
            result = await _outcome(getattr(exchange, args[0])(*args[1]))
        elif command == "burst":
            method, call_args, n = args
            calls = [getattr(exchange, method)(*call_args) for _ in range(n)]
            result = dict(Counter(await asyncio.gather(*(_outcome(c) for c in calls))))
        elif command == "state":
            result = exchange.circuit_breakers[args[0]].state.value
        elif command == "force_open":
            wall = time.time()
            exchange.circuit_breakers[args[0]].force_open()
            result = wall
        elif command == "reset":
            exchange.circuit_breakers[args[0]].reset()
            result = time.time()
        elif command == "wait":
            group, state, seconds = args
            breaker = exchange.circuit_breakers[group]
            for _ in range(int(seconds * 1000)):  # at least `seconds`
                if breaker.state == state:
                    break
                await asyncio.sleep(0.001)
            moved = [t for t, g, _, new in events if g == group and new == state]
            result = moved[-1] if breaker.state == state and moved else None
        else:
            result = f"unknown command {command!r}"
        conn.send(result)


async def _outcome(call: Any) -> str:
    try:
        await call
    except Exception as e:
        return type(e).__name__
    return "ok"


class Bot:
    """The parent's side: ``await bot.ask("call", "fetch_balance", [])``."""

    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=run, args=(child,), daemon=True)
        self.process.start()

    async def ask(self, *command: Any) -> Any:
        self.conn.send(command)
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
                self.conn.recv()
            except (EOFError, OSError):
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
