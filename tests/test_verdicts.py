"""What each answer of the exchange means to the breaker, through real ccxt: against the
simulator over loopback, and with aiohttp mocked by aioresponses, beside plain ccxt."""

from __future__ import annotations

import collections
import email.utils
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import aiohttp
import aioresponses.core
import ccxt
import ccxt.async_support
import pytest
from aioresponses import aioresponses as Aioresponses  # the class, not the module

import ccxt_breaker
from ccxt_breaker._errors import Verdict
from ccxt_breaker._kraken import MAX_NAMED_WAIT
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from .support import make_exchange, plain_exchange

FAILURE, SUCCESS, NEUTRAL = Verdict.FAILURE, Verdict.SUCCESS, Verdict.NEUTRAL
TIMEOUT_MS = 300  # ccxt's timeout in the table; the latency row lasts well beyond it
RESET = 30.0  # the default resetTimeout, seconds: the normal open time of a first opening
WALL = FakeClock().time()  # the wall time every test starts at
DAY = 86_400.0
OUTAGE_MARKERS = [
    "EService:Throttled",
    "EService:Deadline elapsed",
    "EService:Market in post_only mode",
    "EService:Market in cancel_only mode",
]

# (id, what the simulator answers, what ccxt raises (None: returns), verdict)
ROWS: list[tuple[str, Fault, type[BaseException] | None, Verdict]] = [
    ("http-500", Fault.http(500), ccxt.ExchangeNotAvailable, FAILURE),
    ("http-502", Fault.http(502), ccxt.ExchangeNotAvailable, FAILURE),
    ("http-503", Fault.http(503), ccxt.ExchangeNotAvailable, FAILURE),
    ("http-504", Fault.http(504), ccxt.RequestTimeout, FAILURE),
    ("cloudflare-520", Fault.http(520), ccxt.ExchangeNotAvailable, FAILURE),
    # ccxt 4.5.90 raises RateLimitExceeded for HTTP 429; both it and DDoSProtection are
    # NetworkErrors
    ("http-429", Fault.too_many_requests(None), ccxt.NetworkError, FAILURE),
    ("read-timeout", Fault.latency(0.5), ccxt.RequestTimeout, FAILURE),
    ("dropped", Fault.disconnect(), ccxt.ExchangeNotAvailable, FAILURE),
    ("truncated", Fault.truncated(), ccxt.ExchangeError, FAILURE),
    ("unavailable", Fault.kraken_error("EService:Unavailable"), ccxt.ExchangeNotAvailable, FAILURE),
    ("busy", Fault.kraken_error("EService:Busy"), ccxt.ExchangeNotAvailable, FAILURE),
    ("internal", Fault.kraken_error("EGeneral:Internal error"), ccxt.ExchangeNotAvailable, FAILURE),
    ("too-many", Fault.kraken_error("EGeneral:Too many requests"), ccxt.DDoSProtection, FAILURE),
    # the outage markers: ccxt leaves the first two plain ExchangeErrors, and the market
    # modes too before 4.5.90 (OnMaintenance since); the hook judges them by their message
    ("throttled", Fault.kraken_error("EService:Throttled"), ccxt.ExchangeError, FAILURE),
    ("deadline", Fault.kraken_error("EService:Deadline elapsed"), ccxt.ExchangeError, FAILURE),
    ("post-only", Fault.kraken_error("EService:Market in post_only mode"), ccxt.BaseError, FAILURE),
    (
        "cancel-only",
        Fault.kraken_error("EService:Market in cancel_only mode"),
        ccxt.BaseError,
        FAILURE,
    ),
    # a JSON error ccxt does not map is a plain ExchangeError; under a 5xx or 429 status the
    # exchange is failing all the same
    (
        "unmapped-503",
        Fault.kraken_error("EGeneral:Upstream failure", status=503),
        ccxt.ExchangeError,
        FAILURE,
    ),
    (
        "unmapped-429",
        Fault.kraken_error("EGeneral:Upstream busy", status=429),
        ccxt.ExchangeError,
        FAILURE,
    ),
    ("html-200", Fault.html(), None, FAILURE),
    ("empty-200", Fault.empty(), None, FAILURE),
    ("funds", Fault.kraken_error("EOrder:Insufficient funds"), ccxt.InsufficientFunds, SUCCESS),
    ("bad-args", Fault.kraken_error("EGeneral:Invalid arguments"), ccxt.BadRequest, SUCCESS),
    ("bad-key", Fault.kraken_error("EAPI:Invalid key"), ccxt.AuthenticationError, SUCCESS),
    ("denied", Fault.kraken_error("EGeneral:Permission denied"), ccxt.PermissionDenied, SUCCESS),
    ("unknown-order", Fault.kraken_error("EOrder:Unknown order"), ccxt.InvalidOrder, SUCCESS),
    ("bad-symbol", Fault.kraken_error("EQuery:Unknown asset"), ccxt.BadSymbol, SUCCESS),
    ("cancel-pending", Fault.kraken_error("EOrder:Cancel pending"), ccxt.CancelPending, SUCCESS),
    ("nonce", Fault.kraken_error("EAPI:Invalid nonce"), ccxt.InvalidNonce, NEUTRAL),
]
TABLE = [pytest.param(*row[1:], id=row[0]) for row in ROWS]

# After a first failure and then the row's answer, with failureThreshold 2:
# (state, failure_count) by verdict.
JUDGED = {FAILURE: ("open", 2), SUCCESS: ("closed", 0), NEUTRAL: ("closed", 1)}

Outcome = tuple[type[BaseException] | None, str]


async def outcome(exchange: Any, call: str = "privatePostBalance") -> Outcome:
    try:
        result = await getattr(exchange, call)()
    except Exception as exc:  # the row says which
        return type(exc), str(exc)
    return None, repr(result)


def check(
    seen: Outcome,
    expected: Outcome,
    raises: type[BaseException] | None,
    verdict: Verdict,
    breaker: ccxt_breaker.CircuitBreaker,
) -> None:
    """The caller saw what plain ccxt shows, of the row's kind, and the breaker judged it."""
    assert seen == expected
    kind = seen[0]
    assert (kind is None, kind is not None and issubclass(kind, raises or ())) == (
        raises is None,
        raises is not None,
    )
    snapshot = breaker.snapshot()
    assert (snapshot["state"], snapshot["failure_count"]) == JUDGED[verdict]


@pytest.mark.parametrize(("fault", "raises", "verdict"), TABLE)
async def test_verdict_table(
    sim: KrakenSimulator,
    clock: FakeClock,
    fault: Fault,
    raises: type[BaseException] | None,
    verdict: Verdict,
) -> None:
    """Each answer gets the README's verdict, and the caller sees what plain ccxt shows."""
    guarded = make_exchange(sim, clock, failureThreshold=2)
    plain = plain_exchange(sim, timeout=TIMEOUT_MS)
    guarded.timeout = TIMEOUT_MS
    sim.faults.add(Fault.http(503), endpoint="Balance", times=1)
    sim.faults.add(fault, endpoint="Balance", times=2)  # the guarded call, then plain ccxt
    try:
        await outcome(guarded)  # one failure already counted
        seen = await outcome(guarded)
        expected = await outcome(plain)
    finally:
        await guarded.close()
        await plain.close()
    check(seen, expected, raises, verdict, guarded.circuit_breakers["private"])


@pytest.mark.parametrize("marker", OUTAGE_MARKERS)
async def test_outage_marker_fails_when_ccxt_calls_it_a_plain_exchange_error(
    sim: KrakenSimulator, clock: FakeClock, marker: str
) -> None:
    """An outage marker is a failure even where ccxt raises a bare ExchangeError for it."""
    # as ccxt before 4.5.90 does for the market modes: the hook judges the message
    exchange = make_exchange(sim, clock, failureThreshold=1)
    exchange.exceptions = {
        kind: {text: cls for text, cls in table.items() if text not in marker}
        for kind, table in exchange.exceptions.items()
    }
    sim.faults.add(Fault.kraken_error(marker), endpoint="Balance", times=1)
    seen = await outcome(exchange)
    await exchange.close()
    breaker = exchange.circuit_breakers["private"]
    assert (seen[0], breaker.state, breaker.last_error) == (
        ccxt.ExchangeError,
        "open",
        {"type": "ExchangeError", "message": f'kraken {{"error": ["{marker}"]}}'},
    )


# --- the same table with aiohttp mocked by aioresponses, as in a bot's own tests ----------


class _ShimResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds aiohttp's ClientResponse without the ``stream_writer``
    that aiohttp 3.14 requires (upstream aioresponses#289); a stub writer is all it needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", mock.Mock(output_size=0))
        super().__init__(*args, **kwargs)


def _needs_shim() -> bool:
    writer = inspect.signature(aiohttp.ClientResponse.__init__).parameters.get("stream_writer")
    return writer is not None and writer.default is inspect.Parameter.empty


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aioresponses]:
    """aioresponses, shimmed for this test only.

    The shim is installed here, through monkeypatch, rather than at import: patching
    aioresponses for the whole session would hide from every other test (and from a
    bot's own suite) whether aioresponses works unpatched, and it is undone once the
    test ends.
    """
    if _needs_shim():
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _ShimResponse)
    with Aioresponses() as mocked:
        yield mocked


def mocked_reply(fault: Fault) -> dict[str, Any]:
    """What aioresponses must answer to play ``fault`` (a fresh exception each time)."""
    if fault.kind == "latency":
        return {"timeout": True}
    if fault.kind == "disconnect":
        return {"exception": aiohttp.ServerDisconnectedError()}
    if fault.kind == "truncated":
        return {"exception": aiohttp.ClientPayloadError("Response payload is not completed")}
    return {
        "status": fault.status,
        "body": fault.body,
        "content_type": fault.content_type,
        "headers": dict(fault.headers),
    }


@pytest.mark.parametrize(("fault", "raises", "verdict"), TABLE)
async def test_verdict_table_with_aioresponses(
    mocked: Aioresponses,
    sim: KrakenSimulator,
    clock: FakeClock,
    fault: Fault,
    raises: type[BaseException] | None,
    verdict: Verdict,
) -> None:
    """The verdicts hold with aiohttp mocked by aioresponses, as in a bot's own tests."""
    guarded = make_exchange(sim, clock, failureThreshold=2)
    plain = plain_exchange(sim)
    url = f"{sim.url}/0/private/Balance"
    mocked.post(url, **mocked_reply(Fault.http(503)))
    for _ in range(2):  # the guarded call, then plain ccxt
        mocked.post(url, **mocked_reply(fault))
    try:
        await outcome(guarded)
        seen = await outcome(guarded)
        expected = await outcome(plain)
    finally:
        await guarded.close()
        await plain.close()
    assert sim.count() == 0  # aioresponses answered every request
    check(seen, expected, raises, verdict, guarded.circuit_breakers["private"])


# --- single behaviours ------------------------------------------------------------------


async def test_raised_object_is_ccxts_own(
    monkeypatch: pytest.MonkeyPatch, sim: KrakenSimulator
) -> None:
    """The caller gets the very exception object ccxt raised, never a wrapper."""
    boom = ccxt.ExchangeNotAvailable("kraken boom")

    async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise boom

    monkeypatch.setattr(ccxt.async_support.kraken, "fetch", fetch)
    exchange = make_exchange(sim)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.publicGetTime()
    await exchange.close()
    assert (caught.value, caught.value.__context__) == (boom, None)


async def test_invalid_nonce_is_logged_not_counted(
    sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid nonce is neutral but logged as a warning: Kraken locks keys out for it."""
    sim.faults.add(Fault.kraken_error("EAPI:Invalid nonce"), endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock)
    with caplog.at_level(logging.WARNING, "ccxt_breaker"), pytest.raises(ccxt.InvalidNonce):
        await exchange.privatePostBalance()
    await exchange.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (len(warned), "invalid nonce" in warned[0]) == (1, True)
    assert exchange.circuit_breakers["private"].snapshot()["failure_count"] == 0


async def test_closed_by_user_is_neutral(
    monkeypatch: pytest.MonkeyPatch, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """ExchangeClosedByUser (ccxt raises it for a call after close()) is not counted."""

    async def closed(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ccxt.ExchangeClosedByUser("kraken instance was closed by the user")

    exchange = make_exchange(sim, clock, failureThreshold=1)
    monkeypatch.setattr(ccxt.async_support.kraken, "fetch", closed)
    with pytest.raises(ccxt.ExchangeClosedByUser):
        await exchange.publicGetTime()
    await exchange.close()
    snap = exchange.circuit_breakers["public"].snapshot()
    assert (snap["state"], snap["failures"], snap["failure_count"]) == ("closed", 0, 0)


async def test_zendesk_html_is_not_a_failure(sim: KrakenSimulator, clock: FakeClock) -> None:
    """zendesk articles are HTML by design, so an HTML answer there is a success."""
    exchange = make_exchange(sim, clock, failureThreshold=1)
    sim.faults.add(Fault.html(), endpoint="360000292886", times=1)
    article = await exchange.zendeskGet360000292886()
    await exchange.close()
    assert (article.startswith("<!DOCTYPE html>"), sim.count("360000292886")) == (True, 1)
    assert exchange.circuit_breakers["public"].snapshot()["failures"] == 0


# --- edges ------------------------------------------------------------------------------


class OrderedKraken(ccxt_breaker.kraken):  # type: ignore[misc]
    """A bot's subclass whose parse_json keeps key order: it returns a dict subclass."""

    def parse_json(self, http_response: Any) -> Any:
        parsed = super().parse_json(http_response)
        return collections.OrderedDict(parsed) if isinstance(parsed, dict) else parsed


async def test_dict_subclass_from_parse_json_is_a_success(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """A parse_json that returns a dict subclass leaves healthy answers successes."""
    # was case 10 of the issue: every healthy answer became a failure
    exchange = make_exchange(sim, clock, cls=OrderedKraken, failureThreshold=1)
    answers = [await exchange.publicGetTime() for _ in range(3)]
    await exchange.close()
    snapshot = exchange.circuit_breakers["public"].snapshot()
    assert [type(a) for a in answers] == [collections.OrderedDict] * 3
    assert (snapshot["state"], snapshot["calls"], snapshot["failures"]) == ("closed", 3, 0)


@pytest.mark.parametrize("retry_after", ["inf", "1e400", "nan", "-inf"])
async def test_non_finite_retry_after_is_ignored(
    sim: KrakenSimulator, clock: FakeClock, retry_after: str
) -> None:
    """A non-finite Retry-After is ignored: the normal open time, and snapshots stay strict JSON."""
    sim.faults.add(Fault.too_many_requests(retry_after), endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock)
    with pytest.raises(ccxt.NetworkError):  # ccxt 4.5.90: RateLimitExceeded
        await exchange.privatePostBalance()
    breaker = exchange.circuit_breakers["private"]
    opened = (breaker.state, breaker.retry_after)
    json.dumps(exchange.circuit_breakers.snapshot(), allow_nan=False)
    clock.advance(RESET)
    await exchange.privatePostBalance()  # the probe goes once the normal open time is over
    await exchange.close()
    assert opened == ("open", RESET)
    assert sim.count("Balance") == 2


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(WALL + seconds_from_now, usegmt=True)


# Every way the exchange names a wait, each naming ten days.
FAR_WAITS = [
    pytest.param(Fault.too_many_requests(10 * DAY), id="retry-after-seconds"),
    pytest.param(Fault.too_many_requests(_http_date(10 * DAY)), id="retry-after-http-date"),
    pytest.param(Fault.throttled(WALL + 10 * DAY), id="throttled-until"),
    pytest.param(
        Fault.kraken_error("EGeneral:Temporary lockout", headers={"Retry-After": str(10 * DAY)}),
        id="lockout-retry-after",
    ),
]


@pytest.mark.parametrize("fault", FAR_WAITS)
async def test_named_wait_is_capped(sim: KrakenSimulator, clock: FakeClock, fault: Fault) -> None:
    """Any wait the exchange names keeps the circuit open for at most MAX_NAMED_WAIT."""
    sim.faults.add(fault, endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock)
    with pytest.raises(ccxt.BaseError):
        await exchange.privatePostBalance()
    await exchange.close()
    breaker = exchange.circuit_breakers["private"]
    assert (breaker.state, breaker.retry_after) == ("open", MAX_NAMED_WAIT)


async def test_too_many_requests_with_http_200_opens_the_callers_group(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """EGeneral:Too many requests with HTTP 200 opens the caller's group at once, and no other."""
    sim.faults.add(Fault.kraken_error("EGeneral:Too many requests"), endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock, failureThreshold=5)
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.privatePostBalance()
    await exchange.close()
    states = {group: b.state for group, b in exchange.circuit_breakers.items()}
    assert states == {
        "public": "closed",
        "private": "open",
        "trading": "closed",
        "funding": "closed",
        "earn": "closed",
    }
    assert exchange.circuit_breakers["private"].retry_after == RESET


@pytest.mark.parametrize(
    ("throttled_for", "retry_after"), [(60, 600), (600, 60)], ids=["header-longer", "ts-longer"]
)
async def test_longer_of_retry_after_and_throttled_time_wins(
    sim: KrakenSimulator, clock: FakeClock, throttled_for: int, retry_after: int
) -> None:
    """Of Retry-After and an EService:Throttled time, the longer wait holds the circuit open."""
    message = f"EService:Throttled: {int(WALL + throttled_for)}"
    fault = Fault.kraken_error(message, status=429, headers={"Retry-After": str(retry_after)})
    sim.faults.add(fault, endpoint="Balance", times=1)
    exchange = make_exchange(sim, clock)
    with pytest.raises(ccxt.ExchangeError):
        await exchange.privatePostBalance()
    await exchange.close()
    breaker = exchange.circuit_breakers["private"]
    assert (breaker.state, breaker.retry_after) == ("open", 600)


def _forget_secret(exchange: Any) -> Callable[[], None]:
    secret, exchange.secret = exchange.secret, None

    def restore() -> None:
        exchange.secret = secret

    return restore


def _refuse_to_sign(exchange: Any) -> Callable[[], None]:
    def sign(*args: Any, **kwargs: Any) -> Any:
        raise ccxt.AuthenticationError("kraken sign() refused: no key for this sub-account")

    exchange.sign = sign  # an instance attribute, over the class's sign()
    return lambda: delattr(exchange, "sign")


def _conflicting_proxies(exchange: Any) -> Callable[[], None]:
    # ccxt's fetch raises InvalidProxySettings before it opens a connection
    exchange.httpProxy = exchange.httpsProxy = "http://127.0.0.1:9"

    def restore() -> None:
        exchange.httpProxy = exchange.httpsProxy = None

    return restore


@pytest.mark.parametrize(
    "break_before_sending",
    [_forget_secret, _refuse_to_sign, _conflicting_proxies],
    ids=["missing-secret", "sign-raises", "fetch-raises-unsent"],
)
async def test_error_before_sending_is_neutral_and_frees_the_probe(
    sim: KrakenSimulator,
    clock: FakeClock,
    break_before_sending: Callable[[Any], Callable[[], None]],
) -> None:
    """A ccxt error raised before sending is neutral and gives the half-open permit back."""
    exchange = make_exchange(sim, clock, failureThreshold=1, successThreshold=1)
    breaker = exchange.circuit_breakers["private"]
    breaker._trip(1.0, {"type": "Test", "message": "opened by the test"})
    clock.advance(RESET)
    restore = break_before_sending(exchange)
    with pytest.raises(ccxt.BaseError) as caught:
        await exchange.privatePostBalance()
    after_error = (breaker.state, breaker.retry_after, breaker.snapshot()["failures"])
    restore()
    await exchange.privatePostBalance()  # the permit is back: this probe goes and closes it
    await exchange.close()
    assert not isinstance(caught.value, ccxt_breaker.CircuitOpenError)
    assert after_error == ("half_open", 0.0, 0)
    assert (sim.count("Balance"), breaker.state) == (1, "closed")


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retry", "retry-refused"])
@pytest.mark.parametrize("fault", [Fault.http(503), Fault.disconnect()], ids=["503", "dropped"])
async def test_sent_calls_error_keeps_ccxts_context(
    sim: KrakenSimulator, clock: FakeClock, fault: Fault, retries: int
) -> None:
    """A sent call's error keeps plain ccxt's __cause__/__context__, even after a refused retry."""
    sim.faults.add(fault, endpoint="Balance")
    guarded = make_exchange(sim, clock, failureThreshold=1)
    plain = plain_exchange(sim)
    for exchange in (guarded, plain):
        exchange.options["maxRetriesOnFailure"] = retries
    errors = []
    for exchange in (guarded, plain):
        with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
            await exchange.privatePostBalance()
        await exchange.close()
        error = caught.value
        errors.append(
            (
                type(error),
                str(error),
                type(error.__cause__),
                type(error.__context__),
                error.__suppress_context__,
            )
        )
    assert errors[0] == errors[1]
    assert sim.count("Balance") == 1 + (retries + 1)  # the guarded retry was never sent
