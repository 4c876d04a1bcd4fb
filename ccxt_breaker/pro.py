"""``ccxt_breaker.pro.kraken``: ``ccxt.pro.kraken`` with the same breakers on its REST calls.

Websocket traffic (``watch_*``) does not pass through ``fetch2``; ``load_markets`` and the
``GetWebSocketsToken`` call behind ``authenticate()`` do, and are guarded.  To guard a
websocket reconnect, wrap it: ``async with exchange.circuit_breakers['public']: ...``.
"""

from __future__ import annotations

import ccxt.pro

from ._hook import BreakerMixin

__all__ = ["kraken"]


class kraken(BreakerMixin, ccxt.pro.kraken):  # type: ignore[misc]
    """``ccxt.pro.kraken`` with a circuit breaker per endpoint group on its REST calls."""
