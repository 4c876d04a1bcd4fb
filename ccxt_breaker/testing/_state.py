"""The simulated exchange without I/O: endpoints, markets, rate counters and accounts.

Everything here takes ``now`` as an argument, so the HTTP layer owns the clocks and a
test can drive time by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, Literal

__all__ = [
    "ASSETS",
    "GROUPS",
    "MARKETS",
    "TIERS",
    "WS_GROUPS",
    "Account",
    "DecayingCounter",
    "Group",
    "KrakenError",
    "Market",
    "Order",
    "Tier",
    "endpoint_group",
    "find_market",
    "rest_cost",
]

Group = Literal["public", "private", "trading", "funding", "earn"]
GROUPS: tuple[Group, ...] = ("public", "private", "trading", "funding", "earn")
# the websocket sockets' groups, which fault rules may name beside the REST ones
WS_GROUPS: tuple[str, ...] = ("ws-public", "ws-private")

# Kraken's REST reference (docs.kraken.com/api, "Spot REST"), section by section.  This
# table is the simulator's own on purpose: written from the documentation, not taken from
# the breaker, so a grouping mistake in the breaker shows up against it in tests.
_TRADING = frozenset(
    {
        # "Trading"
        "AddOrder",
        "AddOrderBatch",
        "AmendOrder",
        "EditOrder",
        "CancelOrder",
        "CancelAll",
        "CancelAllOrdersAfter",
        "CancelOrderBatch",
    }
)
_FUNDING = frozenset(
    {
        # "Funding"
        "DepositMethods",
        "DepositAddresses",
        "DepositStatus",
        "WithdrawMethods",
        "WithdrawAddresses",
        "WithdrawInfo",
        "Withdraw",
        "WithdrawStatus",
        "WithdrawCancel",
        "WalletTransfer",
        # "Subaccounts": they move funds between accounts
        "CreateSubaccount",
        "AccountTransfer",
    }
)
_EARN = frozenset(
    {
        # "Earn"
        "Earn/Allocate",
        "Earn/Deallocate",
        "Earn/AllocateStatus",
        "Earn/DeallocateStatus",
        "Earn/Strategies",
        "Earn/Allocations",
    }
)


def endpoint_group(section: str, endpoint: str) -> Group:
    """The group a request to Kraken's ``/0/<section>/<endpoint>`` falls in."""
    if section != "private":
        return "public"
    if endpoint in _TRADING:
        return "trading"
    if endpoint in _FUNDING:
        return "funding"
    if endpoint in _EARN:
        return "earn"
    return "private"  # account data, websocket tokens, exports, ...


def rest_cost(endpoint: str) -> int:
    """What one call adds to the per-key REST counter (Kraken's documented costs)."""
    return 2 if endpoint in ("Ledgers", "TradesHistory") else 1


class KrakenError(Exception):
    """A Kraken error string to answer with, e.g. ``EOrder:Insufficient funds``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Tier:
    """Kraken's verification tier: the REST counter and the order counter it allows."""

    name: str
    rest_max: float
    rest_decay: float
    order_max: float
    order_decay: float


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("starter", 15, 0.33, 60, 1.0),
        Tier("intermediate", 20, 0.5, 125, 2.34),
        Tier("pro", 20, 1.0, 180, 3.75),
    )
}


@dataclass(slots=True)
class DecayingCounter:
    """Kraken's leaky counter: each call adds its cost, the level decays linearly.

    A call that would push the level over ``limit`` is refused and adds nothing,
    so a caller that backs off recovers at the decay rate.
    """

    limit: float
    decay: float
    level: float = 0.0
    at: float | None = None

    def try_add(self, cost: float, now: float) -> bool:
        if self.at is not None:
            self.level = max(0.0, self.level - (now - self.at) * self.decay)
        self.at = now
        if self.level + cost > self.limit:
            return False
        self.level += cost
        return True


@dataclass(frozen=True, slots=True)
class Market:
    """One spot pair with a fixed mid price, so every answer is reproducible."""

    id: str
    altname: str
    wsname: str
    base: str
    quote: str
    pair_decimals: int
    lot_decimals: int
    ordermin: str
    mid: Decimal

    @property
    def tick(self) -> Decimal:
        return Decimal(1).scaleb(-self.pair_decimals)

    def price(self, value: Decimal) -> str:
        return str(value.quantize(self.tick))

    def asset_pair(self) -> dict[str, Any]:
        return {
            "altname": self.altname,
            "wsname": self.wsname,
            "aclass_base": "currency",
            "base": self.base,
            "aclass_quote": "currency",
            "quote": self.quote,
            "lot": "unit",
            "cost_decimals": 5,
            "pair_decimals": self.pair_decimals,
            "lot_decimals": self.lot_decimals,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": [[0, 0.26], [50000, 0.24], [100000, 0.22]],
            "fees_maker": [[0, 0.16], [50000, 0.14], [100000, 0.12]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": self.ordermin,
            "costmin": "0.5",
            "tick_size": str(self.tick),
            "status": "online",
        }


MARKETS: tuple[Market, ...] = (
    Market("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD", 1, 8, "0.0001", Decimal("50000.0")),
    Market("XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD", 2, 8, "0.002", Decimal("3000.00")),
    Market("XETHXXBT", "ETHXBT", "ETH/XBT", "XETH", "XXBT", 5, 8, "0.002", Decimal("0.06000")),
)

ASSETS: dict[str, dict[str, Any]] = {
    "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5},
    "XETH": {"aclass": "currency", "altname": "ETH", "decimals": 10, "display_decimals": 5},
    "ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2},
}
for _asset in ASSETS.values():
    _asset["status"] = "enabled"

_TAKER_FEE = Decimal("0.0026")
_ZERO = Decimal(0)


def find_market(pair: str) -> Market:
    """The market for an id (``XXBTZUSD``) or an altname (``XBTUSD``), as Kraken accepts both."""
    for market in MARKETS:
        if pair in (market.id, market.altname, market.wsname):
            return market
    raise KrakenError("EQuery:Unknown asset pair")


@dataclass(slots=True)
class Order:
    """One order as the simulated engine keeps it."""

    txid: str
    market: Market
    side: Literal["buy", "sell"]
    ordertype: Literal["limit", "market"]
    volume: Decimal
    price: Decimal | None
    opentm: float
    oflags: str = "fciq"
    cl_ord_id: str | None = None
    userref: int | None = None
    status: Literal["open", "closed", "canceled"] = "open"
    closetm: float | None = None
    reason: str | None = None
    vol_exec: Decimal = _ZERO
    cost: Decimal = _ZERO
    fee: Decimal = _ZERO
    trades: list[str] = field(default_factory=list)

    def description(self) -> str:
        volume = f"{self.volume:.8f}"
        pair = self.market.altname
        if self.ordertype == "market" or self.price is None:
            return f"{self.side} {volume} {pair} @ market"
        return f"{self.side} {volume} {pair} @ limit {self.market.price(self.price)}"

    def to_kraken(self, *, with_trades: bool = False) -> dict[str, Any]:
        average = self.cost / self.vol_exec if self.vol_exec else _ZERO
        info: dict[str, Any] = {
            "refid": None,
            "userref": self.userref,
            "status": self.status,
            "opentm": self.opentm,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": self.market.altname,
                "type": self.side,
                "ordertype": self.ordertype,
                "price": self.market.price(self.price) if self.price is not None else "0",
                "price2": "0",
                "leverage": "none",
                "order": self.description(),
                "close": "",
            },
            "vol": f"{self.volume:.8f}",
            "vol_exec": f"{self.vol_exec:.8f}",
            "cost": f"{self.cost:.5f}",
            "fee": f"{self.fee:.5f}",
            "price": self.market.price(average),
            "stopprice": "0.00000",
            "limitprice": "0.00000",
            "misc": "",
            "oflags": self.oflags,
        }
        if self.cl_ord_id is not None:
            info["cl_ord_id"] = self.cl_ord_id
        if self.status != "open":
            info["closetm"] = self.closetm
            info["reason"] = self.reason
        if with_trades and self.trades:
            info["trades"] = list(self.trades)
        return info


def _decimal(params: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise KrakenError(f"EGeneral:Invalid arguments:{name}")
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise KrakenError(f"EGeneral:Invalid arguments:{name}") from None
    if not value.is_finite() or value <= 0:
        raise KrakenError(f"EGeneral:Invalid arguments:{name}")
    return value


class Account:
    """One API key's side of the exchange: nonce, counters, balances and orders."""

    def __init__(self, tier: Tier, balances: dict[str, Decimal], ids: random.Random) -> None:
        self.last_nonce = 0
        self.rest = DecayingCounter(tier.rest_max, tier.rest_decay)
        self.trading = DecayingCounter(tier.order_max, tier.order_decay)
        self.balances = dict(balances)
        self.orders: dict[str, Order] = {}
        self._ids = ids

    def _id(self, prefix: str) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        chars = "".join(self._ids.choice(alphabet) for _ in range(16))
        return f"{prefix}{chars[:5]}-{chars[5:10]}-{chars[10:]}"

    def held(self, asset: str) -> Decimal:
        """What open orders reserve of ``asset`` (Kraken's ``hold_trade``)."""
        total = _ZERO
        for order in self.orders.values():
            if order.status != "open" or order.price is None:
                continue
            if order.side == "buy" and order.market.quote == asset:
                total += order.volume * order.price
            elif order.side == "sell" and order.market.base == asset:
                total += order.volume
        return total

    def balance_ex(self) -> dict[str, dict[str, str]]:
        return {
            asset: {"balance": f"{amount:.10f}", "hold_trade": f"{self.held(asset):.10f}"}
            for asset, amount in self.balances.items()
        }

    def add_order(self, params: dict[str, str], now: float) -> dict[str, Any]:
        market = find_market(params.get("pair", ""))
        if params.get("type") not in ("buy", "sell"):
            raise KrakenError("EGeneral:Invalid arguments:type")
        side: Literal["buy", "sell"] = "buy" if params["type"] == "buy" else "sell"
        if params.get("ordertype") not in ("limit", "market"):
            raise KrakenError("EGeneral:Invalid arguments:ordertype")
        ordertype: Literal["limit", "market"] = (
            "limit" if params["ordertype"] == "limit" else "market"
        )
        volume = _decimal(params, "volume")
        assert volume is not None
        volume = volume.quantize(Decimal(1).scaleb(-market.lot_decimals), rounding=ROUND_DOWN)
        if volume < Decimal(market.ordermin):
            raise KrakenError("EOrder:Order minimum not met")
        price = _decimal(params, "price", required=ordertype == "limit")
        if ordertype == "market":
            price = None
        else:
            assert price is not None
            price = price.quantize(market.tick)
        userref = params.get("userref")
        order = Order(
            txid=self._id("O"),
            market=market,
            side=side,
            ordertype=ordertype,
            volume=volume,
            price=price,
            opentm=now,
            oflags=params.get("oflags") or "fciq",
            cl_ord_id=params.get("cl_ord_id"),
            userref=int(userref) if userref and userref.lstrip("-").isdigit() else None,
        )
        fill_at = self._fill_price(order)
        self._check_funds(order, fill_at)
        descr = {"order": order.description()}
        if params.get("validate") in ("true", "True", "1"):
            return {"descr": descr}
        self.orders[order.txid] = order
        if fill_at is not None:
            self._fill(order, fill_at, now)
        return {"descr": descr, "txid": [order.txid]}

    def _fill_price(self, order: Order) -> Decimal | None:
        """Where the order trades at once: market orders always, limits only if marketable."""
        ask = order.market.mid + order.market.tick
        bid = order.market.mid - order.market.tick
        touch = ask if order.side == "buy" else bid
        if order.price is None:
            return touch
        if (order.side == "buy" and order.price >= ask) or (
            order.side == "sell" and order.price <= bid
        ):
            return touch
        return None

    def _check_funds(self, order: Order, fill_at: Decimal | None) -> None:
        market = order.market
        if order.side == "buy":
            asset = market.quote
            price = fill_at if fill_at is not None else order.price
            assert price is not None
            needed = order.volume * price * (1 + _TAKER_FEE)
        else:
            asset, needed = market.base, order.volume
        available = self.balances.get(asset, _ZERO) - self.held(asset)
        if needed > available:
            raise KrakenError("EOrder:Insufficient funds")

    def _fill(self, order: Order, price: Decimal, now: float) -> None:
        market = order.market
        cost = order.volume * price
        fee = cost * _TAKER_FEE
        sign = 1 if order.side == "buy" else -1
        self.balances[market.base] = self.balances.get(market.base, _ZERO) + sign * order.volume
        self.balances[market.quote] = self.balances.get(market.quote, _ZERO) - sign * cost - fee
        order.status, order.closetm = "closed", now
        order.vol_exec, order.cost, order.fee = order.volume, cost, fee
        order.trades.append(self._id("T"))

    def cancel(self, params: dict[str, str], now: float) -> dict[str, Any]:
        wanted = params.get("cl_ord_id") or params.get("txid") or ""
        hits = [
            o
            for o in self.orders.values()
            if o.status == "open"
            and wanted in (o.txid, o.cl_ord_id, str(o.userref) if o.userref is not None else None)
        ]
        if not hits:
            raise KrakenError("EOrder:Unknown order")
        for order in hits:
            self._close(order, now)
        return {"count": len(hits)}

    def cancel_all(self, now: float) -> dict[str, Any]:
        hits = [o for o in self.orders.values() if o.status == "open"]
        for order in hits:
            self._close(order, now)
        return {"count": len(hits)}

    @staticmethod
    def _close(order: Order, now: float) -> None:
        order.status, order.closetm, order.reason = "canceled", now, "User requested"

    def open_orders(self) -> dict[str, Any]:
        return {"open": {o.txid: o.to_kraken() for o in self.orders.values() if o.status == "open"}}

    def closed_orders(self) -> dict[str, Any]:
        closed = {
            o.txid: o.to_kraken()
            for o in sorted(self.orders.values(), key=lambda o: -(o.closetm or 0.0))
            if o.status != "open"
        }
        return {"closed": closed, "count": len(closed)}

    def query_orders(self, params: dict[str, str]) -> dict[str, Any]:
        with_trades = params.get("trades") in ("true", "True", "1")
        found: dict[str, Any] = {}
        for txid in filter(None, params.get("txid", "").split(",")):
            order = self.orders.get(txid)
            if order is None:
                raise KrakenError("EOrder:Invalid order")
            found[txid] = order.to_kraken(with_trades=with_trades)
        return found
