"""An in-process Kraken REST server that ccxt's ``kraken`` class talks to unchanged.

It answers the endpoints behind ccxt's unified methods with Kraken's response
shapes, checks ``API-Key``/``API-Sign``/nonce as Kraken does, keeps per-key orders,
balances and rate counters, and plays scripted faults (see ``_faults``).

Under ``/_simulator/`` the same server answers a small JSON control API, so a bot in
another process can be tested against scripted faults too (see ``_control_routes``).
Its handlers only translate: the rules are made by :meth:`Faults.add`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, cast, get_args
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler

from ._faults import Fault, FaultKind, FaultRule, Faults, FieldError, add_rule, describe_rule
from ._state import (
    ASSETS,
    GROUPS,
    MARKETS,
    TIERS,
    Account,
    Group,
    KrakenError,
    Market,
    Order,
    endpoint_group,
    find_market,
    rest_cost,
)
from ._websocket import WS_PATHS, WebsocketKraken

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "KrakenSimulator",
    "RequestRecord",
    "SystemStatus",
]

DEFAULT_API_KEY = "ccxt-breaker-simulator-key"
# Valid base64, since ccxt decodes the secret before signing; it guards nothing real.
DEFAULT_SECRET = base64.b64encode(b"ccxt-breaker-simulator-secret, not a real one").decode()
DEFAULT_BALANCES: Mapping[str, str] = {"ZUSD": "100000", "XXBT": "2", "XETH": "20"}

SystemStatus = Literal["online", "maintenance", "cancel_only", "post_only"]

CONTROL_PATH = "/_simulator"
"""Where the control API lives on the simulator's server; Kraken's paths start with /0/."""


@dataclass(slots=True)
class RequestRecord:
    """One request the simulator received.

    ``status`` is ``None`` while the request is in flight or when no HTTP answer was
    sent (a dropped connection, a client gone during latency); ``finished`` tells the
    two apart: it turns true once the server is done with the request, answered or
    not. ``error`` is the Kraken error string answered, ``fault`` the scripted fault
    that answered it, and ``key_id`` a short hash of the API key: the log never holds
    a key, a signature or a nonce.
    """

    endpoint: str
    group: Group
    method: str
    time: float
    key_id: str | None = None
    status: int | None = None
    error: str | None = None
    fault: FaultKind | None = None
    finished: bool = False


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _signature(secret: str, path: str, nonce: str, body: bytes) -> str:
    digest = hashlib.sha256(nonce.encode() + body).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def _envelope(result: Any) -> web.Response:
    return web.json_response({"error": [], "result": result})


def _error(message: str) -> web.Response:
    # Kraken reports application errors with HTTP 200; ccxt maps them from the body.
    return web.json_response({"error": [message]})


class KrakenSimulator:
    """A Kraken REST server on ``host`` (a free port by default), run in-process.

    ::

        async with KrakenSimulator() as sim:
            exchange = ccxt.async_support.kraken(sim.ccxt_config())
            sim.faults.add(Fault.http(503), endpoint="Ticker", times=3)

    ``credentials`` maps API keys to base64 secrets (default: one fake pair,
    :data:`DEFAULT_API_KEY` / :data:`DEFAULT_SECRET`). ``tier`` picks Kraken's
    per-key counters (``starter``, ``intermediate``, ``pro``); ``rate_limits=False``
    turns them off. ``clock`` (monotonic seconds) drives the counters, fault spans and
    the request log, so tests can advance time by hand; ``wall_clock`` supplies the
    Unix timestamps in answers. ``balances`` are each key's starting balances, by
    Kraken asset id; ``seed`` makes order ids reproducible.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Mapping[str, str] | None = None,
        tier: str = "starter",
        rate_limits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        balances: Mapping[str, str] | None = None,
        seed: int = 0,
        ws_interval: float = 1.0,
    ) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        self._credentials = dict(credentials or {DEFAULT_API_KEY: DEFAULT_SECRET})
        if not self._credentials:
            raise ValueError("credentials must hold at least one (key, secret) pair")
        for secret in self._credentials.values():
            base64.b64decode(secret, validate=True)  # fail here, not inside ccxt's sign()
        self._host, self._port = host, port
        self._tier = TIERS[tier]
        self.rate_limits = rate_limits
        """Whether the per-key REST and order counters are enforced."""
        self._clock, self._wall_clock = clock, wall_clock
        self._balances = {k: Decimal(v) for k, v in (balances or DEFAULT_BALANCES).items()}
        self._ids = random.Random(seed)
        self._accounts: dict[str, Account] = {}
        self._log: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.faults = Faults(clock)
        """The fault script: ``sim.faults.add(Fault..., endpoint=..., times=...)``."""
        self.status: SystemStatus = "online"
        """What SystemStatus reports; anything but ``online`` also restricts trading."""
        self._tokens: dict[str, str] = {}  # websocket token -> API key
        self.websocket = WebsocketKraken(
            faults=self.faults,
            account=self._account,
            tokens=self._tokens,
            clock=clock,
            wall_clock=wall_clock,
            pause=self._pause,
            rate_limits=lambda: self.rate_limits,
            interval=ws_interval,
        )
        """The websocket side: ``dials`` per path, open ``connections``, ``interval``."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> KrakenSimulator:
        """Bind and serve; ``async with`` does this for you."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = web.Application(middlewares=[_control_errors])
        app.router.add_route("*", "/0/{section:public|private}/{endpoint:.+}", self._handle)
        app.router.add_route("GET", "/{section:zendesk}/{endpoint:[0-9]+}", self._handle)
        app.router.add_routes(self._control_routes())
        app.router.add_routes(self.websocket.routes())
        # handler_cancellation stays off (aiohttp's default): a request whose client
        # timed out must still run to completion, as on a real exchange.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()  # a port in use leaves nothing behind
            raise
        self._runner = runner
        self._closing = asyncio.Event()
        self._port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Close the server; requests held by a latency or hold fault are answered first.
        The fault rules stay, so a restarted simulator plays the same script."""
        if self._runner is None:
            return
        self._closing.set()
        runner, self._runner = self._runner, None
        await self.websocket.close_all()
        await runner.cleanup()

    async def __aenter__(self) -> KrakenSimulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- pointing a client at it -----------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (ccxt appends ``/0/public/...``)."""
        if self._runner is None:
            raise RuntimeError("the simulator is not running; use `async with` or start()")
        return f"http://{self._host}:{self._port}"

    @property
    def ws_urls(self) -> dict[str, str]:
        """ccxt.pro kraken's ``urls['api']['ws']``, pointed at this simulator."""
        base = "ws" + self.url[len("http") :]
        return {
            "public": base + "/ws/public",
            "publicV2": base + "/ws/public/v2",
            "private": base + "/ws/private",
            "privateV2": base + "/ws/private/v2",
        }

    def dials(self, url: str | None = None) -> int:
        """How many websocket dials reached the server: to one socket (a URL of
        :attr:`ws_urls`, or its path), or to all."""
        counts = self.websocket.dials
        if url is None:
            return sum(counts.values())
        path = "/ws/" + url.split("/ws/", 1)[1] if "/ws/" in url else url
        if path not in WS_PATHS:
            raise ValueError(f"not a websocket URL of this simulator: {url!r}")
        return counts.get(path, 0)

    def reset_dials(self) -> None:
        """Forget the websocket dials counted so far."""
        self.websocket.dials.clear()

    @property
    def control_url(self) -> str:
        """The control API's base URL, :attr:`url` + ``/_simulator``."""
        return self.url + CONTROL_PATH

    @property
    def api_key(self) -> str:
        """The first configured API key (the fake default unless you passed credentials)."""
        return next(iter(self._credentials))

    @property
    def secret(self) -> str:
        """The secret of :attr:`api_key`."""
        return self._credentials[self.api_key]

    def ccxt_config(self, api_key: str | None = None, secret: str | None = None) -> dict[str, Any]:
        """The constructor config for ``ccxt.async_support.kraken`` (or a subclass).

        Merge your own keys on top; ``enableRateLimit`` and ``timeout`` are left to you.
        """
        key = api_key if api_key is not None else self.api_key
        if secret is None:
            secret = self._credentials.get(key, self.secret)
        return {
            "apiKey": key,
            "secret": secret,
            "urls": {
                "api": {
                    "public": self.url,
                    "private": self.url,
                    "zendesk": f"{self.url}/zendesk",
                    "ws": self.ws_urls,
                }
            },
        }

    # -- scripting and inspection ----------------------------------------------------

    def maintenance(self, on: bool = True) -> None:
        """SystemStatus says ``maintenance``; private endpoints answer ``EService:Unavailable``."""
        self.status = "maintenance" if on else "online"

    def clear_faults(self) -> None:
        """Drop every scripted fault (same as ``sim.faults.clear()``)."""
        self.faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the start or the last :meth:`reset_log`, oldest first."""
        return list(self._log)

    def count(self, endpoint: str | None = None, group: Group | None = None) -> int:
        """How many requests reached the server, for one endpoint and/or group or in all."""
        return sum(
            1
            for r in self._log
            if (endpoint is None or r.endpoint == endpoint) and (group is None or r.group == group)
        )

    def reset_log(self) -> None:
        """Forget the requests received so far."""
        self._log.clear()

    def orders(self, api_key: str | None = None) -> list[Order]:
        """The orders the engine holds for a key (default :attr:`api_key`), oldest first."""
        account = self._accounts.get(api_key if api_key is not None else self.api_key)
        return list(account.orders.values()) if account else []

    def _account(self, key: str) -> Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = Account(self._tier, self._balances, self._ids)
        return account

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        section = request.match_info["section"]
        endpoint = request.match_info["endpoint"]
        key = request.headers.get("API-Key")
        record = RequestRecord(
            endpoint=endpoint,
            group=endpoint_group(section, endpoint),
            method=request.method,
            time=self._clock(),
            key_id=_key_id(key) if key else None,
        )
        self._log.append(record)
        try:
            return await self._serve(request, record, section, endpoint)
        finally:
            record.finished = True

    async def _serve(
        self, request: web.Request, record: RequestRecord, section: str, endpoint: str
    ) -> web.StreamResponse:
        fault = self.faults.draw(endpoint, record.group)
        record.fault = fault.kind if fault is not None else None
        if fault is not None and fault.gate is not None:
            await self._pause(None, fault.gate)
            if _dropped(request):
                return web.Response()  # as below: nothing reaches a client that left
            fault = None
        if fault is None or fault.kind == "latency":
            response = await self._answer(request, section, endpoint, fault)
        else:
            response = await self._fail(request, fault)
        if response is None:
            return web.Response()  # aiohttp's write to the closed transport fails quietly
        record.status = response.status
        if isinstance(response, web.Response):
            record.error = _first_error(response)
        return response

    async def _answer(
        self, request: web.Request, section: str, endpoint: str, latency: Fault | None
    ) -> web.StreamResponse | None:
        if latency is not None and not latency.applied:
            await self._pause(latency.delay)
            if _dropped(request):
                # the client gave up while the request was held: nothing reached the engine
                return None
        body = await request.read()
        if section == "zendesk":
            return _envelope_article(endpoint)
        if section == "public":
            response = self._public(endpoint, dict(request.query))
        else:
            response = self._private(request, endpoint, body)
        if latency is not None and latency.applied:
            await self._pause(latency.delay)
        return response

    async def _pause(self, seconds: float | None, gate: asyncio.Event | None = None) -> None:
        # Ends early when the simulator stops, so shutdown never waits for a long delay.
        waits = [asyncio.ensure_future(self._closing.wait())]
        if gate is not None:
            waits.append(asyncio.ensure_future(gate.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "disconnect":
            _close(request)
            return None
        if fault.kind == "truncated":
            response = web.StreamResponse(status=200)
            response.content_type = "application/json"
            # promise more than is sent, so the client sees a short body, not a short header
            response.content_length = len(fault.body) + 1024
            await response.prepare(request)
            await response.write(fault.body.encode())
            _close(request)
            return response
        return web.Response(
            status=fault.status,
            body=fault.body.encode(),
            content_type=fault.content_type,
            headers=dict(fault.headers),
        )

    # -- control API -----------------------------------------------------------------

    def _control_routes(self) -> list[web.RouteDef]:
        """JSON in and out; a bad field is a 400 naming it (see ``_control_errors``)."""
        return [
            web.get(f"{CONTROL_PATH}/faults", self._list_faults),
            web.post(f"{CONTROL_PATH}/faults", self._add_fault),
            web.delete(f"{CONTROL_PATH}/faults", self._clear_faults),
            web.delete(f"{CONTROL_PATH}/faults/{{id:[0-9]+}}", self._remove_fault),
            web.post(f"{CONTROL_PATH}/faults/{{id:[0-9]+}}/release", self._release_fault),
            web.get(f"{CONTROL_PATH}/status", self._get_status),
            web.put(f"{CONTROL_PATH}/status", self._set_status),
            web.get(f"{CONTROL_PATH}/requests", self._list_requests),
            web.delete(f"{CONTROL_PATH}/requests", self._reset_requests),
            web.get(f"{CONTROL_PATH}/dials", self._list_dials),
            web.delete(f"{CONTROL_PATH}/dials", self._reset_dials),
        ]

    def _active_rules(self) -> list[FaultRule]:
        now = self._clock()
        return [rule for rule in self.faults if not rule.spent(now)]

    def _rule(self, request: web.Request) -> FaultRule:
        wanted = int(request.match_info["id"])
        for rule in self._active_rules():
            if rule.id == wanted:
                return rule
        raise _ControlError(404, f"no active fault rule {wanted}")

    async def _list_faults(self, request: web.Request) -> web.Response:
        now = self._clock()
        return web.json_response({"faults": [describe_rule(r, now) for r in self._active_rules()]})

    async def _add_fault(self, request: web.Request) -> web.Response:
        rule = add_rule(self.faults, await _json_body(request))
        return web.json_response(describe_rule(rule, self._clock()), status=201)

    async def _clear_faults(self, request: web.Request) -> web.Response:
        removed = len(self._active_rules())
        self.faults.clear()
        return web.json_response({"removed": removed})

    async def _remove_fault(self, request: web.Request) -> web.Response:
        rule = self._rule(request)
        self.faults.remove(rule)
        return web.json_response(describe_rule(rule, self._clock()))

    async def _release_fault(self, request: web.Request) -> web.Response:
        rule = self._rule(request)
        if rule.fault.kind != "hold":
            raise _ControlError(
                409, f"fault rule {rule.id} is {rule.fault.kind}: only a hold is released"
            )
        rule.fault.release()
        return web.json_response(describe_rule(rule, self._clock()))

    async def _get_status(self, request: web.Request) -> web.Response:
        return web.json_response({"status": self.status})

    async def _set_status(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise FieldError("body", 'must be a JSON object such as {"status": "maintenance"}')
        for name in body:
            if name != "status":
                raise FieldError(str(name), "is not a field here (status is)")
        status = body.get("status")
        if not isinstance(status, str) or status not in get_args(SystemStatus):
            raise FieldError(
                "status", f"must be one of {', '.join(get_args(SystemStatus))}, not {status!r}"
            )
        self.status = cast(SystemStatus, status)
        return web.json_response({"status": self.status})

    async def _list_requests(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        for name in query:
            if name not in ("endpoint", "group"):
                raise FieldError(name, "is not a filter (endpoint and group are)")
        endpoint, group = query.get("endpoint"), query.get("group")
        if group is not None and group not in GROUPS:
            raise FieldError("group", f"must be one of {', '.join(GROUPS)}, not {group!r}")
        records = [
            asdict(r)
            for r in self._log
            if (endpoint is None or r.endpoint == endpoint) and (group is None or r.group == group)
        ]
        return web.json_response({"requests": records})

    async def _list_dials(self, request: web.Request) -> web.Response:
        return web.json_response({"dials": {p: self.websocket.dials.get(p, 0) for p in WS_PATHS}})

    async def _reset_dials(self, request: web.Request) -> web.Response:
        removed = self.dials()
        self.reset_dials()
        return web.json_response({"removed": removed})

    async def _reset_requests(self, request: web.Request) -> web.Response:
        removed = len(self._log)
        self.reset_log()
        return web.json_response({"removed": removed})

    # -- Kraken ----------------------------------------------------------------------

    def _public(self, endpoint: str, query: dict[str, str]) -> web.Response:
        now = self._wall_clock()
        try:
            if endpoint == "Time":
                return _envelope(
                    {"unixtime": int(now), "rfc1123": email.utils.formatdate(now, usegmt=True)}
                )
            if endpoint == "SystemStatus":
                stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                return _envelope({"status": self.status, "timestamp": stamp})
            if endpoint == "Assets":
                return _envelope(ASSETS)
            markets = _markets(query.get("pair"))
            if endpoint == "AssetPairs":
                return _envelope({m.id: m.asset_pair() for m in markets})
            if endpoint == "Ticker":
                return _envelope({m.id: _ticker(m) for m in markets})
            market = markets[0]
            if endpoint == "Depth":
                return _envelope({market.id: _depth(market, _int(query, "count", 100), now)})
            if endpoint == "OHLC":
                interval = _int(query, "interval", 1)
                return _envelope(_ohlc(market, interval, now))
            if endpoint == "Trades":
                return _envelope(_trades(market, _int(query, "count", 1000), now))
        except KrakenError as exc:
            return _error(exc.message)
        return _error("EGeneral:Unknown method")

    def _private(self, request: web.Request, endpoint: str, body: bytes) -> web.Response:
        if self.status == "maintenance":
            return _error("EService:Unavailable")
        key = request.headers.get("API-Key", "")
        secret = self._credentials.get(key)
        if secret is None:
            return _error("EAPI:Invalid key")
        params = _form(request, body)
        nonce = params.get("nonce", "")
        given = request.headers.get("API-Sign", "")
        if not hmac.compare_digest(given, _signature(secret, request.path, nonce, body)):
            return _error("EAPI:Invalid signature")
        account = self._account(key)
        if not nonce.isdigit() or int(nonce) <= account.last_nonce:
            return _error("EAPI:Invalid nonce")
        account.last_nonce = int(nonce)
        now = self._clock()
        if endpoint_group("private", endpoint) == "trading":
            if self.rate_limits and not account.trading.try_add(1, now):
                return _error("EOrder:Rate limit exceeded")
        elif self.rate_limits and not account.rest.try_add(rest_cost(endpoint), now):
            return _error("EAPI:Rate limit exceeded")
        try:
            result = self._private_result(account, endpoint, params)
        except KrakenError as exc:
            return _error(exc.message)
        if endpoint == "GetWebSocketsToken":  # what the private sockets will accept
            self._tokens[result["token"]] = key
        return _envelope(result)

    def _private_result(self, account: Account, endpoint: str, params: dict[str, str]) -> Any:
        now = self._wall_clock()
        if endpoint == "Balance":
            return {asset: f"{amount:.10f}" for asset, amount in account.balances.items()}
        if endpoint == "BalanceEx":
            return account.balance_ex()
        if endpoint == "OpenOrders":
            return account.open_orders()
        if endpoint == "ClosedOrders":
            return account.closed_orders()
        if endpoint == "QueryOrders":
            return account.query_orders(params)
        if endpoint == "TradesHistory":
            return {"trades": {}, "count": 0}
        if endpoint == "Ledgers":
            return {"ledger": {}, "count": 0}
        if endpoint == "AddOrder":
            if self.status in ("cancel_only", "post_only") and (
                self.status == "cancel_only" or "post" not in params.get("oflags", "")
            ):
                raise KrakenError(f"EService:Market in {self.status} mode")
            return account.add_order(params, now)
        if endpoint == "CancelOrder":
            return account.cancel(params, now)
        if endpoint == "CancelAll":
            return account.cancel_all(now)
        if endpoint == "GetWebSocketsToken":
            token = base64.b64encode(self._ids.randbytes(30)).decode()
            return {"token": token, "expires": 900}
        raise KrakenError("EGeneral:Unknown method")


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise FieldError("body", f"must be JSON ({exc})") from None


@web.middleware
async def _control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The control API answers errors in JSON: ``{"error": ..., "field": ...}``."""
    if not request.path.startswith(CONTROL_PATH + "/") and request.path != CONTROL_PATH:
        return await handler(request)
    try:
        return await handler(request)
    except FieldError as exc:
        return web.json_response({"error": str(exc), "field": exc.field}, status=400)
    except _ControlError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except web.HTTPException as exc:  # no such route (404) or method (405)
        error = f"{exc.reason}: {request.method} {request.path}"
        allow = {k: v for k, v in exc.headers.items() if k == "Allow"}
        return web.json_response({"error": error}, status=exc.status, headers=allow)


def _envelope_article(article: str) -> web.Response:
    # Zendesk's help-center API, where ccxt reads Kraken's fee articles
    body = {"article": {"id": int(article), "body": "<p>Kraken fees and minimums</p>"}}
    return web.json_response(body)


def _dropped(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _first_error(response: web.Response) -> str | None:
    if not isinstance(response.body, bytes) or not response.body.startswith(b"{"):
        return None
    errors = json.loads(response.body).get("error") or [None]
    error: str | None = errors[0]
    return error


def _form(request: web.Request, body: bytes) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise KrakenError(f"EGeneral:Invalid arguments:{name}")
    return int(raw)


def _markets(pairs: str | None) -> list[Market]:
    if not pairs:
        return list(MARKETS)
    return [find_market(p) for p in pairs.split(",")]


def _ticker(m: Market) -> dict[str, Any]:
    mid, tick = m.mid, m.tick
    return {
        "a": [m.price(mid + tick), "3", "3.000"],
        "b": [m.price(mid - tick), "2", "2.000"],
        "c": [m.price(mid), "0.01000000"],
        "v": ["120.50000000", "1450.25000000"],
        "p": [m.price(mid * Decimal("0.999")), m.price(mid * Decimal("0.998"))],
        "t": [3210, 40567],
        "l": [m.price(mid * Decimal("0.98")), m.price(mid * Decimal("0.97"))],
        "h": [m.price(mid * Decimal("1.02")), m.price(mid * Decimal("1.03"))],
        "o": m.price(mid * Decimal("0.995")),
    }


def _depth(m: Market, count: int, now: float) -> dict[str, Any]:
    levels = range(1, min(max(count, 1), 25) + 1)
    stamp = int(now)
    return {
        "asks": [[m.price(m.mid + m.tick * i), f"{i:.3f}", stamp] for i in levels],
        "bids": [[m.price(m.mid - m.tick * i), f"{i:.3f}", stamp] for i in levels],
    }


def _ohlc(m: Market, interval: int, now: float) -> dict[str, Any]:
    step = interval * 60
    last = int(now) // step * step
    candles = []
    for i in range(60):
        start = last - (59 - i) * step
        wobble = m.tick * (i % 5)  # a fixed saw-tooth: deterministic, yet not flat
        o, c = m.mid - wobble, m.mid + wobble
        high, low = c + m.tick, o - m.tick
        candles.append(
            [
                start,
                m.price(o),
                m.price(high),
                m.price(low),
                m.price(c),
                m.price(m.mid),
                f"{1 + i % 3:.8f}",
                1 + i % 7,
            ]
        )
    return {m.id: candles, "last": last}


def _trades(m: Market, count: int, now: float) -> dict[str, Any]:
    n = min(max(count, 1), 20)
    rows = []
    for i in range(n):
        stamp = round(now - (n - i), 4)
        side = "b" if i % 2 == 0 else "s"
        price = m.mid + (m.tick if side == "b" else -m.tick)
        rows.append([m.price(price), "0.01000000", stamp, side, "l", "", 1000 + i])
    return {m.id: rows, "last": str(int(now * 1e9))}


def strict_nonces(exchange: Any) -> None:
    """Make an older ccxt's Kraken nonces strictly increase, as Kraken requires.

    ccxt before 4.5.90 signs with the bare millisecond clock, so two private calls in one
    millisecond share a nonce and Kraken (and the simulator) reject the second.
    """
    if hasattr(exchange, "incrementing_nonce"):
        return
    clock = exchange.nonce
    last = 0

    def nonce() -> int:
        nonlocal last
        last = max(last + 1, int(clock()))
        return last

    exchange.nonce = nonce
