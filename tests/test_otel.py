"""ccxt_breaker.otel: the breakers' metrics as observable instruments, read at collection."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    InMemoryMetricReader,
    Metric,
    Sum,
)

import ccxt_breaker
from ccxt_breaker import CircuitBreaker
from ccxt_breaker._hook import BreakerMixin
from ccxt_breaker._registry import BreakerRegistry
from ccxt_breaker.otel import instrument
from ccxt_breaker.testing import FakeClock

from .exporters import (
    GROUPS,
    OUTCOMES,
    PAIRS,
    STATES,
    Build,
    closed_by_user,
    down,
    krakenx,
    ok,
    run,
)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def metrics(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """One collection: every metric, by name."""
    data = reader.get_metrics_data()
    if data is None:  # no data point at all
        return {}
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(reader: InMemoryMetricReader, name: str, **where: str) -> dict[tuple[Any, ...], Any]:
    """One collection: the data points of ``name`` whose attributes include ``where``,
    keyed by their other attributes' values (exchange, account, group, then its own)."""
    metric = metrics(reader).get(name)
    if metric is None:
        return {}
    return {
        tuple(v for k, v in point.attributes.items() if k not in where): point.value
        for point in metric.data.data_points
        if where.items() <= point.attributes.items()
    }


def kraken(reader: InMemoryMetricReader, name: str, group: str) -> dict[Any, Any]:
    """``points()`` of kraken, account 'default', ``group``."""
    return points(reader, name, exchange="kraken", account="default", group=group)


# --- what is reported -----------------------------------------------------------------


async def test_instruments_names_units_and_kinds(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Four instruments: gauges for state and retry_after (s), cumulative sums for the counts."""
    instrument(build(), meter_provider=provider)
    data = reader.get_metrics_data()
    assert data is not None
    [resource] = data.resource_metrics
    [scope] = resource.scope_metrics
    assert scope.scope.name == "ccxt_breaker"
    assert scope.scope.version == ccxt_breaker.__version__
    kinds = {
        m.name: (
            m.unit,
            type(m.data).__name__,
            getattr(m.data, "is_monotonic", None),
            getattr(m.data, "aggregation_temporality", None),
        )
        for m in scope.metrics
    }
    cumulative = AggregationTemporality.CUMULATIVE
    assert kinds == {
        "ccxt_breaker.state": ("1", Gauge.__name__, None, None),
        "ccxt_breaker.calls": ("{call}", Sum.__name__, True, cumulative),
        "ccxt_breaker.transitions": ("{transition}", Sum.__name__, True, cumulative),
        "ccxt_breaker.retry_after": ("s", Gauge.__name__, None, None),
    }


async def test_a_new_exchange_reports_every_group_closed_and_at_zero(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Every group reports from the start: closed, no call, no transition, no wait."""
    instrument(build(), meter_provider=provider)
    found = {name: points(reader, f"ccxt_breaker.{name}") for name in ("state", "calls")}
    assert found["state"] == {
        ("kraken", "default", g, state): int(state == "closed") for g in GROUPS for state in STATES
    }
    assert found["calls"] == {("kraken", "default", g, o): 0 for g in GROUPS for o in OUTCOMES}
    assert points(reader, "ccxt_breaker.transitions") == {
        ("kraken", "default", g, *pair): 0 for g in GROUPS for pair in PAIRS
    }
    assert points(reader, "ccxt_breaker.retry_after") == {
        ("kraken", "default", g): 0.0 for g in GROUPS
    }


async def test_an_open_circuit_and_its_counts(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader, clock: FakeClock
) -> None:
    """Outcomes, the state, the transition and the time left are read at each collection."""
    exchange = build(failureThreshold=2)
    instrument(exchange, meter_provider=provider)
    trading = exchange.circuit_breakers["trading"]
    await run(trading, ok, closed_by_user, down)
    assert kraken(reader, "ccxt_breaker.calls", "trading") == {
        ("success",): 1,
        ("failure",): 1,
        ("neutral",): 1,
        ("rejected",): 0,
    }
    await run(trading, down, ok)
    clock.advance(10)
    assert kraken(reader, "ccxt_breaker.calls", "trading") == {
        ("success",): 1,
        ("failure",): 2,
        ("neutral",): 1,
        ("rejected",): 1,
    }
    assert kraken(reader, "ccxt_breaker.state", "trading") == {
        ("closed",): 0,
        ("open",): 1,
        ("half_open",): 0,
    }
    assert kraken(reader, "ccxt_breaker.transitions", "trading") == {
        pair: int(pair == ("closed", "open")) for pair in PAIRS
    }
    assert kraken(reader, "ccxt_breaker.retry_after", "trading") == {(): 20.0}


async def test_a_forced_open_reports_no_retry_after(
    build: Build,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While forced open, retry_after has no data point (the SDK drops +Inf) and no warning."""
    exchange = build()
    instrument(exchange, meter_provider=provider)
    exchange.circuit_breakers["funding"].force_open()
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        retry = points(reader, "ccxt_breaker.retry_after")
    assert retry == {("kraken", "default", g): 0.0 for g in GROUPS if g != "funding"}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
    assert kraken(reader, "ccxt_breaker.state", "funding")[("open",)] == 1
    exchange.circuit_breakers["funding"].reset()
    assert kraken(reader, "ccxt_breaker.retry_after", "funding") == {(): 0.0}


# --- several exchanges, accounts and providers ----------------------------------------


async def test_two_exchanges_and_two_accounts_on_one_provider(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Each exchange's data points carry its ccxt id and account, in one set of instruments."""
    main, hedge, other = build(), build(), build(cls=krakenx)
    instrument(main, account="main", meter_provider=provider)
    instrument(hedge, account="hedge", meter_provider=provider)
    instrument(other, meter_provider=provider)
    main.circuit_breakers["trading"].force_open()
    await run(hedge.circuit_breakers["public"], ok)
    state = points(reader, "ccxt_breaker.state", state="open")
    assert {key for key, value in state.items() if value} == {("kraken", "main", "trading")}
    assert set(state) == {
        (exchange, account, g)
        for exchange, account in (("kraken", "main"), ("kraken", "hedge"), ("krakenx", "default"))
        for g in GROUPS
    }
    success = points(reader, "ccxt_breaker.calls", outcome="success")
    assert {key for key, value in success.items() if value} == {("kraken", "hedge", "public")}
    assert {name: len(m.data.data_points) for name, m in metrics(reader).items()} == {
        "ccxt_breaker.state": 3 * 5 * 3,
        "ccxt_breaker.calls": 3 * 5 * 4,
        "ccxt_breaker.transitions": 3 * 5 * 9,
        "ccxt_breaker.retry_after": 3 * 5 - 1,  # trading of main is forced open
    }


async def test_one_exchange_on_two_providers(build: Build) -> None:
    """An exchange may be instrumented on several providers, and stopped on each."""
    exchange = build()
    readers = InMemoryMetricReader(), InMemoryMetricReader()
    providers = [MeterProvider(metric_readers=[reader]) for reader in readers]
    stop_first = instrument(exchange, meter_provider=providers[0])
    instrument(exchange, meter_provider=providers[1])
    stop_first()
    assert metrics(readers[0]) == {}
    assert len(points(readers[1], "ccxt_breaker.retry_after")) == 5
    for provider in providers:
        provider.shutdown()


async def test_stop_removes_that_exchange_only_and_twice_is_harmless(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """stop() drops its exchange only; a later instrument() reports through the same instruments."""
    first, second = build(), build()
    stop_first = instrument(first, account="first", meter_provider=provider)
    stop_second = instrument(second, account="second", meter_provider=provider)
    stop_first()
    stop_first()
    assert {key[1] for key in points(reader, "ccxt_breaker.retry_after")} == {"second"}
    stop_second()
    assert metrics(reader) == {}
    instrument(first, account="again", meter_provider=provider)
    assert {key[1] for key in points(reader, "ccxt_breaker.state")} == {"again"}


async def test_instrumenting_an_exchange_twice_names_it(
    build: Build, provider: MeterProvider
) -> None:
    """A second instrument() of an exchange, or of its labels, is a ValueError naming them."""
    exchange = build()
    instrument(exchange, account="main", meter_provider=provider)
    with pytest.raises(ValueError, match=r"^kraken account 'main' is already") as e:
        instrument(exchange, account="other", meter_provider=provider)
    assert str(e.value) == (
        "kraken account 'main' is already instrumented on this MeterProvider; call the "
        "function that instrument() returned to stop it first"
    )
    with pytest.raises(ValueError, match=r"^another exchange") as e:
        instrument(build(), account="main", meter_provider=provider)
    assert str(e.value) == (
        "another exchange is already instrumented on this MeterProvider as kraken account "
        "'main': pass account= to tell the two apart"
    )


def test_the_global_meter_provider() -> None:
    """Without meter_provider=, the global provider reports, whether set before or after."""
    script = """
import asyncio, ccxt_breaker
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from ccxt_breaker.otel import instrument

async def main():
    before, after = ccxt_breaker.kraken(), ccxt_breaker.kraken()
    instrument(before, account="before")
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    instrument(after, account="after")
    data = reader.get_metrics_data()
    found = {
        (m.name, p.attributes["account"])
        for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
        for p in m.data.data_points
    }
    print(sorted(found))
    await before.close(); await after.close()

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = ["calls", "retry_after", "state", "transitions"]
    expected = sorted((f"ccxt_breaker.{n}", a) for n in names for a in ("after", "before"))
    assert out.stdout == f"{expected}\n"


# --- what instrument() takes ------------------------------------------------------------


async def test_only_an_exchange_is_taken(build: Build, provider: MeterProvider) -> None:
    """Passing the breakers rather than the exchange is a TypeError that says so."""
    with pytest.raises(TypeError, match=r"^instrument\(\) takes a ccxt exchange .* not Break"):
        instrument(build().circuit_breakers, meter_provider=provider)


async def test_an_exchange_without_breakers_reports_nothing(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """An exchange without breakers is accepted and has no data point."""
    exchange = ccxt_breaker.kraken({"options": {"circuitBreaker": False}})
    try:
        instrument(exchange, meter_provider=provider)
        assert metrics(reader) == {}
    finally:
        await exchange.close()


async def test_the_account_defaults_to_the_configured_name_and_holds_no_credential(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Without account=, the breakers' `name` is the account; the API key never is."""
    exchange = build(name="market-maker")
    with pytest.raises(ValueError, match="must not contain a credential") as e:
        instrument(exchange, account=exchange.apiKey, meter_provider=provider)
    assert exchange.apiKey not in str(e.value)
    instrument(exchange, meter_provider=provider)
    assert {key[:2] for key in points(reader, "ccxt_breaker.state")} == {("kraken", "market-maker")}


# --- the hot path -----------------------------------------------------------------------


def _identities(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {key: id(value) for key, value in mapping.items()}


def _picture(exchange: Any) -> list[Any]:
    """What the hot path is made of: the exchange's attributes, its breakers' (their
    listeners among them), and the methods of the hook, the breaker and the registry."""
    breakers = exchange.circuit_breakers
    slots = CircuitBreaker.__slots__
    return [
        type(exchange),
        _identities(vars(exchange)),
        _identities(vars(breakers)),
        *(_identities({s: getattr(b, s) for s in slots}) for b in breakers.values()),
        *(_identities(vars(cls)) for cls in (BreakerMixin, CircuitBreaker, BreakerRegistry)),
    ]


async def test_instrumenting_adds_nothing_to_the_hot_path(
    build: Build, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """instrument() and collections change no attribute, listener or method of the hot path."""
    exchange = build()
    before = _picture(exchange)
    instrument(exchange, meter_provider=provider)
    assert metrics(reader)
    assert _picture(exchange) == before
    assert all(b._listeners == () for b in exchange.circuit_breakers.values())


# --- the extra --------------------------------------------------------------------------


def test_without_opentelemetry_the_import_says_what_to_install() -> None:
    """Without opentelemetry-api, the import fails naming the extra's pip command."""
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import ccxt_breaker.otel\n"
        "except ModuleNotFoundError as e:\n"
        "    print(type(e).__name__, e.name, '|', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "ModuleNotFoundError opentelemetry | ccxt_breaker.otel needs opentelemetry-api: "
        "pip install 'ccxt-breaker[otel]'\n"
    )
