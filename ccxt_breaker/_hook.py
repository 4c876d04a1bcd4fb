"""The one seam into ccxt: ``fetch2`` per call, and ``fetch``, ``on_rest_response`` and
``sleep`` per attempt.

* ``fetch2`` runs once per call, before ccxt's rate-limit queue.  It finds the call's
  breaker, takes a permit (an open circuit refuses here, so a refused call never waits
  and never spends a token), and puts one :class:`_Call` in a ``ContextVar`` for the
  call's attempts.  Its ``finally`` hands back a permit that no attempt used, so every
  exit path (cancellation in the queue included) returns it in one place.
* ``fetch`` runs once per attempt, after the queue and inside ccxt's retry loop.  It
  checks again (the circuit may have opened while the call waited), counts the attempt
  and judges its outcome.
* ``on_rest_response`` is ccxt's hook for every answered attempt: it records the HTTP
  status and headers (``Retry-After``) on the call.
* ``sleep``, between ccxt's retries, ends the call early when the next attempt would be
  refused anyway.

Attempts only read and change the ``_Call``; only ``fetch2`` sets the variable.  A task
made inside the call (``asyncio.shield``, ``wait_for`` on 3.11) gets a copy of the
context that holds the same object, so a call's attempts stay together whatever a
subclass does between them.  Every ccxt method is reached through ``super()``.

A refused attempt raises ``CircuitOpenError`` from ``fetch``, where a subclass's own
``fetch()`` sees it.  ccxt may retry it; each retry is refused at once, neither sent,
slept nor counted again.  When the call ends refused after an attempt was sent, the
caller gets that attempt's error instead: a request did go out, so the call is not safe
to repeat blindly.
"""

from __future__ import annotations

import contextvars
import gc
import inspect
import logging
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ccxt
import ccxt.async_support
from ccxt.async_support.base.exchange import Exchange
from ccxt.base.exchange import Exchange as _SyncExchange

from ._breaker import Counters
from ._config import parse_settings
from ._errors import CircuitOpenError, Verdict, label, verdict
from ._kraken import endpoint_table, is_outage, named_limit, ws_endpoint_table
from ._registry import BreakerRegistry, Route

__all__ = [
    "BreakerMixin",
    "CcxtVersionWarning",
    "SyncBreakerMixin",
    "install",
    "kraken",
    "uninstall",
]

logger = logging.getLogger("ccxt_breaker")

# The ccxt versions this package supports: pyproject.toml's requirement is
# f"ccxt>={_CCXT_OLDEST},<{_CCXT_BELOW}" and .ci/run tests _CCXT_OLDEST and the newest
# release below _CCXT_BELOW; tests/test_version_check.py keeps the three in step.
_CCXT_OLDEST = "4.5.0"
_CCXT_BELOW = "4.6"


class CcxtVersionWarning(UserWarning):
    """The running ccxt is outside the range this package is tested on."""


def _release(version: str) -> tuple[int, ...]:
    """``'4.5.90'`` -> ``(4, 5, 90)``, missing parts as 0; ``()``, below every bound, when
    the version cannot be read."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    return () if match is None else tuple(int(part or 0) for part in match.groups())


def _check_ccxt_version() -> None:
    """Warn (:class:`CcxtVersionWarning`) when the running ccxt is outside the range: the
    seam relies on ccxt's internals, so it checks when it is first imported."""
    running = str(getattr(ccxt, "__version__", "unknown"))
    if _release(_CCXT_OLDEST) <= _release(running) < _release(_CCXT_BELOW):
        return
    warnings.warn(
        f"ccxt_breaker supports ccxt>={_CCXT_OLDEST},<{_CCXT_BELOW} (CI runs {_CCXT_OLDEST} and "
        f"the newest release below {_CCXT_BELOW}), but ccxt {running} is running: the hook "
        "relies on ccxt's internals, so calls may go unguarded or break. Install a supported "
        f"ccxt: pip install 'ccxt>={_CCXT_OLDEST},<{_CCXT_BELOW}'",
        CcxtVersionWarning,
        stacklevel=2,
    )


_check_ccxt_version()

_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "token", "twofa")
_SIGNING_HEADERS = ("API-Key", "API-Sign")
# ccxt's own default for fetch2's ``api``: a list since 4.5.89, a string before.
_API_DEFAULT = inspect.signature(Exchange.fetch2).parameters["api"].default


class _Call:
    """One call through the hook's ``fetch2``: what its attempts share."""

    __slots__ = ("counters", "error", "headers", "permit", "refusal", "route", "status")

    def __init__(self, route: Route, counters: Counters, permit: int | None) -> None:
        self.route = route
        self.counters = counters
        self.permit: int | None = permit  # taken before the queue or a retry, until used
        self.status: int | None = None  # the HTTP answer to the latest attempt, if any
        self.headers: Any = None
        self.error: Exception | None = None  # raised by the latest attempt that was sent
        self.refusal: CircuitOpenError | None = None  # once an attempt was refused

    def end(self) -> None:
        """Give back a permit that no attempt used (cancelled in the queue, refused)."""
        permit, self.permit = self.permit, None
        if permit is not None:
            assert self.route.breaker is not None
            self.route.breaker._release(permit)


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "ccxt_breaker_call", default=None
)


_TABLES: dict[type, dict[str, tuple[str, str, str]]] = {}
_DISABLED: dict[type, BreakerRegistry] = {}


def _table(exchange: Any) -> dict[str, tuple[str, str, str]]:
    cls = type(exchange)
    table = _TABLES.get(cls)
    if table is None:
        description = exchange.describe()
        table = endpoint_table(description["api"])
        if "ws" in description["urls"]["api"]:  # ccxt.pro: its websocket groups too
            table.update(ws_endpoint_table())
        _TABLES[cls] = table
    return table


def _credentials(exchange: Any) -> list[str]:
    # very short values are no real credentials, and replacing them would mangle text
    values = (getattr(exchange, name, None) for name in _CREDENTIALS)
    return [v for v in values if isinstance(v, str) and len(v) >= 4]


def _build_registry(exchange: Any, raw: Any, *, default_on: bool) -> BreakerRegistry | None:
    table = _table(exchange)
    settings = parse_settings(
        raw, endpoints={path: group for path, (_, group, _) in table.items()}, default_on=default_on
    )
    if settings is None:
        return None
    registry = BreakerRegistry(
        settings,
        table,
        exchange_id=exchange.id,
        credentials=_credentials,
        api_key=getattr(exchange, "apiKey", None),
        threaded=not isinstance(exchange, Exchange),  # a sync client: no event loop
    )
    registry._adopt(exchange)
    return registry


def _raw_option(exchange: Any) -> Any:
    options = getattr(exchange, "options", None)
    return options.get("circuitBreaker") if isinstance(options, Mapping) else None


if TYPE_CHECKING:
    _Base = Any
else:
    _Base = object


class _Hooked(_Base):  # type: ignore[misc]
    """What the async and the sync hook share: the breakers, built while ccxt constructs
    the instance, known to its copies, and ccxt's ``on_rest_response`` hook."""

    _circuit_breakers: BreakerRegistry | None = None

    def after_construct(self, *args: Any, **kwargs: Any) -> None:
        # ccxt calls this inside __init__ once the config is merged, and before it copies
        # every attribute to its camelCase name: so `circuitBreakers` is this registry.
        super().after_construct(*args, **kwargs)
        self._circuit_breakers = _build_registry(self, _raw_option(self), default_on=True)

    def __copy__(self) -> Any:
        # copy.copy shares every attribute, the breakers too; the copy is made known to
        # them, so that its credentials are scrubbed from their messages as well.
        cls = type(self)
        twin = cls.__new__(cls)
        twin.__dict__.update(self.__dict__)
        if self._circuit_breakers is not None:
            self._circuit_breakers._adopt(twin)
        return twin

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickle and copy.deepcopy, which plain ccxt instances support: the copy gets
        # breakers of its own, built from its options as a new instance's are (closed;
        # with sharedState, joined to the same circuits). A class install() made is named
        # by the class it was made from, which the loading process can import.
        state = dict(self.__dict__)
        for key in _REGISTRY_KEYS:
            if key in state:
                state[key] = None
        cls = type(self)
        return _rebuilt, (cls.__dict__.get("_guarded_from", cls),), state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        made_by_install = "_guarded_from" in type(self).__dict__
        registry = _build_registry(self, _raw_option(self), default_on=not made_by_install)
        for key in _REGISTRY_KEYS:
            if key in state:
                setattr(self, key, registry)

    @property
    def circuit_breakers(self) -> BreakerRegistry:
        """The breakers of this instance, by group (empty when breakers are disabled)."""
        registry = self._circuit_breakers
        if registry is None:  # disabled: an empty mapping that still answers group_of()
            cls = type(self)
            registry = _DISABLED.get(cls)
            if registry is None:  # (an empty registry is falsy: no `or` here)
                registry = _DISABLED[cls] = BreakerRegistry(None, _table(self))
        return registry

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
            call.status, call.headers = code, response_headers
        return super().on_rest_response(
            code,
            reason,
            url,
            method,
            response_headers,
            response_body,
            request_headers,
            request_body,
        )


# where an instance holds its registry: the hook's own name, and ccxt's camelCase copy of it
_REGISTRY_KEYS = ("_circuit_breakers", "circuitBreakers")


def _rebuilt(cls: type) -> Any:
    """An empty instance of ``cls`` with the hook, for pickle and deepcopy to fill through
    ``_Hooked.__setstate__``."""
    hooked: Any = cls if issubclass(cls, _Hooked) else _guarded(cls)
    return hooked.__new__(hooked)


def _check_bases(cls: type, mixin: type, base: type, kind: str) -> None:
    mro = cls.__mro__
    if base not in mro or mro.index(mixin) > mro.index(base):
        raise TypeError(
            f"{cls.__name__}: {mixin.__name__} must come before a ccxt {kind} exchange class "
            "in the bases, or ccxt's own methods hide the hook"
        )


class BreakerMixin(_Hooked):
    """Circuit breakers for a ccxt async exchange class.

    Put it anywhere before the ccxt exchange class in the bases; ``ccxt_breaker.kraken``
    is ``class kraken(BreakerMixin, ccxt.async_support.kraken)``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_bases(cls, BreakerMixin, Exchange, "async")

    async def close(self) -> Any:
        try:
            return await super().close()
        finally:
            if self._circuit_breakers is not None:  # the shared store's connections
                await self._circuit_breakers._close()

    async def fetch2(
        self,
        path: str,
        api: Any = _API_DEFAULT,
        method: str = "GET",
        params: Any = {},  # noqa: B006  # ccxt's own default
        *args: Any,  # config; before ccxt 4.5.89: headers, body, config
        **kwargs: Any,
    ) -> Any:
        registry = self._circuit_breakers
        route = None if registry is None else registry._routes.get(path)
        if route is None and registry is not None:
            route = registry._route(path, api)
        call = None  # no breaker: and no outer call's context for this call's attempts
        if route is not None and (breaker := route.breaker) is not None:
            counters = route.counters or route.count()
            permit = breaker._admit(counters, path)
            if breaker._shared is not None and breaker._shared.asks():
                permit = await breaker._shared.admit(permit, counters, path)
            call = _Call(route, counters, permit)
        token = _CALL.set(call)
        try:
            return await super().fetch2(path, api, method, params, *args, **kwargs)
        except CircuitOpenError as exc:
            if call is None or exc is not call.refusal or call.error is None:
                raise
            error = call.error
        finally:
            if call is not None:
                call.end()
            try:  # noqa: SIM105  # contextlib.suppress would cost a tenth of the hook
                _CALL.reset(token)
            except ValueError:
                # The coroutine was closed from another context (a pending call at
                # shutdown): that context never held the call, and the call's own dies
                # with it.
                pass
        # Raised here, outside the handler, so that its __context__ stays ccxt's own.
        raise error

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        call = _CALL.get()
        if call is None:
            return await super().fetch(url, method, headers, body)
        if call.refusal is not None:  # ccxt retries a refusal: refuse again, uncounted
            raise call.refusal.with_traceback(None)
        route = call.route
        breaker = route.breaker
        assert breaker is not None
        counters = call.counters
        held, call.permit = call.permit, None
        try:
            permit = breaker._admit(counters, route.endpoint, held)
            if permit != held and breaker._shared is not None and breaker._shared.asks():
                permit = await breaker._shared.admit(permit, counters, route.endpoint)
        except CircuitOpenError as refused:
            call.refusal = refused
            raise
        call.status = call.headers = None
        started = breaker._begin(counters)
        try:
            response = await super().fetch(url, method, headers, body)
        except BaseException as exc:
            _judge_error(self, call, permit, started, exc, headers)
            if breaker._shared is not None and isinstance(exc, Exception):
                await breaker._shared.flush()  # the failure is counted everywhere first
            raise
        _judge_answer(breaker, route, counters, permit, started, response)
        return response

    async def sleep(self, milliseconds: Any) -> Any:
        call = _CALL.get()
        if call is not None and call.error is not None and call.refusal is None:
            # the delay before one of ccxt's retries: if the circuit refuses the retry
            # now, end the call instead of waiting for nothing
            route = call.route
            assert route.breaker is not None
            breaker = route.breaker
            try:
                permit = breaker._admit(call.counters, route.endpoint, call.permit)
                if permit != call.permit and breaker._shared is not None and breaker._shared.asks():
                    permit = await breaker._shared.admit(permit, call.counters, route.endpoint)
                call.permit = permit
            except CircuitOpenError as refused:
                call.refusal = refused
        if call is not None and call.refusal is not None:
            return None
        return await super().sleep(milliseconds)


def _judge_answer(
    breaker: Any, route: Route, counters: Counters, permit: int, started: float, response: Any
) -> None:
    """Judge an attempt that returned ``response``."""
    if not route.json or isinstance(response, dict):
        breaker._settle(permit, counters, started, Verdict.SUCCESS)
    else:  # ccxt returns Cloudflare HTML or an empty body silently
        error = breaker._summary("NonJsonResponse", "the answer was not a JSON object")
        breaker._settle(permit, counters, started, Verdict.FAILURE, error)


def _judge_error(
    exchange: Any,
    call: _Call,
    permit: int,
    started: float,
    exc: BaseException,
    request_headers: Any,
) -> None:
    """Judge an attempt that raised ``exc``, and open a limit's scope; never raises."""
    route = call.route
    breaker = route.breaker
    assert breaker is not None
    if isinstance(exc, Exception):
        call.error = exc
    try:
        kind = verdict(exc, responded=call.status is not None)
        if kind is Verdict.SUCCESS and is_outage(str(exc), call.status):
            kind = Verdict.FAILURE  # ccxt left it unclassified, or the status says it
        if kind is not Verdict.FAILURE:
            if isinstance(exc, ccxt.InvalidNonce):
                logger.warning(
                    "%s %s: invalid nonce (not counted; Kraken locks keys out on repeated "
                    "bad nonces, check the nonce source and clock)",
                    breaker._scrub(label(breaker.exchange_id, breaker.name)),
                    breaker.group,
                )
            breaker._settle(permit, call.counters, started, kind)
            return
        message = str(exc)
        secrets = _credentials(exchange)
        if isinstance(request_headers, Mapping):
            secrets += [str(request_headers.get(name) or "") for name in _SIGNING_HEADERS]
        error = breaker._summary(type(exc).__name__, message, tuple(secrets))
        breaker._settle(permit, call.counters, started, Verdict.FAILURE, error)
        registry = exchange._circuit_breakers
        headers = call.headers if isinstance(call.headers, Mapping) else None
        limit = named_limit(
            message, call.status, headers, registry._now(), breaker.config.lockout_duration
        )
        if limit is not None:
            registry._trip_scope(breaker, *limit, error)
    except Exception:  # a bug here must never replace the caller's own exception
        logger.exception("ccxt_breaker failed to record an outcome")
        breaker._release(permit)


class kraken(BreakerMixin, ccxt.async_support.kraken):  # type: ignore[misc]
    """``ccxt.async_support.kraken`` with a circuit breaker per endpoint group."""


# --- the sync hook: ccxt.kraken --------------------------------------------------------

_SYNC_API_DEFAULT = inspect.signature(_SyncExchange.fetch2).parameters["api"].default


class SyncBreakerMixin(_Hooked):
    """Circuit breakers for a ccxt sync exchange class: ``ccxt_breaker.sync.kraken`` is
    ``class kraken(SyncBreakerMixin, ccxt.kraken)``.

    The same seam as :class:`BreakerMixin`, for threads instead of tasks: ``fetch2`` per
    call, ``fetch`` and ``on_rest_response`` per attempt, ``sleep`` between ccxt's
    retries, and the call's state in the same ``ContextVar`` (each thread has a context of
    its own).  Every step that reads or changes a breaker holds the breakers' lock, so
    half-open permits stay exact under any number of threads; the lock is never held
    while a request is sent or a retry delay sleeps.

    One difference: a call is admitted per attempt, in ``fetch``, after ccxt's throttle,
    not before it.  Sync ccxt has no queue that other calls wait in (its throttle is a
    sleep in the calling thread), so refusing earlier would spare no other call; it
    would only let a caller that retries at once spin.  freqtrade's retrier does: in a
    30 s public outage it logged 921 records with refusals that came at once, 39 with
    refusals paced like its requests, and 30 without breakers.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if issubclass(cls, Exchange):
            raise TypeError(
                f"{cls.__name__}: SyncBreakerMixin is for ccxt's sync classes (ccxt.kraken); "
                "use BreakerMixin with ccxt.async_support and ccxt.pro"
            )
        _check_bases(cls, SyncBreakerMixin, _SyncExchange, "sync")

    def fetch2(
        self,
        path: str,
        api: Any = _SYNC_API_DEFAULT,
        method: str = "GET",
        params: Any = {},  # noqa: B006  # ccxt's own default
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        registry = self._circuit_breakers
        call = None
        lock = None if registry is None else registry._lock
        if registry is not None and lock is not None:
            with lock:
                route = registry._routes.get(path) or registry._route(path, api)
                if route.breaker is not None:
                    # No permit yet: each attempt asks in fetch(), after ccxt's throttle.
                    call = _Call(route, route.counters or route.count(), None)
        token = _CALL.set(call)
        try:
            return super().fetch2(path, api, method, params, *args, **kwargs)
        except CircuitOpenError as exc:
            if call is None or exc is not call.refusal or call.error is None:
                raise
            error = call.error
        finally:
            if call is not None and lock is not None:
                with lock:
                    call.end()
            _CALL.reset(token)  # the same thread, so the same context: always valid
        # raised outside the handler, as in the async hook
        raise error

    def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        call = _CALL.get()
        if call is None:
            return super().fetch(url, method, headers, body)
        if call.refusal is not None:
            raise call.refusal.with_traceback(None)
        route = call.route
        breaker = route.breaker
        assert breaker is not None
        counters = call.counters
        shared = breaker._shared
        try:
            with breaker._lock:
                held, call.permit = call.permit, None
                permit = breaker._admit(counters, route.endpoint, held)
            # a shared probe permit: the store answers with no breaker lock held
            if permit != held and shared is not None and shared.asks():
                permit = shared.admit_now(permit, counters, route.endpoint)
        except CircuitOpenError as refused:
            call.refusal = refused
            raise
        with breaker._lock:
            call.status = call.headers = None
            started = breaker._begin(counters)
        try:
            response = super().fetch(url, method, headers, body)
        except BaseException as exc:  # KeyboardInterrupt too: judged neutral, as cancellation
            with breaker._lock:
                _judge_error(self, call, permit, started, exc, headers)
            if shared is not None and isinstance(exc, Exception):
                shared.flush_now()  # the failure is counted everywhere first, as in async
            raise
        with breaker._lock:
            _judge_answer(breaker, route, counters, permit, started, response)
        return response

    def sleep(self, milliseconds: Any) -> Any:
        call = _CALL.get()
        if call is not None and call.error is not None and call.refusal is None:
            route = call.route
            assert route.breaker is not None
            breaker = route.breaker
            try:
                with breaker._lock:
                    permit = breaker._admit(call.counters, route.endpoint, call.permit)
                shared = breaker._shared
                if permit != call.permit and shared is not None and shared.asks():
                    permit = shared.admit_now(permit, call.counters, route.endpoint)
                call.permit = permit
            except CircuitOpenError as refused:
                call.refusal = refused
        if call is not None and call.refusal is not None:
            return None
        return super().sleep(milliseconds)


# --- install(): the config flag for plain ccxt classes -------------------------------

_GUARDED: dict[type, type] = {}
_MARK = "__ccxt_breaker_original__"
_WARNED: weakref.WeakSet[type] = weakref.WeakSet()  # classes already warned about
_WARNED_LOCK = threading.Lock()  # sync ccxt may be built from several threads
# a ccxt exchange class's own module: ccxt.kraken, ccxt.async_support.binance, ccxt.pro.okx
_CCXT_CLASS_MODULE = re.compile(r"ccxt\.(?:async_support\.|pro\.)?\w+")


def _guarded(cls: type) -> type:
    """``cls`` with the hook between it and ccxt's kraken: a bot's own subclass (and
    ccxt.pro) keep running around the hook, as they would around plain ccxt.  A ccxt.pro
    class gets the websocket hook on top as well."""
    guarded = _GUARDED.get(cls)
    if guarded is None:
        if issubclass(cls, Exchange):
            mixin, base = BreakerMixin, ccxt.async_support.kraken
        else:
            mixin, base = SyncBreakerMixin, ccxt.kraken
        bases: tuple[type, ...] = (mixin, base) if cls is base else (cls, mixin, base)
        pro = sys.modules.get("ccxt.pro.kraken")
        if pro is not None and issubclass(cls, pro.kraken):
            # above ccxt.pro, whose handle_message, ping and authenticate it wraps
            from ._ws import WebsocketMixin

            bases = (WebsocketMixin, *bases)
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_guarded_from": cls,  # what pickle names it by: a class made here has no name
        }
        guarded = _GUARDED[cls] = type(cls.__name__, bases, namespace)
    return guarded


def _attach(exchange: Any) -> None:
    """Give a plain ccxt Kraken instance built with the flag its breakers."""
    raw = _raw_option(exchange)
    if raw is None or raw is False or isinstance(exchange, _Hooked):
        return
    registry = _build_registry(exchange, raw, default_on=False)
    if registry is not None:
        cls = type(exchange)
        exchange.__class__ = _guarded(cls)
        exchange._circuit_breakers = registry
        # so that whoever added the flag (or ran `python -m ccxt_breaker run`) sees it took
        logger.info(
            "%s gets circuit breakers: %s",
            _ccxt_name(cls, sync=not issubclass(cls, Exchange)),
            ", ".join(registry) or "none (every group disabled)",
        )


def _ccxt_name(cls: type, sync: bool) -> str:
    """How a user knows ``cls``: ``ccxt.kraken (sync)``, ``ccxt.pro.binance``, or
    ``bot.Bot (a ccxt.kraken subclass, sync)``."""
    flavour = ", sync" if sync else ""
    for base in cls.__mro__:
        module = base.__module__
        if _CCXT_CLASS_MODULE.fullmatch(module) and module.endswith("." + base.__name__):
            if base is cls:
                return f"{module} (sync)" if sync else module
            return f"{cls.__module__}.{cls.__qualname__} (a {module} subclass{flavour})"
    name = f"{cls.__module__}.{cls.__qualname__}"
    return f"{name} (sync)" if sync else name


def _warn_unguarded(exchange: Any) -> None:
    """Log once per class when the flag is set on an exchange that gets no breakers from
    it: sync ccxt, or an exchange other than Kraken."""
    raw = _raw_option(exchange)
    if raw is None or raw is False:
        return
    if isinstance(raw, Mapping) and raw.get("enabled", True) is False:
        return
    if isinstance(exchange, (ccxt.async_support.kraken, ccxt.kraken, _Hooked)):
        return  # the kraken hooks (or the drop-in classes) handle it
    cls = type(exchange)
    with _WARNED_LOCK:
        if cls in _WARNED:
            return
        _WARNED.add(cls)
    sync = not isinstance(exchange, Exchange)
    name = _ccxt_name(cls, sync)
    guarded = "ccxt.kraken, ccxt.async_support.kraken and ccxt.pro.kraken"
    advice = (
        f"ccxt_breaker guards Kraken only ({guarded}). Remove the flag from this exchange's "
        "config, or guard its calls with a ccxt_breaker.CircuitBreaker of your own"
    )
    if not sync:
        advice += " (call(), @guard or async with)"
    logger.warning(
        "%s gets no circuit breakers although options['circuitBreaker'] is set: %s",
        name,
        advice,
    )


def _construction_root() -> type:
    """The ccxt class that defines ``after_construct`` for every exchange, sync, async and
    pro: ``ccxt.base.exchange.Exchange`` in ccxt 4.5.0, its ``BaseExchange`` later."""
    mro: tuple[type, ...] = _SyncExchange.__mro__
    return next(cls for cls in mro if "after_construct" in vars(cls))


def _patch(cls: type, then: Callable[[Any], None]) -> None:
    """Make ``cls``'s ``after_construct`` run ``then(self)`` after its own; once."""
    original = cls.__dict__.get("after_construct")
    if _MARK in getattr(original, "__dict__", {}):
        return
    owner: Any = cls  # (mypy cannot follow a type through super())

    def after_construct(self: Any, *args: Any, **kwargs: Any) -> None:
        if original is None:
            super(owner, self).after_construct(*args, **kwargs)
        else:
            original(self, *args, **kwargs)
        then(self)

    setattr(after_construct, _MARK, original)
    setattr(cls, "after_construct", after_construct)  # noqa: B010  # cls is only a type


def _unpatch(cls: type) -> None:
    """Put back exactly what :func:`_patch` found on ``cls``."""
    patched = cls.__dict__.get("after_construct")
    if patched is None or _MARK not in getattr(patched, "__dict__", {}):
        return
    original = getattr(patched, _MARK)
    if original is None:
        delattr(cls, "after_construct")
    else:
        setattr(cls, "after_construct", original)  # noqa: B010


def install() -> None:
    """Make ``ccxt.kraken``, ``ccxt.async_support.kraken``, ``ccxt.pro.kraken`` and their
    subclasses honour the ``options['circuitBreaker']`` flag. Idempotent; :func:`uninstall`
    reverses it.

    An instance built with the flag gets breakers by becoming an instance of a subclass
    of its own class (``isinstance`` checks keep passing), made while ccxt constructs it;
    one built without it is untouched, so it pays nothing.

    Any other ccxt class built with the flag (another exchange) gets no breakers, and one
    WARNING per class on the ``ccxt_breaker`` logger says so.
    """
    _patch(ccxt.async_support.kraken, _attach)
    _patch(ccxt.kraken, _attach)
    _patch(_construction_root(), _warn_unguarded)
    _warn_built_before()


def _family(cls: type) -> set[type]:
    """``cls`` and every subclass of it, at any depth."""
    found = {cls}
    subclasses: list[type] = type.__subclasses__(cls)
    for sub in subclasses:
        found |= _family(sub)
    return found


def _warn_built_before() -> None:
    """Log once when Kraken instances built with the flag already exist: they were built
    before install(), get no breakers, and nothing else would say so (freqtrade builds
    its exchanges before it imports the strategy that may call install()).

    Found through the garbage collector's referrers of the Kraken classes (instances refer
    to their class), read once and left untouched, after a collection so that instances
    already dropped do not count: some tens of ms, once per install().
    """
    gc.collect()
    kraken_classes = (ccxt.kraken, ccxt.async_support.kraken)
    classes = set().union(*(_family(cls) for cls in kraken_classes))
    missed = [
        obj
        for obj in gc.get_referrers(*classes)
        if isinstance(obj, kraken_classes)
        and not isinstance(obj, _Hooked)
        and _raw_option(obj) not in (None, False)
    ]
    if missed:
        names = sorted({_ccxt_name(type(obj), not isinstance(obj, Exchange)) for obj in missed})
        logger.warning(
            "%d Kraken instance(s) built with options['circuitBreaker'] before "
            "ccxt_breaker.install() get no circuit breakers (%s): call install() before the "
            "bot builds its exchanges (first thing at start-up, or in sitecustomize.py), or "
            "start the bot with `python -m ccxt_breaker run COMMAND ...`",
            len(missed),
            ", ".join(names),
        )


def uninstall() -> None:
    """Undo :func:`install`; instances that already have breakers keep them."""
    _unpatch(ccxt.async_support.kraken)
    _unpatch(ccxt.kraken)
    _unpatch(_construction_root())
