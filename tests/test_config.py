"""options['circuitBreaker']: keys, units, groups, endpoint moves, and clear errors."""

from __future__ import annotations

from typing import Any

import pytest

import ccxt_breaker


def build(**breaker: Any) -> ccxt_breaker.kraken:
    return ccxt_breaker.kraken({"options": {"circuitBreaker": breaker}})


def test_defaults() -> None:
    """Without options the documented defaults apply, in seconds inside the package."""
    config = ccxt_breaker.kraken().circuit_breakers["public"].config
    assert (config.failure_threshold, config.success_threshold, config.reset_timeout,
            config.half_open_max_calls, config.lockout_duration) == (5, 2, 30.0, 1, 900.0)


def test_camel_case_milliseconds_and_group_overrides() -> None:
    """Durations are milliseconds like ccxt's timeout; groups override the top level."""
    exchange = build(resetTimeout=5000, failureThreshold=3,
                     groups={"trading": {"failureThreshold": 1, "maxResetTimeout": 60_000}})
    breakers = exchange.circuit_breakers
    assert (breakers["public"].config.reset_timeout, breakers["public"].config.failure_threshold) \
        == (5.0, 3)
    trading = breakers["trading"].config
    assert (trading.reset_timeout, trading.failure_threshold, trading.max_reset_timeout) == (
        5.0, 1, 60.0)


def test_endpoint_moves_create_groups() -> None:
    """endpoints moves a path to another group; a new name makes a new breaker."""
    exchange = build(endpoints={"Ledgers": "history", "Ticker": "private"},
                     groups={"history": {"failureThreshold": 9}})
    breakers = exchange.circuit_breakers
    assert list(breakers) == ["public", "private", "trading", "funding", "earn", "history"]
    assert (breakers.group_of("Ledgers"), breakers.group_of("Ticker")) == ("history", "private")
    assert breakers["history"].config.failure_threshold == 9


@pytest.mark.parametrize(
    ("path", "group"),
    [("Ticker", "public"), ("360000292886", "public"), ("Balance", "private"),
     ("GetWebSocketsToken", "private"), ("AddOrder", "trading"),
     ("CancelAllOrdersAfter", "trading"),
     ("EditOrder", "trading"), ("DepositAddresses", "funding"), ("WithdrawCancel", "funding"),
     ("WalletTransfer", "funding"), ("CreateSubaccount", "funding"),
     ("AccountTransfer", "funding"), ("Earn/Allocate", "earn"), ("Earn/Strategies", "earn")],
)
def test_default_groups(path: str, group: str) -> None:
    """Every Kraken endpoint falls into the group of its failure domain."""
    assert ccxt_breaker.kraken().circuit_breakers.group_of(path) == group


def test_every_listed_endpoint_has_a_group() -> None:
    """group_of answers for every endpoint ccxt's describe() lists."""
    exchange = ccxt_breaker.kraken()
    paths = [p for section in exchange.describe()["api"].values()
             for methods in section.values() for p in methods]
    groups = {exchange.circuit_breakers.group_of(p) for p in paths}
    assert groups == {"public", "private", "trading", "funding", "earn"}


async def test_unknown_endpoint_falls_into_its_section() -> None:
    """An endpoint a later ccxt adds is routed by its API section and never raises."""
    registry = ccxt_breaker.kraken().circuit_breakers
    assert registry.route("NewThing", ["private"]).breaker is registry["private"]
    assert registry.route("NewPublicThing", ["public"]).breaker is registry["public"]
    assert registry.group_of("NewThing") == "private"


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
        ({"failureRateThreshold": 50, "slidingWindowSize": 5}, ValueError,
         "cannot exceed slidingWindowSize"),
        ({"groups": {"tradng": {}}}, ValueError, "did you mean 'trading'"),
        ({"groups": {"trading": {"resetTimout": 1}}}, ValueError,
         "['groups']['trading']['resetTimout']"),
        ({"groups": {"trading": {"groups": {}}}}, ValueError, "only valid at the top level"),
        ({"groups": []}, TypeError, "['groups'] must be a dict"),
        ({"endpoints": {"Tickr": "public"}}, ValueError, "did you mean 'Ticker'"),
        ({"endpoints": {"Ticker": 3}}, TypeError, "must be a group name"),
        ({"clock": object()}, TypeError, "monotonic() and time()"),
        ({"enabled": "yes"}, TypeError, "['enabled'] must be true or false"),
    ],
)
def test_bad_config_fails_at_construction(options: dict[str, Any], error: type[Exception],
                                          message: str) -> None:
    """A wrong type, an out-of-range value or an unknown key fails at construction, naming
    the key and the value, with a suggestion for a typo."""
    with pytest.raises(error) as caught:
        build(**options)
    assert message in str(caught.value)
    assert "options['circuitBreaker']" in str(caught.value)


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
