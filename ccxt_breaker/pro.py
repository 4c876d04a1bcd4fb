"""``ccxt_breaker.pro.kraken``: ``ccxt.pro.kraken`` with the same breakers on its REST calls.

Websocket traffic (``watch_*``) does not pass through ``fetch2``; ``load_markets`` and the
``GetWebSocketsToken`` call behind ``authenticate()`` do, and are guarded.  To guard a
websocket reconnect, wrap it: ``async with exchange.circuit_breakers['public']: ...``.
"""

import ccxt.pro as _pro

from ._hook import BreakerMixin as _BreakerMixin

__all__ = ["kraken"]


class kraken(_BreakerMixin, _pro.kraken):  # type: ignore[misc]
    """``ccxt.pro.kraken`` with a circuit breaker per endpoint group on its REST calls."""
