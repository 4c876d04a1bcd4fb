"""Per-endpoint-group circuit breakers for ccxt's async Kraken client.

Use ``ccxt_breaker.kraken`` in place of ``ccxt.async_support.kraken``, or call
``ccxt_breaker.install()`` once and set ``options['circuitBreaker']`` in a plain ccxt
config.  See the README for the configuration keys and the verdict table.
"""

from ._breaker import CircuitBreaker
from ._config import BreakerConfig, Clock
from ._errors import CircuitOpenError
from ._events import CallRejected, Event, Listener, StateChanged
from ._hook import install, kraken, uninstall
from ._machine import CircuitState
from ._registry import BreakerRegistry

__all__ = [
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


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("ccxt-breaker")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
