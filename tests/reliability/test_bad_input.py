"""Bad input: every wrong config fails at construction naming the key; bad runtime input
(made-up endpoints, raising or hanging listeners) never breaks a call nor grows memory."""

from __future__ import annotations

import asyncio
import logging
import math
import tracemalloc
from typing import Any

import ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ccxt_breaker
from ccxt_breaker import _events
from ccxt_breaker._breaker import MAX_ENDPOINTS
from ccxt_breaker._config import _KEYS
from ccxt_breaker._kraken import DEFAULT_GROUPS
from ccxt_breaker._registry import MAX_LEARNED_ROUTES
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator

from ..support import api, make_exchange
from .conftest import PROFILE

# key -> (a value of the wrong type, a value of the right type but out of range)
BAD_VALUES: dict[str, tuple[Any, Any]] = {
    "enabled": ("yes", 1),
    "failureThreshold": ("5", 0),
    "successThreshold": (2.5, -1),
    "resetTimeout": ("30s", 0),
    "halfOpenMaxCalls": (True, 0),
    "failureRateThreshold": ("50%", 101),
    "slowCallDuration": ([1000], -5),
    "slowCallRateThreshold": (None, 0),
    "slidingWindowType": (1, "sliding"),
    "slidingWindowSize": ("100", 0),
    "slidingWindowDuration": ({}, math.inf),
    "minimumNumberOfCalls": (1.5, 0),
    "resetTimeoutMultiplier": ("2", 0.5),
    "maxResetTimeout": ("1m", 1000),  # below the 30 s resetTimeout
    "resetTimeoutJitter": ("0.1", 1.0),
    "lockoutDuration": ("15m", math.nan),
    "shadowMode": ("false", 0),
    "historySize": ("1000", -1),
    "wsStaleAfter": ("30s", 0),
}
MILLISECONDS = {
    "resetTimeout",
    "slowCallDuration",
    "slidingWindowDuration",
    "maxResetTimeout",
    "lockoutDuration",
    "wsStaleAfter",
}


def build(breaker_option: Any) -> ccxt_breaker.kraken:
    return ccxt_breaker.kraken({"options": {"circuitBreaker": breaker_option}})


def misspell(key: str) -> str:
    middle = len(key) // 2
    return key[:middle] + key[middle + 1 :]


def at(level: str, raw: dict[Any, Any]) -> dict[str, Any]:
    return raw if level == "top" else {"groups": {"private": raw}}


def test_every_key_has_bad_values() -> None:
    """The bad-value table covers every configuration key the package accepts."""
    assert sorted(BAD_VALUES) == sorted(_KEYS)


@pytest.mark.parametrize("level", ["top", "group"])
@pytest.mark.parametrize("kind", ["wrong type", "out of range"])
@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_bad_value_fails_naming_key_and_value(key: str, kind: str, level: str) -> None:
    """A wrong type or an out-of-range value fails at construction, naming the key and value."""
    value = BAD_VALUES[key][kind == "out of range"]
    with pytest.raises((ValueError, TypeError)) as caught:
        build(at(level, {key: value}))
    message = str(caught.value)
    where = "['groups']['private']" if level == "group" else "options['circuitBreaker']"
    assert (where in message, f"[{key!r}]" in message, repr(value) in message) == (
        True,
        True,
        True,
    ), message


@pytest.mark.parametrize("level", ["top", "group"])
@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_misspelled_key_fails_with_suggestion(key: str, level: str) -> None:
    """A misspelled key fails at construction, names it, and suggests the right one."""
    typo = misspell(key)
    with pytest.raises(ValueError, match="unknown key") as caught:
        build(at(level, {typo: BAD_VALUES[key][0]}))
    message = str(caught.value)
    assert (repr(typo) in message, f"did you mean {key!r}" in message) == (True, True), message


@pytest.mark.parametrize(
    ("option", "error", "named"),
    [
        ("on", TypeError, "options['circuitBreaker']"),
        (1, TypeError, "options['circuitBreaker']"),
        ({1: 2}, TypeError, "keys must be strings"),
        ({"groups": ["public"]}, TypeError, "['groups']"),
        ({"groups": {"pubic": {}}}, ValueError, "did you mean 'public'"),
        ({"groups": {"public": 5}}, TypeError, "['groups']['public']"),
        ({"groups": {"public": {"clock": None}}}, ValueError, "['clock']"),
        ({"groups": {"public": {"endpoints": {}}}}, ValueError, "['endpoints']"),
        (
            {"groups": {"public": {"failureTreshold": 3}}},
            ValueError,
            "did you mean 'failureThreshold'",
        ),
        ({"endpoints": "Ticker"}, TypeError, "['endpoints']"),
        ({"endpoints": {"Tickr": "books"}}, ValueError, "did you mean 'Ticker'"),
        ({"endpoints": {"Ticker": 5}}, TypeError, "['endpoints']['Ticker']"),
        ({"endpoints": {"Ticker": ""}}, TypeError, "['endpoints']['Ticker']"),
        ({"clock": object()}, TypeError, "['clock']"),
        ({"clock": "monotonic"}, TypeError, "['clock']"),
        (
            {"failureRateThreshold": 50, "minimumNumberOfCalls": 200},
            ValueError,
            "minimumNumberOfCalls",
        ),
    ],
)
def test_bad_structure_fails_naming_the_key(
    option: Any, error: type[Exception], named: str
) -> None:
    """Bad groups, endpoints, clock and combinations fail at construction, naming the key."""
    with pytest.raises(error) as caught:
        build(option)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "option",
    [
        {"enabled": False, "groups": {"pubic": {}}},
        {"enabled": False, "groups": {"public": {"failureThreshold": 0}}},
        {"enabled": False, "endpoints": {"Tickr": "books"}},
    ],
)
def test_disabled_config_is_still_validated(option: dict[str, Any]) -> None:
    """A config switched off with enabled False is still checked, so typos surface at once."""
    with pytest.raises((ValueError, TypeError)):
        build(option)


# --- random configs against an independent validity oracle --------------------------------


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return _number(v) and float(v).is_integer()


VALID: dict[str, Any] = {
    "enabled": lambda v: isinstance(v, bool),
    "shadowMode": lambda v: isinstance(v, bool),
    "failureThreshold": lambda v: _whole(v) and v >= 1,
    "successThreshold": lambda v: _whole(v) and v >= 1,
    "halfOpenMaxCalls": lambda v: _whole(v) and v >= 1,
    "slidingWindowSize": lambda v: _whole(v) and v >= 1,
    "minimumNumberOfCalls": lambda v: _whole(v) and v >= 1,
    "resetTimeout": lambda v: _number(v) and v > 0,
    "slidingWindowDuration": lambda v: _number(v) and v > 0,
    "maxResetTimeout": lambda v: _number(v) and v > 0,
    "slowCallDuration": lambda v: v is None or (_number(v) and v > 0),
    "lockoutDuration": lambda v: _number(v) and v >= 0,
    "failureRateThreshold": lambda v: v is None or (_number(v) and 0 < v <= 100),
    "slowCallRateThreshold": lambda v: _number(v) and 0 < v <= 100,
    "resetTimeoutMultiplier": lambda v: _number(v) and v >= 1,
    "resetTimeoutJitter": lambda v: _number(v) and 0 <= v < 1,
    "slidingWindowType": lambda v: v in ("count", "time") and isinstance(v, str),
}


def valid_breaker(raw: dict[Any, Any]) -> bool:
    """Whether one breaker's (merged) keys are all known, well-typed, in range and coherent."""
    if not all(key in VALID and VALID[key](value) for key, value in raw.items()):
        return False
    base = raw.get("resetTimeout", 30_000)
    if "maxResetTimeout" in raw and raw["maxResetTimeout"] < base:
        return False
    uses_window = (
        raw.get("failureRateThreshold") is not None or raw.get("slowCallDuration") is not None
    )
    return not (
        uses_window
        and raw.get("slidingWindowType", "count") == "count"
        and raw.get("minimumNumberOfCalls", 20) > raw.get("slidingWindowSize", 100)
    )


def valid_option(option: dict[Any, Any]) -> bool:
    top = {k: v for k, v in option.items() if k not in ("groups", "endpoints")}
    moves = option.get("endpoints", {})
    if not all(
        path in ("Ticker", "AddOrder") and isinstance(group, str) and group
        for path, group in moves.items()
    ):
        return False
    known = {*DEFAULT_GROUPS, *moves.values()}
    groups = option.get("groups", {})
    return valid_breaker(top) and all(
        name in known and isinstance(override, dict) and valid_breaker({**top, **override})
        for name, override in groups.items()
    )


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["count", "time", "", "5", "fast"]),
    st.lists(st.integers(), max_size=2),
)
keys = st.one_of(
    st.sampled_from(sorted(VALID)),
    st.sampled_from(sorted(VALID)).map(misspell),
    st.text(max_size=8),
)
breaker_dicts = st.dictionaries(keys, values, max_size=4)
options = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans(),
        "failureThreshold": values,
        "groups": st.dictionaries(
            st.sampled_from([*DEFAULT_GROUPS, "mine", "pubic"]),
            st.one_of(breaker_dicts, values),
            max_size=2,
        ),
        "endpoints": st.dictionaries(
            st.sampled_from(["Ticker", "AddOrder", "Tickr"]),
            st.sampled_from(["public", "mine", "", 5]),
            max_size=2,
        ),
    },
).flatmap(lambda fixed: breaker_dicts.map(lambda extra: {**extra, **fixed}))


def names_in(option: dict[Any, Any]) -> set[str]:
    found = {str(k) for k in option}
    for nested in ("groups", "endpoints"):
        inner = option.get(nested)
        if isinstance(inner, dict):
            found |= {str(k) for k in inner}
            found |= {str(k) for v in inner.values() if isinstance(v, dict) for k in v}
    return found


@PROFILE
@given(option=options)
def test_random_configs_are_accepted_exactly_when_valid(option: dict[Any, Any]) -> None:
    """A random config is accepted exactly when valid; else the error names an offending key."""
    expected_valid = valid_option(option)
    error: Exception | None = None
    try:
        exchange = build(option)
    except (ValueError, TypeError) as exc:
        error = exc
    if error is not None:
        message = str(error)
        assert not expected_valid, f"valid config rejected: {message}"
        assert any(name in message or repr(name) in message for name in names_in(option)), message
        return
    assert expected_valid, f"invalid config accepted: {option!r}"
    if "private" in exchange.circuit_breakers and "private" not in option.get("groups", {}):
        config = exchange.circuit_breakers["private"].config
        for key, value in option.items():
            if key in _KEYS and key != "enabled":
                scale = 1000 if key in MILLISECONDS and value is not None else 1
                assert getattr(config, _KEYS[key][0]) == (
                    value if value is None or isinstance(value, str) else value / scale
                )


# --- bad input at run time ---------------------------------------------------------------

UNKNOWN = "EGeneral:Unknown method"
HANG = 30.0  # bounds a wait that only a broken listener bound would leave hanging


def knows(registry: ccxt_breaker.BreakerRegistry, path: str) -> bool:
    try:
        registry.group_of(path)
    except KeyError:
        return False
    return True


async def test_unknown_endpoints_route_to_their_section_and_stay_bounded(
    sim: KrakenSimulator, clock: FakeClock
) -> None:
    """Made-up endpoints route to their section's group; 10,000 of them keep memory bounded."""
    exchange = make_exchange(sim, clock)
    registry = exchange.circuit_breakers
    private = registry["private"]
    sent = 300  # more than both bounds, through the simulator
    # every made-up private path gets one answer, whatever order the nonces arrive in
    sim.faults.add(Fault.kraken_error(UNKNOWN), group="private")
    answers = await asyncio.gather(  # routes are learned in this order, up to the bound
        exchange.fetch2("NoSuchPublicPath", api("public"), "GET"),  # learned: group_of knows it
        exchange.fetch2("999999", api("zendesk"), "GET"),  # no such article
        *(exchange.fetch2(f"NoSuchPath{i}", api("private"), "POST") for i in range(sent)),
        return_exceptions=True,
    )
    groups = (
        registry.group_of("NoSuchPath0"),
        registry.group_of("NoSuchPublicPath"),
        registry.group_of("999999"),
    )
    private.force_open()

    async def refuse(paths: range) -> None:
        for i in paths:
            with pytest.raises(ccxt_breaker.CircuitOpenError):
                await exchange.fetch2(f"MadeUp{i}", api("private"), "POST")

    tracemalloc.start()
    await refuse(range(1000))
    warm = tracemalloc.get_traced_memory()[0]
    await refuse(range(1000, 10_000))
    grown = tracemalloc.get_traced_memory()[0] - warm
    tracemalloc.stop()
    await exchange.close()
    snapshot = private.snapshot()

    # ccxt's own error for Kraken's answer: the hook let every call through untouched
    assert [(type(a), UNKNOWN in str(a)) for a in (answers[0], *answers[2:])] == [
        (ccxt.ExchangeError, True)
    ] * (sent + 1)
    article = answers[1]["article"]  # ccxt 4.5.0 parses JSON numbers as text
    assert (str(article["id"]), article["body"]) == ("999999", "<p>Kraken fees and minimums</p>")
    assert groups == ("private", "public", "public")
    assert (snapshot["calls"], snapshot["failures"], snapshot["rejected"]) == (sent, 0, 10_000)
    learned = [
        path
        for path in [
            *(f"NoSuchPath{i}" for i in range(sent)),
            *(f"MadeUp{i}" for i in range(10_000)),
        ]
        if knows(registry, path)
    ]
    assert len(learned) <= MAX_LEARNED_ROUTES - 2  # the route table stops learning
    assert len(snapshot["endpoints"]) <= MAX_ENDPOINTS + 1  # the rest share "*"
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 9,000 made-up endpoints"


def listener_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ccxt_breaker" and r.levelno == logging.ERROR
    ]


async def test_raising_listeners_never_break_a_call(
    sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising listener, sync or async, changes no call's outcome nor the others' delivery."""
    exchange = make_exchange(sim, clock, failureThreshold=1)
    received: list[Any] = []

    def broken(event: Any) -> None:
        raise RuntimeError("sync listener bug")

    async def broken_async(event: Any) -> None:
        raise RuntimeError("async listener bug")

    for listener in (broken, broken_async, received.append):
        exchange.circuit_breakers.add_listener(listener)
    sim.faults.add(Fault.http(503), endpoint="Time", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable) as failed:
        await exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await asyncio.wait_for(asyncio.gather(*_events._pending), HANG)  # the listener tasks ran
    await exchange.close()

    assert type(failed.value) is ccxt.ExchangeNotAvailable
    assert [type(e).__name__ for e in received] == ["StateChanged", "CallRejected"]
    raised = [m for m in listener_errors(caplog) if " raised" in m]
    assert len(raised) == 4  # two events, each to two broken listeners


async def test_hanging_async_listener_is_bounded(
    sim: KrakenSimulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hanging async listener delays no call; at most MAX_PENDING run, each one timed out."""
    monkeypatch.setattr(_events, "LISTENER_TIMEOUT", 0.05)
    exchange = make_exchange(sim, clock)
    breaker = exchange.circuit_breakers["public"]

    async def hang(event: Any) -> None:
        await asyncio.Event().wait()

    breaker.add_listener(hang)
    breaker.force_open()
    calls = [asyncio.ensure_future(exchange.publicGetTime()) for _ in range(1000)]
    await asyncio.sleep(0)  # one turn of the loop: every call runs to its refusal
    done_at_once = sum(c.done() for c in calls)
    pending_peak = len(_events._pending)
    await asyncio.gather(*calls, return_exceptions=True)
    await asyncio.wait_for(asyncio.gather(*_events._pending), HANG)  # each one timed out
    await exchange.close()

    assert done_at_once == 1000
    assert 0 < pending_peak <= _events.MAX_PENDING
    assert (len(_events._pending), sim.count("Time")) == (0, 0)
    levels = {m.split(" for ")[0].split(" ")[0] for m in listener_errors(caplog)}
    assert levels == {"dropped", "listener"}  # dropped beyond the bound, timed out within it
