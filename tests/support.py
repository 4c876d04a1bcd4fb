"""Shared test parts: a fake clock, a scriptable Kraken-shaped server, an aioresponses shim."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import aiohttp
import aioresponses.core
from aiohttp import web

import ccxt_breaker
from ccxt_breaker.testing import FakeClock

__all__ = ["API_KEY", "OK", "SECRET", "Backend", "FakeClock", "Reply", "api",
           "exchange_config", "make_exchange"]

API_KEY = "test-key-Zq8vK2"
SECRET = base64.b64encode(b"test-secret-for-hmac-9fX3").decode()


def api(section: str) -> Any:
    """The ``api`` argument of ``fetch2`` for a section, as this ccxt spells it.

    ccxt 4.5.0 passes a string ('public'); later releases pass a list (['public']).
    """
    import inspect

    import ccxt.async_support

    default = inspect.signature(ccxt.async_support.kraken.sign).parameters["api"].default
    return [section] if isinstance(default, list) else section


class _ShimResponse(aiohttp.ClientResponse):
    # aioresponses 0.7.9 builds ClientResponse without aiohttp 3.14's stream_writer
    # (upstream aioresponses#289); a stub writer is all it needs.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", mock.Mock(output_size=0))
        super().__init__(*args, **kwargs)


aioresponses.core.ClientResponse = _ShimResponse  # type: ignore[misc]


@dataclass
class Reply:
    """One scripted answer: a status and body, or a delay, or a dropped connection."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"error": [], "result": {}})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    truncate: bool = False  # promise more bytes than are sent, then close

    @classmethod
    def kraken_error(cls, *errors: str, status: int = 200, **kw: Any) -> Reply:
        return cls(status=status, body={"error": list(errors)}, **kw)


OK = Reply()


class Backend:
    """A real aiohttp server on 127.0.0.1 that answers Kraken-shaped JSON.

    ``script(path, *replies)`` queues answers for an endpoint; once a queue is empty the
    endpoint answers ``{"error": [], "result": {}}``.  ``hits`` counts requests per path.
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.queues: dict[str, deque[Reply]] = defaultdict(deque)
        self.default: dict[str, Reply] = {}
        self.gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, path: str, *replies: Reply) -> None:
        self.queues[path].extend(replies)

    def always(self, path: str, reply: Reply) -> None:
        self.default[path] = reply

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.hits[path] += 1
        queue = self.queues.get(path)
        reply = queue.popleft() if queue else self.default.get(path, OK)
        if self.gate is not None:
            await self.gate.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        if reply.truncate:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.content_length = len(body) + 100
            await response.prepare(request)
            await response.write(body.encode())
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(status=reply.status, text=body, headers=reply.headers)

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/0/{section}/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def exchange_config(url: str, clock: FakeClock | None = None, **breaker: Any) -> dict[str, Any]:
    """A ccxt config pointed at ``url`` with fake credentials and breaker options."""
    if clock is not None:
        breaker["clock"] = clock
    return {
        "apiKey": API_KEY,
        "secret": SECRET,
        "enableRateLimit": False,
        "timeout": 2000,
        "timeout_on_exit": 0,  # ccxt sleeps this long in close()
        "urls": {"api": {"public": url, "private": url}},
        "options": {"circuitBreaker": breaker},
    }


def make_exchange(url: str, clock: FakeClock | None = None, **breaker: Any) -> ccxt_breaker.kraken:
    return ccxt_breaker.kraken(exchange_config(url, clock, **breaker))
