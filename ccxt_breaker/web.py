"""A status endpoint, Prometheus metrics and a live dashboard for running bots.

``status_app(*exchanges)`` is an :class:`aiohttp.web.Application`; serve it beside the bot,
on the bot's own event loop (the breakers are read where they run)::

    runner = web.AppRunner(status_app(exchange))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 8000).start()

Routes: ``GET /`` (the dashboard), ``GET /status`` (JSON) and ``GET /metrics``
(Prometheus text; needs ``pip install 'ccxt-breaker[prometheus]'``).
"""

import base64 as _base64
import hashlib as _hashlib
import importlib.resources as _resources
import math as _math
import re as _re
import time as _time
from collections import Counter as _Counter
from collections.abc import Sequence as _Sequence
from typing import Any as _Any

from aiohttp import web as _web

__all__ = ["status_app"]

# The dashboard: one self-contained page, its CSS and script inline.
_PAGE = _resources.files(__package__).joinpath("_dashboard.html").read_text(encoding="utf-8")
_INLINE = _re.compile(r"<(script|style)>(.*?)</\1>", _re.DOTALL)
_METRICS_HINT = "/metrics needs prometheus-client: pip install 'ccxt-breaker[prometheus]'\n"


def _hash(source: str) -> str:
    digest = _hashlib.sha256(source.encode()).digest()
    return f"'sha256-{_base64.b64encode(digest).decode()}'"


def _policy(page: str) -> str:
    """A Content-Security-Policy that lets the page run its own inline script and style,
    and reach nothing but ``/status`` on its own origin."""
    inline = {
        kind: [_hash(body) for k, body in _INLINE.findall(page) if k == kind]
        for kind in ("script", "style")
    }
    return (
        "default-src 'none'; "
        f"script-src {' '.join(inline['script'])}; "
        f"style-src {' '.join(inline['style'])}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


_HEADERS = {
    "Content-Security-Policy": _policy(_PAGE),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _accounts(names: _Sequence[str | None]) -> list[str]:
    """Each exchange's label: its configured name, or its position; a label that two
    exchanges would share gets their position appended, so that every label is unique."""
    labels = [str(index) if name is None else name for index, name in enumerate(names)]
    counts = _Counter(labels)
    unique: list[str] = []
    for index, label in enumerate(labels):
        if counts[label] > 1:
            label = f"{label}#{index}"
        while label in unique:
            label = f"{label}#{index}"
        unique.append(label)
    return unique


def _registry(exchange: _Any) -> _Any:
    """The exchange's breakers, or ``None``: plain ccxt, or breakers disabled."""
    return getattr(exchange, "_circuit_breakers", None)


def _name(exchange: _Any) -> str | None:
    """The configured ``name``, checked at construction to hold no credential."""
    registry = _registry(exchange)
    return None if registry is None or registry._name is None else registry._scrub(registry._name)


def _exchange_status(
    index: int, account: str, exchange: _Any, window: float | None
) -> dict[str, _Any]:
    registry = _registry(exchange)
    now = _time.time() if registry is None else registry._now()
    groups = {} if registry is None else registry.snapshot()
    history = [] if registry is None else registry.history()
    if window is not None:
        history = [event for event in history if event["time"] >= now - window]
    return {
        "index": index,
        "id": str(exchange.id),
        "name": _name(exchange),
        "account": account,
        "time": now,
        "groups": groups,
        "history": history,
    }


def _window(request: _web.Request) -> float | None:
    raw = request.query.get("window")
    if raw is None:
        return None
    try:
        window = float(raw)
    except ValueError:
        window = _math.nan
    if not (window > 0 and _math.isfinite(window)):
        raise _web.HTTPBadRequest(
            text='{"error": "window must be a positive number of seconds", "field": "window"}',
            content_type="application/json",
        )
    return window


def _metrics_registry(exchanges: _Sequence[_Any], accounts: _Sequence[str]) -> _Any:
    """A private ``CollectorRegistry`` holding every exchange once, or ``None`` without
    prometheus-client."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        return None
    from .prometheus import register

    registry = CollectorRegistry()
    for exchange, account in zip(exchanges, accounts, strict=True):
        register(exchange, account=account, registry=registry)
    return registry


def status_app(*exchanges: _Any) -> _web.Application:
    """An aiohttp application showing the breakers of ``exchanges``.

    ``GET /status`` answers JSON: ``{"time", "exchanges": [{"index", "id", "name",
    "account", "time", "groups", "history"}, ...]}``, one entry per exchange in the order
    given, with every group's ``snapshot()`` and the merged ``history()``
    (``?window=SECONDS`` keeps only the transitions of the last SECONDS). ``account`` is the
    configured ``name`` or the exchange's position, unique within the app; an exchange
    without breakers has empty ``groups``. No API key or secret appears.

    ``GET /metrics`` answers the Prometheus text exposition of every exchange (labelled by
    its ``account``), or 501 without prometheus-client. ``GET /`` is a self-contained
    dashboard that refreshes itself from ``/status`` every 2 s (``/?refresh=SECONDS``).
    """
    for index, exchange in enumerate(exchanges):
        if not isinstance(getattr(exchange, "id", None), str):
            raise TypeError(
                "status_app() takes ccxt exchanges as separate arguments, "
                f"status_app(*exchanges); got {type(exchange).__name__}"
            )
        if any(other is exchange for other in exchanges[:index]):
            raise ValueError(f"status_app() was given exchange {index} twice")
    accounts = _accounts([_name(exchange) for exchange in exchanges])
    metrics = _metrics_registry(exchanges, accounts)

    async def status(request: _web.Request) -> _web.Response:
        window = _window(request)
        body = {
            "time": _time.time(),
            "exchanges": [
                _exchange_status(index, account, exchange, window)
                for index, (exchange, account) in enumerate(zip(exchanges, accounts, strict=True))
            ],
        }
        return _web.json_response(body, headers=_HEADERS)

    async def prometheus(request: _web.Request) -> _web.Response:
        if metrics is None:
            return _web.Response(status=501, text=_METRICS_HINT, headers=_HEADERS)
        from prometheus_client.exposition import choose_encoder

        # the text format (0.0.4), or OpenMetrics to a scraper that asks for it; encoded
        # here, on the event loop, where the breakers run
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return _web.Response(
            body=encode(metrics), headers={**_HEADERS, "Content-Type": content_type}
        )

    async def dashboard(request: _web.Request) -> _web.Response:
        return _web.Response(text=_PAGE, content_type="text/html", headers=_HEADERS)

    app = _web.Application()
    app.router.add_get("/", dashboard)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    return app
