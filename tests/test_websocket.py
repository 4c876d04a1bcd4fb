"""Websocket breakers: the real ccxt.pro Kraken client against the simulator's websocket
Kraken on 127.0.0.1, with the breakers on the test's fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt
import ccxt.pro
import pytest

import ccxt_breaker
import ccxt_breaker.pro
from ccxt_breaker import CircuitOpenError
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator
from ccxt_breaker.testing._simulator import strict_nonces

from .support import until

WAIT = 3.0  # real seconds any one websocket answer may take over loopback


@pytest.fixture
async def wsim(clock: FakeClock) -> AsyncIterator[KrakenSimulator]:
    """The simulator on the fake clock, its sockets beating every 20 ms."""
    simulator = KrakenSimulator(
        clock=clock.monotonic, wall_clock=clock.time, rate_limits=False, ws_interval=0.02
    )
    async with simulator:
        yield simulator


@pytest.fixture
async def pro(wsim: KrakenSimulator, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """``pro(**breaker)``: ``ccxt_breaker.pro.kraken`` on the simulator, closed at teardown;
    ``cls`` and ``config`` pick another class or add ccxt config."""
    made: list[Any] = []

    def factory(cls: Any = ccxt_breaker.pro.kraken, config: Any = None, **breaker: Any) -> Any:
        options = {"circuitBreaker": {"clock": clock, **breaker}}
        exchange = cls(
            {
                **wsim.ccxt_config(),
                "enableRateLimit": False,
                "timeout_on_exit": 0,
                "options": options,
                **(config or {}),
            }
        )
        strict_nonces(exchange)
        made.append(exchange)
        return exchange

    yield factory
    await asyncio.gather(*(exchange.close() for exchange in made))


def public_dials(sim: KrakenSimulator) -> int:
    return sim.dials(sim.ws_urls["publicV2"])


async def fail(call: Any) -> BaseException:
    """The exception ``call`` ends with (a call that ccxt leaves hanging times out)."""
    try:
        await asyncio.wait_for(call, WAIT)
    except BaseException as exc:
        return exc
    raise AssertionError("the call succeeded")


async def hang(call: Any, recorded: Callable[[], bool]) -> None:
    """Run ``call``, which ccxt leaves waiting after an error answer to a subscription,
    until the breakers have recorded the answer; then cancel it."""
    task = asyncio.ensure_future(call)
    try:
        await until(recorded, WAIT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- groups ----------------------------------------------------------------------------


async def test_pro_has_the_websocket_groups(pro: Any) -> None:
    """ccxt_breaker.pro.kraken lists ws-public and ws-private after the REST groups."""
    exchange = pro()
    assert list(exchange.circuit_breakers) == [
        "public",
        "private",
        "trading",
        "funding",
        "earn",
        "ws-private",
        "ws-public",
    ]
    assert set(exchange.circuit_breakers.snapshot()) == set(exchange.circuit_breakers)


async def test_rest_class_has_no_websocket_groups(build: Any) -> None:
    """The REST-only ccxt_breaker.kraken keeps its five groups."""
    assert list(build().circuit_breakers) == ["public", "private", "trading", "funding", "earn"]


async def test_websocket_groups_take_group_config(pro: Any) -> None:
    """`groups` configures ws-public like any REST group, wsStaleAfter included."""
    exchange = pro(groups={"ws-public": {"failureThreshold": 2, "wsStaleAfter": 5000}})
    config = exchange.circuit_breakers["ws-public"].config
    assert (config.failure_threshold, config.ws_stale_after) == (2, 5.0)
    assert exchange.circuit_breakers["ws-private"].config.failure_threshold == 5


async def test_websocket_order_methods_are_trading_endpoints(pro: Any) -> None:
    """create_order_ws's add_order is guarded by the REST trading breaker; channels by ws."""
    registry = pro().circuit_breakers
    assert registry.group_of("add_order") == registry.group_of("AddOrder") == "trading"
    assert registry.group_of("ticker") == "ws-public"
    assert registry.group_of("executions") == "ws-private"


# --- verdicts --------------------------------------------------------------------------


async def test_connect_and_subscription_is_a_success(pro: Any, wsim: KrakenSimulator) -> None:
    """A dial plus an acknowledged subscription counts one ws-public success."""
    exchange = pro()
    ticker = await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    assert ticker["symbol"] == "BTC/USD"
    snapshot = exchange.circuit_breakers["ws-public"].snapshot()
    assert (snapshot["calls"], snapshot["successes"], snapshot["failures"]) == (1, 1, 0)
    assert snapshot["endpoints"]["ticker"]["successes"] == 1


async def test_ohlcv_and_orders_stream_whichever_socket_ccxt_uses(
    pro: Any, wsim: KrakenSimulator
) -> None:
    """watch_ohlcv and watch_orders deliver on the socket this ccxt uses for them (v2 in
    4.5.90, v1 before), each counted as one success of its group."""
    exchange = pro()
    await asyncio.wait_for(exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000), WAIT)
    candles = await asyncio.wait_for(exchange.watch_ohlcv("BTC/USD"), WAIT)
    orders = await asyncio.wait_for(exchange.watch_orders(), WAIT)
    assert candles[-1][4] == 50000.0
    assert [order["id"] for order in orders] == [o.txid for o in wsim.orders()]
    snapshot = exchange.circuit_breakers.snapshot()
    assert (snapshot["ws-public"]["successes"], snapshot["ws-private"]["successes"]) == (1, 1)


async def test_reading_a_subscribed_stream_is_not_a_call(pro: Any) -> None:
    """Later updates of a subscribed stream take no permit and count nothing."""
    exchange = pro()
    for _ in range(5):
        await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    assert exchange.circuit_breakers["ws-public"].snapshot()["calls"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.http(503), id="503-at-handshake"),
        pytest.param(Fault.http(520), id="cloudflare-520"),
        pytest.param(Fault.disconnect(), id="refused"),
    ],
)
async def test_failed_dials_open_ws_public_and_then_no_dial_is_made(
    pro: Any, wsim: KrakenSimulator, fault: Fault
) -> None:
    """failureThreshold failed dials open ws-public; the next watch call is refused before
    dialing, and no dial reaches the server."""
    wsim.faults.add(fault, endpoint="connect", group="ws-public")
    exchange = pro(failureThreshold=3)
    for _ in range(3):
        assert isinstance(await fail(exchange.watch_ticker("BTC/USD")), ccxt.NetworkError)
    breaker = exchange.circuit_breakers["ws-public"]
    assert breaker.state == "open"
    dials = public_dials(wsim)  # (aiohttp sends a dial the server hung up on once more)
    assert 3 <= dials <= 6
    with pytest.raises(CircuitOpenError) as refused:
        await exchange.watch_ticker("BTC/USD")
    assert refused.value.group == "ws-public"
    assert public_dials(wsim) == dials
    assert exchange.circuit_breakers["public"].state == "closed"


async def test_failed_private_dials_open_ws_private_alone(pro: Any, wsim: KrakenSimulator) -> None:
    """Failed dials of the private socket open ws-private; public sockets and REST private
    stay closed, and watch_balance is then refused before dialing."""
    wsim.faults.add(Fault.http(503), endpoint="connect", group="ws-private")
    exchange = pro(failureThreshold=2)
    for _ in range(2):
        await fail(exchange.watch_balance())
    registry = exchange.circuit_breakers
    states = {g: registry[g].state for g in ("ws-private", "ws-public", "private")}
    assert states == {"ws-private": "open", "ws-public": "closed", "private": "closed"}
    dials = wsim.dials(wsim.ws_urls["privateV2"])
    with pytest.raises(CircuitOpenError):
        await exchange.watch_balance()
    assert wsim.dials(wsim.ws_urls["privateV2"]) == dials
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)


async def test_dial_timeout_is_a_failure(pro: Any, wsim: KrakenSimulator) -> None:
    """A handshake slower than ccxt's connectionTimeout counts as a ws-public failure."""
    wsim.faults.add(Fault.latency(2.0), endpoint="connect", group="ws-public")
    exchange = pro()
    # ccxt's own dial timeout, in ms; it waits whole seconds (int(ms / 1000)), so 1 s
    exchange.options["ws"] = {"connectionTimeout": 1000}
    await asyncio.wait_for(exchange.load_markets(), WAIT)
    error = await fail(exchange.watch_ticker("BTC/USD"))
    assert isinstance(error, ccxt.RequestTimeout)
    assert exchange.circuit_breakers["ws-public"].snapshot()["failures"] == 1


@pytest.mark.parametrize(
    "message", ["EService:Unavailable", "EService:Busy", "EGeneral:Too many requests"]
)
async def test_outage_answers_to_a_subscription_are_failures(
    pro: Any, wsim: KrakenSimulator, message: str
) -> None:
    """A subscription answered with an EService or rate-limit error is a failure."""
    wsim.faults.add(Fault.kraken_error(message), endpoint="ticker", group="ws-public")
    exchange = pro()
    breaker = exchange.circuit_breakers["ws-public"]
    await hang(exchange.watch_ticker("BTC/USD"), lambda: breaker.snapshot()["failures"] > 0)
    snapshot = breaker.snapshot()
    assert (snapshot["failures"], snapshot["neutral"]) == (1, 0)
    assert message in snapshot["last_error"]["message"]


async def test_callers_subscription_mistakes_are_neutral(pro: Any, wsim: KrakenSimulator) -> None:
    """An unknown pair and an unsupported depth are the caller's fault: neutral."""
    exchange = pro()
    await asyncio.wait_for(exchange.load_markets(), WAIT)
    breaker = exchange.circuit_breakers["ws-public"]
    await hang(
        exchange.watch_order_book("BTC/USD", params={"depth": 7}),
        lambda: breaker.snapshot()["neutral"] == 1,
    )
    url = wsim.ws_urls["publicV2"]
    await hang(
        exchange.watch_multiple(url, ["x"], _subscribe("FOO/BAR"), ["x"]),
        lambda: breaker.snapshot()["neutral"] == 2,
    )
    snapshot = exchange.circuit_breakers["ws-public"].snapshot()
    assert (snapshot["failures"], snapshot["neutral"]) == (0, 2)


def _subscribe(symbol: str) -> dict[str, Any]:
    return {
        "method": "subscribe",
        "params": {"channel": "ticker", "symbol": [symbol]},
        "req_id": 77,
    }


async def test_abnormal_close_is_a_failure(pro: Any, wsim: KrakenSimulator) -> None:
    """A socket dropped without a close frame counts a ws-public failure."""
    wsim.faults.add(Fault.ws_drop(after=4), endpoint="connect", group="ws-public", times=1)
    exchange = pro()
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    breaker = exchange.circuit_breakers["ws-public"]
    await until(lambda: breaker.snapshot()["failures"] == 1)
    assert breaker.snapshot()["successes"] == 1


@pytest.mark.parametrize("closer", ["user", "server"])
async def test_a_clean_close_is_no_failure(pro: Any, wsim: KrakenSimulator, closer: str) -> None:
    """exchange.close() and a server's clean close (1000) count nothing against the socket."""
    exchange = pro()
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    await asyncio.wait_for(exchange.watch_balance(), WAIT)
    if closer == "user":
        await exchange.close()
    else:
        await wsim.websocket.close_all()
    await asyncio.sleep(0.2)  # ccxt's receive loops notice the closed sockets
    snapshot = exchange.circuit_breakers.snapshot()
    assert [snapshot[g]["failures"] for g in ("ws-public", "ws-private")] == [0, 0]


async def test_silent_socket_fails_after_ws_stale_after(
    pro: Any, wsim: KrakenSimulator, clock: FakeClock
) -> None:
    """A socket with no message for longer than wsStaleAfter (on the breakers' clock) is
    failed: counted, and closed so that the next watch call dials again."""
    wsim.faults.add(Fault.ws_silence(after=6), endpoint="connect", group="ws-public", times=1)
    exchange = pro(wsStaleAfter=10_000, config={"streaming": {"keepAlive": 30}})
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    breaker = exchange.circuit_breakers["ws-public"]
    await asyncio.sleep(0.2)  # pings go out; the socket is silent, but not yet for long
    assert breaker.snapshot()["failures"] == 0
    clock.advance(10.5)
    await until(lambda: breaker.snapshot()["failures"] == 1)
    assert "wsStaleAfter" in breaker.snapshot()["last_error"]["message"]
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    assert public_dials(wsim) == 2


async def test_failed_token_counts_on_ws_private_and_rest_private(
    pro: Any, wsim: KrakenSimulator
) -> None:
    """A failed GetWebSocketsToken is a failure of ws-private and of REST private."""
    wsim.faults.add(Fault.http(503), endpoint="GetWebSocketsToken")
    exchange = pro(failureThreshold=2)
    for _ in range(2):
        assert isinstance(await fail(exchange.watch_balance()), ccxt.ExchangeNotAvailable)
    registry = exchange.circuit_breakers
    assert (registry["ws-private"].state, registry["private"].state) == ("open", "open")
    with pytest.raises(CircuitOpenError):
        await exchange.watch_orders()
    assert wsim.dials() == 0


# --- trading: one circuit for REST and websocket order entry ------------------------------


async def test_order_over_the_socket_counts_on_trading(pro: Any, wsim: KrakenSimulator) -> None:
    """create_order_ws places the order and counts one trading success."""
    exchange = pro()
    order = await asyncio.wait_for(
        exchange.create_order_ws("BTC/USD", "limit", "buy", 0.01, 40000), WAIT
    )
    assert [o.txid for o in wsim.orders()] == [order["id"]]
    trading = exchange.circuit_breakers["trading"].snapshot()
    assert trading["endpoints"]["add_order"] == {
        "calls": 1,
        "successes": 1,
        "failures": 0,
        "neutral": 0,
        "rejected": 0,
    }


async def test_websocket_rate_limit_opens_rest_trading(pro: Any, wsim: KrakenSimulator) -> None:
    """EOrder:Rate limit exceeded over the socket opens trading: REST create_order is
    refused too, unsent."""
    wsim.faults.add(Fault.kraken_error("EOrder:Rate limit exceeded"), endpoint="add_order")
    exchange = pro()
    error = await fail(exchange.create_order_ws("BTC/USD", "limit", "buy", 0.01, 40000))
    assert isinstance(error, ccxt.RateLimitExceeded)
    assert exchange.circuit_breakers["trading"].state == "open"
    with pytest.raises(CircuitOpenError):
        await exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    assert wsim.count("AddOrder") == 0


async def test_private_stream_keeps_delivering_while_ws_private_is_open(
    pro: Any, wsim: KrakenSimulator
) -> None:
    """watch_orders on a subscribed private stream is no call, even though ccxt asks for
    the token each time: it keeps delivering while ws-private is forced open."""
    exchange = pro()
    await asyncio.wait_for(exchange.create_order("BTC/USD", "limit", "buy", 0.01, 40000), WAIT)
    await asyncio.wait_for(exchange.watch_orders(), WAIT)
    await asyncio.wait_for(exchange.watch_balance(), WAIT)  # v2 is up (ccxt < 4.5.90: v1 too)
    exchange.circuit_breakers["ws-private"].force_open()
    update = asyncio.ensure_future(exchange.watch_orders())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(
        exchange.create_order_ws("BTC/USD", "limit", "buy", 0.01, 41000), WAIT
    )  # trading is closed, and the socket is up: no dial
    orders = await asyncio.wait_for(update, WAIT)
    assert len(orders) == 2
    assert exchange.circuit_breakers["ws-private"].snapshot()["rejected"] == 0


async def test_open_trading_refuses_websocket_orders_unsent(
    pro: Any, wsim: KrakenSimulator
) -> None:
    """While trading is open, create_order_ws and cancel_order_ws raise before sending."""
    exchange = pro()
    await asyncio.wait_for(exchange.watch_balance(), WAIT)  # private socket up, token cached
    exchange.circuit_breakers["trading"].force_open()
    with pytest.raises(CircuitOpenError):
        await exchange.create_order_ws("BTC/USD", "limit", "buy", 0.01, 40000)
    with pytest.raises(CircuitOpenError):
        await exchange.cancel_order_ws("OXXXXX-XXXXX-XXXXXX")
    assert wsim.orders() == []


async def test_callers_order_mistake_is_neutral(pro: Any, wsim: KrakenSimulator) -> None:
    """An order the engine refuses for the caller's reason (funds) is neutral."""
    exchange = pro()
    error = await fail(exchange.create_order_ws("BTC/USD", "limit", "buy", 100, 40000))
    assert "EOrder:Insufficient funds" in str(error)
    trading = exchange.circuit_breakers["trading"].snapshot()
    assert (trading["failures"], trading["neutral"]) == (0, 1)


# --- open and half-open ------------------------------------------------------------------


async def test_working_socket_keeps_delivering_while_forced_open(
    pro: Any, wsim: KrakenSimulator
) -> None:
    """A circuit never closes a working socket: a subscribed stream keeps delivering while
    its group is forced open, and only a new subscription is refused."""
    exchange = pro()
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    exchange.circuit_breakers["ws-public"].force_open()
    for _ in range(3):
        await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    with pytest.raises(CircuitOpenError):
        await exchange.watch_ticker("ETH/USD")
    assert public_dials(wsim) == 1


async def _open_then_half_open(exchange: Any, sim: KrakenSimulator, clock: FakeClock) -> None:
    rule = sim.faults.add(Fault.http(503), endpoint="connect", group="ws-public")
    for _ in range(exchange.circuit_breakers["ws-public"].config.failure_threshold):
        await fail(exchange.watch_ticker("BTC/USD"))
    sim.faults.remove(rule)
    clock.advance(120)


@pytest.mark.parametrize("permits", [1, 3])
async def test_half_open_admits_exactly_half_open_max_calls(
    pro: Any, wsim: KrakenSimulator, clock: FakeClock, permits: int
) -> None:
    """N concurrent watch calls in half-open: exactly halfOpenMaxCalls are admitted, the
    rest refused unsent; the probes' success closes the circuit."""
    exchange = pro(failureThreshold=2, halfOpenMaxCalls=permits, successThreshold=1)
    await _open_then_half_open(exchange, wsim, clock)
    dials = public_dials(wsim)
    symbols = ["BTC/USD", "ETH/USD", "ETH/BTC"] * 3
    results = await asyncio.gather(
        *(asyncio.wait_for(exchange.watch_ticker(s), WAIT) for s in symbols),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, CircuitOpenError)]
    assert len(admitted) == permits
    assert all(isinstance(r, dict) for r in admitted)
    assert public_dials(wsim) - dials == 1  # ccxt shares one socket among them
    assert exchange.circuit_breakers["ws-public"].state == "closed"


async def test_a_probed_socket_closes_the_circuit_by_its_messages(
    pro: Any, wsim: KrakenSimulator, clock: FakeClock
) -> None:
    """After one successful probe, a bot reading one stream sends nothing more: the
    socket's own messages then count as the successes that close the circuit."""
    exchange = pro(failureThreshold=2, successThreshold=3)
    await _open_then_half_open(exchange, wsim, clock)
    breaker = exchange.circuit_breakers["ws-public"]
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    await until(lambda: breaker.state == "closed")
    assert breaker.snapshot()["endpoints"]["stream"]["successes"] == 2


async def test_an_older_sockets_messages_do_not_close_the_circuit(
    pro: Any, clock: FakeClock
) -> None:
    """Only the socket a probe dialed counts its messages in half-open: one that was up
    before the circuit opened proves nothing of the dials that failed."""
    exchange = pro(successThreshold=3)
    breaker = exchange.circuit_breakers["ws-public"]
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    breaker._trip(1.0, {"type": "Test", "message": "failed dials elsewhere"})
    clock.advance(60)
    await asyncio.wait_for(exchange.watch_ticker("ETH/USD"), WAIT)  # the probe: one success
    await asyncio.sleep(0.2)  # about ten heartbeats of the older socket
    assert (breaker.state, breaker.snapshot()["success_count"]) == ("half_open", 1)


async def test_failed_probe_reopens(pro: Any, wsim: KrakenSimulator, clock: FakeClock) -> None:
    """A half-open probe whose dial fails opens the circuit again."""
    exchange = pro(failureThreshold=2)
    await _open_then_half_open(exchange, wsim, clock)
    wsim.faults.add(Fault.http(503), endpoint="connect", group="ws-public")
    await fail(exchange.watch_ticker("BTC/USD"))
    breaker = exchange.circuit_breakers["ws-public"]
    assert (breaker.state, breaker.snapshot()["reopen_count"]) == ("open", 1)


# --- cancellation ----------------------------------------------------------------------


def in_flight(exchange: Any, group: str) -> int:
    return int(exchange.circuit_breakers[group].snapshot()["half_open_in_flight"])


@pytest.mark.parametrize(
    ("endpoint", "group", "target"),
    [
        pytest.param("connect", "ws-public", "ws-public", id="during-the-dial"),
        pytest.param("ticker", "ws-public", "ws-public", id="awaiting-the-subscription"),
        # the token is a REST call: the REST seam holds the private group's permit
        pytest.param("GetWebSocketsToken", None, "private", id="fetching-the-token"),
        pytest.param("connect", "ws-private", "ws-private", id="during-the-private-dial"),
        pytest.param("balances", "ws-private", "ws-private", id="awaiting-the-private-answer"),
    ],
)
async def test_cancelled_watch_returns_its_permit(
    pro: Any,
    wsim: KrakenSimulator,
    clock: FakeClock,
    endpoint: str,
    group: str | None,
    target: str,
) -> None:
    """A watch call cancelled at each of its waits hands its half-open permit back, and
    counts nothing: the next call is admitted."""
    exchange = pro(failureThreshold=1, successThreshold=1)
    await asyncio.wait_for(exchange.load_markets(), WAIT)
    exchange.circuit_breakers[target].force_open()
    exchange.circuit_breakers[target].reset()
    exchange.circuit_breakers[target]._trip(1.0, {"type": "Test", "message": "test"})
    clock.advance(120)
    gate = Fault.hold()
    wsim.faults.add(gate, endpoint=endpoint, group=group)  # type: ignore[arg-type]
    public = target == "ws-public"
    watch = exchange.watch_ticker("BTC/USD") if public else exchange.watch_balance()
    task = asyncio.ensure_future(watch)
    await until(lambda: in_flight(exchange, target) == 1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight(exchange, target) == 0
    snapshot = exchange.circuit_breakers.snapshot()
    assert [snapshot[g]["failures"] for g in ("ws-public", "ws-private", "private")] == [0, 0, 0]
    gate.release()


# --- secrets ---------------------------------------------------------------------------


async def test_token_and_keys_never_reach_reports(
    pro: Any, wsim: KrakenSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The websocket token, API key and secret stay out of snapshots, history, logs and
    CircuitOpenError, even when an error answer quotes them."""
    exchange = pro(failureThreshold=1)
    token = await asyncio.wait_for(exchange.authenticate(), WAIT)
    leak = f"EService:Unavailable token={token} key={exchange.apiKey} secret={exchange.secret}"
    wsim.faults.add(Fault.kraken_error(leak), endpoint="balances", group="ws-private")
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    breaker = exchange.circuit_breakers["ws-private"]
    await hang(exchange.watch_balance(), lambda: breaker.state == "open")
    with pytest.raises(CircuitOpenError) as refused:
        await exchange.watch_orders()  # a new subscription (ccxt thinks balances subscribed)
    reports = [
        str(exchange.circuit_breakers.snapshot()),
        str(exchange.circuit_breakers.history()),
        caplog.text,
        str(refused.value),
        repr(refused.value.args),
    ]
    assert "EService:Unavailable" in reports[0]
    for secret in (token, exchange.apiKey, exchange.secret):
        assert all(secret not in report for report in reports)


# --- install() -------------------------------------------------------------------------


async def test_install_guards_ccxt_pro_websocket_calls(pro: Any, wsim: KrakenSimulator) -> None:
    """With install(), a ccxt.pro.kraken built with the flag gets the websocket groups
    and refuses a watch call while ws-public is open."""
    ccxt_breaker.install()
    try:
        exchange = pro(cls=ccxt.pro.kraken)
    finally:
        ccxt_breaker.uninstall()
    assert isinstance(exchange, ccxt.pro.kraken)
    assert "ws-public" in exchange.circuit_breakers
    await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    exchange.circuit_breakers["ws-public"].force_open()
    with pytest.raises(CircuitOpenError):
        await exchange.watch_trades("BTC/USD")
    assert public_dials(wsim) == 1


def test_the_websocket_hook_must_come_before_ccxt_pro() -> None:
    """A class that puts the websocket hook after ccxt.pro.kraken is refused at once."""
    from ccxt_breaker._hook import BreakerMixin
    from ccxt_breaker._ws import WebsocketMixin

    with pytest.raises(TypeError, match=r"must come before ccxt\.pro\.kraken"):
        type("Late", (BreakerMixin, ccxt.pro.kraken, WebsocketMixin), {})


async def test_a_bookkeeping_bug_never_breaks_ccxts_message_handling(
    pro: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If recording an answer raises, ccxt still handles the message, and the bug is
    logged on the ccxt_breaker logger."""
    from ccxt_breaker._ws import WebsocketMixin

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the breaker")

    monkeypatch.setattr(WebsocketMixin, "_ws_answer", broken)
    exchange = pro()
    ticker = await asyncio.wait_for(exchange.watch_ticker("BTC/USD"), WAIT)
    assert ticker["symbol"] == "BTC/USD"
    assert "failed to record a websocket outcome" in caplog.text
