"""The simulator's websocket Kraken, spoken to with a bare aiohttp client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ccxt_breaker.testing import Fault, KrakenSimulator

WAIT = 3.0


@pytest.fixture
async def wsim() -> AsyncIterator[KrakenSimulator]:
    async with KrakenSimulator(rate_limits=False, ws_interval=0.02) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def next_json(ws: aiohttp.ClientWebSocketResponse, **match: Any) -> Any:
    """The next message whose fields equal ``match`` (heartbeats and others skipped)."""
    while True:
        frame = await asyncio.wait_for(ws.receive(), WAIT)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message = json.loads(frame.data)
        if isinstance(message, dict) and all(message.get(k) == v for k, v in match.items()):
            return message


async def token(sim: KrakenSimulator) -> str:
    import ccxt.async_support

    exchange = ccxt.async_support.kraken({**sim.ccxt_config(), "timeout_on_exit": 0})
    try:
        answer = await exchange.privatePostGetWebSocketsToken()
    finally:
        await exchange.close()
    return str(answer["result"]["token"])


def subscribe(channel: str, req_id: int = 1, **params: Any) -> dict[str, Any]:
    return {"method": "subscribe", "params": {"channel": channel, **params}, "req_id": req_id}


async def test_v2_ticker_subscription_is_answered_then_streams(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """A v2 ticker subscription gets a success answer, a snapshot, then updates."""
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        await ws.send_json(subscribe("ticker", 7, symbol=["BTC/USD"]))
        answer = await next_json(ws, method="subscribe")
        assert (answer["req_id"], answer["success"], answer["result"]["symbol"]) == (
            7,
            True,
            "BTC/USD",
        )
        assert (await next_json(ws, channel="ticker"))["type"] == "snapshot"
        assert (await next_json(ws, channel="ticker"))["type"] == "update"
        await next_json(ws, channel="heartbeat")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"channel": "ticker", "symbol": ["FOO/BAR"]}, "Currency pair not supported"),
        (
            {"channel": "book", "symbol": ["BTC/USD"], "depth": 7},
            "Subscription depth not supported",
        ),
        ({"channel": "nope", "symbol": ["BTC/USD"]}, "Subscription name invalid"),
    ],
)
async def test_callers_mistakes_are_answered_as_kraken_words_them(
    wsim: KrakenSimulator, session: aiohttp.ClientSession, params: dict[str, Any], error: str
) -> None:
    """Unknown pairs, depths and channels get Kraken's error answer."""
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        await ws.send_json({"method": "subscribe", "params": params, "req_id": 3})
        answer = await next_json(ws, method="subscribe")
        assert (answer["success"], answer["error"]) == (False, error)


async def test_private_channels_need_a_token(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """balances is refused without a token from GetWebSocketsToken, and served with one."""
    async with session.ws_connect(wsim.ws_urls["privateV2"]) as ws:
        await ws.send_json(subscribe("balances", 1, token="made-up"))
        assert (await next_json(ws, method="subscribe"))["error"] == "ESession:Invalid session"
        await ws.send_json(subscribe("balances", 2, token=await token(wsim)))
        assert (await next_json(ws, method="subscribe"))["success"] is True
        balances = await next_json(ws, channel="balances")
        assert {row["asset"] for row in balances["data"]} == {"BTC", "ETH", "USD"}


async def test_v1_sockets_answer_subscription_status(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """The v1 sockets answer with subscriptionStatus (public ohlc, private openOrders)."""
    async with session.ws_connect(wsim.ws_urls["public"]) as ws:
        request = {"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "ohlc"}}
        await ws.send_json({**request, "reqid": 5})
        status = await next_json(ws, event="subscriptionStatus")
        assert (status["reqid"], status["status"], status["pair"]) == (5, "subscribed", "XBT/USD")
        assert status["channelName"] == "ohlc-1"
        frame = await asyncio.wait_for(ws.receive(), WAIT)
        channel_id, candle, name, pair = json.loads(frame.data)
        assert (channel_id, name, pair, len(candle)) == (
            status["channelID"],
            "ohlc-1",
            "XBT/USD",
            9,
        )
    async with session.ws_connect(wsim.ws_urls["private"]) as ws:
        subscription = {"name": "openOrders", "token": await token(wsim)}
        await ws.send_json({"event": "subscribe", "subscription": subscription, "reqid": 6})
        assert (await next_json(ws, event="subscriptionStatus"))["status"] == "subscribed"


async def test_orders_over_the_socket_reach_the_engine(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """add_order places an order the REST side sees; cancel_order cancels it."""
    secret = await token(wsim)
    async with session.ws_connect(wsim.ws_urls["privateV2"]) as ws:
        params = {
            "order_type": "limit",
            "side": "buy",
            "order_qty": 0.01,
            "symbol": "BTC/USD",
            "limit_price": 40000,
            "token": secret,
        }
        await ws.send_json({"method": "add_order", "params": params, "req_id": 9})
        placed = await next_json(ws, method="add_order")
        [order] = wsim.orders()
        assert placed["result"]["order_id"] == order.txid
        cancel = {"order_id": [order.txid], "token": secret}
        await ws.send_json({"method": "cancel_order", "params": cancel, "req_id": 10})
        assert (await next_json(ws, method="cancel_order"))["success"] is True
        assert wsim.orders()[0].status == "canceled"


async def test_dials_are_counted_per_url(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """dials() counts the dials that reached each socket, refused ones included."""
    wsim.faults.add(Fault.http(503), endpoint="connect", group="ws-private", times=1)
    for url in (wsim.ws_urls["publicV2"], wsim.ws_urls["publicV2"]):
        async with session.ws_connect(url):
            pass
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(wsim.ws_urls["privateV2"])
    assert refused.value.status == 503
    assert wsim.dials(wsim.ws_urls["publicV2"]) == 2
    assert wsim.dials("/ws/private/v2") == 1
    assert wsim.dials() == 3
    with pytest.raises(ValueError, match="not a websocket URL"):
        wsim.dials("/0/public/Ticker")


async def test_subscription_fault_answers_an_error(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """A kraken_error rule on a channel answers that subscription with the error."""
    wsim.faults.add(Fault.kraken_error("EService:Unavailable"), endpoint="ticker", times=1)
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        await ws.send_json(subscribe("ticker", 1, symbol=["BTC/USD"]))
        assert (await next_json(ws, method="subscribe"))["error"] == "EService:Unavailable"


async def test_drop_ends_the_socket_after_n_messages(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """ws_drop(after=2) sends two messages, then ends the socket without a close frame."""
    wsim.faults.add(Fault.ws_drop(after=2), endpoint="connect", group="ws-public")
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        frames = [await asyncio.wait_for(ws.receive(), WAIT) for _ in range(3)]
    assert [f.type for f in frames[:2]] == [aiohttp.WSMsgType.TEXT] * 2
    assert frames[2].type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def test_silence_stops_the_feed_but_answers_pings(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """ws_silence stops heartbeats and data, while pings are still answered."""
    wsim.faults.add(Fault.ws_silence(after=1), endpoint="connect", group="ws-public")
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        await next_json(ws, channel="status")
        await ws.send_json({"method": "ping", "req_id": 4})
        assert (await next_json(ws))["method"] == "pong"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.2)


async def test_slow_subscription_answer(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """A latency rule on a channel holds its answer for that long."""
    wsim.faults.add(Fault.latency(0.3), endpoint="book", times=1)
    loop = asyncio.get_running_loop()
    async with session.ws_connect(wsim.ws_urls["publicV2"]) as ws:
        started = loop.time()
        await ws.send_json(subscribe("book", 1, symbol=["BTC/USD"]))
        await next_json(ws, method="subscribe")
        assert loop.time() - started >= 0.3


async def test_control_api_adds_websocket_faults(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """The control API takes ws_drop with its `after`, scoped to a websocket group."""
    body = {"fault": {"kind": "ws_drop", "after": 3}, "group": "ws-public", "endpoint": "connect"}
    async with session.post(wsim.control_url + "/faults", json=body) as response:
        assert response.status == 201
        rule = await response.json()
    assert rule["fault"] == {"kind": "ws_drop", "after": 3}
    assert rule["group"] == "ws-public"


async def test_unserved_methods_are_answered_with_an_error(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """A v2 method the simulator does not serve gets an error answer, not silence."""
    async with session.ws_connect(wsim.ws_urls["privateV2"]) as ws:
        await ws.send_json({"method": "amend_order", "params": {}, "req_id": 12})
        answer = await next_json(ws, method="amend_order")
        assert (answer["req_id"], answer["error"]) == (12, "EGeneral:Unknown method")


async def test_control_api_counts_and_resets_dials(
    wsim: KrakenSimulator, session: aiohttp.ClientSession
) -> None:
    """GET /_simulator/dials counts the dials per socket path; DELETE resets them."""
    async with session.ws_connect(wsim.ws_urls["publicV2"]):
        pass
    async with session.get(wsim.control_url + "/dials") as response:
        dials = (await response.json())["dials"]
    assert dials == {"/ws/public": 0, "/ws/public/v2": 1, "/ws/private": 0, "/ws/private/v2": 0}
    async with session.delete(wsim.control_url + "/dials") as response:
        assert await response.json() == {"removed": 1}
    assert wsim.dials() == 0
