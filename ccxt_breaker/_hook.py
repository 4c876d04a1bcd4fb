"""The one seam into ccxt: ``fetch2``, ``fetch``, ``sleep`` and ``on_rest_response``.

* ``fetch2`` runs once per call, before ccxt's rate-limit queue: an open circuit
  rejects here, so a refused call never waits and never spends a token.
* ``fetch`` runs once per attempt, after the queue and inside ccxt's retry loop: it
  checks again (the circuit may have opened while the call waited or between
  retries) and judges the attempt.
* ``sleep``, between ccxt's retries, ends the call early when the next attempt
  would be refused anyway.
* ``on_rest_response`` hands the attempt's HTTP status and headers to the call through
  a ``ContextVar``, since ccxt's exceptions carry neither and concurrent calls would
  race on ``last_response_headers``.

ccxt's own retry loop is left alone.  When an attempt is refused, ``fetch`` (or
``sleep``) raises ``_Refused``, a ``BaseException`` that the loop's ``except Exception`` lets
through, and ``fetch2`` turns it into the error the caller is owed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ccxt
import ccxt.async_support

from ._breaker import SHADOW, CircuitBreaker
from ._config import parse_settings
from ._errors import FAILURE, SUCCESS
from ._kraken import endpoint_table
from ._machine import CLOSED
from ._registry import BreakerRegistry, Route

__all__ = ["BreakerMixin", "install", "kraken", "uninstall"]

_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "token", "twofa")


class _Refused(BaseException):
    """An attempt of an admitted call was refused; see the module docstring."""


class _Call:
    """What one ``fetch2`` call knows across its attempts."""

    __slots__ = ("breaker", "headers", "last_error", "permit", "route", "status")

    def __init__(self, route: Route, breaker: CircuitBreaker, permit: int) -> None:
        self.route = route
        self.breaker = breaker
        self.permit: int | None = permit  # held until an attempt takes it
        self.last_error: BaseException | None = None
        self.status: int | None = None
        self.headers: Mapping[str, str] | None = None


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

    # The rest of the arguments pass through untouched: ccxt 4.5.0 also takes headers
    # and body here, later releases do not.
    async def fetch2(
        self,
        path: str,
        api: Any = ["public"],  # noqa: B006  # ccxt's own default
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        registry = self._circuit_breakers
        route = None if registry is None else registry.routes.get(path) or registry.route(path, api)
        if route is None or route.breaker is None:
            return await super().fetch2(path, api, *args, **kwargs)
        breaker = route.breaker
        machine = breaker.machine
        if machine.state is CLOSED:  # the hot path of admit()
            permit = machine.generation
        else:
            permit = breaker.admit(route.counters or route.count(), path)
        call = _Call(route, breaker, permit)
        token = _CALL.set(call)
        try:
            return await super().fetch2(path, api, *args, **kwargs)
        except _Refused:
            pass
        finally:
            _CALL.reset(token)
            # no attempt took the permit: cancelled in the queue, or sign() raised
            if call.permit is not None:
                breaker.release(call.permit)
        # A request of this call went out: the caller gets what it answered, not a
        # CircuitOpenError, which promises that nothing was sent.
        if call.last_error is not None:
            raise call.last_error
        raise breaker.rejection(path)

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        call = _CALL.get()
        if call is None:
            return await super().fetch(url, method, headers, body)
        route, breaker = call.route, call.breaker
        counters = route.counters or route.count()
        permit = call.permit
        call.permit = None  # this attempt owns the permit from here on
        # A permit from an earlier generation is stale: the circuit changed while queued.
        if permit is None or (permit != breaker.machine.generation and permit != SHADOW):
            if permit is not None:
                breaker.release(permit)
            permit = breaker.try_admit(counters, route.endpoint)
            if permit is None:
                raise _Refused
        call.status = call.headers = None
        started = breaker.start(counters)
        try:
            response = await super().fetch(url, method, headers, body)
        except BaseException as exc:
            call.last_error = exc
            breaker.settle_error(
                permit,
                counters,
                started,
                exc,
                responded=call.status is not None,
                status=call.status,
                headers=call.headers,
                secrets=_request_secrets(headers),
            )
            raise
        if type(response) is dict or not route.json:
            breaker.settle(permit, counters, started, SUCCESS)
        else:  # ccxt returns Cloudflare HTML or an empty body silently
            error = breaker.summary(
                "NonJsonResponse", f"HTTP {call.status} answer was not a JSON object"
            )
            breaker.settle(permit, counters, started, FAILURE, error)
        return response

    async def sleep(self, milliseconds: Any) -> Any:
        # Inside a call this is the delay between ccxt's retries: when the circuit has
        # opened meanwhile, the next attempt would be refused, so end the call now.
        call = _CALL.get()
        if call is not None and call.permit is None:
            route = call.route
            call.permit = call.breaker.try_admit(route.count(), route.endpoint)
            if call.permit is None:
                raise _Refused
        return await super().sleep(milliseconds)

    def on_rest_response(
        self,
        code: Any,
        reason: Any,
        url: Any,
        method: Any,
        response_headers: Any,
        response_body: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        call = _CALL.get()
        if call is not None:
            call.status = code
            call.headers = response_headers
        return super().on_rest_response(
            code, reason, url, method, response_headers, response_body, request_headers,
            request_body,
        )


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
