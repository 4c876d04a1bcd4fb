"""The one seam into ccxt: ``fetch2``, ``fetch`` and ``sleep``.

* ``fetch2`` runs once per call, before ccxt's rate-limit queue: an open circuit
  rejects here, so a refused call never waits and never spends a token.
* ``fetch`` runs once per attempt, after the queue and inside ccxt's retry loop: it
  checks again (the circuit may have opened while the call waited or between
  retries) and judges the attempt.  It finds its endpoint from the URL, which ends
  with the endpoint's path.
* ``sleep``, between ccxt's retries, ends the call early when the next attempt
  would be refused anyway.

The common call, on a closed circuit, passes nothing from ``fetch2`` to ``fetch``: any
state shared between them costs more than the rest of the hook (a ``ContextVar`` set
measured 0.05x of a whole ccxt call).  A ``_Call`` in a ``ContextVar`` exists only while
``fetch2`` holds a half-open permit, or after an attempt failed and ccxt may retry it.

ccxt puts neither the HTTP status nor the headers on its exceptions, and concurrent
calls would race on ``last_response_headers``; so a failed attempt reads them from its
own traceback, in the frame of ccxt's ``fetch`` (see :func:`_response_of`).

ccxt's own retry loop is left alone.  When an attempt is refused, ``fetch`` (or
``sleep``) raises ``_Refused``, a ``BaseException`` that the loop's ``except Exception`` lets
through, and ``fetch2`` raises the error it carries: the last sent attempt's error, or a
``CircuitOpenError`` when nothing was sent.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ccxt
import ccxt.async_support
from ccxt.async_support.base.exchange import Exchange

from ._breaker import SHADOW
from ._config import parse_settings
from ._errors import FAILURE, SUCCESS
from ._kraken import endpoint_table
from ._machine import CLOSED
from ._registry import BreakerRegistry, Route

__all__ = ["BreakerMixin", "install", "kraken", "uninstall"]

_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "token", "twofa")

# ccxt's own default for fetch2's ``api``: a list since 4.5.89, a string before.
_API_DEFAULT = inspect.signature(Exchange.fetch2).parameters["api"].default
# The frame of ccxt's fetch, and its locals that hold the answer of an attempt.
_FETCH_CODE = Exchange.fetch.__code__
_STATUS, _HEADERS = "http_status_code", "headers"


class _Refused(BaseException):
    """An attempt was refused; ``error`` is what the caller gets instead."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class _Call:
    """What a call carries from one of its steps to the next, when it carries anything."""

    __slots__ = ("last_error", "permit", "route")

    def __init__(
        self, route: Route, permit: int | None, last_error: BaseException | None = None
    ) -> None:
        self.route = route
        self.permit = permit  # taken before the queue or between retries, until used
        self.last_error = last_error  # the error of the last attempt sent


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
    """Circuit breakers for a ccxt async exchange class; mix in before the ccxt class."""

    _circuit_breakers: BreakerRegistry | None = None

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__({} if config is None else config)
        self._circuit_breakers = _build_registry(self, _raw_option(self), default_on=True)

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
        *rest: Any,
        **kwargs: Any,
    ) -> Any:
        call = token = held = None
        registry = self._circuit_breakers
        if registry is not None:
            route = registry.routes.get(path) or registry.route(path, api)
            breaker = route.breaker
            if breaker is not None and breaker.machine.state is not CLOSED:
                # a half-open permit is taken before the queue and handed to the attempt
                held = breaker
                call = _Call(route, breaker.admit(route.counters or route.count(), path))
                token = _CALL.set(call)
        try:
            # ccxt's own request() passes one more argument (4.5.89 and later) or three
            # (older releases); spelling out the common case spares the cost of *rest.
            if len(rest) == 1 and not kwargs:
                return await super().fetch2(path, api, method, params, rest[0])
            return await super().fetch2(path, api, method, params, *rest, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, _Refused):
                raise
            error = exc.error
        finally:
            if call is not None and held is not None and token is not None:
                _CALL.reset(token)
                if call.permit is not None:  # no attempt took it: cancelled, or sign() raised
                    held.release(call.permit)
            elif _CALL.get() is not None:  # a failed attempt's error, kept for a retry
                _CALL.set(None)
        raise error  # outside the handler, so the traceback does not show _Refused

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        registry = self._circuit_breakers
        route = None
        if registry is not None:
            route = registry.url_routes.get(url) or registry.route_of_url(url)
        breaker = None if route is None else route.breaker
        if breaker is None:
            return await super().fetch(url, method, headers, body)
        assert route is not None
        call = _CALL.get()
        machine = breaker.machine
        if call is None and machine.state is CLOSED:  # the hot path of try_admit()
            permit = machine.generation
        else:
            permit = _permit(route, call)
        counters = route.counters or route.count()
        started = breaker.start(counters)
        try:
            response = await super().fetch(url, method, headers, body)
        except BaseException as exc:
            status, answer_headers = _response_of(exc)
            breaker.settle_error(
                permit,
                counters,
                started,
                exc,
                responded=status is not None,
                status=status,
                headers=answer_headers,
                secrets=_request_secrets(headers),
            )
            # kept for the caller, should ccxt retry and the circuit refuse the retry
            if call is None:
                _CALL.set(_Call(route, None, exc))
            else:
                call.last_error = exc
            raise
        if call is not None:
            call.last_error = None
        if type(response) is dict or not route.json:
            breaker.settle(permit, counters, started, SUCCESS)
        else:  # ccxt returns Cloudflare HTML or an empty body silently
            error = breaker.summary("NonJsonResponse", "the answer was not a JSON object")
            breaker.settle(permit, counters, started, FAILURE, error)
        return response

    async def sleep(self, milliseconds: Any) -> Any:
        # Inside a call this is the delay between ccxt's retries: when the circuit has
        # opened meanwhile, the next attempt would be refused, so end the call now.
        call = _CALL.get()
        if call is not None and call.permit is None:
            call.permit = _permit(call.route, call)
        return await super().sleep(milliseconds)


def _permit(route: Route, call: _Call | None) -> int:
    """The permit of an attempt off the plain closed path, or ``_Refused``."""
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
        permit = breaker.try_admit(route.counters or route.count(), route.endpoint)
        if permit is None:
            error = None if call is None else call.last_error
            raise _Refused(error or breaker.rejection(route.endpoint))
    return permit


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
            self._circuit_breakers = registry

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
