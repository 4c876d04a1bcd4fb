"""The embedded Kraken simulator, driven by plain (unwrapped) ccxt."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

import ccxt_breaker
from ccxt_breaker.testing import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    GROUPS,
    Fault,
    KrakenSimulator,
    serve,
)
from ccxt_breaker.testing._state import endpoint_group
from ccxt_breaker.testing.plugin import KrakenFactory

from .support import until

FAST = {"enableRateLimit": False, "timeout": 2000, "timeout_on_exit": 0}
Make = Callable[..., Any]


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make(kraken_factory: KrakenFactory) -> Make:
    """Plain ccxt kraken against the fixture's simulator, without client-side throttling."""

    def build(config: dict[str, Any] | None = None) -> Any:
        return kraken_factory({**FAST, **(config or {})}, cls=ccxt.kraken)

    return build


@asynccontextmanager
async def simulator(**kwargs: Any) -> AsyncIterator[tuple[KrakenSimulator, Make]]:
    """A simulator with custom settings (a fake clock, a tier) and a plain ccxt factory."""
    async with KrakenSimulator(**kwargs) as sim:
        factory = KrakenFactory(sim)
        try:
            yield sim, lambda config=None: factory({**FAST, **(config or {})}, cls=ccxt.kraken)
        finally:
            await factory.close_all()


# -- ccxt's unified methods work unchanged ------------------------------------------------


async def test_public_unified_methods(make: Make) -> None:
    """load_markets, tickers, books, candles, trades, time and status parse into sane values."""
    exchange = make()
    markets = await exchange.load_markets()
    assert {"BTC/USD", "ETH/USD", "ETH/BTC"} <= set(markets)
    assert markets["BTC/USD"]["id"] == "XXBTZUSD"

    ticker = await exchange.fetch_ticker("BTC/USD")
    assert (ticker["bid"], ticker["last"], ticker["ask"]) == (49999.9, 50000.0, 50000.1)

    book = await exchange.fetch_order_book("ETH/BTC", 5)
    assert len(book["asks"]) == len(book["bids"]) == 5
    assert book["bids"][0][0] < book["asks"][0][0]

    candles = await exchange.fetch_ohlcv("ETH/USD", "1h", limit=10)
    assert len(candles) == 10
    assert all(len(c) == 6 and c[2] >= c[3] for c in candles)

    trades = await exchange.fetch_trades("BTC/USD")
    assert trades
    assert {t["side"] for t in trades} == {"buy", "sell"}

    assert abs(await exchange.fetch_time() - exchange.milliseconds()) < 5000
    assert (await exchange.fetch_status())["status"] == "ok"


async def test_fetch_balance_reads_balance_ex(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """fetch_balance goes to BalanceEx and sees the default fake balances."""
    balance = await make().fetch_balance()
    assert (balance["USD"]["total"], balance["BTC"]["total"], balance["ETH"]["total"]) == (
        100000.0,
        2.0,
        20.0,
    )
    assert kraken_simulator.count("BalanceEx") == 1


async def test_limit_order_lifecycle(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """A resting limit order is open, queryable and holds funds, then cancel moves it to closed."""
    exchange = make()
    order = await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    assert (order["symbol"], order["type"], order["side"], order["price"]) == (
        "BTC/USD",
        "limit",
        "buy",
        40000.0,
    )
    assert [o["id"] for o in await exchange.fetch_open_orders()] == [order["id"]]
    assert (await exchange.fetch_order(order["id"]))["status"] == "open"
    assert (await exchange.fetch_balance())["USD"]["used"] == 400.0

    await exchange.cancel_order(order["id"])
    assert await exchange.fetch_open_orders() == []
    closed = await exchange.fetch_closed_orders()
    assert [(o["id"], o["status"]) for o in closed] == [(order["id"], "canceled")]
    assert [o.status for o in kraken_simulator.orders()] == ["canceled"]


async def test_market_order_fills_at_once(make: Make) -> None:
    """A market order closes immediately and moves the balances."""
    exchange = make()
    order = await exchange.create_order("ETH/USD", "market", "buy", 0.5)
    fetched = await exchange.fetch_order(order["id"])
    assert (fetched["status"], fetched["filled"], fetched["average"]) == ("closed", 0.5, 3000.01)
    assert (await exchange.fetch_balance())["ETH"]["total"] == 20.5


async def test_cancel_all_orders(make: Make) -> None:
    """CancelAll cancels every open order of the key."""
    exchange = make()
    for price in (100, 200, 300):
        await exchange.create_order("ETH/USD", "limit", "buy", 0.01, price)
    [result] = await exchange.cancel_all_orders()
    assert str(result["info"]["result"]["count"]) == "3"  # ccxt 4.5.0 parses numbers as text
    assert await exchange.fetch_open_orders() == []
    assert len(await exchange.fetch_closed_orders()) == 3


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (
            ("BTC/USD", "limit", "buy", 10, 40000),
            ccxt.InsufficientFunds,
            "EOrder:Insufficient funds",
        ),
        (("BTC/USD", "market", "buy", 0.00001), ccxt.InvalidOrder, "EOrder:Order minimum not met"),
        (("ETH/BTC", "market", "sell", 25), ccxt.InsufficientFunds, "EOrder:Insufficient funds"),
    ],
)
async def test_add_order_rejections(
    make: Make, args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    """AddOrder refuses orders the account cannot pay for or that are below the minimum."""
    with pytest.raises(error, match=message):
        await make().create_order(*args)


async def test_unknown_order_is_not_found(make: Make) -> None:
    """Cancelling an unknown txid answers EOrder:Unknown order, which ccxt maps to OrderNotFound."""
    with pytest.raises(ccxt.OrderNotFound):
        await make().cancel_order("OAAAAA-BBBBB-CCCCCC")


# -- authentication --------------------------------------------------------------------------


async def test_wrong_secret_fails_the_signature(make: Make) -> None:
    """A wrong secret gets Kraken's EAPI:Invalid signature (ccxt 4.5 maps it to ExchangeError)."""
    wrong = base64.b64encode(b"not the simulator's secret").decode()
    with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature"):
        await make({"secret": wrong}).fetch_balance()


async def test_unknown_key_is_an_authentication_error(make: Make) -> None:
    """An unknown API key gets EAPI:Invalid key, which ccxt raises as AuthenticationError."""
    with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
        await make({"apiKey": "somebody-else"}).fetch_balance()


async def test_stale_nonce_is_rejected(make: Make) -> None:
    """A nonce not above the key's last one gets EAPI:Invalid nonce (ccxt's InvalidNonce)."""
    ahead, behind = make(), make()
    ahead.nonce = lambda: 4_000_000_000_000
    await ahead.fetch_balance()
    with pytest.raises(ccxt.InvalidNonce):
        await behind.fetch_balance()


async def test_custom_credentials() -> None:
    """Only the configured (key, secret) pairs sign in; each key has its own orders."""
    secret = base64.b64encode(b"another secret").decode()
    async with simulator(credentials={"alice": secret, "bob": DEFAULT_SECRET}) as (sim, make):
        assert sim.ccxt_config()["apiKey"] == "alice"
        await make().create_order("BTC/USD", "limit", "buy", 0.01, 40000)
        assert await make(sim.ccxt_config("bob")).fetch_open_orders() == []
        assert len(sim.orders("alice")) == 1
        with pytest.raises(ccxt.AuthenticationError):
            await make({"apiKey": DEFAULT_API_KEY}).fetch_balance()


def test_secret_must_be_base64() -> None:
    """A secret ccxt could not decode is refused when the simulator is built."""
    with pytest.raises(ValueError, match="base64"):
        KrakenSimulator(credentials={"k": "not base64!"})


# -- rate counters ---------------------------------------------------------------------------


async def test_rest_counter_trips_and_decays() -> None:
    """The starter counter allows 15 calls, refuses the 16th, and decays at 0.33 per second."""
    clock = Clock()
    async with simulator(clock=clock) as (_, make):
        exchange = make()
        await exchange.load_markets()
        for _ in range(15):
            await exchange.fetch_open_orders()
        with pytest.raises(ccxt.DDoSProtection, match="EAPI:Rate limit exceeded"):
            await exchange.fetch_open_orders()
        clock.advance(1 / 0.33 + 0.01)
        await exchange.fetch_open_orders()
        with pytest.raises(ccxt.DDoSProtection):
            await exchange.fetch_open_orders()


@pytest.mark.parametrize(("tier", "calls"), [("starter", 15), ("intermediate", 20), ("pro", 20)])
async def test_tier_sets_counter_size(tier: str, calls: int) -> None:
    """Each tier's counter holds its documented maximum."""
    async with simulator(tier=tier, clock=Clock()) as (_, make):
        exchange = make()
        for _ in range(calls):
            await exchange.privatePostOpenOrders()
        with pytest.raises(ccxt.DDoSProtection):
            await exchange.privatePostOpenOrders()


async def test_ledgers_cost_two() -> None:
    """Ledgers and TradesHistory add 2 to the counter, so 8 of them overflow 15."""
    async with simulator(clock=Clock()) as (_, make):
        exchange = make()
        for _ in range(7):
            await exchange.privatePostLedgers()
        with pytest.raises(ccxt.DDoSProtection):
            await exchange.privatePostTradesHistory()


async def test_trading_skips_the_rest_counter() -> None:
    """AddOrder and CancelOrder still work while the REST counter is full."""
    async with simulator(clock=Clock()) as (_, make):
        exchange = make()
        await exchange.load_markets()
        for _ in range(15):
            await exchange.privatePostOpenOrders()
        order = await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
        await exchange.cancel_order(order["id"])
        with pytest.raises(ccxt.DDoSProtection, match="EAPI:Rate limit exceeded"):
            await exchange.privatePostOpenOrders()


async def test_order_counter_trips() -> None:
    """The separate trading counter answers EOrder:Rate limit exceeded after 60 starter orders."""
    async with simulator(clock=Clock()) as (_, make):
        exchange = make()
        await exchange.load_markets()
        for _ in range(60):
            await exchange.create_order("ETH/USD", "limit", "buy", 0.01, 100)
        with pytest.raises(ccxt.DDoSProtection, match="EOrder:Rate limit exceeded"):
            await exchange.create_order("ETH/USD", "limit", "buy", 0.01, 100)


async def test_rate_limits_can_be_disabled() -> None:
    """With rate_limits=False no counter ever refuses a call."""
    async with simulator(rate_limits=False, clock=Clock()) as (_, make):
        exchange = make()
        for _ in range(40):
            await exchange.privatePostOpenOrders()


# -- faults: what ccxt raises for each ------------------------------------------------------

FAULTS = [
    (Fault.http(500), ccxt.ExchangeNotAvailable),
    (Fault.http(502), ccxt.ExchangeNotAvailable),
    (Fault.http(503), ccxt.ExchangeNotAvailable),
    (Fault.http(520), ccxt.ExchangeNotAvailable),
    (Fault.http(522), ccxt.ExchangeNotAvailable),
    (Fault.http(504), ccxt.RequestTimeout),
    (Fault.kraken_error("EService:Unavailable"), ccxt.ExchangeNotAvailable),
    (Fault.kraken_error("EService:Busy"), ccxt.ExchangeNotAvailable),
    (Fault.kraken_error("EAPI:Rate limit exceeded"), ccxt.DDoSProtection),
    (Fault.kraken_error("EOrder:Rate limit exceeded"), ccxt.DDoSProtection),
    (Fault.kraken_error("EGeneral:Temporary lockout"), ccxt.DDoSProtection),
    (Fault.throttled(1_900_000_000), ccxt.ExchangeError),
    (Fault.kraken_error("EService:Deadline elapsed"), ccxt.ExchangeError),
    (Fault.kraken_error("EAPI:Invalid nonce"), ccxt.InvalidNonce),
    (Fault.kraken_error("EOrder:Insufficient funds"), ccxt.InsufficientFunds),
    (Fault.too_many_requests(5), ccxt.RateLimitExceeded),
    (Fault.too_many_requests(5, error="EGeneral:Too many requests"), ccxt.DDoSProtection),
    (Fault.disconnect(), ccxt.ExchangeNotAvailable),
    (Fault.truncated(), ccxt.ExchangeError),
]


@pytest.mark.parametrize(("fault", "error"), FAULTS, ids=lambda v: getattr(v, "kind", None))
async def test_fault_raises_what_ccxt_raises_for_kraken(
    make: Make, kraken_simulator: KrakenSimulator, fault: Fault, error: type[Exception]
) -> None:
    """Each scripted fault reaches the caller as the ccxt exception the real failure causes."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.faults.add(fault, endpoint="Ticker")
    with pytest.raises(error) as caught:
        await exchange.fetch_ticker("BTC/USD")
    assert type(caught.value) is error
    kraken_simulator.clear_faults()
    assert (await exchange.fetch_ticker("BTC/USD"))["last"] == 50000.0


async def test_aiohttp_resends_a_get_after_a_disconnect(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """aiohttp silently resends an idempotent GET once, so one dropped Ticker goes unseen."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.reset_log()
    kraken_simulator.faults.add(Fault.disconnect(), endpoint="Ticker", times=1)
    assert (await exchange.fetch_ticker("BTC/USD"))["last"] == 50000.0
    assert [r.status for r in kraken_simulator.requests] == [None, 200]


async def test_a_signed_post_is_not_resent_after_a_disconnect(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """A private POST that loses its connection fails at once with ExchangeNotAvailable."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.faults.add(Fault.disconnect(), endpoint="BalanceEx", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_balance()
    assert kraken_simulator.count("BalanceEx") == 1


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Fault.disconnect(), aiohttp.ServerDisconnectedError),
        (Fault.truncated(), aiohttp.ClientPayloadError),
    ],
)
async def test_broken_connections_keep_their_cause(
    make: Make, kraken_simulator: KrakenSimulator, fault: Fault, cause: type[Exception]
) -> None:
    """A dropped connection and a truncated body surface aiohttp's error as __cause__."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.faults.add(fault, endpoint="Ticker")
    with pytest.raises(ccxt.BaseError) as caught:
        await exchange.fetch_ticker("BTC/USD")
    assert isinstance(caught.value.__cause__, cause)


async def test_retry_after_header(kraken_simulator: KrakenSimulator) -> None:
    """A 429 fault carries Retry-After, with a text body or Kraken's JSON."""
    kraken_simulator.faults.add(Fault.too_many_requests(7), times=1)
    kraken_simulator.faults.add(Fault.too_many_requests(3, error="EAPI:Rate limit exceeded"))
    async with aiohttp.ClientSession() as session:
        url = kraken_simulator.url + "/0/public/Time"
        async with session.get(url) as first:
            assert (first.status, first.headers["Retry-After"]) == (429, "7")
            assert await first.text() == "Too Many Requests"
        async with session.get(url) as second:
            assert second.headers["Retry-After"] == "3"
            assert await second.json() == {"error": ["EAPI:Rate limit exceeded"]}


@pytest.mark.parametrize(
    ("fault", "status", "headers", "body"),
    [
        (
            Fault.http(503, headers={"Retry-After": "120", "X-Edge": "cf"}),
            503,
            {"Retry-After": "120", "X-Edge": "cf"},
            "503 Service Temporarily Unavailable",
        ),
        (Fault.http(502), 502, {}, "502 Bad Gateway"),
        (
            Fault.kraken_error(
                "EAPI:Rate limit exceeded", status=429, headers={"Retry-After": "7"}
            ),
            429,
            {"Retry-After": "7"},
            '{"error": ["EAPI:Rate limit exceeded"]}',
        ),
        (Fault.kraken_error("EService:Busy"), 200, {}, '{"error": ["EService:Busy"]}'),
    ],
    ids=["http+headers", "http", "kraken_error+status+headers", "kraken_error"],
)
async def test_faults_answer_with_their_status_and_headers(
    kraken_simulator: KrakenSimulator,
    fault: Fault,
    status: int,
    headers: dict[str, str],
    body: str,
) -> None:
    """http() and kraken_error() answer with their status, body and the headers given."""
    kraken_simulator.faults.add(fault, endpoint="Time", times=1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(kraken_simulator.url + "/0/public/Time") as response,
    ):
        text = await response.text()
        sent = {name: response.headers.get(name) for name in ("Retry-After", "X-Edge")}
    assert (response.status, {k: v for k, v in sent.items() if v is not None}) == (status, headers)
    assert body in text
    [record] = kraken_simulator.requests
    assert (record.status, record.fault) == (status, fault.kind)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (7, "7"),
        (2.0, "2"),
        (1.5, "1.5"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("soon", "soon"),
        (None, None),
    ],
)
@pytest.mark.parametrize("error", [None, "EGeneral:Too many requests"])
async def test_too_many_requests_retry_after(
    kraken_simulator: KrakenSimulator,
    retry_after: float | str | None,
    header: str | None,
    error: str | None,
) -> None:
    """too_many_requests() sends Retry-After as seconds, as text given, or not at all."""
    kraken_simulator.faults.add(Fault.too_many_requests(retry_after, error=error), times=1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(kraken_simulator.url + "/0/public/Time") as response,
    ):
        text = await response.text()
        sent = response.headers.get("Retry-After")
        content_type = response.content_type
    body = "Too Many Requests" if error is None else f'{{"error": ["{error}"]}}'
    kind = "text/plain" if error is None else "application/json"
    assert (response.status, sent, text, content_type) == (429, header, body, kind)


@pytest.mark.parametrize("fault", [Fault.html(), Fault.empty()], ids=["html", "empty"])
async def test_ok_status_without_json_passes_silently(
    make: Make, kraken_simulator: KrakenSimulator, fault: Fault
) -> None:
    """HTML or an empty body with status 200 raises no ccxt error: the raw text comes back."""
    exchange = make()
    kraken_simulator.faults.add(fault, endpoint="Ticker")
    # fetch_ticker then returns a ticker of None (ccxt 4.5.90) or hits a TypeError (4.5.0)
    assert await exchange.publicGetTicker({"pair": "XXBTZUSD"}) == fault.body


async def test_latency_beyond_timeout(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """A delay longer than ccxt's timeout raises RequestTimeout caused by TimeoutError."""
    exchange = make({"timeout": 200})
    await exchange.load_markets()
    kraken_simulator.faults.add(Fault.latency(0.6), endpoint="Ticker", times=1)
    with pytest.raises(ccxt.RequestTimeout) as caught:
        await exchange.fetch_ticker("BTC/USD")
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_latency_within_timeout_answers(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """A delay shorter than the timeout only slows the answer down."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.faults.add(Fault.latency(0.05), endpoint="Ticker")
    assert (await exchange.fetch_ticker("BTC/USD"))["last"] == 50000.0


@pytest.mark.parametrize(("applied", "placed"), [(True, 1), (False, 0)])
async def test_timed_out_order_applied_or_not(
    make: Make, kraken_simulator: KrakenSimulator, applied: bool, placed: int
) -> None:
    """latency(applied=True) places the order the client saw time out; applied=False does not."""
    exchange = make({"timeout": 100})
    await exchange.load_markets()
    kraken_simulator.faults.add(Fault.latency(0.25, applied=applied), endpoint="AddOrder")
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    [record] = [r for r in kraken_simulator.requests if r.endpoint == "AddOrder"]
    # the held request finishes on the server after the client left
    await until(lambda: record.finished)
    assert len(kraken_simulator.orders()) == placed
    assert (record.fault, record.status) == ("latency", 200 if applied else None)


async def test_stop_releases_held_requests() -> None:
    """Stopping the simulator does not wait for a long latency fault to run out."""
    loop = asyncio.get_running_loop()
    async with simulator() as (sim, make):
        exchange = make({"timeout": 100})
        sim.faults.add(Fault.latency(30))
        with pytest.raises(ccxt.RequestTimeout):
            await exchange.fetch_time()
        started = loop.time()
    assert loop.time() - started < 2


# -- hold and release ---------------------------------------------------------------------------


async def test_hold_keeps_requests_until_release(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """hold() keeps matching requests unanswered until release(); then its rule is spent."""
    exchange = make()
    gate = Fault.hold()
    rule = kraken_simulator.faults.add(gate, endpoint="Time")
    calls = [asyncio.create_task(exchange.fetch_time()) for _ in range(2)]
    await until(lambda: kraken_simulator.count("Time") == 2)
    await exchange.fetch_status()  # another endpoint is not held
    held = [(r.endpoint, r.status, r.fault) for r in kraken_simulator.requests]
    assert (held, [c.done() for c in calls]) == (
        [("Time", None, "hold"), ("Time", None, "hold"), ("SystemStatus", 200, None)],
        [False, False],
    )
    gate.release()
    answers = await asyncio.gather(*calls)
    assert [type(a) for a in answers] == [int, int]
    assert [r.status for r in kraken_simulator.requests] == [200, 200, 200]
    await exchange.fetch_time()  # spent: answered at once, and dropped from the script
    assert (rule.hits, len(kraken_simulator.faults), kraken_simulator.requests[-1].fault) == (
        2,
        0,
        None,
    )


async def test_record_is_finished_once_the_server_is_done(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """A request's record says finished=False while it is held, and True once answered."""
    exchange = make()
    gate = Fault.hold()
    kraken_simulator.faults.add(gate, endpoint="Time")
    call = asyncio.create_task(exchange.fetch_time())
    await until(lambda: kraken_simulator.count("Time") == 1)
    [record] = kraken_simulator.requests
    assert (record.status, record.finished) == (None, False)
    gate.release()
    await call
    assert (record.status, record.finished) == (200, True)


async def test_hold_with_times_holds_only_that_many(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """A hold rule with times=1 holds the first matching request only; the next passes."""
    exchange = make()
    gate = Fault.hold()
    kraken_simulator.faults.add(gate, endpoint="Time", times=1)
    first = asyncio.create_task(exchange.fetch_time())
    await until(lambda: kraken_simulator.count("Time") == 1)
    await exchange.fetch_time()
    assert not first.done()
    gate.release()
    assert isinstance(await first, int)


async def test_release_before_any_request_spends_the_rule(
    make: Make, kraken_simulator: KrakenSimulator
) -> None:
    """A hold released before any request matched holds nothing: its rule is spent."""
    gate = Fault.hold()
    kraken_simulator.faults.add(gate)
    gate.release()
    await make().fetch_time()
    assert ([r.fault for r in kraken_simulator.requests], len(kraken_simulator.faults)) == (
        [None],
        0,
    )


@pytest.mark.parametrize("fault", [Fault.http(503), Fault.latency(1), Fault.disconnect()])
def test_only_a_hold_can_be_released(fault: Fault) -> None:
    """release() on any fault but a hold is a TypeError naming its kind."""
    with pytest.raises(TypeError, match=f"not '{fault.kind}'"):
        fault.release()


async def test_stop_answers_requests_still_held() -> None:
    """stop() does not wait for a release: a held request is answered before closing."""
    async with simulator() as (sim, make):
        exchange = make()
        sim.faults.add(Fault.hold(), endpoint="Time")
        call = asyncio.create_task(exchange.fetch_time())
        await until(lambda: sim.count("Time") == 1)
        await sim.stop()
        assert isinstance(await call, int)
        assert [(r.status, r.fault) for r in sim.requests] == [(200, "hold")]


# -- fault scope and duration ------------------------------------------------------------------


async def test_fault_for_next_n_requests(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """times=N faults exactly the next N matching requests, then the rule is spent."""
    exchange = make()
    rule = kraken_simulator.faults.add(Fault.http(503), endpoint="Time", times=2)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.fetch_time()
    await exchange.fetch_time()
    assert (rule.hits, len(kraken_simulator.faults)) == (2, 0)


async def test_fault_for_a_span_of_time() -> None:
    """seconds=S faults matching requests until the simulator's clock has moved S seconds."""
    clock = Clock()
    async with simulator(clock=clock) as (sim, make):
        exchange = make()
        sim.faults.add(Fault.kraken_error("EService:Busy"), group="public", seconds=30)
        clock.advance(29)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.fetch_time()
        clock.advance(1)
        await exchange.fetch_time()


async def _faulted_pattern(seed: int) -> list[bool]:
    async with simulator() as (sim, make):
        exchange = make()
        sim.faults.add(Fault.http(502), endpoint="Time", probability=0.5, seed=seed)
        pattern = []
        for _ in range(20):
            try:
                await exchange.fetch_time()
                pattern.append(False)
            except ccxt.ExchangeNotAvailable:
                pattern.append(True)
        return pattern


async def test_probabilistic_fault_is_seeded() -> None:
    """probability=p faults about that share of requests, identically for the same seed."""
    first, again, other = [await _faulted_pattern(s) for s in (7, 7, 8)]
    assert first == again
    assert first != other
    assert 4 <= sum(first) <= 16


async def test_fault_scopes(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """A group or endpoint scope faults only its own requests."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.faults.add(Fault.http(503), group="earn")
    kraken_simulator.faults.add(Fault.kraken_error("EService:Busy"), endpoint="BalanceEx")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.privatePostEarnAllocate({"amount": "1", "strategy_id": "x"})
    with pytest.raises(ccxt.ExchangeNotAvailable, match="EService:Busy"):
        await exchange.fetch_balance()
    await exchange.fetch_open_orders()
    await exchange.fetch_ticker("BTC/USD")
    assert [r.group for r in kraken_simulator.requests[-4:]] == [
        "earn",
        "private",
        "private",
        "public",
    ]


async def test_clear_and_remove_faults(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """remove() drops one rule and clear_faults() drops them all."""
    exchange = make()
    rule = kraken_simulator.faults.add(Fault.http(500), endpoint="Time")
    kraken_simulator.faults.add(Fault.http(500), endpoint="SystemStatus")
    kraken_simulator.faults.remove(rule)
    await exchange.fetch_time()
    kraken_simulator.clear_faults()
    await exchange.fetch_status()


@pytest.mark.parametrize(
    "kwargs",
    [{"group": "nope"}, {"times": 0}, {"seconds": 0}, {"probability": 0}, {"probability": 1.5}],
)
def test_fault_rule_validation(kwargs: dict[str, Any]) -> None:
    """Nonsense scopes and durations are refused when the rule is added."""
    sim = KrakenSimulator()
    with pytest.raises(ValueError):  # noqa: PT011 - the message is per argument
        sim.faults.add(Fault.http(503), **kwargs)


# -- zendesk and the endpoint table ---------------------------------------------------------


def listed_endpoints() -> list[tuple[str, str]]:
    """(section, path) for every endpoint ccxt's kraken lists, in every ccxt version."""
    api = ccxt.kraken().describe()["api"]
    return [(s, path) for s, methods in api.items() for paths in methods.values() for path in paths]


async def test_zendesk_articles(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """ccxt's zendesk articles reach the simulator, answer JSON and count as public."""
    exchange = make()
    assert exchange.urls["api"]["zendesk"] == f"{kraken_simulator.url}/zendesk"
    articles = [path for section, path in listed_endpoints() if section == "zendesk"]
    answers = [await getattr(exchange, f"zendeskGet{article}")() for article in articles]
    # ccxt 4.5.0 parses numbers as text, 4.5.90 as numbers
    assert [str(a["article"]["id"]) for a in answers] == articles
    logged = [
        (r.endpoint, r.group, r.method, r.status, r.key_id) for r in kraken_simulator.requests
    ]
    assert logged == [(article, "public", "GET", 200, None) for article in articles]
    kraken_simulator.faults.add(Fault.http(503), group="public", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await getattr(exchange, f"zendeskGet{articles[0]}")()


def test_endpoint_table_agrees_with_the_breaker() -> None:
    """The simulator's endpoint table groups every ccxt endpoint as the breaker does."""
    endpoints = listed_endpoints()
    registry = ccxt_breaker.kraken().circuit_breakers
    simulated = {(s, path): endpoint_group(s, path) for s, path in endpoints}
    guarded = {(s, path): registry.group_of(path) for s, path in endpoints}
    assert simulated == guarded
    assert {s for s, _ in endpoints} == {"public", "private", "zendesk"}
    assert set(simulated.values()) == set(GROUPS)


# -- maintenance -----------------------------------------------------------------------------


async def test_maintenance_mode(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """In maintenance SystemStatus says so and private calls answer EService:Unavailable."""
    exchange = make()
    await exchange.load_markets()
    kraken_simulator.maintenance(True)
    assert (await exchange.fetch_status())["status"] == "maintenance"
    with pytest.raises(ccxt.ExchangeNotAvailable, match="EService:Unavailable"):
        await exchange.fetch_balance()
    assert (await exchange.fetch_ticker("BTC/USD"))["last"] == 50000.0
    kraken_simulator.maintenance(False)
    assert (await exchange.fetch_status())["status"] == "ok"
    await exchange.fetch_balance()


async def test_cancel_only_mode(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """In cancel_only new orders answer EService:Market in cancel_only mode; cancels work."""
    exchange = make()
    order = await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    kraken_simulator.status = "cancel_only"
    # ccxt 4.5.90 raises OnMaintenance, 4.5.0 a plain ExchangeError
    with pytest.raises(ccxt.BaseError, match="EService:Market in cancel_only mode"):
        await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    await exchange.cancel_order(order["id"])


# -- request log -------------------------------------------------------------------------------


async def test_request_log_counts(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """count() tallies received requests per endpoint and group; reset_log() starts over."""
    exchange = make()
    await exchange.fetch_balance()
    await exchange.fetch_ticker("BTC/USD")
    await exchange.fetch_ticker("ETH/USD")
    assert kraken_simulator.count() == 5
    assert kraken_simulator.count("Ticker") == 2
    assert kraken_simulator.count(group="public") == 4
    assert kraken_simulator.count(group="private") == 1
    kraken_simulator.reset_log()
    assert kraken_simulator.count() == 0
    assert kraken_simulator.requests == []


async def test_request_log_records_outcomes(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """Each record has the status, the Kraken error and the fault that answered."""
    exchange = make()
    kraken_simulator.faults.add(Fault.http(503), endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_time()
    with pytest.raises(ccxt.AuthenticationError):
        await make({"apiKey": "nobody"}).fetch_balance()
    outcomes = [(r.endpoint, r.status, r.error, r.fault) for r in kraken_simulator.requests]
    assert outcomes[0] == ("Time", 503, None, "http")
    assert outcomes[-1] == ("BalanceEx", 200, "EAPI:Invalid key", None)


async def test_request_log_holds_no_secrets(make: Make, kraken_simulator: KrakenSimulator) -> None:
    """The log keeps a short key hash, never the key, the secret, a signature or a nonce."""
    exchange = make()
    await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    signature = exchange.last_request_headers["API-Sign"]
    nonce = exchange.last_request_body.split("nonce=")[1].split("&")[0]
    logged = repr(kraken_simulator.requests)
    for secret in (DEFAULT_API_KEY, DEFAULT_SECRET, signature, nonce):
        assert secret not in logged
    assert kraken_simulator.requests[-1].key_id is not None


# -- plugin and command line -----------------------------------------------------------------


async def test_factory_defaults_to_the_breaker_class(
    kraken_factory: KrakenFactory, kraken_simulator: KrakenSimulator
) -> None:
    """kraken_factory builds ccxt_breaker.kraken with the simulator's URLs and the user's config."""
    import ccxt_breaker

    exchange = kraken_factory({"enableRateLimit": False, "options": {"mine": 1}})
    assert isinstance(exchange, ccxt_breaker.kraken)
    assert exchange.urls["api"]["private"] == kraken_simulator.url
    assert exchange.options["mine"] == 1
    assert exchange.apiKey == kraken_simulator.api_key


async def test_factory_closes_what_it_made(kraken_simulator: KrakenSimulator) -> None:
    """close_all() closes every exchange the factory built, as the fixture does at teardown."""
    factory = KrakenFactory(kraken_simulator)
    exchange = factory(FAST, cls=ccxt.kraken)
    await exchange.fetch_time()
    assert exchange.session is not None
    await factory.close_all()
    assert exchange.session is None


async def test_serve_announces_a_working_config() -> None:
    """serve() prints the URL and a config that plain ccxt can use, and stops when cancelled."""
    lines: list[str] = []
    announced = asyncio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            announced.set()

    task = asyncio.create_task(serve(announce=announce))
    await asyncio.wait_for(announced.wait(), 5)
    url = lines[0].rsplit(" ", 1)[1]
    assert url.startswith("http://127.0.0.1:")
    exchange = ccxt.kraken(
        {
            **FAST,
            "urls": {"api": {"public": url, "private": url}},
            "apiKey": DEFAULT_API_KEY,
            "secret": DEFAULT_SECRET,
        }
    )
    try:
        assert DEFAULT_API_KEY in lines[1]
        await exchange.fetch_balance()
    finally:
        await exchange.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
