"""Per-endpoint-group circuit breakers for ccxt's Kraken clients (async, pro and sync).

Use ``ccxt_breaker.kraken`` in place of ``ccxt.async_support.kraken`` (``.pro.kraken``
and ``.sync.kraken`` for the others), or call ``ccxt_breaker.install()`` once and set
``options['circuitBreaker']`` in a plain ccxt config.  See the README for the
configuration keys and the verdict table.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._config import BreakerConfig, Clock
    from ._errors import CircuitOpenError
    from ._events import CallRejected, Event, Listener, StateChanged
    from ._hook import CcxtVersionWarning, install, kraken, uninstall
    from ._machine import CircuitState
    from ._registry import BreakerRegistry

__all__ = [
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
]

# Imported on first use: pytest imports this package at every start-up to load the
# plugin in ccxt_breaker.testing, and ccxt takes a good part of a second to import.
_LAZY = {
    "BreakerConfig": "._config",
    "BreakerRegistry": "._registry",
    "CallRejected": "._events",
    "CcxtVersionWarning": "._hook",
    "CircuitBreaker": "._breaker",
    "CircuitOpenError": "._errors",
    "CircuitState": "._machine",
    "Clock": "._config",
    "Event": "._events",
    "Listener": "._events",
    "StateChanged": "._events",
    "install": "._hook",
    "kraken": "._hook",
    "uninstall": "._hook",
}


def __getattr__(name: str) -> _typing.Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("ccxt-breaker")
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # all at once, so that after the first use the namespace holds all of __all__
    for key, module in _LAZY.items():
        globals()[key] = getattr(_importlib.import_module(module, __name__), key)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
