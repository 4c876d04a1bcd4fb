"""The public surface: what each public module offers, and nothing more."""

from __future__ import annotations

import importlib
import types

import ccxt
import pytest

import ccxt_breaker

PUBLIC = {
    "ccxt_breaker": [
        "BreakerConfig",
        "BreakerRegistry",
        "CallRejected",
        "CcxtVersionWarning",
        "CircuitBreaker",
        "CircuitOpenError",
        "CircuitState",
        "Clock",
        "Event",
        "Listener",
        "StateChanged",
        "__version__",
        "install",
        "kraken",
        "uninstall",
    ],
    "ccxt_breaker.otel": ["instrument"],
    "ccxt_breaker.pro": ["kraken"],
    "ccxt_breaker.prometheus": ["register"],
    "ccxt_breaker.sync": ["kraken"],
    "ccxt_breaker.testing": [
        "DEFAULT_API_KEY",
        "DEFAULT_SECRET",
        "GROUPS",
        "FakeClock",
        "Fault",
        "FaultKind",
        "FaultRule",
        "Faults",
        "Group",
        "KrakenSimulator",
        "Order",
        "RequestRecord",
        "SystemStatus",
        "main",
        "serve",
    ],
    "ccxt_breaker.web": ["status_app"],
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_exported_members(name: str) -> None:
    """A public module's __all__ is exactly these names, sorted."""
    # a change here is a change for users
    assert importlib.import_module(name).__all__ == PUBLIC[name]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_nothing_private_leaks(name: str) -> None:
    """Every public name a module holds is in its __all__, and every name in __all__ exists."""
    # submodules aside: imports and helpers stay underscored
    module = importlib.import_module(name)
    for key in module.__all__:  # names a module imports on first use are then in vars()
        getattr(module, key)
    held = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_") and not isinstance(value, types.ModuleType)
    }
    exported = set(module.__all__) - {"__version__"}
    assert held == exported
    assert all(hasattr(module, key) for key in module.__all__)


def test_protocol_methods_are_private() -> None:
    """The hook's protocol with the breaker and the registry is not public API."""
    # users have call(), guard(), async with, state, snapshot() and the steering methods
    public = {
        cls.__name__: sorted(m for m in vars(cls) if not m.startswith("_"))
        for cls in (ccxt_breaker.CircuitBreaker, ccxt_breaker.BreakerRegistry)
    }
    assert public == {
        "CircuitBreaker": [
            "add_listener",
            "call",
            "config",
            "exchange_id",
            "force_open",
            "group",
            "guard",
            "history",
            "last_error",
            "last_failure_time",
            "name",
            "remove_listener",
            "reset",
            "retry_after",
            "snapshot",
            "state",
        ],
        "BreakerRegistry": [
            "add_listener",
            "all_closed",
            "group_of",
            "history",
            "remove_listener",
            "snapshot",
        ],
    }


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert ccxt_breaker.__version__ == version("ccxt-breaker")


def test_error_fits_ccxts_hierarchy() -> None:
    """CircuitOpenError is caught by handlers for ExchangeNotAvailable and NetworkError."""
    assert issubclass(ccxt_breaker.CircuitOpenError, ccxt.ExchangeNotAvailable)
    assert issubclass(ccxt_breaker.CircuitOpenError, ccxt.NetworkError)


def test_version_warning_is_a_user_warning() -> None:
    """CcxtVersionWarning is a UserWarning: shown by default, caught by UserWarning filters."""
    assert issubclass(ccxt_breaker.CcxtVersionWarning, UserWarning)


def test_the_core_imports_nothing_from_testing() -> None:
    """`import ccxt_breaker` loads neither the simulator nor aiohttp's server."""
    # the test support is imported only by those who ask for it
    import subprocess
    import sys

    script = (
        "import sys, ccxt_breaker, ccxt_breaker.pro; "
        "print(sorted(m for m in sys.modules if m.startswith(('ccxt_breaker.testing', "
        "'aiohttp.web'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (out.stdout.strip(), out.returncode) == ("[]", 0), out.stderr


def test_websocket_hook_only_overrides_ccxt_methods() -> None:
    # the websocket seam adds no public name of its own to ccxt_breaker.pro.kraken
    import ccxt.pro

    from ccxt_breaker._ws import WebsocketMixin

    public = sorted(m for m in vars(WebsocketMixin) if not m.startswith("_"))
    assert public == [
        "authenticate",
        "close",
        "handle_message",
        "on_close",
        "on_connected",
        "on_error",
        "ping",
        "watch",
        "watch_multiple",
    ]
    assert all(callable(getattr(ccxt.pro.kraken, name)) for name in public)


def test_simulator_websocket_surface() -> None:
    # what bots' tests use of the websocket simulator
    from ccxt_breaker.testing import Fault, KrakenSimulator

    assert {"ws_urls", "dials", "websocket"} <= set(dir(KrakenSimulator(ws_interval=0.5)))
    assert {"ws_drop", "ws_silence"} <= set(vars(Fault))
