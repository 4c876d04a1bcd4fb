"""``ccxt_breaker.pro.kraken``: ``ccxt.pro.kraken`` with breakers on its REST calls and on
its websocket calls.

Besides the REST groups it has ``ws-public`` (``wss://ws.kraken.com`` and ``/v2``) and
``ws-private`` (``wss://ws-auth.kraken.com`` and ``/v2``); the websocket order methods
(``create_order_ws``, ``cancel_order_ws``, ...) are endpoints of the REST ``trading``
group, since Kraken's matching engine limits both alike.  See the README's "Websockets".
"""

import ccxt.pro as _pro

from ._hook import BreakerMixin as _BreakerMixin
from ._ws import WebsocketMixin as _WebsocketMixin

__all__ = ["kraken"]


class kraken(_WebsocketMixin, _BreakerMixin, _pro.kraken):  # type: ignore[misc]
    """``ccxt.pro.kraken`` with a circuit breaker per endpoint group, REST and websocket."""
