"""The breakers of one exchange instance: ``exchange.circuit_breakers``."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ._breaker import CircuitBreaker, Counters
from ._config import _ROOT, Clock, Settings, SystemClock
from ._events import Listener
from ._kraken import DEFAULT_GROUPS, SCOPES, section_default
from ._machine import CLOSED
from ._shared import SharedCircuit, Store, circuit_name, key_id, open_store

__all__ = ["BreakerRegistry", "Route"]

# Endpoints that ccxt's describe() does not list are routed by their API section; this
# many are remembered, so that a bot calling made-up paths cannot grow the table.
MAX_LEARNED_ROUTES = 256
_JSON_APIS = ("public", "private")


class Route:
    """Everything a call to one endpoint needs, looked up once per call."""

    __slots__ = ("breaker", "counters", "endpoint", "json")

    def __init__(self, breaker: CircuitBreaker | None, endpoint: str, json: bool) -> None:
        self.breaker = breaker  # None when the group is disabled
        self.endpoint = endpoint
        self.json = json  # whether the answer must be a JSON object
        self.counters: Counters | None = None  # made on first use: see count()

    def count(self) -> Counters:
        """The endpoint's counters, made on its first call, so snapshots list only the
        endpoints that were called."""
        assert self.breaker is not None
        counters = self.counters = self.breaker._counters(self.endpoint)
        return counters


def _no_credentials(owner: Any) -> Iterable[str]:
    return ()


class BreakerRegistry(Mapping[str, CircuitBreaker]):
    """A read-only mapping from group name to :class:`CircuitBreaker`.

    Every group exists from construction.  ``group_of(path)`` names an endpoint's
    group, ``snapshot()`` pictures them all, and ``add_listener`` subscribes to all.
    ``credentials(owner)`` lists the secrets of an exchange that uses these breakers, so
    that error messages are scrubbed of every owner's.
    """

    def __init__(
        self,
        settings: Settings | None,
        table: Mapping[str, tuple[str, str, str]],
        *,
        exchange_id: str = "kraken",
        credentials: Callable[[Any], Iterable[str]] = _no_credentials,
        api_key: str | None = None,
        threaded: bool = False,
    ) -> None:
        self._credentials = credentials
        # every exchange using these breakers: the one built with them, and its copies
        self._owners: weakref.WeakSet[Any] = weakref.WeakSet()
        moves = settings.endpoints if settings else {}
        self._group_of = {path: moves.get(path, group) for path, (_, group, _) in table.items()}
        names = [*DEFAULT_GROUPS, *sorted(set(self._group_of.values()) - set(DEFAULT_GROUPS))]
        self._clock: Clock = settings.clock if settings else SystemClock()
        self._name = settings.name if settings else None
        self._breakers: dict[str, CircuitBreaker] = {}
        self._store: Store | None = None
        shared = settings.shared_state if settings else None
        # the key is hashed here and never kept: the hash names the keyed circuits
        key = key_id(exchange_id, api_key)
        if shared is not None:
            namespace = shared.namespace or f"{exchange_id}-{key}"
            self._store = open_store(shared, namespace, threaded=threaded)
        # one lock for all: a limit's scope trips several breakers in one step (and with
        # state shared in the process, one for every instance of the namespace)
        self._lock = (self._store and self._store.lock) or threading.RLock()
        if settings is not None:
            for group in names:
                config = settings.for_group(group)
                if config.enabled:
                    self._breakers[group] = CircuitBreaker(
                        group,
                        config,
                        clock=self._clock,
                        exchange_id=exchange_id,
                        scrub=self._scrub,
                        name=self._name,
                        lock=self._lock,
                    )
        store = self._store
        if store is not None:
            for group, breaker in self._breakers.items():
                breaker._shared = SharedCircuit(store, circuit_name(group, key), breaker)
                store.attach(breaker._shared)
            # listen from now on when built inside a loop (or for threads, on the store's
            # own); otherwise from the first call
            with contextlib.suppress(RuntimeError):
                if not threaded:
                    asyncio.get_running_loop()
                store.start()
        domains: dict[str, set[str]] = {}
        for path, (_, _, domain) in table.items():
            domains.setdefault(self._group_of[path], set()).add(domain)
        self._scopes = {
            scope: tuple(b for g, b in self._breakers.items() if covered & domains.get(g, set()))
            for scope, covered in SCOPES.items()
        }
        self._route_limit = len(table) + MAX_LEARNED_ROUTES
        # zendesk answers with HTML articles, so only the JSON APIs must answer JSON
        self._routes: dict[str, Route] = {
            path: Route(self._breakers.get(self._group_of[path]), path, section in _JSON_APIS)
            for path, (section, _, _) in table.items()
        }
        self._spilled: dict[str, Route] = {}

    # --- Mapping -------------------------------------------------------------------

    def __getitem__(self, group: str) -> CircuitBreaker:
        try:
            return self._breakers[group]
        except KeyError:
            raise KeyError(_unknown("group", group, list(self._breakers))) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def __len__(self) -> int:
        return len(self._breakers)

    def __reduce__(self) -> Any:
        # what breakers guard, and what they share, is their exchange's: only it can build
        # them again (a deepcopy or pickle of the exchange does)
        raise TypeError(
            "circuit breakers are not pickled or copied apart from their exchange: pickle or "
            "deepcopy the exchange, and its copy builds breakers of its own from its options"
        )

    def __repr__(self) -> str:
        states = ", ".join(f"{name}={b.state.value}" for name, b in self._breakers.items())
        return f"<BreakerRegistry {states}>" if states else "<BreakerRegistry>"

    # --- inspection ----------------------------------------------------------------

    def group_of(self, path: str) -> str:
        """The group that guards endpoint ``path`` (as ccxt names it: 'Ticker', 'AddOrder')."""
        try:
            return self._group_of[path]
        except KeyError:
            raise KeyError(_unknown("endpoint", path, list(self._group_of))) from None

    @property
    def all_closed(self) -> bool:
        """Whether every circuit is closed (also when there are no breakers)."""
        return all(b.state is CLOSED for b in self._breakers.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{group: breaker.snapshot()}``, JSON-serializable."""
        return {name: breaker.snapshot() for name, breaker in tuple(self._breakers.items())}

    def history(self) -> list[dict[str, Any]]:
        """Every breaker's transitions (the last ``historySize`` of each), merged, oldest
        first, JSON-ready."""
        breakers = tuple(self._breakers.values())  # see CircuitBreaker.snapshot()
        merged = [event for breaker in breakers for event in breaker.history()]
        return sorted(merged, key=lambda event: event["time"])  # stable: ties keep group order

    def add_listener(self, listener: Listener) -> None:
        """Subscribe ``listener`` to the events of every breaker."""
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Unsubscribe ``listener`` from every breaker."""
        for breaker in self._breakers.values():
            breaker.remove_listener(listener)

    # --- the protocol of the ccxt hook: private to the package -----------------------

    def _route(self, path: str, api: Any) -> Route:
        """The route of a call to ``path`` in API section ``api`` (ccxt passes a list)."""
        route = self._routes.get(path)
        if route is None:
            section = api[0] if isinstance(api, (list, tuple)) and api else str(api)
            if len(self._routes) < self._route_limit:
                group = section_default(section)
                route = Route(self._breakers.get(group), path, section in _JSON_APIS)
                self._routes[path] = route
                self._group_of[path] = group
            else:  # past the limit, every unlisted path of a section shares one route
                route = self._spilled.get(section) or self._spill(section)
        return route

    def _spill(self, section: str) -> Route:
        breaker = self._breakers.get(section_default(section))
        route = self._spilled[section] = Route(breaker, "*", section in _JSON_APIS)
        return route

    def _adopt(self, owner: Any) -> None:
        """Count ``owner`` among the exchanges whose secrets are scrubbed from messages.

        The breakers' ``name`` is written into rejections unscrubbed (scrubbing there would
        double the cost of a refusal), so it may not hold a credential of any owner.
        """
        name = self._name
        if name is not None and any(secret in name for secret in self._credentials(owner)):
            # the value is not repeated here: it holds a credential
            raise ValueError(
                f"{_ROOT}['name'] must not contain a credential of the exchange: it labels "
                "log lines, snapshots, events and errors"
            )
        self._owners.add(owner)

    def _scrub(self, message: str) -> str:
        for owner in list(self._owners):
            for secret in self._credentials(owner):
                message = message.replace(secret, "***")
        return message

    async def _close(self) -> None:
        """Release the shared store's connections (when the exchange closes)."""
        if self._store is not None:
            await self._store.close()

    def _now(self) -> float:
        """Wall time on the breakers' clock, for times the exchange names as dates."""
        return self._clock.time()

    def _trip_scope(
        self, origin: CircuitBreaker, scope: str, seconds: float, cause: dict[str, str]
    ) -> None:
        """Open every breaker of a limit's scope; a scope of no domain opens the origin."""
        for breaker in self._scopes.get(scope, (origin,)):
            breaker._trip(seconds, cause)


def _unknown(kind: str, name: object, valid: list[str]) -> str:
    hint = difflib.get_close_matches(str(name), valid, n=1)
    return f"unknown {kind} {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
