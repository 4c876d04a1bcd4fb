"""ccxt version guard: the methods the hook overrides still look the way the hook expects."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from ccxt.async_support.base.exchange import Exchange

import ccxt_breaker
from ccxt_breaker._hook import _CCXT_REQUEST, _HEADERS, _STATUS, BreakerMixin
from ccxt_breaker._kraken import endpoint_table
from ccxt_breaker._registry import BreakerRegistry

from ..support import api

# The parameters (in order) of each ccxt method the hook overrides and calls super() with,
# in every shape the supported ccxt releases have had.
EXPECTED = {
    "fetch2": [
        ["self", "path", "api", "method", "params", "config"],  # 4.5.x, recent
        ["self", "path", "api", "method", "params", "headers", "body", "config"],  # 4.5.0
    ],
    "fetch": [["self", "url", "method", "headers", "body"]],
}


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ccxt_signature_is_what_the_hook_expects(name: str) -> None:
    """ccxt's async Exchange.<name> takes the parameters, in the order, the hook passes on."""
    actual = parameters(getattr(Exchange, name))
    assert actual in EXPECTED[name], (
        f"ccxt {ccxt.__version__} changed Exchange.{name}{tuple(actual)}; ccxt_breaker's hook "
        f"(ccxt_breaker/_hook.py) expects one of {EXPECTED[name]}: review the override "
        "before supporting this ccxt version")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hook_matches_ccxt_signature(name: str) -> None:
    """The hook's override of <name> names ccxt's parameters in ccxt's order, so a caller
    may pass any of them by name, on every supported ccxt."""
    hook = inspect.signature(getattr(BreakerMixin, name)).parameters.values()
    named = [p.name for p in hook if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert named == parameters(getattr(Exchange, name))


def test_ccxt_request_only_forwards_to_fetch2() -> None:
    """ccxt's request() still does nothing but pass its arguments to fetch2(), so the hook's
    fetch2 stands in for it and a call pays for one coroutine, not two."""
    assert ccxt.async_support.kraken.request is Exchange.request
    assert _CCXT_REQUEST is Exchange.request, (
        f"ccxt {ccxt.__version__}: Exchange.request no longer only forwards to fetch2; "
        "ccxt_breaker still works, through ccxt's request, but each call costs more")
    assert ccxt_breaker.kraken.request is ccxt_breaker.kraken.fetch2


@pytest.mark.parametrize("name", ["fetch2", "fetch"])
def test_hooked_methods_are_coroutines(name: str) -> None:
    """ccxt's fetch2 and fetch are coroutine functions, as the hook awaits them."""
    assert inspect.iscoroutinefunction(getattr(Exchange, name)), (
        f"ccxt {ccxt.__version__}: Exchange.{name} is no longer a coroutine function")


def test_fetch2_throttles_then_fetches() -> None:
    """ccxt's fetch2 still awaits throttle() and then fetch() itself: the hook relies on
    checking before the queue and once more per attempt."""
    source = inspect.getsource(Exchange.fetch2)
    assert (source.find("self.throttle(") >= 0, source.find("self.fetch(") >= 0) == (True, True), (
        f"ccxt {ccxt.__version__}: fetch2 no longer calls throttle() and fetch()")
    assert source.find("self.throttle(") < source.find("self.fetch("), (
        f"ccxt {ccxt.__version__}: fetch2 now fetches before it throttles")


def test_fetch_keeps_the_answer_in_the_locals_the_hook_reads() -> None:
    """ccxt's fetch still names the answer's status and headers as _response_of() reads them."""
    names = Exchange.fetch.__code__.co_varnames
    assert {_STATUS, _HEADERS} <= set(names), (
        f"ccxt {ccxt.__version__}: Exchange.fetch no longer has locals {_STATUS!r} and "
        f"{_HEADERS!r}; ccxt_breaker cannot see the status and Retry-After of failed attempts")


def test_every_kraken_url_ends_with_its_endpoint_path() -> None:
    """kraken.sign() builds every endpoint's URL so that it ends with the path: fetch()
    finds its endpoint from the URL alone."""
    exchange = ccxt.async_support.kraken({"apiKey": "key", "secret": "c2VjcmV0"})
    registry = BreakerRegistry(None, endpoint_table(exchange.describe()["api"]))
    for path, (section, _, _) in endpoint_table(exchange.describe()["api"]).items():
        request = exchange.sign(path, api(section), "POST", {"pair": "XBTUSD"})
        assert registry.route_of_url(request["url"]) is registry.routes[path], (
            f"ccxt {ccxt.__version__}: kraken's URL for {path!r} is {request['url']!r}")
    exchange.session = None


def test_pro_kraken_subclasses_async_kraken() -> None:
    """ccxt.pro.kraken still subclasses ccxt.async_support.kraken, so one mixin serves both."""
    assert issubclass(ccxt.pro.kraken, ccxt.async_support.kraken), (
        f"ccxt {ccxt.__version__}: ccxt.pro.kraken no longer subclasses "
        "ccxt.async_support.kraken; ccxt_breaker.pro and install() need review")


def test_kraken_does_not_override_the_hooked_methods() -> None:
    """Neither Kraken class overrides a hooked method, so the mixin sits directly above ccxt."""
    overridden = sorted(name for cls in (ccxt.async_support.kraken, ccxt.pro.kraken)
                        for name in EXPECTED if name in vars(cls))
    assert overridden == [], f"ccxt {ccxt.__version__}: kraken overrides {overridden}"
