"""What each answer of the exchange means to the breaker, through real ccxt over loopback."""

from __future__ import annotations

import json
import logging
from typing import Any

import ccxt
import ccxt.async_support
import pytest
from aioresponses import aioresponses

import ccxt_breaker

from .support import Backend, FakeClock, Reply, exchange_config, make_exchange

HTML_520 = "<html><head><title>520: Web server is returning an unknown error</title></head></html>"

# (id, reply, what ccxt raises (None: returns), verdict)
ROWS: list[tuple[str, Reply, type[BaseException] | None, str]] = [
    ("http-500", Reply(500, "Internal Server Error"), ccxt.ExchangeNotAvailable, "failure"),
    ("http-502", Reply(502, "<html>Bad gateway</html>"), ccxt.ExchangeNotAvailable, "failure"),
    ("http-503", Reply(503, "<html>down</html>"), ccxt.ExchangeNotAvailable, "failure"),
    ("http-504", Reply(504, "Gateway Timeout"), ccxt.RequestTimeout, "failure"),
    ("cloudflare-520", Reply(520, HTML_520), ccxt.ExchangeNotAvailable, "failure"),
    ("read-timeout", Reply(delay=0.5), ccxt.RequestTimeout, "failure"),
    ("dropped", Reply(drop=True), ccxt.ExchangeNotAvailable, "failure"),
    ("truncated", Reply(truncate=True), ccxt.ExchangeError, "failure"),
    ("unavailable", Reply.kraken_error("EService:Unavailable"), ccxt.ExchangeNotAvailable,
     "failure"),
    ("busy", Reply.kraken_error("EService:Busy"), ccxt.ExchangeNotAvailable, "failure"),
    ("internal", Reply.kraken_error("EGeneral:Internal error"), ccxt.ExchangeNotAvailable,
     "failure"),
    ("deadline", Reply.kraken_error("EService:Deadline elapsed"), ccxt.ExchangeError, "failure"),
    # OnMaintenance since ccxt 4.5.90, a plain ExchangeError before
    ("post-only", Reply.kraken_error("EService:Market in post_only mode"), ccxt.BaseError,
     "failure"),
    ("html-200", Reply(200, "<html>Cloudflare</html>"), None, "failure"),
    ("empty-200", Reply(200, ""), None, "failure"),
    ("funds", Reply.kraken_error("EOrder:Insufficient funds"), ccxt.InsufficientFunds, "success"),
    ("bad-args", Reply.kraken_error("EGeneral:Invalid arguments"), ccxt.BadRequest, "success"),
    ("bad-key", Reply.kraken_error("EAPI:Invalid key"), ccxt.AuthenticationError, "success"),
    ("denied", Reply.kraken_error("EGeneral:Permission denied"), ccxt.PermissionDenied,
     "success"),
    ("unknown-order", Reply.kraken_error("EOrder:Unknown order"), ccxt.InvalidOrder, "success"),
    ("bad-symbol", Reply.kraken_error("EQuery:Unknown asset"), ccxt.BadSymbol, "success"),
    ("nonce", Reply.kraken_error("EAPI:Invalid nonce"), ccxt.InvalidNonce, "neutral"),
    ("cancel-pending", Reply.kraken_error("EOrder:Cancel pending"), ccxt.CancelPending,
     "success"),
]


async def outcome(exchange: Any, call: str) -> tuple[type[BaseException] | None, str]:
    try:
        result = await getattr(exchange, call)()
    except Exception as exc:  # the row says which
        return type(exc), str(exc)
    return None, repr(result)


def check(seen: tuple[type[BaseException] | None, str],
          expected: tuple[type[BaseException] | None, str], raises: type[BaseException] | None,
          verdict: str, breaker: ccxt_breaker.CircuitBreaker) -> None:
    if raises is None:
        assert seen[0] is None
    else:
        assert seen[0] is not None
        assert issubclass(seen[0], raises)
    assert seen == expected
    judged = {"failure": ("open", 2), "success": ("closed", 0), "neutral": ("closed", 1)}
    assert (breaker.state, breaker.snapshot()["failure_count"]) == judged[verdict]


@pytest.mark.parametrize(("reply", "raises", "verdict"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
async def test_verdict_table(backend: Backend, clock: FakeClock, reply: Reply,
                             raises: type[BaseException] | None, verdict: str) -> None:
    """Each answer gets the README's verdict, and the caller sees what plain ccxt shows."""
    config = exchange_config(backend.url, clock, failureThreshold=2)
    config["timeout"] = 300
    guarded = ccxt_breaker.kraken(config)
    plain = ccxt.async_support.kraken({**config, "options": {}})
    try:
        backend.script("Balance", Reply(503, "down"), reply, reply)
        await outcome(guarded, "privatePostBalance")  # one failure already counted
        seen = await outcome(guarded, "privatePostBalance")
        expected = await outcome(plain, "privatePostBalance")
    finally:
        await guarded.close()
        await plain.close()
    check(seen, expected, raises, verdict, guarded.circuit_breakers["private"])


MOCKABLE = [r for r in ROWS if not (r[1].delay or r[1].drop or r[1].truncate)]


@pytest.mark.parametrize(("reply", "raises", "verdict"), [r[1:] for r in MOCKABLE],
                         ids=[r[0] for r in MOCKABLE])
async def test_verdict_table_with_aioresponses(clock: FakeClock, reply: Reply,
                                               raises: type[BaseException] | None,
                                               verdict: str) -> None:
    """The verdicts hold with aiohttp mocked by aioresponses, as in a bot's own tests."""
    url = "https://kraken.test"
    config = exchange_config(url, clock, failureThreshold=2)
    guarded = ccxt_breaker.kraken(config)
    plain = ccxt.async_support.kraken({**config, "options": {}})
    body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
    with aioresponses() as mocked:
        endpoint = f"{url}/0/private/Balance"
        mocked.post(endpoint, status=503, body="down")
        for _ in range(2):
            mocked.post(endpoint, status=reply.status, body=body, headers=reply.headers)
        await outcome(guarded, "privatePostBalance")
        seen = await outcome(guarded, "privatePostBalance")
        expected = await outcome(plain, "privatePostBalance")
    await guarded.close()
    await plain.close()
    check(seen, expected, raises, verdict, guarded.circuit_breakers["private"])


async def test_raised_object_is_ccxts_own(monkeypatch: pytest.MonkeyPatch,
                                          backend: Backend) -> None:
    """The caller gets the very exception object ccxt raised, never a wrapper."""
    boom = ccxt.ExchangeNotAvailable("kraken boom")

    async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise boom

    monkeypatch.setattr(ccxt.async_support.kraken, "fetch", fetch)
    exchange = make_exchange(backend.url)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.publicGetTime()
    await exchange.close()
    assert caught.value is boom
    assert caught.value.__context__ is None


async def test_invalid_nonce_is_logged_not_counted(backend: Backend, clock: FakeClock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """An invalid nonce is neutral but logged as a warning: Kraken locks keys out for it."""
    backend.script("Balance", Reply.kraken_error("EAPI:Invalid nonce"))
    exchange = make_exchange(backend.url, clock)
    with caplog.at_level(logging.WARNING, "ccxt_breaker"), pytest.raises(ccxt.InvalidNonce):
        await exchange.privatePostBalance()
    await exchange.close()
    assert any("nonce" in r.getMessage() for r in caplog.records)
    assert exchange.circuit_breakers["private"].snapshot()["failure_count"] == 0


async def test_error_before_sending_is_neutral_and_frees_the_probe(backend: Backend,
                                                                   clock: FakeClock) -> None:
    """An error raised before a request is sent (missing credentials) neither counts nor
    keeps a half-open slot."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    breaker = exchange.circuit_breakers["private"]
    breaker.trip(1.0, {"type": "x", "message": "y"})
    clock.advance(30)
    exchange.secret = None
    with pytest.raises(ccxt.AuthenticationError):
        await exchange.privatePostBalance()
    assert (breaker.state, breaker.snapshot()["half_open_in_flight"]) == ("half_open", 0)
    assert backend.hits["Balance"] == 0
    await exchange.close()


async def test_closed_by_user_is_neutral(monkeypatch: pytest.MonkeyPatch, backend: Backend,
                                        clock: FakeClock) -> None:
    """ExchangeClosedByUser (ccxt raises it for a call after close()) is not counted."""
    async def closed(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ccxt.ExchangeClosedByUser("kraken instance was closed by the user")

    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    monkeypatch.setattr(ccxt.async_support.kraken, "fetch", closed)
    with pytest.raises(ccxt.ExchangeClosedByUser):
        await exchange.publicGetTime()
    await exchange.close()
    snap = exchange.circuit_breakers["public"].snapshot()
    assert (snap["state"], snap["failures"], snap["failure_count"]) == ("closed", 0, 0)


async def test_zendesk_html_is_not_a_failure(backend: Backend, clock: FakeClock) -> None:
    """zendesk articles are HTML by design, so an HTML answer there is a success."""
    exchange = make_exchange(backend.url, clock, failureThreshold=1)
    exchange.urls["api"]["zendesk"] = backend.url + "/0/zendesk"
    backend.script("360000292886", Reply(200, "<html>fees</html>"))
    await exchange.zendeskGet360000292886()
    await exchange.close()
    assert exchange.circuit_breakers["public"].state == "closed"
