"""Test support for bots: an embedded Kraken simulator and a pytest plugin.

``KrakenSimulator`` is a real aiohttp server on 127.0.0.1 that ccxt's ``kraken``
class talks to unchanged; ``Fault`` scripts what goes wrong and when. The pytest
fixtures ``kraken_simulator`` and ``kraken_factory`` live in ``.plugin`` and load
automatically once the package is installed.
"""

from ._cli import main, serve
from ._clock import FakeClock
from ._faults import Fault, FaultKind, FaultRule, Faults
from ._simulator import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    KrakenSimulator,
    RequestRecord,
    SystemStatus,
)
from ._state import GROUPS, Group, Order

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
