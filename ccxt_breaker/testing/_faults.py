"""Scripted faults: what a request gets instead of Kraken's answer, and when.

A :class:`Fault` says *what* goes wrong: an HTTP status, a Kraken error string, a
delay, a broken connection. :meth:`Faults.add` says *where* (one endpoint, a group,
or every request) and *for how long* (the next N matching requests, a span on the
simulator's clock, a seeded probability, or any mix of them)::

    sim.faults.add(Fault.http(503), endpoint="Ticker", times=3)
    sim.faults.add(Fault.kraken_error("EService:Busy"), group="private", seconds=30)
    sim.faults.add(Fault.latency(2.0, applied=True), endpoint="AddOrder", times=1)
    sim.faults.add(Fault.disconnect(), probability=0.2, seed=7)
    gate = Fault.hold(); sim.faults.add(gate, endpoint="AddOrder"); ...; gate.release()

The oldest active rule that matches a request wins, and spent rules drop out.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._state import GROUPS, Group

__all__ = ["Fault", "FaultKind", "FaultRule", "Faults"]

FaultKind = Literal[
    "http",
    "kraken_error",
    "too_many_requests",
    "latency",
    "disconnect",
    "truncated",
    "html",
    "empty",
    "hold",
]

_CLOUDFLARE = {
    520: ("Web server is returning an unknown error", "Unknown Error"),
    521: ("Web server is down", "Web Server Is Down"),
    522: ("Connection timed out", "Connection Timed Out"),
    523: ("Origin is unreachable", "Origin Is Unreachable"),
    524: ("A timeout occurred", "A Timeout Occurred"),
}
_PLAIN = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
# What a Cloudflare bot check serves with status 200: the case ccxt lets through silently.
_CHALLENGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
    '<body><div id="challenge-body-text">api.kraken.com needs to review the security of '
    "your connection before proceeding.</div></body></html>"
)


def _error_page(status: int) -> str:
    if status in _CLOUDFLARE:
        title, short = _CLOUDFLARE[status]
        return (
            f"<!DOCTYPE html><html><head><title>api.kraken.com | {status}: {title}</title>"
            f'</head><body><div id="cf-error-details"><h1><span>{title}</span>'
            f'<span class="code-label">Error code {status}</span></h1>'
            f"<p>{short}</p><p>Cloudflare Ray ID: 8f0c1d2e3a4b5c6d</p></div></body></html>"
        )
    text = _PLAIN.get(status, "Error")
    return (
        f"<html>\r\n<head><title>{status} {text}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {text}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


@dataclass(frozen=True, slots=True)
class Fault:
    """One way a request can fail; build it with the class methods, not by hand.

    ``applied`` only matters for latency: whether the request reaches the engine
    before the delay (an order is placed even though the client times out) or
    after it (a client that gave up meanwhile leaves no trace).  ``gate`` belongs to
    :meth:`hold`.
    """

    kind: FaultKind
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    applied: bool = False
    gate: asyncio.Event | None = field(default=None, compare=False, repr=False)

    @classmethod
    def http(cls, status: int, *, headers: Mapping[str, str] | None = None) -> Fault:
        """An HTTP error with the HTML page Kraken's edge serves (Cloudflare's for 52x)."""
        if not 400 <= status <= 599:
            raise ValueError(f"an HTTP error status is 4xx or 5xx, not {status}")
        return cls(
            "http",
            status=status,
            body=_error_page(status),
            content_type="text/html",
            headers=tuple((headers or {}).items()),
        )

    @classmethod
    def kraken_error(
        cls, message: str, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Kraken's JSON error envelope ``{"error": [message]}``, by default with HTTP 200."""
        body = json.dumps({"error": [message]})
        return cls("kraken_error", status=status, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def throttled(cls, until: float) -> Fault:
        """``EService:Throttled: <unix ts>``: Kraken asks the caller to wait until ``until``."""
        return cls.kraken_error(f"EService:Throttled: {int(until)}")

    @classmethod
    def too_many_requests(
        cls, retry_after: float | str | None = 1, *, error: str | None = None
    ) -> Fault:
        """HTTP 429 with ``Retry-After``: a text body, or Kraken's JSON ``error``.

        ``retry_after`` is seconds, or any header text (an HTTP date, garbage), or
        ``None`` for no header at all.
        """
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
        if error is None:
            return cls("too_many_requests", 429, "Too Many Requests", "text/plain", headers)
        body = json.dumps({"error": [error]})
        return cls("too_many_requests", 429, body, "application/json", headers)

    @classmethod
    def latency(cls, seconds: float, *, applied: bool = False) -> Fault:
        """Answer normally, but only after ``seconds`` (real time, to beat a client timeout)."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        return cls("latency", delay=seconds, applied=applied)

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection before any byte of the answer: ``ServerDisconnectedError``."""
        return cls("disconnect")

    @classmethod
    def truncated(cls) -> Fault:
        """Send the headers and part of the body, then close: ``ClientPayloadError``."""
        return cls("truncated", body='{"error":[],"result":{"XXBTZUSD":{"a":["500')

    @classmethod
    def html(cls) -> Fault:
        """A Cloudflare challenge page with status 200, which ccxt does not treat as an error."""
        return cls("html", body=_CHALLENGE, content_type="text/html")

    @classmethod
    def empty(cls) -> Fault:
        """Status 200 with an empty body."""
        return cls("empty")

    @classmethod
    def hold(cls) -> Fault:
        """Hold each matching request, unanswered, until :meth:`release`; then answer the
        held requests normally, and drop the rule.  For tests that act while a request is
        in flight."""
        return cls("hold", gate=asyncio.Event())

    def release(self) -> None:
        """Let the requests a :meth:`hold` fault holds through; its rule is spent."""
        if self.gate is None:
            raise TypeError(f"only a hold fault can be released, not {self.kind!r}")
        self.gate.set()


@dataclass(eq=False, slots=True)
class FaultRule:
    """A fault bound to a scope and a duration; returned by :meth:`Faults.add`.

    ``hits`` counts the requests it has answered; ``until`` is on the simulator's clock.
    """

    fault: Fault
    endpoint: str | None
    group: Group | None
    times: int | None
    until: float | None
    probability: float
    _random: random.Random = field(repr=False)
    hits: int = 0

    def spent(self, now: float) -> bool:
        return (
            (self.times is not None and self.hits >= self.times)
            or (self.until is not None and now >= self.until)
            or (self.fault.gate is not None and self.fault.gate.is_set())
        )

    def covers(self, endpoint: str, group: Group) -> bool:
        return (self.endpoint is None or self.endpoint == endpoint) and (
            self.group is None or self.group == group
        )


class Faults:
    """The simulator's fault script (``sim.faults``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._rules: list[FaultRule] = []

    def add(
        self,
        fault: Fault,
        *,
        endpoint: str | None = None,
        group: Group | None = None,
        times: int | None = None,
        seconds: float | None = None,
        probability: float = 1.0,
        seed: int = 0,
    ) -> FaultRule:
        """Answer matching requests with ``fault``.

        ``endpoint`` is Kraken's name (``"Ticker"``, ``"AddOrder"``, ``"Earn/Allocate"``);
        ``group`` is one of ``public``, ``private``, ``trading``, ``funding``, ``earn``;
        with neither, every request matches. The rule lasts for ``times`` faulted
        requests and/or ``seconds`` of the simulator's clock, or until removed. With
        ``probability`` below 1 each matching request is faulted by a coin seeded
        with ``seed``, so a run is reproducible.
        """
        if group is not None and group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be positive")
        if not 0.0 < probability <= 1.0:
            raise ValueError("probability must be in (0, 1]")
        until = None if seconds is None else self._clock() + seconds
        rule = FaultRule(fault, endpoint, group, times, until, probability, random.Random(seed))
        self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """Stop one rule early; removing a spent rule is a no-op."""
        if rule in self._rules:
            self._rules.remove(rule)

    def clear(self) -> None:
        """Drop every rule."""
        self._rules.clear()

    def __iter__(self) -> Iterator[FaultRule]:
        return iter(list(self._rules))

    def __len__(self) -> int:
        return len(self._rules)

    def draw(self, endpoint: str, group: Group) -> Fault | None:
        """The fault for this request, if any, counting it against its rule."""
        now = self._clock()
        self._rules = [r for r in self._rules if not r.spent(now)]
        for rule in self._rules:
            if not rule.covers(endpoint, group):
                continue
            if rule.probability < 1.0 and rule._random.random() >= rule.probability:
                continue
            rule.hits += 1
            return rule.fault
        return None
