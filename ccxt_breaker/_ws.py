"""The websocket seam: ccxt.pro's ``watch``/``watch_multiple`` per call; ``on_connected``,
``handle_message``, ``on_error``, ``on_close`` and ``ping`` per socket; ``authenticate``
for the token; ``close`` for the sockets the user closes.

* ``watch`` and ``watch_multiple`` run once per ``watch_*`` or ``*_ws`` call, before ccxt
  dials or sends.  A call that would dial, subscribe or send an order takes a permit
  there: an open circuit refuses it at once, and no socket is opened.  A call that only
  waits for the next update of a stream already subscribed on a connected socket sends
  nothing, so it is never refused: a circuit never closes a working socket.
* The permits wait in one :class:`_Call` per call, listed on the :class:`_Socket` of
  the ccxt client that carries them, until the socket or the exchange settles them:
  ``on_connected`` (a dial went through), ``handle_message`` (the answer to a
  subscription or an order, matched by its ``req_id``), ``on_error``/``on_close`` (a
  failed dial, an abnormal close) and ``ping``, which ccxt calls every ``keepAlive``
  and which fails a socket silent for longer than ``wsStaleAfter``.  The future that
  ``watch`` returns settles what is left: cancelled, the permits go back unjudged.
* While half-open, the messages of the socket the probe dialed count as probe
  successes: a bot reading one stream sends nothing after its probe, so nothing else
  would close the circuit.
* ``close`` ends the exchange's sockets before ccxt closes them, since ccxt reports a
  socket it closed itself as closed abnormally (1006).
* ``authenticate`` (``GetWebSocketsToken``, a REST call the REST seam guards as well):
  its failure counts against ``ws-private`` too.

Sockets are found by their ccxt client in a weak mapping, so nothing is written into
ccxt's clients or into the exchange; every ccxt method is reached through ``super()``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import ccxt

from ._breaker import CircuitBreaker
from ._errors import CircuitOpenError, Verdict, verdict
from ._kraken import WS_ORDER_METHODS, is_ws_outage, named_limit, ws_endpoint, ws_group
from ._machine import HALF_OPEN

__all__ = ["WebsocketMixin"]

logger = logging.getLogger("ccxt_breaker")

SUCCESS, FAILURE, NEUTRAL = Verdict.SUCCESS, Verdict.FAILURE, Verdict.NEUTRAL
# close codes of a socket the server ended on purpose (RFC 6455: normal, going away)
_CLEAN_CLOSE = (1000, 1001)


class _Hold:
    """One permit of one breaker, held until judged once."""

    __slots__ = ("breaker", "counters", "permit", "started")

    def __init__(self, breaker: CircuitBreaker, endpoint: str) -> None:
        self.breaker = breaker
        self.counters = breaker._counters(endpoint)
        self.permit: int | None = breaker._admit(self.counters, endpoint)
        self.started = breaker._begin(self.counters)

    def settle(self, kind: Verdict, error: dict[str, str] | None = None) -> None:
        permit, self.permit = self.permit, None
        if permit is not None:
            self.breaker._settle(permit, self.counters, self.started, kind, error)


class _Call:
    """One ``watch_*`` or ``*_ws`` call that sent, or will send, something.

    ``answer`` is judged by the answer to the call's message (or by the connect, when
    there is no message); ``dial`` is the socket group's permit of an order call that
    needed a dial, judged by the dial alone.
    """

    __slots__ = ("answer", "dial", "req_id")

    def __init__(self, answer: _Hold, dial: _Hold | None, req_id: str | None) -> None:
        self.answer = answer
        self.dial = dial
        self.req_id = req_id

    @property
    def settled(self) -> bool:
        return self.answer.permit is None and (self.dial is None or self.dial.permit is None)

    def connected(self) -> None:
        if self.dial is not None:
            self.dial.settle(SUCCESS)
        if self.req_id is None:  # nothing to answer: the connect was all it asked for
            self.answer.settle(SUCCESS)

    def socket_failed(self, group: str, error: dict[str, str]) -> None:
        """The socket failed under the call: a failure of the socket's group; an order
        that never reached the engine says nothing about it."""
        for hold in (self.dial, self.answer):
            if hold is not None:
                hold.settle(FAILURE if hold.breaker.group == group else NEUTRAL, error)

    def release(self) -> None:
        for hold in (self.dial, self.answer):
            if hold is not None:
                hold.settle(NEUTRAL)


class _Socket:
    """What the breakers know of one ccxt client (one URL's socket)."""

    __slots__ = ("__weakref__", "breaker", "calls", "connected", "failed", "generation", "seen")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.calls: list[_Call] = []  # unsettled, oldest first
        self.connected = False
        self.generation = -1  # the breaker's generation when the socket connected
        self.failed = False  # judged once: ccxt may report one failure several ways
        self.seen = 0.0  # the breakers' monotonic time of the latest frame

    def end(self) -> None:
        """Ended on purpose (by the server, cleanly, or by ``exchange.close()``): its calls
        go back unjudged, and nothing it reports later is judged."""
        self.failed = True
        calls, self.calls = self.calls, []
        for call in calls:
            call.release()

    def prune(self) -> None:
        self.calls = [call for call in self.calls if not call.settled]


_SOCKETS: weakref.WeakKeyDictionary[Any, _Socket] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    """Around the bookkeeping in ccxt's callbacks: a bug here must never break ccxt's
    handling of a message, a close or an error."""
    try:
        yield
    except Exception:
        logger.exception("ccxt_breaker failed to record a websocket outcome")


def _unattributed_failure(breaker: CircuitBreaker, endpoint: str, error: dict[str, str]) -> None:
    """Count a failure that no call was waiting for, unless the circuit refuses calls
    now anyway (open: it would add nothing)."""
    if not breaker._machine.refuses(breaker._clock.monotonic()):
        _Hold(breaker, endpoint).settle(FAILURE, error)


def _req_id(message: Any) -> str | None:
    if not isinstance(message, Mapping):
        return None
    value = message.get("req_id", message.get("reqid"))
    return None if value is None else str(value)


def _is_pong(message: Any) -> bool:
    return isinstance(message, Mapping) and "pong" in (message.get("method"), message.get("event"))


if TYPE_CHECKING:
    _Base = Any
else:
    _Base = object


class WebsocketMixin(_Base):  # type: ignore[misc]
    """Circuit breakers for ccxt.pro Kraken's websocket calls; comes before the ccxt.pro
    class in the bases, beside :class:`~ccxt_breaker._hook.BreakerMixin`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        pro = getattr(sys.modules.get("ccxt.pro.kraken"), "kraken", None)
        if pro not in mro or mro.index(WebsocketMixin) > mro.index(pro):
            raise TypeError(
                f"{cls.__name__}: WebsocketMixin must come before ccxt.pro.kraken in the "
                "bases, or ccxt.pro's own handle_message and authenticate hide the hook"
            )

    # --- per call --------------------------------------------------------------------

    def watch(
        self,
        url: Any,
        message_hash: Any,
        message: Any = None,
        subscribe_hash: Any = None,
        subscription: Any = None,
    ) -> Any:
        client = (self.clients or {}).get(url)
        sends = message is not None and (
            client is None or not client.subscriptions.get(subscribe_hash)
        )
        call = self._ws_admit(url, client, message, sends)
        return self._ws_follow(
            url,
            call,
            lambda: super(WebsocketMixin, self).watch(
                url, message_hash, message, subscribe_hash, subscription
            ),
        )

    def watch_multiple(
        self,
        url: Any,
        message_hashes: Any,
        message: Any = None,
        subscribe_hashes: Any = None,
        subscription: Any = None,
    ) -> Any:
        client = (self.clients or {}).get(url)
        sends = (
            message is not None
            and subscribe_hashes is not None
            and (client is None or any(h not in client.subscriptions for h in subscribe_hashes))
        )
        call = self._ws_admit(url, client, message, sends)
        return self._ws_follow(
            url,
            call,
            lambda: super(WebsocketMixin, self).watch_multiple(
                url, message_hashes, message, subscribe_hashes, subscription
            ),
        )

    def _ws_admit(self, url: str, client: Any, message: Any, sends: bool) -> _Call | None:
        """The permits of a call that dials or sends, or ``None`` for one that only reads
        a stream (or when its group has no breaker)."""
        registry = self._circuit_breakers
        dials = client is None or not client.connected.done()
        if registry is None or not (dials or sends):
            return None
        group = ws_group(url, self.urls["api"]["ws"])
        socket_breaker = registry._breakers.get(group)
        endpoint = ws_endpoint(message) if sends else None
        endpoint = endpoint or "connect"
        order = endpoint in WS_ORDER_METHODS
        answer_breaker = registry._breakers.get(registry._group_of.get(endpoint, group))
        dial = None
        if order and dials and socket_breaker is not None:
            dial = _Hold(socket_breaker, "connect")
        if answer_breaker is None:
            if dial is None:
                return None
            return _Call(dial, None, None)
        try:
            answer = _Hold(answer_breaker, endpoint)
        except CircuitOpenError:
            if dial is not None:
                dial.settle(NEUTRAL)
            raise
        return _Call(answer, dial, _req_id(message) if sends else None)

    def _ws_follow(self, url: str, call: _Call | None, watch: Any) -> Any:
        """Run ccxt's ``watch``; list the call on its socket, and settle what its future
        leaves unsettled when it is done."""
        if call is None:
            return watch()
        try:
            future = watch()
            client = self.client(url)
        except BaseException:
            call.release()
            raise
        socket = _SOCKETS.get(client)
        if socket is None:
            socket = _SOCKETS[client] = _Socket(self._ws_socket_breaker(url, call))
        socket.prune()
        socket.calls.append(call)
        if socket.connected:
            call.connected()
        future.add_done_callback(lambda done: self._ws_done(call, done))
        return future

    def _ws_socket_breaker(self, url: str, call: _Call) -> CircuitBreaker:
        registry = self._circuit_breakers
        breaker = registry._breakers.get(ws_group(url, self.urls["api"]["ws"]))
        return breaker if breaker is not None else (call.dial or call.answer).breaker

    def _ws_done(self, call: _Call, future: Any) -> None:
        with _recording():
            self._ws_settle_rest(call, future)

    def _ws_settle_rest(self, call: _Call, future: Any) -> None:
        if call.settled:
            return
        if future.cancelled():
            call.release()
            return
        error = future.exception()
        if error is None:  # an update arrived: the call was answered
            if call.dial is not None:
                call.dial.settle(SUCCESS)
            call.answer.settle(SUCCESS)
            return
        self._ws_judge_error(call, error)

    def _ws_judge_error(self, call: _Call, error: BaseException) -> None:
        kind = verdict(error)
        message = str(error)
        if kind is SUCCESS:  # an error answer: the caller's fault unless it says otherwise
            kind = FAILURE if is_ws_outage(message) else NEUTRAL
        summary = self._ws_summary(call.answer.breaker, type(error).__name__, message)
        if call.dial is not None:
            call.dial.settle(NEUTRAL)
        call.answer.settle(kind, summary if kind is FAILURE else None)

    def _ws_summary(self, breaker: CircuitBreaker, kind: str, message: str) -> dict[str, str]:
        return breaker._summary(kind, message, tuple(self._ws_tokens()))

    def _ws_tokens(self) -> list[str]:
        """The websocket tokens ccxt keeps: kept out of every message, like the keys."""
        tokens = []
        for client in list((self.clients or {}).values()):
            held = client.subscriptions.get("authenticated")
            token = held.get("token") if isinstance(held, Mapping) else None
            if isinstance(token, str) and token:
                tokens.append(token)
        return tokens

    # --- per socket ------------------------------------------------------------------

    def on_connected(self, client: Any, message: Any = None) -> Any:
        socket = _SOCKETS.get(client)
        if socket is not None:
            with _recording():
                self._ws_connected(socket)
        return super().on_connected(client, message)

    def _ws_connected(self, socket: _Socket) -> None:
        socket.connected = True
        socket.generation = socket.breaker._machine.generation
        socket.seen = socket.breaker._clock.monotonic()
        for call in socket.calls:
            call.connected()
        socket.prune()

    def handle_message(self, client: Any, message: Any) -> Any:
        socket = _SOCKETS.get(client)
        if socket is not None and not _is_pong(message):  # a pong: the pipe is up, no more
            with _recording():
                self._ws_message(socket, message)
        return super().handle_message(client, message)

    def _ws_message(self, socket: _Socket, message: Any) -> None:
        breaker = socket.breaker
        now = socket.seen = breaker._clock.monotonic()
        req_id = _req_id(message) if socket.calls else None
        if req_id is not None:
            self._ws_answer(socket, req_id, message)
        elif (
            breaker.state is HALF_OPEN
            and socket.generation == breaker._machine.generation
            and not socket.failed
            and not breaker._machine.refuses(now)
        ):
            # Reading a subscribed stream sends nothing, so it is no call: after the
            # probe, the socket it dialed (only that one: an older socket of the
            # group, on another URL, proves nothing of it) counts its messages as the
            # evidence that closes the circuit (successThreshold of them).
            _Hold(breaker, "stream").settle(SUCCESS)

    def _ws_answer(self, socket: _Socket, req_id: str, message: Mapping[str, Any]) -> None:
        """Judge the answer to a subscription or an order (v2 ``success``/``error``, v1
        ``status``/``errorMessage``)."""
        call = next((c for c in socket.calls if c.req_id == req_id), None)
        if call is None:
            return
        error = message.get("error", message.get("errorMessage"))
        ok = message.get("success") is True or message.get("status") == "subscribed"
        if error is None and not ok:
            return  # not an answer to the request (a pong, say)
        if call.dial is not None:
            call.dial.settle(SUCCESS)
        if error is None:
            call.answer.settle(SUCCESS)
        else:
            text = str(error)
            breaker = call.answer.breaker
            summary = self._ws_summary(breaker, "WebsocketError", text)
            call.answer.settle(FAILURE if is_ws_outage(text) else NEUTRAL, summary)
            registry = self._circuit_breakers
            limit = named_limit(text, None, None, registry._now(), breaker.config.lockout_duration)
            if limit is not None:
                registry._trip_scope(breaker, *limit, summary)
        socket.prune()

    def on_error(self, client: Any, error: Any) -> Any:
        with _recording():
            self._ws_failed(client, error)
        return super().on_error(client, error)

    def on_close(self, client: Any, error: Any) -> Any:
        with _recording():
            socket = _SOCKETS.get(client)
            if socket is not None and error in _CLEAN_CLOSE:
                socket.end()
            else:
                self._ws_failed(client, ccxt.NetworkError(f"socket closed, code {error}"))
        return super().on_close(client, error)

    def _ws_failed(self, client: Any, error: Any) -> None:
        """A failed dial, an abnormal close or a stale socket: once per socket."""
        socket = _SOCKETS.get(client)
        if socket is None or socket.failed:
            return
        socket.failed = True
        breaker = socket.breaker
        kind = type(error).__name__ if isinstance(error, BaseException) else "WebsocketError"
        summary = self._ws_summary(breaker, kind, str(error))
        calls, socket.calls = socket.calls, []
        for call in calls:
            call.socket_failed(breaker.group, summary)
        if not calls and socket.connected:
            # a working socket broke with no call in flight: still evidence of an outage
            _unattributed_failure(breaker, "connect", summary)

    async def close(self, *args: Any, **kwargs: Any) -> Any:
        # ccxt reports the sockets it closes here as closed abnormally (1006), once its
        # receive loop finds them closed: they are ended before that, so nothing is judged
        for client in list((self.clients or {}).values()):
            socket = _SOCKETS.get(client)
            if socket is not None:
                socket.end()
        return await super().close(*args, **kwargs)

    def ping(self, client: Any) -> Any:
        socket = _SOCKETS.get(client)
        if socket is not None and socket.connected and not socket.failed:
            stale_after = socket.breaker.config.ws_stale_after
            silent = socket.breaker._clock.monotonic() - socket.seen
            if silent > stale_after:
                # ccxt's ping loop turns this into client.on_error: the socket is closed,
                # its futures rejected, and the next watch call dials again
                raise ccxt.RequestTimeout(
                    f"{self.id} websocket {client.url} sent nothing for {silent:.1f} s "
                    f"(wsStaleAfter is {stale_after * 1000:g} ms)"
                )
        return super().ping(client)

    async def authenticate(self, params: Any = {}) -> Any:  # noqa: B006  # ccxt's default
        # No permit is taken here: ccxt calls this before every private watch, cached
        # token or not, and a read of a stream already subscribed must never be refused.
        # An open ws-private refuses the watch call itself, before it dials.
        try:
            return await super().authenticate(params)
        except BaseException as exc:
            registry = self._circuit_breakers
            breaker = None if registry is None else registry._breakers.get("ws-private")
            if breaker is not None and verdict(exc) is FAILURE:
                summary = self._ws_summary(breaker, type(exc).__name__, str(exc))
                _unattributed_failure(breaker, "GetWebSocketsToken", summary)
            raise
