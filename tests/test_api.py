"""The public surface: what `import ccxt_breaker` offers, and nothing more."""

from __future__ import annotations

import ccxt

import ccxt_breaker


def test_exported_members() -> None:
    """The public names are exactly these; a change here is a change for users."""
    assert ccxt_breaker.__all__ == [
        "BreakerConfig",
        "BreakerRegistry",
        "CallRejected",
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
    ]
    assert all(hasattr(ccxt_breaker, name) for name in ccxt_breaker.__all__)


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert ccxt_breaker.__version__ == version("ccxt-breaker")


def test_error_fits_ccxts_hierarchy() -> None:
    """CircuitOpenError is caught by handlers for ExchangeNotAvailable and NetworkError."""
    assert issubclass(ccxt_breaker.CircuitOpenError, ccxt.ExchangeNotAvailable)
    assert issubclass(ccxt_breaker.CircuitOpenError, ccxt.NetworkError)
