"""ccxt_breaker.prometheus: the breakers' metrics, read at scrape time."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import ccxt
import ccxt.async_support
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from ccxt_breaker import CircuitBreaker
from ccxt_breaker._hook import BreakerMixin
from ccxt_breaker._registry import BreakerRegistry
from ccxt_breaker.prometheus import register
from ccxt_breaker.testing import FakeClock

from .exporters import (
    GROUPS,
    PAIRS,
    STATES,
    Build,
    closed_by_user,
    down,
    krakenx,
    ok,
    run,
)

OTHERS_OFF = {group: {"enabled": False} for group in GROUPS if group != "trading"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def samples(registry: CollectorRegistry, name: str, **where: str) -> dict[tuple[str, ...], float]:
    """The samples ``name`` whose labels include ``where``, keyed by their other labels'
    values (in the order exchange, account, group, then the metric's own)."""
    return {
        tuple(value for key, value in sample.labels.items() if key not in where): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and where.items() <= sample.labels.items()
    }


def group(registry: CollectorRegistry, name: str, group: str, **where: str) -> dict[Any, float]:
    """``samples()`` of kraken, account 'default', ``group``."""
    return samples(registry, name, exchange="kraken", account="default", group=group, **where)


def zero_transitions(**counts: int) -> dict[tuple[str, str], float]:
    """Every (from_state, to_state) pair at 0, but ``counts`` ('closed__open': 1)."""
    found = {tuple(key.split("__")): float(n) for key, n in counts.items()}
    return {pair: found.get(pair, 0.0) for pair in PAIRS}


# --- what is exported -----------------------------------------------------------------


async def test_a_new_exchange_shows_every_group_closed_and_at_zero(
    build: Build, registry: CollectorRegistry
) -> None:
    """Every group has its four metrics from registration on: closed, no call, no wait."""
    register(build(), registry=registry)
    assert samples(registry, "ccxt_breaker_state", exchange="kraken", account="default") == {
        (g, state): 1.0 if state == "closed" else 0.0 for g in GROUPS for state in STATES
    }
    calls = samples(registry, "ccxt_breaker_calls_total", exchange="kraken", account="default")
    assert calls == {
        (g, outcome): 0.0
        for g in GROUPS
        for outcome in ("success", "failure", "neutral", "rejected")
    }
    transitions = samples(
        registry, "ccxt_breaker_transitions_total", exchange="kraken", account="default"
    )
    assert transitions == {(g, *pair): 0.0 for g in GROUPS for pair in PAIRS}
    assert samples(registry, "ccxt_breaker_retry_after_seconds") == {
        ("kraken", "default", g): 0.0 for g in GROUPS
    }


async def test_the_text_exposition_of_an_open_circuit(
    build: Build, registry: CollectorRegistry
) -> None:
    """generate_latest() shows each family once, with its help, type and every series."""
    exchange = build(failureThreshold=2, groups=OTHERS_OFF)
    register(exchange, registry=registry)
    await run(exchange.circuit_breakers["trading"], ok, closed_by_user, down, down, ok)
    lines = [
        "# HELP ccxt_breaker_state State of the group's circuit: 1 for the current state, "
        "0 for the others",
        "# TYPE ccxt_breaker_state gauge",
        *(
            f'ccxt_breaker_state{{account="default",exchange="kraken",group="trading",'
            f'state="{state}"}} {value}'
            for state, value in (("closed", "0.0"), ("open", "1.0"), ("half_open", "0.0"))
        ),
        "# HELP ccxt_breaker_calls_total Calls through the group's breaker, by outcome: "
        "attempts that succeeded, failed or ended neutral, and calls rejected unsent",
        "# TYPE ccxt_breaker_calls_total counter",
        *(
            f'ccxt_breaker_calls_total{{account="default",exchange="kraken",group="trading",'
            f'outcome="{outcome}"}} {value}'
            for outcome, value in (
                ("success", "1.0"),
                ("failure", "2.0"),
                ("neutral", "1.0"),
                ("rejected", "1.0"),
            )
        ),
        "# HELP ccxt_breaker_transitions_total Changes of state of the group's circuit",
        "# TYPE ccxt_breaker_transitions_total counter",
        *(
            f'ccxt_breaker_transitions_total{{account="default",exchange="kraken",'
            f'from_state="{old}",group="trading",to_state="{new}"}} '
            f"{'1.0' if (old, new) == ('closed', 'open') else '0.0'}"
            for old, new in PAIRS
        ),
        "# HELP ccxt_breaker_retry_after_seconds Seconds until the group's circuit lets a "
        "call through: 0 while closed, +Inf while forced open",
        "# TYPE ccxt_breaker_retry_after_seconds gauge",
        'ccxt_breaker_retry_after_seconds{account="default",exchange="kraken",group="trading"}'
        " 30.0",
    ]
    assert generate_latest(registry).decode() == "\n".join(lines) + "\n"


async def test_the_openmetrics_exposition_parses(build: Build, registry: CollectorRegistry) -> None:
    """The OpenMetrics exposition, with the unit of retry_after and its +Inf, parses back."""
    exchange = build(groups=OTHERS_OFF)
    register(exchange, registry=registry)
    exchange.circuit_breakers["trading"].force_open()
    text = openmetrics_latest(registry).decode()
    assert text.endswith(
        'ccxt_breaker_retry_after_seconds{account="default",exchange="kraken",group="trading"}'
        " +Inf\n# EOF\n"
    )
    assert {f.name: (f.type, f.unit, len(f.samples)) for f in parse_openmetrics(text)} == {
        "ccxt_breaker_state": ("gauge", "", 3),
        "ccxt_breaker_calls": ("counter", "", 4),
        "ccxt_breaker_transitions": ("counter", "", 9),
        "ccxt_breaker_retry_after_seconds": ("gauge", "seconds", 1),
    }


async def test_values_are_read_at_each_scrape(
    build: Build, registry: CollectorRegistry, clock: FakeClock
) -> None:
    """Each scrape reads the breakers anew: counts, state and time left change between scrapes."""
    exchange = build(failureThreshold=2)
    register(exchange, registry=registry)
    trading = exchange.circuit_breakers["trading"]
    await run(trading, ok, down)
    assert group(registry, "ccxt_breaker_calls_total", "trading") == {
        ("success",): 1.0,
        ("failure",): 1.0,
        ("neutral",): 0.0,
        ("rejected",): 0.0,
    }
    await run(trading, down, ok, ok)  # opens, then two refusals
    clock.advance(12.5)
    assert group(registry, "ccxt_breaker_calls_total", "trading") == {
        ("success",): 1.0,
        ("failure",): 2.0,
        ("neutral",): 0.0,
        ("rejected",): 2.0,
    }
    assert group(registry, "ccxt_breaker_state", "trading") == {
        ("closed",): 0.0,
        ("open",): 1.0,
        ("half_open",): 0.0,
    }
    assert group(registry, "ccxt_breaker_retry_after_seconds", "trading") == {(): 17.5}


async def test_half_open_and_recovery(
    build: Build, registry: CollectorRegistry, clock: FakeClock
) -> None:
    """A probe shows half_open with no wait; closing again counts each transition."""
    exchange = build(failureThreshold=1, successThreshold=2)
    register(exchange, registry=registry)
    private = exchange.circuit_breakers["private"]
    await run(private, down)
    clock.advance(30)
    await run(private, ok)  # the first probe: half-open
    assert group(registry, "ccxt_breaker_state", "private") == {
        ("closed",): 0.0,
        ("open",): 0.0,
        ("half_open",): 1.0,
    }
    assert group(registry, "ccxt_breaker_retry_after_seconds", "private") == {(): 0.0}
    await run(private, ok)
    assert group(registry, "ccxt_breaker_state", "private") == {
        ("closed",): 1.0,
        ("open",): 0.0,
        ("half_open",): 0.0,
    }
    assert group(registry, "ccxt_breaker_transitions_total", "private") == zero_transitions(
        closed__open=1, open__half_open=1, half_open__closed=1
    )


async def test_a_forced_open_waits_without_end(build: Build, registry: CollectorRegistry) -> None:
    """While forced open, retry_after is +Inf (no time is known); reset() brings it to 0."""
    exchange = build()
    register(exchange, registry=registry)
    earn = exchange.circuit_breakers["earn"]
    earn.force_open()
    assert group(registry, "ccxt_breaker_retry_after_seconds", "earn") == {(): math.inf}
    assert group(registry, "ccxt_breaker_state", "earn")[("open",)] == 1.0
    assert "} +Inf\n" in generate_latest(registry).decode()
    earn.reset()
    assert group(registry, "ccxt_breaker_retry_after_seconds", "earn") == {(): 0.0}
    assert group(registry, "ccxt_breaker_transitions_total", "earn") == zero_transitions(
        closed__open=1, open__closed=1
    )


# --- several exchanges, accounts and registries ---------------------------------------


async def test_two_exchanges_and_two_accounts_in_one_registry(
    build: Build, registry: CollectorRegistry
) -> None:
    """Several exchanges and accounts share one registry, each family exposed once."""
    main, hedge, other = build(), build(), build(cls=krakenx)
    register(main, account="main", registry=registry)
    register(hedge, account="hedge", registry=registry)
    register(other, registry=registry)
    main.circuit_breakers["trading"].force_open()
    await run(hedge.circuit_breakers["public"], ok)
    open_ = samples(registry, "ccxt_breaker_state", state="open")
    assert {key for key, value in open_.items() if value} == {("kraken", "main", "trading")}
    assert set(open_) == {
        (exchange, account, g)
        for exchange, account in (("kraken", "main"), ("kraken", "hedge"), ("krakenx", "default"))
        for g in GROUPS
    }
    success = samples(registry, "ccxt_breaker_calls_total", outcome="success")
    assert {key for key, value in success.items() if value} == {("kraken", "hedge", "public")}
    text = generate_latest(registry).decode()
    for name in (
        "ccxt_breaker_state",
        "ccxt_breaker_calls_total",
        "ccxt_breaker_transitions_total",
        "ccxt_breaker_retry_after_seconds",
    ):
        assert text.count(f"# TYPE {name} ") == 1
    parsed = {f.name: len(f.samples) for f in text_string_to_metric_families(text)}
    assert parsed == {
        "ccxt_breaker_state": 3 * 5 * 3,
        "ccxt_breaker_calls": 3 * 5 * 4,
        "ccxt_breaker_transitions": 3 * 5 * 9,
        "ccxt_breaker_retry_after_seconds": 3 * 5,
    }


async def test_one_exchange_in_two_registries(build: Build) -> None:
    """An exchange may be registered in several registries, and unregistered from each."""
    exchange = build()
    first, second = CollectorRegistry(), CollectorRegistry()
    unregister_first = register(exchange, registry=first)
    register(exchange, registry=second)
    unregister_first()
    assert samples(first, "ccxt_breaker_retry_after_seconds") == {}
    assert len(samples(second, "ccxt_breaker_retry_after_seconds")) == 5


async def test_the_default_registry(build: Build) -> None:
    """Without registry=, the exchange goes to prometheus_client's REGISTRY."""
    unregister = register(build(), account="default-registry-test")
    try:
        retry = samples(
            prometheus_client.REGISTRY,
            "ccxt_breaker_retry_after_seconds",
            account="default-registry-test",
        )
        assert retry == {("kraken", g): 0.0 for g in GROUPS}
    finally:
        unregister()
    assert samples(prometheus_client.REGISTRY, "ccxt_breaker_state") == {}


async def test_unregister_removes_that_exchange_only_and_twice_is_harmless(
    build: Build, registry: CollectorRegistry
) -> None:
    """unregister() drops its exchange only; the last one out takes the collector along."""
    first, second = build(), build()
    unregister_first = register(first, account="first", registry=registry)
    unregister_second = register(second, account="second", registry=registry)
    unregister_first()
    unregister_first()
    accounts = {key[1] for key in samples(registry, "ccxt_breaker_retry_after_seconds")}
    assert accounts == {"second"}
    unregister_second()
    assert list(registry.collect()) == []
    register(first, account="first", registry=registry)
    assert len(samples(registry, "ccxt_breaker_retry_after_seconds")) == 5


async def test_registering_an_exchange_twice_names_it(
    build: Build, registry: CollectorRegistry
) -> None:
    """Registering one exchange twice in a registry is a ValueError naming its id and account."""
    exchange = build()
    register(exchange, account="main", registry=registry)
    for account in ("main", "other"):
        with pytest.raises(ValueError, match=r"^kraken account 'main' is already registered") as e:
            register(exchange, account=account, registry=registry)
        assert str(e.value) == (
            "kraken account 'main' is already registered in this CollectorRegistry; call the "
            "function that register() returned to unregister it first"
        )
    assert {key[1] for key in samples(registry, "ccxt_breaker_retry_after_seconds")} == {"main"}


async def test_two_exchanges_under_the_same_labels_are_refused(
    build: Build, registry: CollectorRegistry
) -> None:
    """Another exchange with the same ccxt id and account would duplicate every series."""
    register(build(), registry=registry)
    with pytest.raises(ValueError, match=r"^another exchange") as e:
        register(build(), registry=registry)
    assert str(e.value) == (
        "another exchange is already registered in this CollectorRegistry as kraken account "
        "'default': pass account= to tell the two apart"
    )


async def test_a_copy_sharing_the_breakers_is_refused(
    build: Build, registry: CollectorRegistry
) -> None:
    """copy.copy(exchange) shares its breakers: registered too, it would count them twice."""
    exchange = build()
    register(exchange, registry=registry)
    with pytest.raises(ValueError, match="shares its breakers with kraken account 'default'"):
        register(copy.copy(exchange), account="copy", registry=registry)


async def test_a_name_clash_leaves_nothing_registered(
    build: Build, registry: CollectorRegistry
) -> None:
    """A clash with a metric of the registry leaves nothing behind: register() may try again."""
    clash = prometheus_client.Gauge("ccxt_breaker_state", "mine", registry=registry)
    exchange = build()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(exchange, registry=registry)
    registry.unregister(clash)
    register(exchange, registry=registry)
    assert len(samples(registry, "ccxt_breaker_state")) == 15


# --- the account label ------------------------------------------------------------------


async def test_the_account_defaults_to_the_configured_name(
    build: Build, registry: CollectorRegistry
) -> None:
    """Without account=, the breakers' `name` labels the series; without a name, 'default'."""
    register(build(name="market-maker"), registry=registry)
    register(build(cls=krakenx), registry=registry)
    assert {key[:2] for key in samples(registry, "ccxt_breaker_retry_after_seconds")} == {
        ("kraken", "market-maker"),
        ("krakenx", "default"),
    }


async def test_the_account_never_holds_a_credential(
    build: Build, registry: CollectorRegistry
) -> None:
    """An account containing the API key is refused, and the message does not repeat it."""
    exchange = build()
    with pytest.raises(ValueError, match="must not contain a credential") as e:
        register(exchange, account=f"bot-{exchange.apiKey}", registry=registry)
    assert exchange.apiKey not in str(e.value)
    assert list(registry.collect()) == []


async def test_the_account_is_a_non_empty_str(build: Build, registry: CollectorRegistry) -> None:
    """account='' is a ValueError, a non-str account a TypeError."""
    exchange = build()
    with pytest.raises(ValueError, match="account must not be empty"):
        register(exchange, account="", registry=registry)
    with pytest.raises(TypeError, match="account must be a str, not int"):
        register(exchange, account=7, registry=registry)  # type: ignore[arg-type]


# --- what register() takes ------------------------------------------------------------


async def test_only_an_exchange_is_taken(build: Build, registry: CollectorRegistry) -> None:
    """Passing the breakers rather than the exchange is a TypeError that says so."""
    with pytest.raises(
        TypeError, match=r"^register\(\) takes a ccxt exchange .* not BreakerRegistry"
    ):
        register(build().circuit_breakers, registry=registry)


@pytest.mark.parametrize(
    "make",
    [
        lambda build: build(breaker=False),
        lambda build: build(cls=ccxt.async_support.kraken, breaker=False),
        lambda build: build(cls=ccxt.async_support.kraken),  # no install(): the flag unread
    ],
    ids=["flag-off", "plain-ccxt", "plain-ccxt-with-flag"],
)
async def test_an_exchange_without_breakers_exports_no_series(
    build: Build, registry: CollectorRegistry, make: Callable[[Build], Any]
) -> None:
    """An exchange without breakers registers, and its families hold no sample."""
    register(make(build), registry=registry)
    assert [(f.name, f.samples) for f in registry.collect()] == [
        ("ccxt_breaker_state", []),
        ("ccxt_breaker_calls", []),
        ("ccxt_breaker_transitions", []),
        ("ccxt_breaker_retry_after_seconds", []),
    ]


# --- the hot path -----------------------------------------------------------------------


def _identities(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {key: id(value) for key, value in mapping.items()}


def _picture(exchange: Any) -> list[Any]:
    """What the hot path is made of: the exchange's attributes, its breakers' (their
    listeners among them), and the methods of the hook, the breaker and the registry."""
    breakers = exchange.circuit_breakers
    return [
        type(exchange),
        _identities(vars(exchange)),
        _identities(vars(breakers)),
        *(
            _identities({s: getattr(b, s) for s in CircuitBreaker.__slots__})
            for b in breakers.values()
        ),
        *(_identities(vars(cls)) for cls in (BreakerMixin, CircuitBreaker, BreakerRegistry)),
    ]


async def test_registering_adds_nothing_to_the_hot_path(
    build: Build, registry: CollectorRegistry
) -> None:
    """register() and scrapes change no attribute, listener or method of the hot path."""
    exchange = build()
    before = _picture(exchange)
    register(exchange, registry=registry)
    generate_latest(registry)
    assert _picture(exchange) == before
    assert all(b._listeners == () for b in exchange.circuit_breakers.values())


def test_a_scrape_in_another_thread_meets_no_breaker_changing_under_it(
    build: Build, registry: CollectorRegistry
) -> None:
    """A scrape from the HTTP server's thread while the loop's thread changes the breakers
    (transitions, history, new endpoints) raises nothing."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can
    try:
        exchange = build(historySize=50)
        register(exchange, registry=registry)
        breaker = exchange.circuit_breakers["trading"]
        done = threading.Event()
        errors: list[BaseException] = []

        def scrape() -> None:
            while not done.is_set():
                try:
                    generate_latest(registry)
                    exchange.circuit_breakers.history()
                except BaseException as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=scrape)
        thread.start()
        try:
            for i in range(20_000):
                breaker.force_open() if i % 2 else breaker.reset()
                breaker._counters(f"Path{i % 500}")
        finally:
            done.set()
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


# --- the extra --------------------------------------------------------------------------


def test_without_prometheus_client_the_import_says_what_to_install() -> None:
    """Without prometheus-client, the import fails naming the extra's pip command."""
    script = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n"
        "    import ccxt_breaker.prometheus\n"
        "except ModuleNotFoundError as e:\n"
        "    print(type(e).__name__, e.name, '|', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "ModuleNotFoundError prometheus_client | ccxt_breaker.prometheus needs "
        "prometheus-client: pip install 'ccxt-breaker[prometheus]'\n"
    )
