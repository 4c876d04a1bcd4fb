"""options['circuitBreaker']: keys, units, groups, endpoint moves, and clear errors."""

from __future__ import annotations

from typing import Any

import pytest

import ccxt_breaker
from ccxt_breaker._registry import MAX_LEARNED_ROUTES

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
        ({"slowCallRateThreshold": 100}, "slow_call_rate_threshold", 100.0),
        ({"lockoutDuration": 0}, "lockout_duration", 0.0),
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


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"failureTreshold": 3}, ValueError, "did you mean 'failureThreshold'"),
        ({"resetTimeout": -1}, ValueError, "['resetTimeout'] must be more than zero"),
        ({"resetTimeout": "30s"}, TypeError, "['resetTimeout'] must be a number, got '30s'"),
        ({"failureThreshold": True}, TypeError, "['failureThreshold'] must be a whole number"),
        ({"halfOpenMaxCalls": 0}, ValueError, "['halfOpenMaxCalls'] must be at least 1, got 0"),
        ({"failureRateThreshold": 150}, ValueError, "percentage in (0, 100], got 150"),
        ({"slidingWindowType": "sliding"}, ValueError, "'count' or 'time', got 'sliding'"),
        ({"resetTimeoutJitter": 1.5}, ValueError, "['resetTimeoutJitter'] must be in [0, 1)"),
        ({"resetTimeout": 60_000, "maxResetTimeout": 1000}, ValueError, "at least resetTimeout"),
        (
            {"failureRateThreshold": 50, "slidingWindowSize": 5},
            ValueError,
            "cannot exceed slidingWindowSize",
        ),
        ({"groups": {"tradng": {}}}, ValueError, "did you mean 'trading'"),
        (
            {"groups": {"trading": {"resetTimout": 1}}},
            ValueError,
            "['groups']['trading']['resetTimout']",
        ),
        ({"groups": {"trading": {"groups": {}}}}, ValueError, "only valid at the top level"),
        ({"groups": []}, TypeError, "['groups'] must be a dict"),
        ({"endpoints": {"Tickr": "public"}}, ValueError, "did you mean 'Ticker'"),
        ({"endpoints": {"Ticker": 3}}, TypeError, "must be a group name"),
        ({"clock": object()}, TypeError, "monotonic() and time()"),
        ({"enabled": "yes"}, TypeError, "['enabled'] must be true or false"),
    ],
)
def test_bad_config_fails_at_construction(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong type, value or key fails at construction, naming it, with typo suggestions."""
    with pytest.raises(error) as caught:
        build(**options)
    assert message in str(caught.value)
    assert ROOT in str(caught.value)


@pytest.mark.parametrize(
    ("options", "key", "value", "unit"),
    [
        ({"resetTimeout": -1}, "['resetTimeout']", "-1", "milliseconds"),
        ({"resetTimeout": 0}, "['resetTimeout']", "0", "milliseconds"),
        ({"slowCallDuration": 0}, "['slowCallDuration']", "0", "milliseconds"),
        ({"slidingWindowDuration": -0.5}, "['slidingWindowDuration']", "-0.5", "milliseconds"),
        ({"maxResetTimeout": 0}, "['maxResetTimeout']", "0", "milliseconds"),
        ({"lockoutDuration": -5}, "['lockoutDuration']", "-5", "milliseconds"),
        ({"resetTimeout": 60_000, "maxResetTimeout": 1000}, "['maxResetTimeout']", "1000", "ms"),
        ({"failureRateThreshold": 0}, "['failureRateThreshold']", "0", "percentage"),
        ({"failureRateThreshold": 100.5}, "['failureRateThreshold']", "100.5", "percentage"),
        ({"slowCallRateThreshold": 101}, "['slowCallRateThreshold']", "101", "percentage"),
        (
            {"groups": {"trading": {"resetTimeout": -1}}},
            "['groups']['trading']['resetTimeout']",
            "-1",
            "milliseconds",
        ),
        (
            {"groups": {"earn": {"failureRateThreshold": 0}}},
            "['groups']['earn']['failureRateThreshold']",
            "0",
            "percentage",
        ),
    ],
)
def test_errors_name_key_path_value_and_unit(
    options: dict[str, Any], key: str, value: str, unit: str
) -> None:
    """A duration or percentage error names the full key path, the value and the unit."""
    with pytest.raises(ValueError, match=r"must be") as caught:
        build(**options)
    message = str(caught.value)
    assert message.startswith(f"{ROOT}{key} must be ")
    assert message.endswith(f"got {value}")
    assert unit in message.split(" must be ", 1)[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resetTimeoutMultiplier": 0.99}, "['resetTimeoutMultiplier'] must be 1 or more"),
        ({"resetTimeoutJitter": 1}, "['resetTimeoutJitter'] must be in [0, 1), got 1"),
        ({"resetTimeoutJitter": -0.1}, "['resetTimeoutJitter'] must be in [0, 1), got -0.1"),
        ({"lockoutDuration": -1}, "['lockoutDuration'] must be zero or more milliseconds"),
        ({"minimumNumberOfCalls": 0}, "['minimumNumberOfCalls'] must be at least 1, got 0"),
        ({"slidingWindowSize": 2.5}, "['slidingWindowSize'] must be a whole number, got 2.5"),
        (
            {"failureRateThreshold": 50, "slidingWindowSize": 10, "minimumNumberOfCalls": 11},
            "['minimumNumberOfCalls'] (11) cannot exceed slidingWindowSize (10)",
        ),
        (
            {"slowCallDuration": 100, "slidingWindowSize": 10, "minimumNumberOfCalls": 11},
            "['minimumNumberOfCalls'] (11) cannot exceed slidingWindowSize (10)",
        ),
    ],
)
def test_values_just_past_the_edges_are_refused(options: dict[str, Any], message: str) -> None:
    """The first value past each accepted edge is refused, naming the key and the value."""
    with pytest.raises((ValueError, TypeError)) as caught:
        build(**options)
    assert f"{ROOT}{message}" in str(caught.value)


def test_flag_true_false_and_dict() -> None:
    """The option may be True, False or a dict."""
    assert len(ccxt_breaker.kraken({"options": {"circuitBreaker": True}}).circuit_breakers) == 5
    assert len(ccxt_breaker.kraken({"options": {"circuitBreaker": False}}).circuit_breakers) == 0
    with pytest.raises(TypeError, match="must be a dict"):
        ccxt_breaker.kraken({"options": {"circuitBreaker": "on"}})


def test_instances_sharing_a_config_keep_their_own_state() -> None:
    """Two instances built from one config dict never share breaker state."""
    config: dict[str, Any] = {"options": {"circuitBreaker": {"failureThreshold": 1}}}
    first, second = ccxt_breaker.kraken(config), ccxt_breaker.kraken(config)
    first.circuit_breakers["public"].force_open()
    assert second.circuit_breakers["public"].state == "closed"
    assert config == {"options": {"circuitBreaker": {"failureThreshold": 1}}}
