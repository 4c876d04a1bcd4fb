"""The simulator's websocket Kraken: the sockets ccxt.pro's ``kraken`` dials, served by the
simulator's own aiohttp server beside the REST API.

Four paths stand for Kraken's four sockets: ``/ws/public`` (``wss://ws.kraken.com``),
``/ws/public/v2``, ``/ws/private`` (``wss://ws-auth.kraken.com``) and ``/ws/private/v2``.
They serve the channels ccxt.pro subscribes to (v2: ticker, book, trade, ohlc,
executions, balances; v1, where ccxt before 4.5.90 watches OHLC and orders: ohlc,
openOrders, ownTrades), order entry over the v2 private socket (add_order, cancel_order,
cancel_all), pings and heartbeats.
Private channels and orders need a token from the simulator's ``GetWebSocketsToken``.

Faults come from the simulator's one script, scoped by group (``ws-public``,
``ws-private``) and endpoint: ``connect`` is the dial (an HTTP fault answers the
handshake, ``disconnect`` refuses it, ``latency`` slows it, and ``ws_drop`` /
``ws_silence`` shape the socket it opens); a channel or order method name is that
subscription or order (a ``kraken_error`` is its error answer, ``latency`` slows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ._state import ASSETS, MARKETS, Account, KrakenError, Market, Order

if TYPE_CHECKING:
    from ._faults import Fault

__all__ = ["WS_PATHS", "Connection", "WebsocketKraken"]

# path -> (group, v2)
WS_PATHS = {
    "/ws/public": ("ws-public", False),
    "/ws/public/v2": ("ws-public", True),
    "/ws/private": ("ws-private", False),
    "/ws/private/v2": ("ws-private", True),
}
_PUBLIC = ("ticker", "book", "trade", "ohlc")
_PRIVATE = ("executions", "balances")
# the v1 channels ccxt.pro uses (ccxt before 4.5.90 watches OHLC and orders on v1)
_V1_PUBLIC = ("ohlc",)
_V1_PRIVATE = ("openOrders", "ownTrades")
_ORDERS = ("add_order", "cancel_order", "cancel_all")
_DEPTHS = (10, 25, 100, 500, 1000)
_channel_ids = itertools.count(100)


def _v2_symbol(market: Market) -> str:
    # v2 names assets as ccxt does (BTC), v1 as Kraken's wsname (XBT)
    return market.wsname.replace("XBT", "BTC")


def _market(symbol: Any) -> Market:
    for market in MARKETS:
        if symbol in (_v2_symbol(market), market.wsname):
            return market
    raise KrakenError("Currency pair not supported")


def _stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(eq=False)
class Connection:
    """One accepted socket."""

    ws: web.WebSocketResponse
    request: web.Request
    group: str
    v2: bool
    drop_after: int | None = None  # messages sent before the server drops the socket
    silent_after: int | None = None  # messages sent before its feed stops (pongs go on)
    sent: int = 0
    key: str | None = None  # the API key behind the token of a private subscription
    # channel -> symbols (public) or [None] (private), with v1 channel ids
    subscriptions: dict[str, list[Any]] = field(default_factory=dict)
    channel_ids: dict[tuple[str, Any], int] = field(default_factory=dict)
    interval: int = 1  # minutes of a v1 ohlc subscription

    @property
    def silent(self) -> bool:
        return self.silent_after is not None and self.sent >= self.silent_after

    async def send(self, message: Any, *, pong: bool = False) -> None:
        if (self.silent and not pong) or self.ws.closed:
            return
        if self.drop_after is not None and self.sent >= self.drop_after:
            self.drop()
            return
        self.sent += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(message))

    def drop(self) -> None:
        """End the socket without a close frame, as a failing network does (code 1006)."""
        if self.request.transport is not None:
            self.request.transport.abort()


class WebsocketKraken:
    """The websocket side of one :class:`~ccxt_breaker.testing.KrakenSimulator`."""

    def __init__(
        self,
        *,
        faults: Any,
        account: Callable[[str], Account],
        tokens: dict[str, str],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        pause: Callable[..., Any],
        rate_limits: Callable[[], bool],
        interval: float,
    ) -> None:
        self._faults = faults
        self._account = account
        self._tokens = tokens  # token -> API key, from GetWebSocketsToken
        self._clock, self._wall_clock = clock, wall_clock
        self._pause = pause
        self._rate_limits = rate_limits
        self.interval = interval
        self.dials: dict[str, int] = {}  # path -> dials that reached the server
        self.connections: list[Connection] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.get(path, self._dial) for path in WS_PATHS]

    def drop(self, group: str | None = None) -> None:
        """Drop every open socket (of ``group``: ``ws-public`` or ``ws-private``) without a
        close frame, as a network failure does."""
        for conn in list(self.connections):
            if group is None or conn.group == group:
                conn.drop()

    async def close_all(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close()

    # -- the dial --------------------------------------------------------------------

    async def _dial(self, request: web.Request) -> web.StreamResponse:
        group, v2 = WS_PATHS[request.path]
        self.dials[request.path] = self.dials.get(request.path, 0) + 1
        fault = self._faults.draw("connect", group)
        if fault is not None and fault.gate is not None:
            await self._pause(None, fault.gate)
            fault = None
        conn_fault: Fault | None = None
        if fault is not None:
            if fault.kind == "latency":
                await self._pause(fault.delay)
            elif fault.kind in ("ws_drop", "ws_silence"):
                conn_fault = fault
            elif fault.kind == "disconnect":  # refused: the connection ends before a reply
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()
            else:  # an HTTP answer instead of 101 Switching Protocols
                return web.Response(
                    status=fault.status or 200,
                    body=fault.body.encode(),
                    content_type=fault.content_type,
                    headers=dict(fault.headers),
                )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws, request, group, v2)
        if conn_fault is not None:
            if conn_fault.kind == "ws_drop":
                conn.drop_after = conn_fault.after
            else:
                conn.silent_after = conn_fault.after
        self.connections.append(conn)
        beat = asyncio.ensure_future(self._beat(conn))
        try:
            await conn.send(self._status(conn))
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._receive(conn, frame.data)
        finally:
            beat.cancel()
            self.connections.remove(conn)
        return ws

    def _status(self, conn: Connection) -> dict[str, Any]:
        if conn.v2:
            data = {"version": "2.0.10", "system": "online", "api_version": "v2"}
            return {"channel": "status", "type": "update", "data": [data]}
        return {"event": "systemStatus", "status": "online", "version": "1.9.0"}

    async def _beat(self, conn: Connection) -> None:
        """A heartbeat, and an update of every subscribed public channel, each interval."""
        while not conn.ws.closed:
            await asyncio.sleep(self.interval)
            await conn.send({"channel": "heartbeat"} if conn.v2 else {"event": "heartbeat"})
            for channel, symbols in list(conn.subscriptions.items()):
                if channel in _PUBLIC:
                    for symbol in symbols:
                        await conn.send(self._data(conn, channel, symbol, "update"))

    # -- messages in -----------------------------------------------------------------

    async def _receive(self, conn: Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        method = message.get("method") if conn.v2 else message.get("event")
        req = message.get("req_id") if conn.v2 else message.get("reqid")
        if method == "ping":
            reply = {"method": "pong", "req_id": req} if conn.v2 else {"event": "pong"}
            if not conn.v2 and req is not None:
                reply["reqid"] = req
            await conn.send(reply, pong=True)
        elif method == "subscribe":
            await self._subscribe(conn, message, req)
        elif conn.v2 and method in _ORDERS:
            await self._order(conn, method, message.get("params") or {}, req)
        elif conn.v2 and isinstance(method, str):  # amend_order, batch_add, ...: not served
            await conn.send(self._answer(conn, method, req, error="EGeneral:Unknown method"))

    def _answer(
        self, conn: Connection, method: str, req: Any, *, error: str | None = None, **result: Any
    ) -> dict[str, Any]:
        now = _stamp(self._wall_clock())
        answer: dict[str, Any] = {"method": method, "req_id": req, "success": error is None}
        if error is None:
            answer["result"] = result
        else:
            answer["error"] = error
        return {**answer, "time_in": now, "time_out": now}

    async def _apply(self, conn: Connection, endpoint: str) -> str | None:
        """Play the script's fault for a subscription or an order: the error to answer,
        if any; ``""`` when the fault dropped the socket."""
        fault = self._faults.draw(endpoint, conn.group)
        if fault is None:
            return None
        if fault.gate is not None:
            await self._pause(None, fault.gate)
            return None
        if fault.kind == "latency":
            await self._pause(fault.delay)
            return None
        if fault.kind == "disconnect":
            conn.drop()
            return ""
        message = _fault_message(fault)
        return message or "EService:Unavailable"

    async def _subscribe(self, conn: Connection, message: dict[str, Any], req: Any) -> None:
        if conn.v2:
            params = message.get("params") or {}
            channel = params.get("channel")
            symbols = params.get("symbol") or [None]
            token = params.get("token")
        else:
            subscription = message.get("subscription") or {}
            channel = subscription.get("name")
            symbols = message.get("pair") or [None]
            token = subscription.get("token")
            params = subscription
        channel = str(channel)
        error = await self._apply(conn, channel)
        if error == "":
            return
        if error is None:
            error = self._check(conn, channel, symbols, params, token)
        if error is not None:
            await conn.send(self._sub_answer(conn, channel, symbols[0], req, error, {}))
            return
        echo = {k: v for k, v in params.items() if k != "token"}  # v1 echoes its request
        for symbol in symbols:
            conn.subscriptions.setdefault(channel, [])
            if symbol not in conn.subscriptions[channel]:
                conn.subscriptions[channel].append(symbol)
            await conn.send(self._sub_answer(conn, channel, symbol, req, None, echo))
            await conn.send(self._data(conn, channel, symbol, "snapshot"))

    def _check(
        self, conn: Connection, channel: Any, symbols: list[Any], params: Any, token: Any
    ) -> str | None:
        """The caller's mistakes, answered as Kraken words them."""
        private = conn.group == "ws-private"
        served = (
            (_PRIVATE if private else _PUBLIC)
            if conn.v2
            else (_V1_PRIVATE if private else _V1_PUBLIC)
        )
        if channel not in served:
            return "Subscription name invalid"
        if private:
            key = self._tokens.get(token) if isinstance(token, str) else None
            if key is None:
                return "ESession:Invalid session"
            conn.key = key
            return None
        try:
            for symbol in symbols:
                _market(symbol)
        except KrakenError as exc:
            return exc.message
        depth = params.get("depth")
        if channel == "book" and depth is not None and depth not in _DEPTHS:
            return "Subscription depth not supported"
        if not conn.v2 and channel == "ohlc":
            conn.interval = int(params.get("interval") or 1)
        return None

    def _sub_answer(
        self,
        conn: Connection,
        channel: str,
        symbol: Any,
        req: Any,
        error: str | None,
        echo: dict[str, Any],
    ) -> dict[str, Any]:
        if conn.v2:
            result = (
                {"channel": channel} if symbol is None else {"channel": channel, "symbol": symbol}
            )
            return self._answer(conn, "subscribe", req, error=error, **result)
        status: dict[str, Any] = {
            "event": "subscriptionStatus",
            "reqid": req,
            "status": "error" if error else "subscribed",
            "subscription": {**echo, "name": channel},
        }
        if symbol is not None:
            status["pair"] = symbol
        if error:
            status["errorMessage"] = error
        else:
            status["channelName"] = f"ohlc-{conn.interval}" if channel == "ohlc" else channel
            status["channelID"] = conn.channel_ids.setdefault((channel, symbol), next(_channel_ids))
        return status

    # -- data out --------------------------------------------------------------------

    def _data(self, conn: Connection, channel: str, symbol: Any, kind: str) -> Any:
        wall = self._wall_clock()
        if not conn.v2:
            return self._v1_data(conn, channel, symbol, wall)
        if channel == "executions":
            orders = self._orders(conn)
            return {"channel": "executions", "type": kind, "data": orders, "sequence": 1}
        if channel == "balances":
            return {"channel": "balances", "type": kind, "data": self._balances(conn)}
        market = _market(symbol)
        mid, tick = market.mid, market.tick
        payload: Any
        if channel == "ticker":
            payload = {
                "symbol": symbol,
                "bid": float(mid - tick),
                "bid_qty": 2.0,
                "ask": float(mid + tick),
                "ask_qty": 3.0,
                "last": float(mid),
                "volume": 1450.25,
                "vwap": float(mid),
                "low": float(mid * Decimal("0.97")),
                "high": float(mid * Decimal("1.03")),
                "change": 0.0,
                "change_pct": 0.0,
            }
        elif channel == "book":
            levels = range(1, 11)
            payload = {
                "symbol": symbol,
                "bids": [{"price": float(mid - tick * i), "qty": float(i)} for i in levels],
                "asks": [{"price": float(mid + tick * i), "qty": float(i)} for i in levels],
                "checksum": 0,
                "timestamp": _stamp(wall),
            }
        elif channel == "trade":
            payload = {
                "symbol": symbol,
                "side": "buy",
                "price": float(mid),
                "qty": 0.01,
                "ord_type": "limit",
                "trade_id": int(wall * 1000) % 10**9,
                "timestamp": _stamp(wall),
            }
        else:  # ohlc
            begin = int(wall) // 60 * 60
            payload = {
                "symbol": symbol,
                "open": float(mid),
                "high": float(mid + tick),
                "low": float(mid - tick),
                "close": float(mid),
                "trades": 3,
                "volume": 1.5,
                "vwap": float(mid),
                "interval_begin": _stamp(begin),
                "interval": 1,
                "timestamp": _stamp(begin + 60),
            }
        return {"channel": channel, "type": kind, "data": [payload]}

    def _v1_data(self, conn: Connection, channel: str, symbol: Any, wall: float) -> Any:
        """Kraken's v1 arrays: ``[channelID, candle, "ohlc-1", pair]`` and
        ``[[{txid: order}], "openOrders", {"sequence": n}]``."""
        if channel == "openOrders":
            orders = self._account(conn.key).orders.values() if conn.key else ()
            return [[{o.txid: _v1_order(o)} for o in orders], channel, {"sequence": 1}]
        if channel == "ownTrades":
            return [[], channel, {"sequence": 1}]
        market = _market(symbol)
        mid, tick, step = market.mid, market.tick, conn.interval * 60
        end = (int(wall) // step + 1) * step
        prices = [mid, mid + tick, mid - tick, mid, mid]  # open, high, low, close, vwap
        candle = [f"{wall:.6f}", f"{end:.6f}", *map(market.price, prices), "1.50000000", 3]
        channel_id = conn.channel_ids.get((channel, symbol), 0)
        return [channel_id, candle, f"ohlc-{conn.interval}", symbol]

    def _orders(self, conn: Connection) -> list[dict[str, Any]]:
        if conn.key is None:
            return []
        return [
            {
                "order_id": o.txid,
                "symbol": _v2_symbol(o.market),
                "order_qty": float(o.volume),
                "side": o.side,
                "order_type": o.ordertype,
                "limit_price": float(o.price or 0),
                "order_status": "new" if o.status == "open" else o.status,
                "exec_type": "new" if o.status == "open" else o.status,
                "timestamp": _stamp(o.opentm),
            }
            for o in self._account(conn.key).orders.values()
        ]

    def _balances(self, conn: Connection) -> list[dict[str, Any]]:
        if conn.key is None:
            return []
        names = {asset: info["altname"].replace("XBT", "BTC") for asset, info in ASSETS.items()}
        return [
            {"asset": names.get(asset, asset), "asset_class": "currency", "balance": float(v)}
            for asset, v in self._account(conn.key).balances.items()
        ]

    # -- order entry -----------------------------------------------------------------

    async def _order(self, conn: Connection, method: str, params: Any, req: Any) -> None:
        error = await self._apply(conn, method)
        if error == "":
            return
        token = params.get("token") if isinstance(params, dict) else None
        key = self._tokens.get(token) if isinstance(token, str) else None
        if error is None and (conn.group != "ws-private" or key is None):
            error = "ESession:Invalid session"
        result: dict[str, Any] = {}
        if error is None:
            assert key is not None
            account = self._account(key)
            now = self._clock()
            try:
                if self._rate_limits() and not account.trading.try_add(1, now):
                    raise KrakenError("EOrder:Rate limit exceeded")
                result = self._engine(account, method, params)
            except KrakenError as exc:
                error = exc.message
        await conn.send(self._answer(conn, method, req, error=error, **result))
        if error is None:  # the key's order streams see the change, on v2 and v1
            for other in self.connections:
                for channel in ("executions", "openOrders"):
                    if other.key == key and channel in other.subscriptions:
                        await other.send(self._data(other, channel, None, "update"))

    def _engine(self, account: Account, method: str, params: dict[str, Any]) -> dict[str, Any]:
        now = self._wall_clock()
        if method == "add_order":
            market = _market(params.get("symbol"))
            rest = {
                "pair": market.id,
                "type": str(params.get("side")),
                "ordertype": str(params.get("order_type")),
                "volume": str(params.get("order_qty")),
            }
            if params.get("limit_price") is not None:
                rest["price"] = str(params["limit_price"])
            placed = account.add_order(rest, now)
            return {"order_id": placed["txid"][0]}
        if method == "cancel_order":
            ids = params.get("order_id") or []
            for txid in ids:
                account.cancel({"txid": str(txid)}, now)
            return {"order_id": ids[0] if ids else None}
        return account.cancel_all(now)


def _v1_order(order: Order) -> dict[str, Any]:
    # the REST order, with the pair named as the v1 socket names it (XBT/USD)
    info = order.to_kraken()
    info["descr"] = {**info["descr"], "pair": order.market.wsname}
    return info


def _fault_message(fault: Fault) -> str | None:
    try:
        errors = json.loads(fault.body).get("error")
    except (ValueError, AttributeError):
        return None
    return str(errors[0]) if errors else None
