"""End to end: every Kraken failure mode, through real ccxt, against the simulator.

Each row of ``MATRIX`` is one failure mode: what the simulator does, the call a bot makes,
the ccxt exception the caller sees (``None`` when ccxt returns silently), the breaker's
verdict and the group it lands in.  For every row the test checks that

1. the caller sees exactly what plain ``ccxt.async_support.kraken`` shows for the same
   fault (same type, same message);
2. only the row's groups open (a named limit opens its documented scope; every other
   group keeps sending);
3. nothing reaches the simulator while a circuit is open;
4. the group closes again once the fault clears and the open time has passed.

Success and neutral rows instead show that the group stays closed, and that a success
ends a run of failures while a neutral answer leaves it as it was.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import ccxt
import ccxt.async_support
import pytest

import ccxt_breaker
from ccxt_breaker.testing import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    GROUPS,
    FakeClock,
    Fault,
    KrakenSimulator,
    SystemStatus,
)
from ccxt_breaker.testing.plugin import KrakenFactory

PLAIN_KEY = "plain-ccxt-key"  # plain ccxt signs with its own key: nonces and books stay apart
THRESHOLD = 2  # failureThreshold
RESET = 10.0  # resetTimeout, seconds
LOCKOUT = 120.0  # lockoutDuration, seconds
TIMEOUT_MS = 300  # ccxt's timeout; latency faults last well beyond it
SLOW = 1.0
T0 = FakeClock().time()  # the wall time every test starts at
KEYED = frozenset({"private", "trading", "funding", "earn"})  # every group that signs
REST = frozenset({"private", "funding", "earn"})  # the per-key REST counter

Verdict = Literal["failure", "success", "neutral"]
Raises = type[BaseException] | tuple[type[BaseException], ...] | None
Outcome = tuple[type[BaseException] | None, Any]


@dataclass(frozen=True)
class Call:
    """A call a bot makes, and the Kraken endpoint it reaches."""

    endpoint: str
    run: Callable[[Any], Awaitable[Any]]


CALLS: dict[str, Call] = {
    "fetch_ticker": Call("Ticker", lambda ex: ex.fetch_ticker("BTC/USD")),
    # the raw implicit call: ccxt 4.5.0's fetch_ticker hits a TypeError on a 200 HTML body
    "publicGetTicker": Call("Ticker", lambda ex: ex.publicGetTicker({"pair": "XXBTZUSD"})),
    "fetch_status": Call("SystemStatus", lambda ex: ex.fetch_status()),
    "fetch_balance": Call("BalanceEx", lambda ex: ex.fetch_balance()),
    "privatePostBalanceEx": Call("BalanceEx", lambda ex: ex.privatePostBalanceEx()),
    "create_order": Call(
        "AddOrder", lambda ex: ex.create_order("BTC/USD", "limit", "buy", 0.01, 40_000)
    ),
    "create_tiny_order": Call(
        "AddOrder", lambda ex: ex.create_order("BTC/USD", "market", "buy", 0.00001)
    ),
    "cancel_order": Call("CancelOrder", lambda ex: ex.cancel_order("OAAAAA-BBBBB-CCCCCC")),
    "privatePostDepositMethods": Call(
        "DepositMethods", lambda ex: ex.privatePostDepositMethods({"asset": "XBT"})
    ),
    "privatePostEarnAllocations": Call(
        "Earn/Allocations", lambda ex: ex.privatePostEarnAllocations()
    ),
}
# The call that stands for each group when the test knocks on a circuit.
PROBE = {
    "public": "fetch_ticker",
    "private": "fetch_balance",
    "trading": "create_order",
    "funding": "privatePostDepositMethods",
    "earn": "privatePostEarnAllocations",
}


@dataclass(frozen=True)
class Row:
    """One failure mode and everything the breaker promises about it."""

    id: str
    fault: Fault | SystemStatus | None  # a scripted fault, a system status, or nothing
    call: str  # a key of CALLS; the fault targets its endpoint
    raises: Raises  # what plain ccxt raises too; None: it returns
    verdict: Verdict
    group: str
    opens: frozenset[str] | None = None  # a named limit's scope; default: the row's group
    open_for: float | None = None  # a named limit: opens at once, for at least this long
    whole_group: bool = False  # the fault covers the whole group, not just the endpoint

    def opened(self) -> frozenset[str]:
        if self.verdict != "failure":
            return frozenset()
        return self.opens if self.opens is not None else frozenset({self.group})


E = Fault.kraken_error
NA, TIMEOUT, DDOS = ccxt.ExchangeNotAvailable, ccxt.RequestTimeout, ccxt.DDoSProtection
# ccxt 4.5.90 maps the market modes to OnMaintenance; 4.5.0 leaves a plain ExchangeError
MARKET_MODE = (ccxt.OnMaintenance, ccxt.ExchangeError)

MATRIX = [
    # --- the exchange is down: failure, the caller's group opens after THRESHOLD -------
    Row("http-500", Fault.http(500), "fetch_ticker", NA, "failure", "public"),
    Row("http-502", Fault.http(502), "fetch_balance", NA, "failure", "private"),
    Row("http-503", Fault.http(503), "create_order", NA, "failure", "trading"),
    Row("http-504", Fault.http(504), "fetch_ticker", TIMEOUT, "failure", "public"),
    Row("cloudflare-520", Fault.http(520), "fetch_balance", NA, "failure", "private"),
    Row("cloudflare-522", Fault.http(522), "fetch_ticker", NA, "failure", "public"),
    Row("latency-get", Fault.latency(SLOW), "fetch_ticker", TIMEOUT, "failure", "public"),
    Row("latency-post", Fault.latency(SLOW), "fetch_balance", TIMEOUT, "failure", "private"),
    # aiohttp resends a GET once after a disconnect: both attempts are dropped here
    Row("dropped-get", Fault.disconnect(), "fetch_ticker", NA, "failure", "public"),
    Row("dropped-post", Fault.disconnect(), "fetch_balance", NA, "failure", "private"),
    Row("truncated", Fault.truncated(), "fetch_ticker", ccxt.ExchangeError, "failure", "public"),
    Row("html-200", Fault.html(), "publicGetTicker", None, "failure", "public"),
    Row("empty-200", Fault.empty(), "privatePostBalanceEx", None, "failure", "private"),
    Row(
        "unavailable",
        E("EService:Unavailable"),
        "fetch_balance",
        NA,
        "failure",
        "private",
        whole_group=True,
    ),
    Row("busy", E("EService:Busy"), "create_order", NA, "failure", "trading"),
    Row(
        "internal",
        E("EGeneral:Internal error"),
        "privatePostDepositMethods",
        NA,
        "failure",
        "funding",
    ),
    Row(
        "database",
        E("EDatabase:Internal error"),
        "privatePostEarnAllocations",
        NA,
        "failure",
        "earn",
        whole_group=True,
    ),
    Row(
        "deadline",
        E("EService:Deadline elapsed"),
        "fetch_balance",
        ccxt.ExchangeError,
        "failure",
        "private",
    ),
    Row("maintenance", "maintenance", "fetch_balance", NA, "failure", "private"),
    Row("cancel-only", "cancel_only", "create_order", MARKET_MODE, "failure", "trading"),
    # --- limits the exchange names: open at once, for the documented scope and time -----
    Row(
        "rest-limit",
        E("EAPI:Rate limit exceeded"),
        "fetch_balance",
        DDOS,
        "failure",
        "private",
        opens=REST,
        open_for=RESET,
    ),
    Row(
        "order-limit",
        E("EOrder:Rate limit exceeded"),
        "create_order",
        DDOS,
        "failure",
        "trading",
        open_for=RESET,
    ),
    Row(
        "lockout",
        E("EGeneral:Temporary lockout"),
        "fetch_balance",
        DDOS,
        "failure",
        "private",
        opens=KEYED,
        open_for=LOCKOUT,
    ),
    Row(
        "lockout-on-order",
        E("EGeneral:Temporary lockout"),
        "create_order",
        DDOS,
        "failure",
        "trading",
        opens=KEYED,
        open_for=LOCKOUT,
    ),
    Row(
        "throttled",
        Fault.throttled(T0 + 45),
        "fetch_balance",
        ccxt.ExchangeError,
        "failure",
        "private",
        open_for=45,
    ),
    Row(
        "429-text",
        Fault.too_many_requests(30),
        "fetch_ticker",
        ccxt.RateLimitExceeded,
        "failure",
        "public",
        open_for=30,
    ),
    Row(
        "429-json",
        Fault.too_many_requests(40, error="EGeneral:Too many requests"),
        "create_order",
        DDOS,
        "failure",
        "trading",
        open_for=40,
    ),
    Row(
        "429-json-rest",
        Fault.too_many_requests(20, error="EAPI:Rate limit exceeded"),
        "privatePostDepositMethods",
        DDOS,
        "failure",
        "funding",
        opens=REST,
        open_for=20,
    ),
    # --- the exchange answered: success, however bad the news ---------------------------
    Row(
        "insufficient-funds",
        E("EOrder:Insufficient funds"),
        "create_order",
        ccxt.InsufficientFunds,
        "success",
        "trading",
    ),
    Row("order-minimum", None, "create_tiny_order", ccxt.InvalidOrder, "success", "trading"),
    Row("unknown-order", None, "cancel_order", ccxt.OrderNotFound, "success", "trading"),
    Row(
        "bad-arguments",
        E("EGeneral:Invalid arguments"),
        "fetch_balance",
        ccxt.BadRequest,
        "success",
        "private",
    ),
    Row(
        "invalid-key",
        E("EAPI:Invalid key"),
        "fetch_balance",
        ccxt.AuthenticationError,
        "success",
        "private",
    ),
    Row(
        "permission-denied",
        E("EGeneral:Permission denied"),
        "privatePostDepositMethods",
        ccxt.PermissionDenied,
        "success",
        "funding",
    ),
    Row(
        "invalid-pair",
        E("EQuery:Invalid asset pair"),
        "fetch_ticker",
        ccxt.BadSymbol,
        "success",
        "public",
    ),
    # an error string ccxt does not know stays a plain ExchangeError: still an answer
    Row(
        "invalid-signature",
        E("EAPI:Invalid signature"),
        "fetch_balance",
        ccxt.ExchangeError,
        "success",
        "private",
    ),
    Row("status-maintenance", "maintenance", "fetch_status", None, "success", "public"),
    # --- no evidence either way: neutral ------------------------------------------------
    Row(
        "invalid-nonce",
        E("EAPI:Invalid nonce"),
        "fetch_balance",
        ccxt.InvalidNonce,
        "neutral",
        "private",
    ),
    Row(
        "invalid-nonce-order",
        E("EAPI:Invalid nonce"),
        "create_order",
        ccxt.InvalidNonce,
        "neutral",
        "trading",
    ),
]


# --- harness ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[KrakenSimulator]:
    credentials = {DEFAULT_API_KEY: DEFAULT_SECRET, PLAIN_KEY: DEFAULT_SECRET}
    # the per-key counters stay off so that only the scripted faults speak
    async with KrakenSimulator(
        credentials=credentials, rate_limits=False, clock=clock.monotonic, wall_clock=clock.time
    ) as simulator:
        yield simulator


@pytest.fixture
async def factory(sim: KrakenSimulator) -> AsyncIterator[KrakenFactory]:
    made = KrakenFactory(sim)
    yield made
    await made.close_all()


def breaker_config(clock: FakeClock, **extra: Any) -> dict[str, Any]:
    return {
        "failureThreshold": THRESHOLD,
        "resetTimeout": RESET * 1000,
        "lockoutDuration": LOCKOUT * 1000,
        "clock": clock,
        **extra,
    }


async def exchanges(
    factory: KrakenFactory, clock: FakeClock, options: dict[str, Any] | None = None, **breaker: Any
) -> tuple[Any, ccxt_breaker.kraken]:
    """Plain ccxt and ccxt_breaker side by side on one simulator, markets loaded."""
    common = {"enableRateLimit": False, "timeout": TIMEOUT_MS}
    plain = factory(
        {**common, "apiKey": PLAIN_KEY, "options": dict(options or {})},
        cls=ccxt.async_support.kraken,
    )
    guarded = factory(
        {
            **common,
            "options": {**(options or {}), "circuitBreaker": breaker_config(clock, **breaker)},
        }
    )
    await plain.load_markets()
    await guarded.load_markets()
    return plain, guarded


def normalise(message: str) -> str:
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", message)


async def outcome(exchange: Any, call: str) -> Outcome:
    """``(type, message)`` of what the call raised, or ``(None, result)``."""
    try:
        result = await CALLS[call].run(exchange)
    except Exception as exc:  # the row says which
        return type(exc), normalise(str(exc))
    return None, result


def inject(sim: KrakenSimulator, row: Row) -> None:
    if isinstance(row.fault, Fault) and row.whole_group:
        sim.faults.add(row.fault, group=row.group)  # type: ignore[arg-type]  # a GROUPS name
    elif isinstance(row.fault, Fault):
        sim.faults.add(row.fault, endpoint=CALLS[row.call].endpoint)
    elif row.fault is not None:
        sim.status = row.fault


def heal(sim: KrakenSimulator) -> None:
    sim.clear_faults()
    sim.status = "online"


def open_groups(exchange: ccxt_breaker.kraken) -> set[str]:
    return {g for g, b in exchange.circuit_breakers.items() if b.state != "closed"}


def is_expected_kind(seen: type[BaseException] | None, raises: Raises) -> bool:
    if raises is None:
        return seen is None
    return seen in (raises if isinstance(raises, tuple) else (raises,))


async def assert_refused_unsent(
    exchange: ccxt_breaker.kraken,
    sim: KrakenSimulator,
    groups: frozenset[str],
    calls: dict[str, str] = PROBE,
) -> None:
    """A call to each of ``groups`` raises CircuitOpenError, and no request goes out."""
    for group in sorted(groups):
        before = sim.count()
        with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
            await CALLS[calls[group]].run(exchange)
        assert (caught.value.group, sim.count()) == (group, before)


async def probe_until_closed(exchange: ccxt_breaker.kraken, group: str) -> None:
    breaker = exchange.circuit_breakers[group]
    for _ in range(5):
        kind, _result = await outcome(exchange, PROBE[group])
        assert kind is not ccxt_breaker.CircuitOpenError
        if breaker.state == "closed":
            return
    raise AssertionError(f"{group} did not close: {breaker.snapshot()}")


def answered(result: Outcome) -> bool:
    """A result, or the simulator's "unknown method" for the funding and earn endpoints."""
    kind, value = result
    return kind is None or (kind is ccxt.ExchangeError and "EGeneral:Unknown method" in value)


# --- the matrix ------------------------------------------------------------------------


def test_matrix_is_wide_and_consistent() -> None:
    """The matrix covers 20+ failure modes, and every row's group is where its endpoint goes."""
    failure_rows = [r for r in MATRIX if r.verdict == "failure"]
    assert len(failure_rows) >= 20
    assert len({r.id for r in MATRIX}) == len(MATRIX)
    registry = ccxt_breaker.kraken().circuit_breakers
    assert {r.id: registry.group_of(CALLS[r.call].endpoint) for r in MATRIX} == {
        r.id: r.group for r in MATRIX
    }
    assert set(GROUPS) == set(PROBE) == set(registry)


@pytest.mark.parametrize("row", MATRIX, ids=[r.id for r in MATRIX])
async def test_fault_matrix(
    row: Row, sim: KrakenSimulator, factory: KrakenFactory, clock: FakeClock
) -> None:
    """Each mode: plain ccxt's error, its verdict in its groups only, nothing sent, recovery."""
    plain, guarded = await exchanges(factory, clock)
    breakers = guarded.circuit_breakers
    endpoint = CALLS[row.call].endpoint
    if row.verdict != "failure":
        # one real failure first: a success must end the run, a neutral answer must not
        sim.faults.add(Fault.http(503), endpoint=endpoint, times=1)
        assert (await outcome(guarded, row.call))[0] is ccxt.ExchangeNotAvailable
    inject(sim, row)

    # (1) the caller sees what plain ccxt shows for the same fault
    expected = await outcome(plain, row.call)
    assert is_expected_kind(expected[0], row.raises), expected
    if row.verdict != "failure":
        attempts = THRESHOLD + 1  # enough to open the group, were they counted as failures
    elif row.open_for is not None:
        attempts = 1  # a limit the exchange names opens at once
    else:
        attempts = THRESHOLD
    sent = sim.count()
    for _ in range(attempts):
        assert await outcome(guarded, row.call) == expected
    assert sim.count() > sent

    if row.verdict != "failure":
        # (2) nothing opens, and the run of failures is judged as documented
        assert open_groups(guarded) == set()
        snapshot = breakers[row.group].snapshot()
        counted = {"success": 0, "neutral": 1}[row.verdict]
        assert (snapshot["failure_count"], snapshot["failures"]) == (counted, 1)
        heal(sim)
        assert answered(await outcome(guarded, PROBE[row.group]))
        assert breakers[row.group].snapshot()["failure_count"] == 0
        return

    # (2) exactly the documented groups open; every other group still sends
    assert open_groups(guarded) == row.opened()
    for group in sorted(set(GROUPS) - row.opened()):
        before = sim.count()
        kind, _result = await outcome(guarded, PROBE[group])
        assert kind is not ccxt_breaker.CircuitOpenError
        assert sim.count() > before
    assert open_groups(guarded) == row.opened()

    # (3) while open, nothing reaches the simulator, up to the end of the open time
    calls = {**PROBE, row.group: row.call}
    await assert_refused_unsent(guarded, sim, row.opened(), calls)
    open_for = max(RESET, row.open_for or 0.0)
    clock.advance(open_for - 1)
    await assert_refused_unsent(guarded, sim, row.opened(), calls)

    # (4) once the fault clears and the open time passes, probes close every group
    heal(sim)
    clock.advance(2)
    for group in sorted(row.opened()):
        await probe_until_closed(guarded, group)
    assert open_groups(guarded) == set()
    assert answered(await outcome(guarded, row.call))


# --- orders ----------------------------------------------------------------------------


async def place(exchange: Any) -> Any:
    return await CALLS["create_order"].run(exchange)


@pytest.mark.parametrize("threshold", [1, 2])
async def test_timed_out_order_is_not_resent_once_open(
    sim: KrakenSimulator, factory: KrakenFactory, clock: FakeClock, threshold: int
) -> None:
    """With ccxt retries, a timed-out order stops going out once trading opens; caller: timeout."""
    retries = {"maxRetriesOnFailure": 3}
    plain, guarded = await exchanges(
        factory, clock, options=retries, groups={"trading": {"failureThreshold": threshold}}
    )
    sim.faults.add(Fault.latency(SLOW, applied=True), endpoint="AddOrder")

    with pytest.raises(ccxt.RequestTimeout):
        await place(plain)
    assert sim.count(endpoint="AddOrder") == 4  # plain ccxt sends every attempt
    # ccxt re-signs each attempt, so each one places the order; ccxt 4.5.0 resent the
    # same nonce, and Kraken refuses the copies with EAPI:Invalid nonce
    resigned = len(sim.orders(PLAIN_KEY)) == 4
    placed = threshold if resigned else 1

    sim.reset_log()
    with pytest.raises(ccxt.RequestTimeout) as caught:
        await place(guarded)
    assert type(caught.value) is ccxt.RequestTimeout
    assert (sim.count(endpoint="AddOrder"), len(sim.orders())) == (threshold, placed)
    assert guarded.circuit_breakers["trading"].state == "open"

    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await place(guarded)
    assert (sim.count(endpoint="AddOrder"), len(sim.orders())) == (threshold, placed)


async def test_refused_order_was_never_sent(
    sim: KrakenSimulator, factory: KrakenFactory, clock: FakeClock
) -> None:
    """In a flapping outage, CircuitOpenError from create_order means no AddOrder went out."""
    _, guarded = await exchanges(factory, clock, options={"maxRetriesOnFailure": 2})
    sim.faults.add(Fault.http(503), endpoint="AddOrder", probability=0.5, seed=3)
    sim.faults.add(Fault.disconnect(), endpoint="AddOrder", probability=0.3, seed=4)
    seen = {"refused": 0, "failed": 0, "placed": 0}
    for _ in range(60):
        before = sim.count(endpoint="AddOrder")
        try:
            await place(guarded)
        except ccxt_breaker.CircuitOpenError:
            assert sim.count(endpoint="AddOrder") == before
            seen["refused"] += 1
        except ccxt.ExchangeNotAvailable:
            assert sim.count(endpoint="AddOrder") > before
            seen["failed"] += 1
        else:
            assert sim.count(endpoint="AddOrder") > before
            seen["placed"] += 1
        clock.advance(RESET / 3)
    assert all(seen.values()), seen
    assert len(sim.orders()) == seen["placed"]
    assert open_groups(guarded) <= {"trading"}


# --- the simulator's own rate counter ------------------------------------------------------


async def test_rest_counter_opens_its_scope_and_decays(
    sim: KrakenSimulator, factory: KrakenFactory, clock: FakeClock
) -> None:
    """Draining Kraken's REST counter opens private, funding and earn only, until it decays."""
    sim.rate_limits = True
    _, guarded = await exchanges(factory, clock)
    for _ in range(15):  # Kraken's starter tier allows 15
        await guarded.fetch_balance()
    with pytest.raises(ccxt.DDoSProtection, match="EAPI:Rate limit exceeded"):
        await guarded.fetch_balance()
    assert open_groups(guarded) == REST
    assert (await outcome(guarded, "create_order"))[0] is None  # orders have their own limiter
    assert (await outcome(guarded, "fetch_ticker"))[0] is None
    await assert_refused_unsent(guarded, sim, REST)

    # at 0.33 a second the counter then has room for the six probes that close three groups
    clock.advance(3 * RESET)
    for group in sorted(REST):
        await probe_until_closed(guarded, group)
    assert open_groups(guarded) == set()
