"""ccxt version guard: the public hooks the seam uses still look the way it expects.

Each test names what would break and where to look, so that a new ccxt release that
changes one of them fails here, with a reason, before it fails a user.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from ccxt.async_support.base.exchange import Exchange
from ccxt.base.exchange import Exchange as BaseExchange

from ccxt_breaker._hook import BreakerMixin

# The parameters (in order) of each ccxt method the hook overrides and calls super() with,
# in every shape the supported ccxt releases have had.
EXPECTED = {
    "fetch2": [
        ["self", "path", "api", "method", "params", "config"],  # 4.5.x, recent
        ["self", "path", "api", "method", "params", "headers", "body", "config"],  # 4.5.0
    ],
    "fetch": [["self", "url", "method", "headers", "body"]],
    "on_rest_response": [
        [
            "self",
            "code",
            "reason",
            "url",
            "method",
            "response_headers",
            "response_body",
            "request_headers",
            "request_body",
        ]
    ],
    "sleep": [["self", "milliseconds"]],
}
HOOKED = sorted(EXPECTED)


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def source(function: Callable[..., Any]) -> str:
    return inspect.getsource(function)


@pytest.mark.parametrize("name", HOOKED)
def test_ccxt_signature_is_what_the_hook_expects(name: str) -> None:
    """ccxt's async Exchange.<name> takes the parameters, in the order, the hook passes on."""
    actual = parameters(getattr(Exchange, name))
    assert actual in EXPECTED[name], (
        f"ccxt {ccxt.__version__} changed Exchange.{name}{tuple(actual)}; ccxt_breaker's hook "
        f"(ccxt_breaker/_hook.py) expects one of {EXPECTED[name]}: review the override "
        "before supporting this ccxt version"
    )


@pytest.mark.parametrize("name", HOOKED)
def test_hook_names_ccxts_parameters(name: str) -> None:
    """The hook's override of <name> names ccxt's leading parameters, in ccxt's order."""
    # so a caller may pass them by name; any further ones pass through unchanged
    hook = inspect.signature(getattr(BreakerMixin, name)).parameters.values()
    named = [p.name for p in hook if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert named == parameters(getattr(Exchange, name))[: len(named)]


@pytest.mark.parametrize("name", ["fetch2", "fetch", "sleep"])
def test_hooked_methods_are_coroutines(name: str) -> None:
    """ccxt's fetch2, fetch and sleep are coroutine functions, as the hook awaits them."""
    assert inspect.iscoroutinefunction(getattr(Exchange, name)), (
        f"ccxt {ccxt.__version__}: Exchange.{name} is no longer a coroutine function"
    )


def test_request_goes_through_fetch2() -> None:
    """ccxt's request() calls self.fetch2(), so the hook sees every implicit call."""
    # and so does a test's patch of fetch2
    assert "self.fetch2(" in source(Exchange.request), (
        f"ccxt {ccxt.__version__}: Exchange.request no longer calls self.fetch2(); the hook "
        "would miss implicit calls"
    )


def test_fetch2_throttles_then_fetches_and_sleeps_between_retries() -> None:
    """ccxt's fetch2 awaits throttle(), then fetch() per attempt, and sleep() between retries."""
    # so the hook checks before the queue, per attempt, and before a retry
    text = source(Exchange.fetch2)
    at = {name: text.find(f"self.{name}(") for name in ("throttle", "fetch", "sleep")}
    assert min(at.values()) >= 0, f"ccxt {ccxt.__version__}: fetch2 calls {at}"
    assert at["throttle"] < at["fetch"] < at["sleep"], (
        f"ccxt {ccxt.__version__}: fetch2 no longer throttles, fetches, then sleeps: {at}"
    )


def test_fetch_reports_every_answer_to_on_rest_response() -> None:
    """ccxt's fetch hands every answered attempt to on_rest_response() before judging it."""
    # that is where the hook reads the status and Retry-After
    text = source(Exchange.fetch)
    assert 0 <= text.find("self.on_rest_response(") < text.find("self.handle_errors("), (
        f"ccxt {ccxt.__version__}: fetch no longer calls on_rest_response before handle_errors"
    )


def test_after_construct_runs_before_the_camelcase_copy() -> None:
    """ccxt's constructor calls after_construct() before copying attributes to camelCase."""
    # so the registry exists by then, and circuitBreakers is the same object
    text = source(BaseExchange.__init__)
    assert 0 <= text.find("self.after_construct(") < text.find("camelcase"), (
        f"ccxt {ccxt.__version__}: __init__ no longer calls after_construct() before the "
        "camelCase copy; circuitBreakers would be a stale registry"
    )


def test_pro_kraken_subclasses_async_kraken() -> None:
    """ccxt.pro.kraken still subclasses ccxt.async_support.kraken, so one mixin serves both."""
    assert issubclass(ccxt.pro.kraken, ccxt.async_support.kraken), (
        f"ccxt {ccxt.__version__}: ccxt.pro.kraken no longer subclasses "
        "ccxt.async_support.kraken; ccxt_breaker.pro and install() need review"
    )


def test_kraken_does_not_override_the_hooked_methods() -> None:
    """Neither Kraken class overrides a hooked method."""
    # so nothing sits between the hook and ccxt's base exchange
    names = [*HOOKED, "after_construct", "request"]
    overridden = sorted(
        name
        for cls in (ccxt.async_support.kraken, ccxt.pro.kraken)
        for name in names
        if name in vars(cls)
    )
    assert overridden == [], f"ccxt {ccxt.__version__}: kraken overrides {overridden}"
