"""options['circuitBreaker']: keys, units, groups, endpoint moves, and clear errors."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker import _config
from ccxt_breaker._config import SharedState, SystemClock, parse_settings
from ccxt_breaker._registry import MAX_LEARNED_ROUTES
from ccxt_breaker.testing import FakeClock

from .support import api

ROOT = "options['circuitBreaker']"


def build(**breaker: Any) -> ccxt_breaker.kraken:
    return ccxt_breaker.kraken({"options": {"circuitBreaker": breaker}})


def test_defaults() -> None:
    """Without options the documented defaults apply, in seconds inside the package."""
    config = ccxt_breaker.kraken().circuit_breakers["public"].config
    assert (
        config.failure_threshold,
        config.success_threshold,
        config.reset_timeout,
        config.half_open_max_calls,
        config.lockout_duration,
    ) == (5, 2, 30.0, 1, 900.0)


def test_camel_case_milliseconds_and_group_overrides() -> None:
    """Durations are milliseconds like ccxt's timeout; groups override the top level."""
    exchange = build(
        resetTimeout=5000,
        failureThreshold=3,
        groups={"trading": {"failureThreshold": 1, "maxResetTimeout": 60_000}},
    )
    public = exchange.circuit_breakers["public"].config
    trading = exchange.circuit_breakers["trading"].config
    assert (public.reset_timeout, public.failure_threshold) == (5.0, 3)
    assert (trading.reset_timeout, trading.failure_threshold, trading.max_reset_timeout) == (
        5.0,
        1,
        60.0,
    )


@pytest.mark.parametrize(
    ("options", "field", "expected"),
    [
        ({"slidingWindowType": "count"}, "sliding_window_type", "count"),
        ({"slidingWindowType": "time"}, "sliding_window_type", "time"),
        ({"resetTimeoutJitter": 0}, "reset_timeout_jitter", 0.0),
        ({"resetTimeoutMultiplier": 1}, "reset_timeout_multiplier", 1.0),
        ({"resetTimeoutMultiplier": 1.5}, "reset_timeout_multiplier", 1.5),
        ({"failureRateThreshold": 100}, "failure_rate_threshold", 100.0),
        ({"failureRateThreshold": 0.5}, "failure_rate_threshold", 0.5),
        ({"slowCallRateThreshold": 0.5}, "slow_call_rate_threshold", 0.5),
        # an explicit null turns the rate and slow-call checks off, as leaving them out does
        ({"failureRateThreshold": None}, "failure_rate_threshold", None),
        ({"slowCallDuration": None}, "slow_call_duration", None),
        ({"slowCallRateThreshold": 100}, "slow_call_rate_threshold", 100.0),
        ({"lockoutDuration": 0}, "lockout_duration", 0.0),
        ({"historySize": 0}, "history_size", 0),
        ({"historySize": 50.0}, "history_size", 50),
        ({"wsStaleAfter": 5000}, "ws_stale_after", 5.0),
        ({"wsStaleAfter": 1500.5}, "ws_stale_after", 1.5005),
        ({"resetTimeout": 45_000, "maxResetTimeout": 45_000}, "max_reset_timeout", 45.0),
        # a resetTimeout over the default cap lifts the cap with it
        ({"resetTimeout": 600_000}, "max_reset_timeout", 600.0),
        (
            {"failureRateThreshold": 50, "slidingWindowSize": 10, "minimumNumberOfCalls": 10},
            "minimum_number_of_calls",
            10,
        ),
        (
            {"slowCallDuration": 500, "slidingWindowSize": 7, "minimumNumberOfCalls": 7},
            "minimum_number_of_calls",
            7,
        ),
        (
            {
                "failureRateThreshold": 50,
                "slidingWindowType": "time",
                "slidingWindowSize": 5,
                "minimumNumberOfCalls": 50,
            },
            "minimum_number_of_calls",
            50,
        ),
        # no rate is judged, so the count window's size does not bound the minimum
        ({"slidingWindowSize": 5, "minimumNumberOfCalls": 50}, "minimum_number_of_calls", 50),
        ({"minimumNumberOfCalls": 20.0}, "minimum_number_of_calls", 20),
    ],
)
def test_valid_edge_values_are_accepted(options: dict[str, Any], field: str, expected: Any) -> None:
    """Values on the edge of each valid range are accepted, top level and per group."""
    top = build(**options).circuit_breakers["public"].config
    group = build(groups={"earn": options}).circuit_breakers["earn"].config
    assert (getattr(top, field), getattr(group, field)) == (expected, expected)


def test_endpoint_moves_create_groups() -> None:
    """endpoints moves a path to another group; a new name makes a new breaker."""
    exchange = build(
        endpoints={"Ledgers": "history", "Ticker": "private"},
        groups={"history": {"failureThreshold": 9}},
    )
    breakers = exchange.circuit_breakers
    assert list(breakers) == ["public", "private", "trading", "funding", "earn", "history"]
    assert (breakers.group_of("Ledgers"), breakers.group_of("Ticker")) == ("history", "private")
    assert breakers["history"].config.failure_threshold == 9


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("Ticker", "public"),
        ("360000292886", "public"),
        ("Balance", "private"),
        ("GetWebSocketsToken", "private"),
        ("AddOrder", "trading"),
        ("CancelAllOrdersAfter", "trading"),
        ("EditOrder", "trading"),
        ("DepositAddresses", "funding"),
        ("WithdrawCancel", "funding"),
        ("WalletTransfer", "funding"),
        ("CreateSubaccount", "funding"),
        ("AccountTransfer", "funding"),
        ("Earn/Allocate", "earn"),
        ("Earn/Strategies", "earn"),
    ],
)
def test_default_groups(path: str, group: str) -> None:
    """Every Kraken endpoint falls into the group of its failure domain."""
    assert ccxt_breaker.kraken().circuit_breakers.group_of(path) == group


def test_every_listed_endpoint_has_a_group() -> None:
    """group_of answers for every endpoint ccxt's describe() lists."""
    exchange = ccxt_breaker.kraken()
    paths = [
        p
        for section in exchange.describe()["api"].values()
        for methods in section.values()
        for p in methods
    ]
    groups = {exchange.circuit_breakers.group_of(p) for p in paths}
    assert groups == {"public", "private", "trading", "funding", "earn"}


@pytest.mark.parametrize("spelling", ["this ccxt", "list", "string"])
@pytest.mark.parametrize(
    ("section", "group", "json"),
    [("private", "private", True), ("public", "public", True), ("zendesk", "public", False)],
)
def test_unknown_endpoint_falls_into_its_section(
    spelling: str, section: str, group: str, json: bool
) -> None:
    """An unlisted endpoint is routed and learned by its API section, list or string."""
    registry = ccxt_breaker.kraken().circuit_breakers
    section_arg = {"this ccxt": api(section), "list": [section], "string": section}[spelling]
    route = registry._route("NewThing", section_arg)
    assert (route.breaker, route.endpoint, route.json) == (registry[group], "NewThing", json)
    assert registry._route("NewThing", section_arg) is route
    assert registry.group_of("NewThing") == group


def test_unknown_endpoints_past_the_limit_share_one_route() -> None:
    """Past MAX_LEARNED_ROUTES, unlisted paths of a section share one '*' route."""
    registry = ccxt_breaker.kraken().circuit_breakers
    for n in range(MAX_LEARNED_ROUTES):
        registry._route(f"Made{n}", api("private"))
    late, later = (registry._route(p, api("private")) for p in ("Late", "Later"))
    public = registry._route("LatePublic", api("public"))
    assert late is later
    assert (late.breaker, late.endpoint) == (registry["private"], "*")
    assert (public.breaker, public.endpoint) == (registry["public"], "*")
    assert registry.group_of(f"Made{MAX_LEARNED_ROUTES - 1}") == "private"
    with pytest.raises(KeyError, match="unknown endpoint 'Late'"):
        registry.group_of("Late")


# Every key a group accepts, in the README's order, and those the top level adds: listed when
# an unknown key is like none of them.
GROUP_KEYS = (
    "enabled, failureThreshold, successThreshold, resetTimeout, halfOpenMaxCalls, "
    "failureRateThreshold, slowCallDuration, slowCallRateThreshold, slidingWindowType, "
    "slidingWindowSize, slidingWindowDuration, minimumNumberOfCalls, resetTimeoutMultiplier, "
    "maxResetTimeout, resetTimeoutJitter, lockoutDuration, shadowMode, historySize, "
    "wsStaleAfter"
)
VALID_KEYS = f"{GROUP_KEYS}, groups, endpoints, name, clock, sharedState"
GROUPS = f"{ROOT}['groups']"
TRADING = f"{GROUPS}['trading']"
NEVER_JUDGED = "the rate would never be judged"
SHARED = f"{ROOT}['sharedState']"
SCHEMES = "must be 'process' or a URL starting with redis://, rediss:// or unix://"


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        # the option and its sections must be dicts
        ("on", TypeError, f"{ROOT} must be a dict, got 'on' (str)"),
        ({"groups": []}, TypeError, f"{GROUPS} must be a dict, got [] (list)"),
        (
            {"endpoints": "Ticker"},
            TypeError,
            f"{ROOT}['endpoints'] must be a dict, got 'Ticker' (str)",
        ),
        ({"groups": {"trading": 5}}, TypeError, f"{TRADING} must be a dict, got 5 (int)"),
        (
            {"clock": "utc"},
            TypeError,
            f"{ROOT}['clock'] must have monotonic() and time() methods, got 'utc' (str)",
        ),
        # unknown keys: the value, then the closest key or, if none is close, every valid key
        (
            {"failureTreshold": 3},
            ValueError,
            f"unknown key {ROOT}['failureTreshold'] = 3; did you mean 'failureThreshold'?",
        ),
        (
            {"retries": 3},
            ValueError,
            f"unknown key {ROOT}['retries'] = 3; valid keys: {VALID_KEYS}",
        ),
        ({1: 2}, TypeError, f"{ROOT} keys must be strings, got 1 (int)"),
        # validated even when off, so a typo does not wait for the day breakers are turned on
        (
            {"enabled": False, "resetTimout": 1},
            ValueError,
            f"unknown key {ROOT}['resetTimout'] = 1; did you mean 'resetTimeout'?",
        ),
        (
            {"groups": {"tradng": {"failureThreshold": 1}}},
            ValueError,
            f"unknown key {GROUPS}['tradng'] = {{'failureThreshold': 1}}; did you mean 'trading'?",
        ),
        (
            {"groups": {"spot": {}}},
            ValueError,
            f"unknown key {GROUPS}['spot'] = {{}}; "
            "valid keys: earn, funding, private, public, trading",
        ),
        ({"groups": {5: {}}}, TypeError, f"{GROUPS} keys must be strings, got 5 (int)"),
        (
            {"groups": {"trading": {"resetTimout": 1}}},
            ValueError,
            f"unknown key {TRADING}['resetTimout'] = 1; did you mean 'resetTimeout'?",
        ),
        (
            {"groups": {"earn": {"cooldown": 60}}},
            ValueError,
            f"unknown key {GROUPS}['earn']['cooldown'] = 60; valid keys: {GROUP_KEYS}",
        ),
        (
            {"groups": {"trading": {"groups": {}}}},
            ValueError,
            f"{TRADING}['groups'] is only valid at the top level",
        ),
        (
            {"groups": {"trading": {"clock": None}}},
            ValueError,
            f"{TRADING}['clock'] is only valid at the top level",
        ),
        (
            {"groups": {"trading": {"name": "market-maker"}}},
            ValueError,
            f"{TRADING}['name'] is only valid at the top level",
        ),
        # the name: one line of text, since it labels log lines
        ({"name": 5}, TypeError, f"{ROOT}['name'] must be a non-empty string, got 5 (int)"),
        (
            {"name": b"mm"},
            TypeError,
            f"{ROOT}['name'] must be a non-empty string, got b'mm' (bytes)",
        ),
        (
            {"name": ""},
            ValueError,
            f"{ROOT}['name'] must be a non-empty string of printable text, got ''",
        ),
        (
            {"name": "  "},
            ValueError,
            f"{ROOT}['name'] must be a non-empty string of printable text, got '  '",
        ),
        (
            {"name": "mm\nkraken circuit 'private' open -> closed"},
            ValueError,
            f"{ROOT}['name'] must be a non-empty string of printable text, "
            "got \"mm\\nkraken circuit 'private' open -> closed\"",
        ),
        # checked even when off, like every other key
        (
            {"enabled": False, "name": 7},
            TypeError,
            f"{ROOT}['name'] must be a non-empty string, got 7 (int)",
        ),
        (
            {"endpoints": {"Tickr": "public"}},
            ValueError,
            f"unknown key {ROOT}['endpoints']['Tickr'] = 'public'; did you mean 'Ticker'?",
        ),
        (
            {"endpoints": {7: "public"}},
            TypeError,
            f"{ROOT}['endpoints'] keys must be strings, got 7 (int)",
        ),
        (
            {"endpoints": {"Ticker": 3}},
            TypeError,
            f"{ROOT}['endpoints']['Ticker'] must be a group name, got 3 (int)",
        ),
        (
            {"endpoints": {"Ticker": ""}},
            TypeError,
            f"{ROOT}['endpoints']['Ticker'] must be a group name, got '' (str)",
        ),
        # wrong types: the key path, the value and its type
        (
            {"enabled": "yes"},
            TypeError,
            f"{ROOT}['enabled'] must be true or false, got 'yes' (str)",
        ),
        ({"shadowMode": 1}, TypeError, f"{ROOT}['shadowMode'] must be true or false, got 1 (int)"),
        (
            {"resetTimeout": "30s"},
            TypeError,
            f"{ROOT}['resetTimeout'] must be a number, got '30s' (str)",
        ),
        (
            {"resetTimeout": True},
            TypeError,
            f"{ROOT}['resetTimeout'] must be a number, got True (bool)",
        ),
        (
            {"slowCallDuration": "1s"},
            TypeError,
            f"{ROOT}['slowCallDuration'] must be a number, got '1s' (str)",
        ),
        (
            {"failureRateThreshold": "50"},
            TypeError,
            f"{ROOT}['failureRateThreshold'] must be a number, got '50' (str)",
        ),
        (
            {"resetTimeoutMultiplier": "2"},
            TypeError,
            f"{ROOT}['resetTimeoutMultiplier'] must be a number, got '2' (str)",
        ),
        (
            {"resetTimeoutJitter": None},
            TypeError,
            f"{ROOT}['resetTimeoutJitter'] must be a number, got None (NoneType)",
        ),
        (
            {"failureThreshold": True},
            TypeError,
            f"{ROOT}['failureThreshold'] must be a whole number, got True (bool)",
        ),
        (
            {"slidingWindowSize": 2.5},
            TypeError,
            f"{ROOT}['slidingWindowSize'] must be a whole number, got 2.5 (float)",
        ),
        (
            {"slidingWindowType": 3},
            TypeError,
            f"{ROOT}['slidingWindowType'] must be 'count' or 'time', got 3 (int)",
        ),
        # values out of range: the key path, the range and its unit, the value as written
        (
            {"resetTimeout": float("inf")},
            ValueError,
            f"{ROOT}['resetTimeout'] must be finite, got inf",
        ),
        (
            {"failureRateThreshold": float("nan")},
            ValueError,
            f"{ROOT}['failureRateThreshold'] must be finite, got nan",
        ),
        (
            {"resetTimeout": -1},
            ValueError,
            f"{ROOT}['resetTimeout'] must be more than zero milliseconds, got -1",
        ),
        (
            {"resetTimeout": 0},
            ValueError,
            f"{ROOT}['resetTimeout'] must be more than zero milliseconds, got 0",
        ),
        (
            {"slowCallDuration": 0},
            ValueError,
            f"{ROOT}['slowCallDuration'] must be more than zero milliseconds, got 0",
        ),
        (
            {"slidingWindowDuration": -0.5},
            ValueError,
            f"{ROOT}['slidingWindowDuration'] must be more than zero milliseconds, got -0.5",
        ),
        (
            {"maxResetTimeout": 0},
            ValueError,
            f"{ROOT}['maxResetTimeout'] must be more than zero milliseconds, got 0",
        ),
        (
            {"lockoutDuration": -1},
            ValueError,
            f"{ROOT}['lockoutDuration'] must be zero or more milliseconds, got -1",
        ),
        (
            {"wsStaleAfter": 0},
            ValueError,
            f"{ROOT}['wsStaleAfter'] must be more than zero milliseconds, got 0",
        ),
        (
            {"wsStaleAfter": "30s"},
            TypeError,
            f"{ROOT}['wsStaleAfter'] must be a number, got '30s' (str)",
        ),
        (
            {"wsStaleAfter": math.inf},
            ValueError,
            f"{ROOT}['wsStaleAfter'] must be finite, got inf",
        ),
        (
            {"historySize": -1},
            ValueError,
            f"{ROOT}['historySize'] must be at least 0, got -1",
        ),
        (
            {"historySize": "1000"},
            TypeError,
            f"{ROOT}['historySize'] must be a whole number, got '1000' (str)",
        ),
        (
            {"halfOpenMaxCalls": 0},
            ValueError,
            f"{ROOT}['halfOpenMaxCalls'] must be at least 1, got 0",
        ),
        (
            {"minimumNumberOfCalls": -3},
            ValueError,
            f"{ROOT}['minimumNumberOfCalls'] must be at least 1, got -3",
        ),
        (
            {"failureRateThreshold": 0},
            ValueError,
            f"{ROOT}['failureRateThreshold'] must be a percentage in (0, 100], got 0",
        ),
        (
            {"failureRateThreshold": 100.5},
            ValueError,
            f"{ROOT}['failureRateThreshold'] must be a percentage in (0, 100], got 100.5",
        ),
        (
            {"slowCallRateThreshold": 150},
            ValueError,
            f"{ROOT}['slowCallRateThreshold'] must be a percentage in (0, 100], got 150",
        ),
        (
            {"resetTimeoutMultiplier": 0.99},
            ValueError,
            f"{ROOT}['resetTimeoutMultiplier'] must be 1 or more (1 keeps the open time fixed), "
            "got 0.99",
        ),
        (
            {"resetTimeoutJitter": 1},
            ValueError,
            f"{ROOT}['resetTimeoutJitter'] must be in [0, 1), got 1",
        ),
        (
            {"resetTimeoutJitter": -0.1},
            ValueError,
            f"{ROOT}['resetTimeoutJitter'] must be in [0, 1), got -0.1",
        ),
        (
            {"slidingWindowType": "sliding"},
            ValueError,
            f"{ROOT}['slidingWindowType'] must be 'count' or 'time', got 'sliding'",
        ),
        # contradictions between keys, the other key's value in the message
        (
            {"resetTimeout": 60_000, "maxResetTimeout": 1000},
            ValueError,
            f"{ROOT}['maxResetTimeout'] must be at least resetTimeout (60000 ms), got 1000",
        ),
        (
            {"maxResetTimeout": 1500.5},
            ValueError,
            f"{ROOT}['maxResetTimeout'] must be at least resetTimeout (30000 ms), got 1500.5",
        ),
        (
            {"failureRateThreshold": 50, "slidingWindowSize": 10, "minimumNumberOfCalls": 11},
            ValueError,
            f"{ROOT}['minimumNumberOfCalls'] (11) cannot exceed slidingWindowSize (10): "
            + NEVER_JUDGED,
        ),
        (
            {"slowCallDuration": 100, "slidingWindowSize": 5},
            ValueError,
            f"{ROOT}['minimumNumberOfCalls'] (20) cannot exceed slidingWindowSize (5): "
            + NEVER_JUDGED,
        ),
        # sharedState: 'process', a Redis URL, or a dict; a URL's text is never repeated
        (
            {"sharedState": 5},
            TypeError,
            f"{SHARED} must be 'process', a redis:// URL or a dict, got 5 (int)",
        ),
        ({"sharedState": "http://:pw@host"}, ValueError, f"{SHARED} {SCHEMES}, got http:..."),
        ({"sharedState": "proces"}, ValueError, f"{SHARED} {SCHEMES}, got no URL"),
        (
            {"sharedState": {}},
            ValueError,
            f"{SHARED}['url'] is required: 'process' or a redis:// URL",
        ),
        (
            {"sharedState": {"url": 6379}},
            TypeError,
            f"{SHARED}['url'] must be a string, got 6379 (int)",
        ),
        (
            {"sharedState": {"url": "redis://:pw@x", "namespce": "bots"}},
            ValueError,
            f"unknown key {SHARED}['namespce'] = '...'; did you mean 'namespace'?",
        ),
        (
            {"sharedState": {"url": "process", "timeot": 250}},
            ValueError,
            f"unknown key {SHARED}['timeot'] = 250; did you mean 'timeout'?",
        ),
        (
            {"sharedState": {"url": "process", "timeout": 0}},
            ValueError,
            f"{SHARED}['timeout'] must be more than zero milliseconds, got 0",
        ),
        (
            {"sharedState": {"url": "process", "namespace": ""}},
            ValueError,
            f"{SHARED}['namespace'] must be a non-empty string of printable text, got ''",
        ),
        (
            {"groups": {"public": {"sharedState": "process"}}},
            ValueError,
            f"{GROUPS}['public']['sharedState'] is only valid at the top level",
        ),
        # in a group, the path names the group; the top level's values are inherited
        (
            {"groups": {"trading": {"resetTimeout": -1}}},
            ValueError,
            f"{TRADING}['resetTimeout'] must be more than zero milliseconds, got -1",
        ),
        (
            {"groups": {"earn": {"failureRateThreshold": 0}}},
            ValueError,
            f"{GROUPS}['earn']['failureRateThreshold'] must be a percentage in (0, 100], got 0",
        ),
        (
            {"resetTimeout": 60_000, "groups": {"trading": {"maxResetTimeout": 1000}}},
            ValueError,
            f"{TRADING}['maxResetTimeout'] must be at least resetTimeout (60000 ms), got 1000",
        ),
    ],
)
def test_bad_config_fails_at_construction(raw: Any, error: type[Exception], message: str) -> None:
    """A wrong key, type or value fails at construction with exactly this message."""
    with pytest.raises(error) as caught:
        ccxt_breaker.kraken({"options": {"circuitBreaker": raw}})
    assert (type(caught.value), str(caught.value)) == (error, message)


def test_flag_true_false_and_dict() -> None:
    """The option may be True, False or a dict."""
    assert len(ccxt_breaker.kraken({"options": {"circuitBreaker": True}}).circuit_breakers) == 5
    assert len(ccxt_breaker.kraken({"options": {"circuitBreaker": False}}).circuit_breakers) == 0
    assert len(build(failureThreshold=3).circuit_breakers) == 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("process", SharedState("process")),
        ("redis://127.0.0.1:6379/0", SharedState("redis://127.0.0.1:6379/0")),
        ("rediss://user:pw@redis.example:6380", SharedState("rediss://user:pw@redis.example:6380")),
        ("unix:///run/redis.sock", SharedState("unix:///run/redis.sock")),
        ({"url": "process"}, SharedState("process", None, 0.1)),
        (
            {"url": "redis://h", "namespace": "bots", "timeout": 250},
            SharedState("redis://h", "bots", 0.25),
        ),
    ],
)
def test_shared_state_is_a_url_or_a_dict(raw: Any, expected: SharedState | None) -> None:
    """sharedState takes 'process', a Redis URL, or {url, namespace, timeout ms}: plain JSON."""
    option = {} if raw is None else {"sharedState": json.loads(json.dumps(raw))}
    settings = parse_settings(option, endpoints={}, default_on=True)
    assert settings is not None
    assert settings.shared_state == expected


def test_clock_is_the_system_clock_unless_one_is_given() -> None:
    """Breakers read time's clocks by default; a clock given in the option is used as is."""
    clock = FakeClock()
    default = parse_settings({}, endpoints={}, default_on=True)
    given = parse_settings({"clock": clock}, endpoints={}, default_on=True)
    assert (type(default.clock), given.clock) == (SystemClock, clock)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({}, None),
        ({"name": None}, None),
        ({"name": "market-maker"}, "market-maker"),
        ({"name": " arb bot #2 "}, " arb bot #2 "),
        ({"name": "é"}, "é"),
    ],
)
def test_name_is_optional_text(raw: dict[str, Any], name: str | None) -> None:
    """The top-level name is None unless set, and kept as written; every breaker has it."""
    settings = parse_settings(raw, endpoints={}, default_on=True)
    assert settings is not None
    assert settings.name == name
    breakers = build(**raw).circuit_breakers
    assert {b.name for b in breakers.values()} == {name}


@pytest.mark.parametrize(
    ("credentials", "name"),
    [
        ({"apiKey": "KEY-market-maker"}, "KEY-market-maker"),
        ({"secret": "c2VjcmV0LXNlY3JldA=="}, "bot c2VjcmV0LXNlY3JldA== 1"),
        ({"password": "hunter22"}, "hunter22"),
    ],
)
def test_name_holding_a_credential_fails_at_construction(
    credentials: dict[str, str], name: str
) -> None:
    """A name holding an exchange credential fails at construction, without repeating it."""
    with pytest.raises(ValueError, match="credential") as caught:
        ccxt_breaker.kraken({**credentials, "options": {"circuitBreaker": {"name": name}}})
    assert str(caught.value) == (
        f"{ROOT}['name'] must not contain a credential of the exchange: it labels log lines, "
        "snapshots, events and errors"
    )


def test_name_beside_credentials_is_accepted() -> None:
    """A name that holds no credential is kept, whatever the keys."""
    # a short value (under four characters, never a real credential) does not count
    exchange = ccxt_breaker.kraken(
        {
            "apiKey": "KEY-abcdef",
            "secret": "c2VjcmV0",
            "password": "mm",
            "options": {"circuitBreaker": {"name": "mm-KEY-abc"}},
        }
    )
    assert exchange.circuit_breakers["private"].name == "mm-KEY-abc"


# --- durations that look like seconds ---------------------------------------------------


@pytest.fixture
def warned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has warned about no duration yet."""
    monkeypatch.setattr(_config, "_warned", set())


KRAKEN_GROUPS = {"AddOrder": "trading", "Earn/Allocate": "earn"}


def unit_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def seconds_warning(path: str, value: str, millis: str) -> tuple[str, int, str]:
    return (
        "ccxt_breaker",
        logging.WARNING,
        f"{path} = {value} means {value} ms (durations are milliseconds); "
        f"for {value} seconds, write {millis}",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"resetTimeout": 30}, [(f"{ROOT}['resetTimeout']", "30", "30000")]),
        ({"resetTimeout": 999.5}, [(f"{ROOT}['resetTimeout']", "999.5", "999500")]),
        ({"resetTimeout": 0.1}, [(f"{ROOT}['resetTimeout']", "0.1", "100")]),
        (
            {"maxResetTimeout": 300, "resetTimeout": 5},
            [
                (f"{ROOT}['resetTimeout']", "5", "5000"),
                (f"{ROOT}['maxResetTimeout']", "300", "300000"),
            ],
        ),
        # a later key warns when an earlier one is fine
        (
            {"resetTimeout": 1000, "slowCallDuration": 2},
            [(f"{ROOT}['slowCallDuration']", "2", "2000")],
        ),
        ({"slidingWindowDuration": 60}, [(f"{ROOT}['slidingWindowDuration']", "60", "60000")]),
        ({"lockoutDuration": 900}, [(f"{ROOT}['lockoutDuration']", "900", "900000")]),
        ({"wsStaleAfter": 30}, [(f"{ROOT}['wsStaleAfter']", "30", "30000")]),
        # a group warns about the keys it writes, under its own path, and not about inherited ones
        (
            {"resetTimeout": 20, "groups": {"trading": {"maxResetTimeout": 40}, "earn": {}}},
            [
                (f"{ROOT}['resetTimeout']", "20", "20000"),
                (f"{TRADING}['maxResetTimeout']", "40", "40000"),
            ],
        ),
        # a second breaker, or the same value elsewhere, warns no more than the first
        (
            {"resetTimeout": 30, "groups": {"trading": {"resetTimeout": 30}}},
            [
                (f"{ROOT}['resetTimeout']", "30", "30000"),
                (f"{TRADING}['resetTimeout']", "30", "30000"),
            ],
        ),
        # one second or more, an unset window, no lockout: nothing to warn about
        ({"resetTimeout": 1000, "maxResetTimeout": 1000, "slowCallDuration": 1000}, []),
        ({"slidingWindowDuration": 1000, "lockoutDuration": 1000}, []),
        ({"slowCallDuration": None, "lockoutDuration": 0}, []),
        ({}, []),
    ],
)
def test_durations_under_a_second_warn_once(
    warned: None,
    caplog: pytest.LogCaptureFixture,
    raw: dict[str, Any],
    expected: list[tuple[str, str, str]],
) -> None:
    """A duration under 1000 ms logs one WARNING, once per key and value for the process."""
    # the WARNING names the key path and the millisecond value it may have meant
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            parse_settings(raw, endpoints=KRAKEN_GROUPS, default_on=True)
    assert unit_warnings(caplog) == [seconds_warning(*row) for row in expected]


def test_another_value_of_a_key_warns_again(warned: None, caplog: pytest.LogCaptureFixture) -> None:
    """Once per key and value: another short value of the same key warns too."""
    with caplog.at_level(logging.WARNING):
        for value in (30, 60, 30):
            parse_settings({"resetTimeout": value}, endpoints={}, default_on=True)
    assert unit_warnings(caplog) == [
        seconds_warning(f"{ROOT}['resetTimeout']", "30", "30000"),
        seconds_warning(f"{ROOT}['resetTimeout']", "60", "60000"),
    ]


def test_a_test_clock_silences_the_unit_warning(
    warned: None, caplog: pytest.LogCaptureFixture
) -> None:
    """With a clock key set (tests run on short times on purpose), nothing is warned."""
    raw = {"resetTimeout": 30, "groups": {"trading": {"lockoutDuration": 5}}}
    with caplog.at_level(logging.DEBUG):
        parse_settings({**raw, "clock": FakeClock()}, endpoints={"X": "trading"}, default_on=True)
    assert unit_warnings(caplog) == []


def test_instances_sharing_a_config_keep_their_own_state() -> None:
    """Two instances built from one config dict never share breaker state."""
    config: dict[str, Any] = {"options": {"circuitBreaker": {"failureThreshold": 1}}}
    first, second = ccxt_breaker.kraken(config), ccxt_breaker.kraken(config)
    first.circuit_breakers["public"].force_open()
    assert second.circuit_breakers["public"].state == "closed"
    assert config == {"options": {"circuitBreaker": {"failureThreshold": 1}}}
