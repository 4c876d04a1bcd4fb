"""Secrets: across the fault matrix no credential or API-Sign value reaches a log record, an
event, a snapshot or an exception string of the package."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import ccxt
import pytest
from aiohttp import web

import ccxt_breaker

from ..support import Backend, FakeClock, Reply, api, exchange_config

API_KEY = "KEY-zX9q-Leak-Canary-7f1c9a7e"
SECRET_BYTES = b"SECRET-canary-bytes-9d2e5b"
SECRET = base64.b64encode(SECRET_BYTES).decode()
PASSWORD = "PASSWORD-canary-x8z"

# Each echo template is filled in by the server with the API-Key and API-Sign it received.
ECHO = "{key} {sign}"


class EchoBackend(Backend):
    """The test server, recording every API-Sign it receives and able to echo credentials."""

    def __init__(self) -> None:
        super().__init__()
        self.signs: set[str] = set()
        self.echo: Reply | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sign, key = request.headers.get("API-Sign"), request.headers.get("API-Key", "")
        if sign:
            self.signs.add(sign)
        if self.echo is None:
            return await super()._handle(request)
        self.hits[request.match_info["path"]] += 1
        echo = ECHO.format(key=key, sign=sign)
        body = self.echo.body
        text = (json.dumps({"error": [e.replace(ECHO, echo) for e in body["error"]]})
                if isinstance(body, dict) else body.replace(ECHO, echo))
        return web.Response(status=self.echo.status, text=text, headers=self.echo.headers)


@pytest.fixture
async def server() -> AsyncIterator[EchoBackend]:
    backend = EchoBackend()
    await backend.start()
    yield backend
    await backend.stop()


THROTTLED_UNTIL = 1_800_001_090  # the fake clock's wall time plus 90 s

FAULTS = [
    pytest.param("Balance", Reply(503, "<html>Service Unavailable</html>"), id="503"),
    pytest.param("Balance", Reply(500, "Internal Server Error"), id="500"),
    pytest.param("Balance", Reply(520, "<html>cloudflare: web server error</html>"), id="520-html"),
    pytest.param("Balance", Reply.kraken_error("EService:Unavailable"), id="EService:Unavailable"),
    pytest.param("Balance", Reply.kraken_error("EGeneral:Temporary lockout"), id="lockout"),
    pytest.param("Balance", Reply.kraken_error("EAPI:Rate limit exceeded"), id="rate-limit"),
    pytest.param("AddOrder", Reply.kraken_error("EOrder:Rate limit exceeded"), id="order-limit"),
    pytest.param("AddOrder", Reply.kraken_error(f"EService:Throttled: {THROTTLED_UNTIL}"),
                 id="throttled"),
    pytest.param("Balance", Reply.kraken_error("EAPI:Invalid nonce"), id="invalid-nonce"),
    pytest.param("Balance", Reply.kraken_error("EAPI:Invalid key"), id="invalid-key"),
    pytest.param("Balance", Reply(429, "Too many requests", headers={"Retry-After": "60"}),
                 id="429-retry-after"),
    pytest.param("Balance", Reply(delay=0.4), id="timeout"),
    pytest.param("Balance", Reply(drop=True), id="dropped"),
    pytest.param("Balance", Reply(truncate=True), id="truncated"),
    pytest.param("Balance", Reply(200, "<html>cloudflare</html>"), id="200-html"),
]

ECHOES = [
    pytest.param(Reply(500, f"<html>upstream failed for {ECHO}</html>"), id="echo-500-html"),
    pytest.param(Reply(503, f"maintenance page for {ECHO}"), id="echo-503"),
    pytest.param(Reply.kraken_error(f"EService:Unavailable {ECHO}"), id="echo-EService"),
    pytest.param(Reply.kraken_error(f"EGeneral:Temporary lockout {ECHO}"), id="echo-lockout"),
    pytest.param(Reply.kraken_error(f"EService:Throttled: {THROTTLED_UNTIL} {ECHO}"),
                 id="echo-throttled"),
    pytest.param(Reply.kraken_error(f"EGeneral:Too many requests {ECHO}", status=429,
                                    headers={"Retry-After": "30"}), id="echo-429-json"),
    pytest.param(Reply.kraken_error(f"EGeneral:Invalid arguments {ECHO}"), id="echo-business"),
]


class Capture:
    """Everything the package says about a run: logs, events, snapshots, its exceptions."""

    def __init__(self, exchange: Any, caplog: pytest.LogCaptureFixture) -> None:
        self.exchange = exchange
        self.caplog = caplog
        self.events: list[Any] = []
        self.texts: list[str] = []
        exchange.circuit_breakers.add_listener(self.events.append)

    async def call(self, endpoint: str, *, keep_ccxt_error: bool) -> BaseException | None:
        try:
            await self.exchange.fetch2(endpoint, api("private"), "POST", {"nonce_check": 1})
        except ccxt.BaseError as exc:
            if keep_ccxt_error or isinstance(exc, ccxt_breaker.CircuitOpenError):
                self.texts += [str(exc), repr(exc), repr(exc.args)]
            if isinstance(exc, ccxt_breaker.CircuitOpenError):
                self.texts.append(repr(exc.last_error))
            return exc
        return None

    def everything(self) -> list[str]:
        formatter = logging.Formatter("%(message)s %(exc_text)s")
        registry = self.exchange.circuit_breakers
        records = [r for r in self.caplog.records if r.name == "ccxt_breaker"]
        return [
            *self.texts,
            *(formatter.format(r) for r in records),
            *(repr(e) for e in self.events),
            json.dumps(registry.snapshot()),
            repr(registry),
            *(repr(b) for b in registry.values()),
        ]


def leaks(texts: list[str], signs: set[str]) -> list[tuple[str, str]]:
    canaries = {"apiKey": API_KEY, "secret": SECRET, "secret bytes": SECRET_BYTES.decode(),
                "password": PASSWORD, **{f"API-Sign {s[:8]}": s for s in signs}}
    return [(name, text) for text in texts for name, value in canaries.items() if value in text]


def secret_config(url: str, clock: FakeClock) -> dict[str, Any]:
    config = exchange_config(url, clock, failureThreshold=1)
    config.update(apiKey=API_KEY, secret=SECRET, password=PASSWORD, timeout=200)
    return config


@pytest.mark.parametrize(("endpoint", "reply"), FAULTS)
async def test_fault_matrix_leaks_no_secret(server: EchoBackend, clock: FakeClock,
                                            caplog: pytest.LogCaptureFixture, endpoint: str,
                                            reply: Reply) -> None:
    """No failure mode puts a credential or an API-Sign value into a log record, an event, a
    snapshot or any exception string the caller sees."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = ccxt_breaker.kraken(secret_config(server.url, clock))
    capture = Capture(exchange, caplog)
    server.script(endpoint, reply)
    first = await capture.call(endpoint, keep_ccxt_error=True)
    for other in ("Balance", "AddOrder", "Withdraw"):  # the rejections, across the key's groups
        await capture.call(other, keep_ccxt_error=True)
    await exchange.close()

    assert (first is None or isinstance(first, ccxt.BaseError), len(server.signs) >= 1) == (
        True, True)
    assert leaks(capture.everything(), server.signs) == []


async def test_guarded_coroutine_errors_are_scrubbed(server: EchoBackend, clock: FakeClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """An error from a coroutine guarded with breaker.call() that quotes the credentials is
    scrubbed too, though no request headers name them."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = ccxt_breaker.kraken(secret_config(server.url, clock))
    capture = Capture(exchange, caplog)
    breaker = exchange.circuit_breakers["private"]

    async def reconnect() -> None:
        raise ccxt.ExchangeNotAvailable(f"login {API_KEY}:{SECRET}:{PASSWORD} refused")

    with pytest.raises(ccxt.ExchangeNotAvailable):
        await breaker.call(reconnect)
    await capture.call("Balance", keep_ccxt_error=False)
    await exchange.close()

    assert (breaker.state, leaks(capture.everything(), set())) == ("open", [])


@pytest.mark.parametrize("reply", ECHOES)
async def test_echoed_credentials_are_scrubbed(server: EchoBackend, clock: FakeClock,
                                               caplog: pytest.LogCaptureFixture,
                                               reply: Reply) -> None:
    """A server that echoes the API-Key and API-Sign in its error body still leaks neither
    through the package: its summaries, logs, events, snapshots and CircuitOpenError."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = ccxt_breaker.kraken(secret_config(server.url, clock))
    capture = Capture(exchange, caplog)
    server.echo = reply
    # ccxt's own exception is handed to the caller unchanged, echo included, by contract
    first = await capture.call("Balance", keep_ccxt_error=False)
    server.echo = None
    for other in ("Balance", "AddOrder", "Withdraw"):
        await capture.call(other, keep_ccxt_error=False)
    await exchange.close()

    assert (API_KEY in str(first), any(s in str(first) for s in server.signs)) == (True, True)
    assert leaks(capture.everything(), server.signs) == []
