"""The breakers of one exchange instance: ``exchange.circuit_breakers``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._breaker import CircuitBreaker
from ._config import Settings
from ._events import Listener
from ._kraken import DEFAULT_GROUPS, SCOPES, section_default
from ._machine import CLOSED

__all__ = ["BreakerRegistry", "Route"]

# Endpoints that ccxt's describe() does not list are routed by their API section; this
# many are remembered, so that a bot calling made-up paths cannot grow the table.
MAX_LEARNED_ROUTES = 256
_JSON_APIS = ("public", "private")
# The most "/"-separated parts an endpoint path has ("Earn/Allocate" has 2).
_MAX_PATH_DEPTH = 4
_UNSEEN: Any = object()



class Route:
    """Everything a call to one endpoint needs, looked up once per call."""

    __slots__ = ("breaker", "counters", "endpoint", "json", "machine")

    def __init__(self, breaker: CircuitBreaker | None, endpoint: str, json: bool) -> None:
        self.breaker = breaker  # None when the group is disabled
        self.machine = None if breaker is None else breaker.machine  # one lookup less per call
        self.endpoint = endpoint
        self.json = json  # whether the answer must be a JSON object
        self.counters: list[int] | None = None  # made on first use, to keep snapshots short

    def count(self) -> list[int]:
        counters = self.counters
        if counters is None:
            assert self.breaker is not None
            counters = self.counters = self.breaker.counters(self.endpoint)
        return counters


class BreakerRegistry(Mapping[str, CircuitBreaker]):
    """A read-only mapping from group name to :class:`CircuitBreaker`.

    Every group exists from construction.  ``group_of(path)`` names an endpoint's
    group, ``snapshot()`` pictures them all, and ``add_listener`` subscribes to all.
    """

    def __init__(
        self,
        settings: Settings | None,
        table: Mapping[str, tuple[str, str, str]],
        *,
        exchange_id: str = "kraken",
        scrub: Callable[[str], str] = str,
    ) -> None:
        moves = settings.endpoints if settings else {}
        self._group_of = {path: moves.get(path, group) for path, (_, group, _) in table.items()}
        names = [*DEFAULT_GROUPS, *sorted(set(self._group_of.values()) - set(DEFAULT_GROUPS))]
        self._breakers: dict[str, CircuitBreaker] = {}
        if settings is not None:
            for name in names:
                config = settings.for_group(name)
                if config.enabled:
                    self._breakers[name] = CircuitBreaker(
                        name,
                        config,
                        clock=settings.clock,
                        exchange_id=exchange_id,
                        scrub=scrub,
                        on_limit=self._trip_scope,
                        on_change=self._changed,
                    )
        domains: dict[str, set[str]] = {}
        for path, (_, _, domain) in table.items():
            domains.setdefault(self._group_of[path], set()).add(domain)
        self._scopes = {
            scope: tuple(b for g, b in self._breakers.items() if covered & domains.get(g, set()))
            for scope, covered in SCOPES.items()
        }
        self._route_limit = len(table) + MAX_LEARNED_ROUTES
        # zendesk answers with HTML articles, so only the JSON APIs must answer JSON
        self.routes: dict[str, Route] = {
            path: Route(self._breakers.get(self._group_of[path]), path, section in _JSON_APIS)
            for path, (section, _, _) in table.items()
        }
        self._all_closed = True
        # told when all_closed changes, before any listener hears of the transition
        self.on_all_closed: Callable[[bool], None] | None = None
        # request URL (without its query) -> route, learned as requests go out
        self.url_routes: dict[str, Route | None] = {}
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

    def __repr__(self) -> str:
        states = ", ".join(f"{name}={b.state.value}" for name, b in self._breakers.items())
        return f"<BreakerRegistry {states}>"

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
        return self._all_closed

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{group: breaker.snapshot()}``, JSON-serializable."""
        return {name: breaker.snapshot() for name, breaker in self._breakers.items()}

    def add_listener(self, listener: Listener) -> None:
        """Subscribe ``listener`` to the events of every breaker."""
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        for breaker in self._breakers.values():
            breaker.remove_listener(listener)

    # --- used by the ccxt hook -----------------------------------------------------

    def route(self, path: str, api: Any) -> Route:
        """The route of a call to ``path`` in API section ``api`` (ccxt passes a list)."""
        route = self.routes.get(path)
        if route is None:
            section = api[0] if isinstance(api, (list, tuple)) and api else str(api)
            group = section_default(section)
            if len(self.routes) < self._route_limit:
                route = self.routes[path] = Route(self._breakers.get(group), path,
                                                  section in _JSON_APIS)
                self._group_of[path] = group
            else:
                route = self._spill(section)
        return route

    def route_of_url(self, url: str) -> Route | None:
        """The route of a request URL, or ``None`` for a URL of no known endpoint.

        Kraken's URLs end with the endpoint's path (``.../0/private/Earn/Strategies``,
        ``.../0/public/Ticker?pair=...``), so the longest path that ends the URL wins.
        """
        base = url.partition("?")[0]
        route: Route | None = self.url_routes.get(base, _UNSEEN)
        if route is _UNSEEN:
            parts = base.split("/")
            route = next(
                (
                    self.routes[path]
                    for n in range(min(len(parts) - 1, _MAX_PATH_DEPTH), 0, -1)
                    if (path := "/".join(parts[-n:])) in self.routes
                ),
                None,
            )
            if route is None:  # a path past the learning limit
                route = next((self._spill(s) for s in _JSON_APIS if f"/{s}/" in base), None)
            if len(self.url_routes) < self._route_limit:
                self.url_routes[base] = route
        return route

    def _spill(self, section: str) -> Route:
        """The one route that all unlisted paths of ``section`` share past the limit."""
        route = self._spilled.get(section)
        if route is None:
            breaker = self._breakers.get(section_default(section))
            route = self._spilled[section] = Route(breaker, "*", section in _JSON_APIS)
        return route

    def _changed(self) -> None:
        all_closed = all(b.machine.state is CLOSED for b in self._breakers.values())
        if all_closed is not self._all_closed:
            self._all_closed = all_closed
            if self.on_all_closed is not None:
                self.on_all_closed(all_closed)

    def _trip_scope(
        self, origin: CircuitBreaker, scope: str, seconds: float, cause: dict[str, str]
    ) -> None:
        for breaker in self._scopes.get(scope, (origin,)):
            breaker.trip(seconds, cause)


def _unknown(kind: str, name: object, valid: list[str]) -> str:
    hint = difflib.get_close_matches(str(name), valid, n=1)
    return f"unknown {kind} {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
