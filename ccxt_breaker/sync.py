"""``ccxt_breaker.sync.kraken``: sync ``ccxt.kraken`` with the same breakers.

The same groups, configuration, ``circuit_breakers`` and ``CircuitOpenError`` as
``ccxt_breaker.kraken``, for bots that call ccxt from threads (freqtrade places its orders
through a sync client).  Half-open permits stay exact under any number of threads.
"""

import ccxt as _ccxt

from ._hook import SyncBreakerMixin as _SyncBreakerMixin

__all__ = ["kraken"]


class kraken(_SyncBreakerMixin, _ccxt.kraken):  # type: ignore[misc]
    """``ccxt.kraken`` with a circuit breaker per endpoint group."""
