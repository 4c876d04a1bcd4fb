"""Test support for bots: an embedded Kraken simulator and a pytest plugin.

``KrakenSimulator`` is a real aiohttp server on 127.0.0.1 that ccxt's ``kraken``
class talks to unchanged; ``Fault`` scripts what goes wrong and when. The pytest
fixtures ``kraken_simulator`` and ``kraken_factory`` live in ``.plugin`` and load
automatically once the package is installed.

The simulator and the command line (which need aiohttp's server) are imported on first
use, so that pytest's start-up, which loads the plugin from this package, stays light.
"""

import importlib
import typing

from ._clock import FakeClock
from ._faults import Fault, FaultKind, FaultRule, Faults
from ._state import GROUPS, Group, Order

if typing.TYPE_CHECKING:
    from ._cli import main, serve
    from ._simulator import (
        DEFAULT_API_KEY,
        DEFAULT_SECRET,
        KrakenSimulator,
        RequestRecord,
        SystemStatus,
    )

_LAZY = {
    "DEFAULT_API_KEY": "._simulator",
    "DEFAULT_SECRET": "._simulator",
    "KrakenSimulator": "._simulator",
    "RequestRecord": "._simulator",
    "SystemStatus": "._simulator",
    "main": "._cli",
    "serve": "._cli",
}

__all__ = [
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
]


def __getattr__(name: str) -> typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # all at once, so that after the first use the namespace holds all of __all__
    for key, module in _LAZY.items():
        globals()[key] = getattr(importlib.import_module(module, __name__), key)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
