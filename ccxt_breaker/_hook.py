"""The one seam into ccxt: ``fetch2``, ``fetch`` and ``sleep``.

* ``fetch2`` runs once per call, before ccxt's rate-limit queue: an open circuit
  rejects here, so a refused call never waits and never spends a token.  ccxt's
  ``request()`` does nothing but call ``fetch2``, so the hook's ``fetch2`` takes its
  place too (checked against ccxt's code at import).  While every circuit of the
  instance is closed there is nothing to refuse there, so the instance's ``request``
  goes straight to ccxt's ``fetch2`` (see :func:`_attach`) and a call runs as many
  coroutines as in plain ccxt.
* ``fetch`` runs once per attempt, after the queue and inside ccxt's retry loop: it
  checks again (the circuit may have opened while the call waited or between
  retries) and judges the attempt.  It finds its endpoint from the URL, which ends
  with the endpoint's path.
* ``sleep``, between ccxt's retries, ends the call early when the next attempt
  would be refused anyway.

The hot path is a closed circuit with no sliding window.  There nothing is passed to
``fetch`` (a ``ContextVar`` set alone measured 0.05x of a whole ccxt call), and
``fetch`` reads no clock and calls into the breaker only when a success has work to
do.  A ``_Call`` in a ``ContextVar`` exists only while ``fetch2`` holds a half-open
permit, or after an attempt failed and ccxt may retry it; the frame of ccxt's
``fetch2`` tells that call's retries from a later call in the same task.  ccxt's
methods are called through the class that follows the mixin rather than ``super()``:
the lookup still happens on every call, so a patch of ccxt's class takes effect, at
half the cost.

ccxt puts neither the HTTP status nor the headers on its exceptions, and concurrent
calls would race on ``last_response_headers``; so a failed attempt reads them from its
own traceback, in the frame of ccxt's ``fetch`` (see :func:`_response_of`).

ccxt's own retry loop is left alone.  When an attempt is refused, the caller gets the
last sent attempt's error, or a ``CircuitOpenError`` when nothing was sent.  Under the
hook's ``fetch2``, ``fetch`` (or ``sleep``) raises ``_Refused``, a ``BaseException`` that
the loop's ``except Exception`` lets through, and ``fetch2`` raises the error it carries.
A call that came in by the shortcut has no ``fetch2`` of ours above it, so the error is
raised directly; should ccxt retry it, every retry is refused at once (:func:`_refuse`).
"""

from __future__ import annotations

import contextvars
import inspect
import sys
import types
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import ccxt
import ccxt.async_support
from ccxt.async_support.base.exchange import Exchange

from ._breaker import SHADOW
from ._config import parse_settings
from ._errors import FAILURE, SUCCESS, CircuitOpenError
from ._kraken import endpoint_table
from ._machine import CLOSED
from ._registry import BreakerRegistry, Route

__all__ = ["BreakerMixin", "install", "kraken", "uninstall"]

_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "token", "twofa")

# ccxt's own default for fetch2's ``api``: a list since 4.5.89, a string before.
_API_DEFAULT = inspect.signature(Exchange.fetch2).parameters["api"].default
# ccxt's request(), when it does nothing but pass its arguments on to fetch2().
_CCXT_REQUEST = (
    Exchange.request
    if Exchange.request.__code__.co_names == ("fetch2",)
    and inspect.signature(Exchange.request) == inspect.signature(Exchange.fetch2)
    else None
)
# The frame of ccxt's fetch, and its locals that hold the answer of an attempt.
_FETCH_CODE = Exchange.fetch.__code__
_CCXT_FETCH2_CODE = Exchange.fetch2.__code__
_STATUS, _HEADERS = "http_status_code", "headers"


class _Refused(BaseException):
    """An attempt was refused; ``error`` is what the caller gets instead."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class _Call:
    """What a call carries from one of its steps to the next, when it carries anything."""

    __slots__ = ("caller", "last_error", "permit", "refused", "route")

    def __init__(
        self,
        route: Route,
        permit: int | None,
        last_error: BaseException | None = None,
        caller: FrameType | None = None,
    ) -> None:
        self.route = route
        self.permit = permit  # taken before the queue or between retries, until used
        self.last_error = last_error  # the error of the last attempt sent
        # The frame of ccxt's fetch2 running the call: what tells its retries from the
        # next call in the same task.  None until the first attempt, for a call that
        # fetch2 gave a permit before the queue.
        self.caller = caller
        self.refused: BaseException | None = None  # raised already, for ccxt to retry

    def give_back(self) -> None:
        """Release a permit that no attempt took (cancelled in the queue, or sign() raised)."""
        if self.permit is not None and self.route.breaker is not None:
            self.route.breaker.release(self.permit)
            self.permit = None


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "ccxt_breaker_call", default=None
)

_TABLES: dict[type, dict[str, tuple[str, str, str]]] = {}


def _table(exchange: Any) -> dict[str, tuple[str, str, str]]:
    cls = type(exchange)
    table = _TABLES.get(cls)
    if table is None:
        table = _TABLES[cls] = endpoint_table(exchange.describe()["api"])
    return table


def _scrubber(exchange: Any) -> Any:
    def scrub(message: str) -> str:
        for name in _CREDENTIALS:
            value = getattr(exchange, name, None)
            # very short values are no real credentials, and replacing them would mangle text
            if isinstance(value, str) and len(value) >= 4:
                message = message.replace(value, "***")
        return message

    return scrub


def _request_secrets(headers: Any) -> tuple[str, ...]:
    if not isinstance(headers, Mapping):
        return ()
    return tuple(v for k, v in headers.items() if k in ("API-Key", "API-Sign") and v)


def _response_of(exc: BaseException) -> tuple[int | None, Mapping[str, str] | None]:
    """The HTTP status and headers of the answer that ``exc`` was raised over, if any.

    They are locals of ccxt's ``fetch`` frame, which is in the traceback of every error
    raised while fetching.  ``headers`` holds the request's headers until an answer
    arrives, so it is trusted only once the status is set.
    """
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is _FETCH_CODE:
            local = frame.f_locals
            status, headers = local.get(_STATUS), local.get(_HEADERS)
            if not isinstance(status, int):
                return None, None
            return status, headers if isinstance(headers, Mapping) else None
        tb = tb.tb_next
    return None, None


def _build_registry(exchange: Any, raw: Any, *, default_on: bool) -> BreakerRegistry | None:
    table = _table(exchange)
    settings = parse_settings(
        raw, endpoints={path: group for path, (_, group, _) in table.items()}, default_on=default_on
    )
    if settings is None:
        return None
    return BreakerRegistry(settings, table, exchange_id=exchange.id, scrub=_scrubber(exchange))


def _raw_option(exchange: Any) -> Any:
    options = getattr(exchange, "options", None)
    return options.get("circuitBreaker") if isinstance(options, Mapping) else None


if TYPE_CHECKING:
    _Base = Any
else:
    _Base = object


class BreakerMixin(_Base):  # type: ignore[misc]
    """Circuit breakers for a ccxt async exchange class; mix in right before the ccxt class."""

    _circuit_breakers: BreakerRegistry | None = None
    # The ccxt class that follows the mixin.  Its methods are looked up on every call,
    # so a patch of ccxt's class still takes effect, as with super(); but super() costs
    # an object and a walk of the MRO per call, about 0.02x of a whole ccxt call.
    _ccxt: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        tail = mro[mro.index(BreakerMixin) + 1 :]
        ccxt_class: Any = tail[0]
        if (
            not issubclass(ccxt_class, Exchange)
            or tail[: len(ccxt_class.__mro__) - 1] != ccxt_class.__mro__[:-1]
        ):
            raise TypeError(
                f"{cls.__name__}: BreakerMixin must come right before the ccxt exchange "
                f"class in the bases, not before {ccxt_class.__name__}"
            )
        cls._ccxt = ccxt_class
        # ccxt's request() only forwards to fetch2(); where the hook's fetch2 is the one
        # that runs, it stands in for request() too, and every call is one coroutine
        # shorter (about 0.03x of a call).  Checked against ccxt's own code at import.
        # A subclass's own request() is left alone, and its own fetch2() gets ccxt's
        # request() back, so that it sees every call.
        if cls.request in (ccxt_class.request, BreakerMixin.fetch2):
            if cls.fetch2 is BreakerMixin.fetch2 and ccxt_class.request is _CCXT_REQUEST:
                cls.request = BreakerMixin.fetch2
            else:
                cls.request = ccxt_class.request

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__({} if config is None else config)
        registry = _build_registry(self, _raw_option(self), default_on=True)
        if registry is not None:
            _attach(self, registry)

    @property
    def circuit_breakers(self) -> BreakerRegistry:
        """The breakers of this instance, by group (empty when breakers are disabled)."""
        registry = self._circuit_breakers
        if registry is None:  # disabled: an empty mapping that still answers group_of()
            return BreakerRegistry(None, _table(self))
        return registry

    async def fetch2(
        self,
        path: str,
        api: Any = _API_DEFAULT,
        method: str = "GET",
        params: Any = {},  # noqa: B006  # ccxt's own default
        config: Any = {},  # noqa: B006
        *legacy: Any,  # before ccxt 4.5.89: headers, body, config
    ) -> Any:
        held = None  # the call and its context token, while a permit is carried
        registry = self._circuit_breakers
        if registry is not None:
            route = registry.routes.get(path) or registry.route(path, api)
            machine = route.machine
            if machine is not None and machine.state is not CLOSED:
                # a half-open permit is taken before the queue and handed to the attempt
                assert route.breaker is not None
                call = _Call(route, route.breaker.admit(route.counters or route.count(), path))
                held = call, _CALL.set(call)
        try:
            if legacy:
                return await self._ccxt.fetch2(self, path, api, method, params, config, *legacy)
            return await self._ccxt.fetch2(self, path, api, method, params, config)
        except BaseException as exc:
            if held is None and _CALL.get() is not None:  # kept for a retry that never came
                _CALL.set(None)
            if not isinstance(exc, _Refused):
                raise
            error = exc.error
        finally:
            if held is not None:
                _CALL.reset(held[1])
                held[0].give_back()
        raise error  # outside the handler, so the traceback does not show _Refused

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        registry = self._circuit_breakers
        if registry is None:
            return await self._ccxt.fetch(self, url, method, headers, body)
        route = registry.url_routes.get(url) or registry.route_of_url(url)
        machine = None if route is None else route.machine
        if machine is None:
            return await self._ccxt.fetch(self, url, method, headers, body)
        assert route is not None
        call = _CALL.get()
        if call is not None or not machine.quick:
            return await _attempt(self, route, call, _caller(), url, method, headers, body)
        # The common attempt, spelled out: closed, no window, nothing handed on.  It reads
        # no clock and calls into the breaker only when a success has work to do.
        permit = machine.generation
        (route.counters or route.count())[0] += 1
        try:
            response = await self._ccxt.fetch(self, url, method, headers, body)
        except BaseException as exc:
            _settle_error(route, None, _caller(), permit, 0.0, exc, headers)
            raise
        if machine.failure_count or (route.json and type(response) is not dict):
            _settle_answer(route, permit, 0.0, response)
        return response

    async def sleep(self, milliseconds: Any) -> Any:
        # Inside a call this is the delay between ccxt's retries: when the circuit has
        # opened meanwhile, the next attempt would be refused, so end the call now.
        call = _CALL.get()
        if call is not None and call.caller is not None and call.caller is _caller():
            if call.refused is not None:
                return None  # the retry is refused already: nothing to wait for
            if call.permit is None:
                try:
                    call.permit = _permit(call.route, call)
                except CircuitOpenError as refused:
                    _refuse(call.route, call, call.caller, refused)
        return await super().sleep(milliseconds)


# The frame of the hook's fetch2, which takes a refusal's error past ccxt's retry loop.
_HOOK_FETCH2_CODE = BreakerMixin.fetch2.__code__


def _direct_fetch2(
    self: Any,
    path: str,
    api: Any = _API_DEFAULT,
    method: str = "GET",
    params: Any = {},  # noqa: B006  # ccxt's own defaults
    config: Any = {},  # noqa: B006
) -> Any:
    # ccxt's fetch2 coroutine, looked up per call so that a patch of ccxt's class applies;
    # a plain function, so it adds no coroutine to the call.
    return self._ccxt.fetch2(self, path, api, method, params, config)


if "headers" in inspect.signature(Exchange.fetch2).parameters:
    _fetch2 = BreakerMixin.fetch2

    async def _legacy_fetch2(
        self: Any,
        path: str,
        api: Any = _API_DEFAULT,
        method: str = "GET",
        params: Any = {},  # noqa: B006  # ccxt's own defaults
        headers: Any = None,
        body: Any = None,
        config: Any = {},  # noqa: B006
    ) -> Any:
        # ccxt before 4.5.89 names two more parameters, which callers may pass by name
        return await _fetch2(self, path, api, method, params, headers, body, config)

    BreakerMixin.fetch2 = _legacy_fetch2  # type: ignore[method-assign,assignment]

    def _direct_fetch2(self: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return self._ccxt.fetch2(self, *args, **kwargs)


def _attach(exchange: Any, registry: BreakerRegistry) -> None:
    """Give ``exchange`` its breakers, and the shortcut while every circuit is closed.

    With every circuit closed there is nothing to refuse before ccxt's queue, so the
    instance's ``request`` goes straight to ccxt's ``fetch2`` and a call runs no hook
    above the queue (0.01-0.04x of a call).  The first transition away from all-closed
    removes the shortcut before anyone else hears of it, so the next call is checked
    before the queue again; the return to all-closed puts it back.  Every attempt is
    still checked and judged by ``fetch``.  A call that came in by the shortcut and is
    refused later, after the queue or between retries, is refused by ``_refuse``.
    """
    exchange._circuit_breakers = registry
    if type(exchange).request is not BreakerMixin.fetch2:
        return  # a subclass's own request() or fetch2() sees every call
    shortcut = types.MethodType(_direct_fetch2, exchange)

    def gate(all_closed: bool) -> None:
        attributes = exchange.__dict__
        if all_closed:
            attributes.setdefault("request", shortcut)  # never over the user's own
        elif attributes.get("request") is shortcut:
            del attributes["request"]

    registry.on_all_closed = gate
    gate(registry.all_closed)


async def _attempt(
    exchange: Any, route: Route, call: _Call | None, caller: FrameType, url: str, *request: Any
) -> Any:
    """An attempt off the common path: it carries a permit or a retry's error, or its
    circuit is half-open, open, or keeps a window."""
    if call is not None and call.caller is not caller:
        if call.caller is None:  # the permit fetch2 took before the queue
            call.caller = caller
        else:  # left by an earlier call in this task, which ended without fetch2 above it
            _CALL.set(None)
            call = None
    if call is not None and call.refused is not None:
        raise call.refused  # ccxt retries the error of a refusal: refuse it again at once
    breaker = route.breaker
    assert breaker is not None
    try:
        permit = _permit(route, call)
    except CircuitOpenError as refused:
        _refuse(route, call, caller, refused)
    started = breaker.start(route.counters or route.count())
    try:
        response = await exchange._ccxt.fetch(exchange, url, *request)
    except BaseException as exc:
        _settle_error(route, call, caller, permit, started, exc, request[1])
        raise
    if call is not None:
        _CALL.set(None)  # a success ends the call: nothing is kept for a retry
    _settle_answer(route, permit, started, response)
    return response


def _settle_answer(route: Route, permit: int, started: float, response: Any) -> None:
    """Judge an attempt that returned: a success, unless a JSON API answered no JSON."""
    breaker, counters = route.breaker, route.counters
    assert breaker is not None
    assert counters is not None
    if type(response) is dict or not route.json:
        breaker.settle(permit, counters, started, SUCCESS)
    else:  # ccxt returns Cloudflare HTML or an empty body silently
        error = breaker.summary("NonJsonResponse", "the answer was not a JSON object")
        breaker.settle(permit, counters, started, FAILURE, error)


def _settle_error(
    route: Route,
    call: _Call | None,
    caller: FrameType,
    permit: int,
    started: float,
    exc: BaseException,
    request_headers: Any,
) -> None:
    """Judge an attempt that raised, and keep its error should ccxt retry it."""
    breaker, counters = route.breaker, route.counters
    assert breaker is not None
    assert counters is not None
    status, headers = _response_of(exc)
    breaker.settle_error(
        permit,
        counters,
        started,
        exc,
        responded=status is not None,
        status=status,
        headers=headers,
        secrets=_request_secrets(request_headers),
    )
    # kept for the caller, should ccxt retry and the circuit refuse the retry
    if call is None:
        _CALL.set(_Call(route, None, exc, caller))
    else:
        call.last_error = exc


def _permit(route: Route, call: _Call | None) -> int:
    """The permit of an attempt off the plain closed path; raises ``CircuitOpenError``."""
    breaker = route.breaker
    assert breaker is not None
    permit = None
    if call is not None:
        permit, call.permit = call.permit, None  # this attempt owns it from here on
    # A permit from an earlier generation is stale: the circuit changed while queued.
    if permit is not None and permit != breaker.machine.generation and permit != SHADOW:
        breaker.release(permit)
        permit = None
    if permit is None:
        permit = breaker.admit(route.counters or route.count(), route.endpoint)
    return permit


def _refuse(
    route: Route, call: _Call | None, caller: FrameType, refused: CircuitOpenError
) -> NoReturn:
    """Refuse an attempt.  The caller gets the error of the last attempt sent, or
    ``refused`` when none was."""
    error = (None if call is None else call.last_error) or refused
    above = caller.f_back
    if above is not None and above.f_code is _HOOK_FETCH2_CODE:
        raise _Refused(error)  # fetch2 raises it, past ccxt's retry loop
    # The call came in by the shortcut, with no fetch2 of the hook above it to take the
    # error past ccxt's retry loop (see _attach): raise the caller's error here.  If
    # ccxt retries it, each retry is refused again at once, neither sent nor slept.
    if call is None:
        call = _Call(route, None, caller=caller)
        _CALL.set(call)
    call.refused = error
    raise error


def _caller() -> FrameType:
    """The frame of ccxt's fetch2 that awaits the hook method calling this: it stays the
    same across a call's retries.  Looked for by its code a few frames up, so that a
    subclass's own fetch around the hook's does not hide it."""
    frame: FrameType | None = sys._getframe(2)
    assert frame is not None
    start = frame
    for _ in range(4):
        if frame is None:
            break
        if frame.f_code is _CCXT_FETCH2_CODE:
            return frame
        frame = frame.f_back
    return start


class kraken(BreakerMixin, ccxt.async_support.kraken):  # type: ignore[misc]
    """``ccxt.async_support.kraken`` with a circuit breaker per endpoint group."""


# --- install(): the config flag for plain ccxt classes -------------------------------

_GUARDED: dict[type, type] = {}
_MARK = "__ccxt_breaker_original__"


def _guarded(cls: type) -> type:
    guarded = _GUARDED.get(cls)
    if guarded is None:
        guarded = _GUARDED[cls] = type(
            cls.__name__,
            (BreakerMixin, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
    return guarded


def install() -> None:
    """Make ``ccxt.async_support.kraken`` and ``ccxt.pro.kraken`` honour the
    ``options['circuitBreaker']`` flag. Idempotent; :func:`uninstall` reverses it.

    An instance built with the flag gets breakers by becoming an instance of a
    subclass (``isinstance`` checks keep passing); one built without it is untouched,
    so it pays nothing.  ``ccxt.pro.kraken`` inherits the patched constructor, so the
    import order of ``ccxt.pro`` does not matter.
    """
    cls = ccxt.async_support.kraken
    if _MARK in getattr(cls.__dict__.get("__init__"), "__dict__", {}):
        return
    original = cls.__dict__.get("__init__")

    def __init__(self: Any, config: Any = {}) -> None:  # noqa: B006  # ccxt's signature
        if original is None:
            super(cls, self).__init__(config)
        else:
            original(self, config)
        raw = _raw_option(self)
        if raw is None or raw is False or isinstance(self, BreakerMixin):
            return
        registry = _build_registry(self, raw, default_on=False)
        if registry is not None:
            self.__class__ = _guarded(type(self))
            _attach(self, registry)

    setattr(__init__, _MARK, original)
    cls.__init__ = __init__


def uninstall() -> None:
    """Undo :func:`install`; instances that already have breakers keep them."""
    cls = ccxt.async_support.kraken
    patched = cls.__dict__.get("__init__")
    if patched is None or _MARK not in getattr(patched, "__dict__", {}):
        return
    original = getattr(patched, _MARK)
    if original is None:
        del cls.__init__
    else:
        cls.__init__ = original
