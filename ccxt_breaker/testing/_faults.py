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

:func:`add_rule` and :func:`describe_rule` translate rules to and from the JSON of the
simulator's control API (``{"fault": {"kind": "http", "status": 503}, "times": 3}``);
the rule itself is always made by :meth:`Faults.add`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._state import GROUPS, WS_GROUPS, Group

__all__ = [
    "KINDS",
    "Fault",
    "FaultKind",
    "FaultRule",
    "Faults",
    "FieldError",
    "add_rule",
    "describe_fault",
    "describe_rule",
]

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
    "ws_drop",
    "ws_silence",
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


class FieldError(ValueError):
    """A refused argument, naming it: ``field`` is the parameter (``times``, ``fault.status``)
    and the message reads ``"<field> <problem>"``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


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
    after: int = 0  # ws_drop and ws_silence: messages the socket sends first

    @classmethod
    def http(cls, status: int, *, headers: Mapping[str, str] | None = None) -> Fault:
        """An HTTP error with the HTML page Kraken's edge serves (Cloudflare's for 52x)."""
        if not 400 <= status <= 599:
            raise FieldError("status", f"must be an HTTP error status, 4xx or 5xx, not {status}")
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
        if not 200 <= status <= 599:
            raise FieldError("status", f"must be an HTTP status, 200 to 599, not {status}")
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
            raise FieldError("seconds", "cannot be negative")
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

    @classmethod
    def ws_drop(cls, after: int = 0) -> Fault:
        """Websocket only, on the ``connect`` endpoint: accept the dial, send ``after``
        messages, then drop the socket without a close frame (the client sees 1006)."""
        if after < 0:
            raise FieldError("after", "cannot be negative")
        return cls("ws_drop", after=after)

    @classmethod
    def ws_silence(cls, after: int = 0) -> Fault:
        """Websocket only, on the ``connect`` endpoint: accept the dial, send ``after``
        messages, then stop heartbeats, data and answers on that socket, while still
        answering pings: a stalled feed that ccxt's own keepalive cannot see."""
        if after < 0:
            raise FieldError("after", "cannot be negative")
        return cls("ws_silence", after=after)

    def release(self) -> None:
        """Let the requests a :meth:`hold` fault holds through; its rule is spent."""
        if self.gate is None:
            raise TypeError(f"only a hold fault can be released, not {self.kind!r}")
        self.gate.set()


@dataclass(eq=False, slots=True)
class FaultRule:
    """A fault bound to a scope and a duration; returned by :meth:`Faults.add`.

    ``hits`` counts the requests it has answered; ``until`` is on the simulator's clock;
    ``id`` numbers the rules of one script from 1, in the order they were added.
    """

    fault: Fault
    endpoint: str | None
    group: str | None
    times: int | None
    until: float | None
    probability: float
    _random: random.Random = field(repr=False)
    hits: int = 0
    id: int = 0

    def spent(self, now: float) -> bool:
        return (
            (self.times is not None and self.hits >= self.times)
            or (self.until is not None and now >= self.until)
            or (self.fault.gate is not None and self.fault.gate.is_set())
        )

    def covers(self, endpoint: str, group: str) -> bool:
        return (self.endpoint is None or self.endpoint == endpoint) and (
            self.group is None or self.group == group
        )


class Faults:
    """The simulator's fault script (``sim.faults``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(
        self,
        fault: Fault,
        *,
        endpoint: str | None = None,
        group: Group | str | None = None,
        times: int | None = None,
        seconds: float | None = None,
        probability: float = 1.0,
        seed: int = 0,
    ) -> FaultRule:
        """Answer matching requests with ``fault``.

        ``endpoint`` is Kraken's name (``"Ticker"``, ``"AddOrder"``, ``"Earn/Allocate"``);
        ``group`` is one of ``public``, ``private``, ``trading``, ``funding``, ``earn``,
        or a websocket group, ``ws-public`` or ``ws-private`` (whose endpoints are
        ``connect``, the dial, and the channel or order method names); with neither,
        every request matches. The rule lasts for ``times`` faulted
        requests and/or ``seconds`` of the simulator's clock, or until removed. With
        ``probability`` below 1 each matching request is faulted by a coin seeded
        with ``seed``, so a run is reproducible.
        """
        if group is not None and group not in GROUPS + WS_GROUPS:
            valid = ", ".join(GROUPS + WS_GROUPS)
            raise FieldError("group", f"must be one of {valid}, not {group!r}")
        if times is not None and times < 1:
            raise FieldError("times", "must be at least 1")
        if seconds is not None and not seconds > 0:
            raise FieldError("seconds", "must be positive")
        if not 0.0 < probability <= 1.0:
            raise FieldError("probability", "must be in (0, 1]")
        until = None if seconds is None else self._clock() + seconds
        rule = FaultRule(
            fault,
            endpoint,
            group,
            times,
            until,
            probability,
            random.Random(seed),
            id=next(self._ids),
        )
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

    def draw(self, endpoint: str, group: str) -> Fault | None:
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


# -- the control API's JSON form ----------------------------------------------------------

_Check = Callable[[str, Any], Any]


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be an integer, not {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(name, f"must be a number, not {value!r}")
    return float(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError(name, f"must be a non-empty string, not {value!r}")
    if any(c in value for c in "\r\n\0"):
        raise FieldError(name, "must be one line")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(name, f"must be true or false, not {value!r}")
    return value


def _headers(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise FieldError(name, f'must be an object such as {{"X-Ray": "1"}}, not {value!r}')
    return {_text(f"{name}.{k}", k): _text(f"{name}.{k}", v) for k, v in value.items()}


def _retry_after(name: str, value: Any) -> float | str | None:
    # seconds, any header text, or null for no header at all: as Fault.too_many_requests
    if value is None or isinstance(value, str):
        return value if value is None else _text(name, value)
    return _number(name, value)


def _optional(check: _Check) -> _Check:
    def optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return optional


# Each kind is the Fault class method of that name, and takes its keyword arguments.
_KINDS: dict[str, tuple[Callable[..., Fault], dict[str, tuple[_Check, bool]]]] = {
    "http": (Fault.http, {"status": (_integer, True), "headers": (_headers, False)}),
    "kraken_error": (
        Fault.kraken_error,
        {"message": (_text, True), "status": (_integer, False), "headers": (_headers, False)},
    ),
    "throttled": (Fault.throttled, {"until": (_number, True)}),
    "too_many_requests": (
        Fault.too_many_requests,
        {"retry_after": (_retry_after, False), "error": (_optional(_text), False)},
    ),
    "latency": (Fault.latency, {"seconds": (_number, True), "applied": (_flag, False)}),
    "disconnect": (Fault.disconnect, {}),
    "truncated": (Fault.truncated, {}),
    "html": (Fault.html, {}),
    "empty": (Fault.empty, {}),
    "hold": (Fault.hold, {}),
    "ws_drop": (Fault.ws_drop, {"after": (_integer, False)}),
    "ws_silence": (Fault.ws_silence, {"after": (_integer, False)}),
}
# ... and the rule around it takes the keyword arguments of Faults.add.
_SCOPE: dict[str, _Check] = {
    "endpoint": _optional(_text),
    "group": _optional(_text),
    "times": _optional(_integer),
    "seconds": _optional(_number),
    "probability": _number,
    "seed": _integer,
}
KINDS = tuple(_KINDS)
"""The fault kinds of the JSON form: the names of :class:`Fault`'s class methods."""


def _fault(spec: Any) -> Fault:
    if not isinstance(spec, Mapping):
        raise FieldError("fault", 'must be an object such as {"kind": "http", "status": 503}')
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise FieldError("fault.kind", f"must be one of {', '.join(_KINDS)}, not {kind!r}")
    build, params = _KINDS[kind]
    arguments = {}
    for name, value in spec.items():
        if name == "kind":
            continue
        if name not in params:
            takes = f"they take {', '.join(params)}" if params else "they take none"
            raise FieldError(f"fault.{name}", f"is not an argument of {kind} faults ({takes})")
        arguments[name] = params[name][0](f"fault.{name}", value)
    for name, (_, required) in params.items():
        if required and name not in arguments:
            raise FieldError(f"fault.{name}", f"is required for {kind} faults")
    try:
        return build(**arguments)
    except FieldError as exc:
        raise FieldError(f"fault.{exc.field}", exc.problem) from None


def add_rule(faults: Faults, data: Any) -> FaultRule:
    """Add the rule the control API's JSON describes, through :meth:`Faults.add`.

    ``{"fault": {"kind": "http", "status": 503}, "group": "private", "times": 3}``:
    ``fault`` holds a kind (a :class:`Fault` class method) and that method's keyword
    arguments; the other keys are :meth:`Faults.add`'s. Raises :class:`FieldError`
    naming the first field that is unknown, of the wrong type or out of range.
    """
    if not isinstance(data, Mapping):
        raise FieldError("body", 'must be a JSON object such as {"fault": {"kind": "empty"}}')
    for name in data:
        if name != "fault" and name not in _SCOPE:
            fields = ", ".join(["fault", *_SCOPE])
            raise FieldError(str(name), f"is not a field of a fault rule ({fields})")
    fault = _fault(data.get("fault"))
    scope = {name: check(name, data[name]) for name, check in _SCOPE.items() if name in data}
    return faults.add(fault, **scope)


def describe_fault(fault: Fault) -> dict[str, Any]:
    """A fault in the JSON form :func:`add_rule` takes (a throttle reads as its kraken_error)."""
    described: dict[str, Any] = {"kind": fault.kind}
    if fault.kind == "latency":
        described.update(seconds=fault.delay, applied=fault.applied)
    elif fault.kind == "too_many_requests":
        retry_after = dict(fault.headers).get("Retry-After")
        described.update(retry_after=retry_after, error=_kraken_message(fault.body))
    elif fault.kind in ("ws_drop", "ws_silence"):
        described["after"] = fault.after
    elif fault.kind in ("http", "kraken_error"):
        if fault.kind == "kraken_error":
            described["message"] = _kraken_message(fault.body)
        described.update(status=fault.status, headers=dict(fault.headers))
    return described


def _kraken_message(body: str) -> str | None:
    # the first error of Kraken's envelope; None for a text body (or one a test replaced)
    try:
        return str(json.loads(body)["error"][0])
    except (ValueError, LookupError, TypeError):
        return None


def describe_rule(rule: FaultRule, now: float) -> dict[str, Any]:
    """A rule as the control API lists it; ``seconds_left`` is on the simulator's clock."""
    return {
        "id": rule.id,
        "fault": describe_fault(rule.fault),
        "endpoint": rule.endpoint,
        "group": rule.group,
        "times": rule.times,
        "seconds_left": None if rule.until is None else max(rule.until - now, 0.0),
        "probability": rule.probability,
        "hits": rule.hits,
    }
