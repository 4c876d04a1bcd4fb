"""Kraken's failure domains: which group guards an endpoint, and what a limit closes.

Kraken limits three things separately, and a limit should stop only the calls it
covers:

* ``public`` calls are limited per IP;
* every signed call shares the per-key REST counter, except order placement and
  cancellation, which the trading engine limits per pair (domain ``orders``);
* a temporary lockout bans the key itself, so every signed call stops.

ccxt.pro's websocket calls have their own groups, ``ws-public`` and ``ws-private``
(the domain ``socket``, which no named REST limit closes), except order entry over the
socket, which the trading engine limits as it limits REST order entry: those calls are
endpoints of the ``trading`` group (domain ``orders``).

A group's domains are those of its endpoints, so the scopes stay right when a user
moves an endpoint to a group of their own.  Nothing here imports ccxt: the hook applies
these rules to what ccxt raised.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_GROUPS",
    "MAX_NAMED_WAIT",
    "WS_GROUPS",
    "WS_ORDER_METHODS",
    "endpoint_table",
    "is_outage",
    "is_ws_outage",
    "named_limit",
    "section_default",
    "ws_endpoint",
    "ws_endpoint_table",
    "ws_group",
]

DEFAULT_GROUPS = ("public", "private", "trading", "funding", "earn")

WS_GROUPS = ("ws-public", "ws-private")

# limit domains
PUBLIC, REST, ORDERS, SOCKET = "public", "rest", "orders", "socket"
# limit scopes: which domains a named limit closes; CALL means the caller's group only
KEY, CALL = "key", "call"
SCOPES: Mapping[str, frozenset[str]] = {
    KEY: frozenset({REST, ORDERS}),
    REST: frozenset({REST}),
    ORDERS: frozenset({ORDERS}),
}

_TRADING = frozenset(
    {
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
_FUNDING_PREFIXES = ("Deposit", "Withdraw")
_FUNDING = frozenset({"WalletTransfer", "AccountTransfer", "CreateSubaccount"})

# ccxt leaves these as a plain ExchangeError, yet they mean the exchange is overloaded
# or in maintenance (ccxt before 4.5.90 does not map the market modes to OnMaintenance).
OUTAGE_MARKERS = (
    "EService:Throttled",
    "EService:Deadline elapsed",
    "EService:Market in post_only mode",
    "EService:Market in cancel_only mode",
)
_THROTTLED_UNTIL = re.compile(r"EService:Throttled:\s*(\d+(?:\.\d+)?)")
# The longest wait the exchange may name (Retry-After, EService:Throttled): a skewed
# clock or a garbled header must not keep a circuit open for days.
MAX_NAMED_WAIT = 3600.0


def is_outage(message: str, status: int | None = None) -> bool:
    """Whether an error that ccxt leaves unclassified says the exchange is failing: by one
    of Kraken's messages, or by an HTTP 5xx or 429 status under a JSON error ccxt does not
    map."""
    if status is not None and (status == 429 or 500 <= status <= 599):
        return True
    return any(marker in message for marker in OUTAGE_MARKERS)


def section_default(section: str) -> str:
    """The group of an endpoint nobody listed: public sections stay public, the rest private."""
    return "private" if section == "private" else "public"


def group(section: str, path: str) -> str:
    if section != "private":
        return "public"
    if path in _TRADING:
        return "trading"
    if path.startswith(_FUNDING_PREFIXES) or path in _FUNDING:
        return "funding"
    if path.startswith("Earn/"):
        return "earn"
    return "private"


def domain(section: str, path: str) -> str:
    if section != "private":
        return PUBLIC
    return ORDERS if path in _TRADING else REST


def endpoint_table(api: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """``{path: (section, default group, domain)}`` from ccxt's ``describe()['api']``."""
    table: dict[str, tuple[str, str, str]] = {}
    for section, methods in api.items():
        for paths in methods.values():
            names: Iterable[str] = paths.keys() if isinstance(paths, Mapping) else paths
            for path in names:
                table[path] = (section, group(section, path), domain(section, path))
    return table


def _wait(seconds: float) -> float:
    return min(max(0.0, seconds), MAX_NAMED_WAIT)


def _retry_after(headers: Mapping[str, str] | None, wall_now: float) -> float | None:
    """Seconds named by a ``Retry-After`` header (seconds or an HTTP date), if valid."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not isinstance(value, str):
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT, never local time
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - wall_now
    return _wait(seconds) if math.isfinite(seconds) else None


def named_limit(
    message: str,
    status: int | None,
    headers: Mapping[str, str] | None,
    wall_now: float,
    lockout: float,
) -> tuple[str, float] | None:
    """``(scope, seconds)`` when a failure is a limit that must open circuits at once.

    ``seconds`` is how long the exchange says the limit lasts (0 when it names no time,
    at most :data:`MAX_NAMED_WAIT`); circuits stay open for the later of that and their
    normal open time.  ``lockout`` is the configured lockoutDuration.
    """
    named = _retry_after(headers, wall_now) or 0.0
    if "EGeneral:Temporary lockout" in message:
        return KEY, max(lockout, named)
    if "EAPI:Rate limit exceeded" in message:
        return REST, named
    if "EOrder:Rate limit exceeded" in message:
        return ORDERS, named
    throttled = _THROTTLED_UNTIL.search(message)
    if throttled:
        return CALL, max(_wait(float(throttled.group(1)) - wall_now), named)
    if status == 429 or "EGeneral:Too many requests" in message:
        return CALL, named
    return None


# --- the websocket side (ccxt.pro) ---------------------------------------------------

# The keys of ccxt.pro's urls['api']['ws'] for Kraken, by group: v1 and v2 of each socket.
_WS_URL_KEYS = {
    "public": "ws-public",
    "publicV2": "ws-public",
    "beta": "ws-public",
    "private": "ws-private",
    "privateV2": "ws-private",
    "beta-private": "ws-private",
}
# The channels ccxt.pro subscribes to (v2 and v1 names), and the order entry methods of
# the v2 private socket: a websocket call is counted under one of these endpoints.
_WS_PUBLIC = ("ticker", "book", "trade", "ohlc", "spread", "heartbeat")
_WS_PRIVATE = ("executions", "balances", "openOrders", "ownTrades")
WS_ORDER_METHODS = frozenset(
    {
        "add_order",
        "amend_order",
        "edit_order",
        "cancel_order",
        "cancel_all",
        "cancel_all_orders_after",
        "batch_add",
        "batch_cancel",
    }
)
# Error answers that say the exchange is failing or limiting, not that the request was
# wrong; any other error answer ("Currency pair not supported", "Subscription depth not
# supported", "EOrder:Insufficient funds") is the caller's fault.
_WS_OUTAGE_MARKERS = (
    "EService:",
    "EGeneral:Internal error",
    "EDatabase:Internal error",
    "Rate limit exceeded",
    "Too many requests",
    "Temporary lockout",
    "Exceeded msg rate",
)


def ws_endpoint_table() -> dict[str, tuple[str, str, str]]:
    """The websocket endpoints of ``ccxt.pro.kraken``, in :func:`endpoint_table`'s form."""
    table = {name: ("ws", "ws-public", SOCKET) for name in _WS_PUBLIC}
    table.update({name: ("ws", "ws-private", SOCKET) for name in _WS_PRIVATE})
    table.update({name: ("ws", "trading", ORDERS) for name in sorted(WS_ORDER_METHODS)})
    return table


def ws_group(url: str, urls: Mapping[str, Any]) -> str:
    """The group of a websocket URL: by its key in ccxt's ``urls['api']['ws']`` (which a
    test points at a simulator), else by Kraken's naming of the private host."""
    for key, value in urls.items():
        if value == url and key in _WS_URL_KEYS:
            return _WS_URL_KEYS[key]
    return "ws-private" if "-auth" in url else "ws-public"


def ws_endpoint(message: Any) -> str | None:
    """The endpoint of a message ccxt.pro sends: an order method, or the channel (v2:
    ``params.channel``; v1: ``subscription.name``); ``None`` when neither is named."""
    if not isinstance(message, Mapping):
        return None
    method = message.get("method")
    if method in WS_ORDER_METHODS:
        return str(method)
    for holder, key in (("params", "channel"), ("subscription", "name")):
        inner = message.get(holder)
        if isinstance(inner, Mapping) and isinstance(inner.get(key), str):
            return str(inner[key])
    return None


def is_ws_outage(message: str) -> bool:
    """Whether a websocket error answer says the exchange is failing or limiting."""
    return any(marker in message for marker in _WS_OUTAGE_MARKERS)
