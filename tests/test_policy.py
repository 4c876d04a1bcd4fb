"""The verdict and Kraken's limit policy, as pure functions: no network, no event loop.

The README's "What counts as a failure" and "Limits open at once" tables are the
specification; each table here pins one column of them, plus the text and pickling of
``CircuitOpenError`` that a bot sees when a call is refused.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import pickle
import time
from typing import Any

import aiohttp
import ccxt
import pytest

from ccxt_breaker import CircuitOpenError
from ccxt_breaker._errors import Verdict, label, rejection, verdict
from ccxt_breaker._kraken import (
    CALL,
    KEY,
    MAX_NAMED_WAIT,
    ORDERS,
    PUBLIC,
    REST,
    SCOPES,
    _retry_after,
    _wait,
    domain,
    endpoint_table,
    group,
    is_outage,
    named_limit,
    section_default,
)

SUCCESS, FAILURE, NEUTRAL = Verdict.SUCCESS, Verdict.FAILURE, Verdict.NEUTRAL

# The exchange's wall clock in every limit test, and the configured lockoutDuration.
WALL = 1_700_000_000.0
LOCKOUT = 900.0


def kraken_error(code: str) -> str:
    """A message as ccxt words it for a Kraken JSON error."""
    return 'kraken {"error":["' + code + '"]}'


def http_date(offset: float) -> str:
    """An HTTP date (RFC 7231, GMT) ``offset`` seconds after the exchange's wall clock."""
    return email.utils.formatdate(WALL + offset, usegmt=True)


def caused(exc: BaseException, cause: BaseException) -> BaseException:
    """``exc`` as ``raise exc from cause`` leaves it."""
    exc.__cause__ = cause
    return exc


def contexted(exc: BaseException, context: BaseException) -> BaseException:
    """``exc`` raised while handling ``context``, without ``from``."""
    exc.__context__ = context
    return exc


# --- CircuitOpenError -----------------------------------------------------------------

ERROR = {"type": "ExchangeNotAvailable", "message": kraken_error("EService:Unavailable")}
FIELDS = ("trading", "AddOrder", 5.0, ERROR, "kraken")
NAMED = (*FIELDS, "market-maker")


def test_circuit_open_error_is_a_network_error() -> None:
    """Existing ``except ccxt.ExchangeNotAvailable`` / ``NetworkError`` handlers catch it."""
    assert issubclass(CircuitOpenError, ccxt.ExchangeNotAvailable)
    with pytest.raises(ccxt.NetworkError) as caught:
        raise CircuitOpenError(*FIELDS)
    assert type(caught.value) is CircuitOpenError


def test_fields_are_args_in_order() -> None:
    """The five fields are ``args`` in the documented order and read back as attributes."""
    error = CircuitOpenError("earn", "Earn/Allocate", 2.5, ERROR, "krakenx")
    assert error.args == ("earn", "Earn/Allocate", 2.5, ERROR, "krakenx")
    assert (
        error.group,
        error.endpoint,
        error.retry_after,
        error.last_error,
        error.exchange_id,
    ) == ("earn", "Earn/Allocate", 2.5, ERROR, "krakenx")


def test_defaults_build_a_forced_open_kraken_rejection() -> None:
    """``CircuitOpenError(group)`` alone: no endpoint, forced open, no cause, exchange kraken."""
    error = CircuitOpenError("public")
    assert error.args == ("public", None, None, None, "kraken")
    assert str(error) == (
        "kraken circuit 'public' is open: the call was not made, so it is safe to retry; "
        "it stays open until reset() (forced open)"
    )


def test_keyword_construction() -> None:
    """A bot's own tests can build one with keywords, as the README's field names say."""
    error = CircuitOpenError(
        group="funding",
        endpoint="Withdraw",
        retry_after=1.0,
        last_error=ERROR,
        exchange_id="kraken",
    )
    assert error.args == ("funding", "Withdraw", 1.0, ERROR, "kraken")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            ("trading", "AddOrder", 5.0, None, "kraken"),
            "kraken circuit 'trading' is open: AddOrder was not sent, so it is safe to retry; "
            "retry after 5 s",
            id="endpoint-and-wait",
        ),
        pytest.param(
            ("private", None, 27.4321, None, "kraken"),
            "kraken circuit 'private' is open: the call was not made, so it is safe to retry; "
            "retry after 27.4 s",
            id="async-with-has-no-endpoint",
        ),
        pytest.param(
            ("private", "", 0.0, None, "kraken"),
            "kraken circuit 'private' is open: the call was not made, so it is safe to retry; "
            "retry after 0 s",
            id="empty-endpoint-and-zero-wait",
        ),
        pytest.param(
            ("public", "Ticker", 1234.5, None, "kraken"),
            "kraken circuit 'public' is open: Ticker was not sent, so it is safe to retry; "
            "retry after 1.23e+03 s",
            id="three-significant-digits",
        ),
        pytest.param(
            ("trading", "AddOrder", None, None, "kraken"),
            "kraken circuit 'trading' is open: AddOrder was not sent, so it is safe to retry; "
            "it stays open until reset() (forced open)",
            id="forced-open",
        ),
        pytest.param(
            FIELDS,
            "kraken circuit 'trading' is open: AddOrder was not sent, so it is safe to retry; "
            "retry after 5 s",
            id="the-cause-stays-out",
        ),
        pytest.param(
            ("trading", None, None, ERROR, "kraken"),
            "kraken circuit 'trading' is open: the call was not made, so it is safe to retry; "
            "it stays open until reset() (forced open)",
            id="forced-open-with-cause",
        ),
        pytest.param(
            ("trading", "AddOrder", 5.0, {}, "kraken"),
            "kraken circuit 'trading' is open: AddOrder was not sent, so it is safe to retry; "
            "retry after 5 s",
            id="empty-cause-is-no-cause",
        ),
        pytest.param(
            ("my group", "Balance", 3.0, None, "krakenfutures"),
            "krakenfutures circuit 'my group' is open: Balance was not sent, so it is safe to "
            "retry; retry after 3 s",
            id="exchange-id-and-quoted-group",
        ),
        pytest.param(
            NAMED,
            "kraken[market-maker] circuit 'trading' is open: AddOrder was not sent, so it is "
            "safe to retry; retry after 5 s",
            id="named",
        ),
        pytest.param(
            ("earn", None, None, None, "krakenx", "arb 2"),
            "krakenx[arb 2] circuit 'earn' is open: the call was not made, so it is safe to "
            "retry; it stays open until reset() (forced open)",
            id="named-and-forced",
        ),
    ],
)
def test_message(fields: tuple[Any, ...], expected: str) -> None:
    """The message is one line: what was not sent, that a retry is safe, and when; the
    cause (a response body, perhaps) stays in last_error."""
    assert str(CircuitOpenError(*fields)) == expected


@pytest.mark.parametrize(
    ("fields", "args", "name"),
    [
        pytest.param(FIELDS, FIELDS, None, id="unnamed-five-args"),
        pytest.param((*FIELDS, None), FIELDS, None, id="name-None-five-args"),
        pytest.param(NAMED, NAMED, "market-maker", id="named-six-args"),
    ],
)
def test_name_is_a_sixth_field_only_when_given(
    fields: tuple[Any, ...], args: tuple[Any, ...], name: str | None
) -> None:
    """``name`` is ``args[5]`` when given, and an unnamed rejection keeps its five ``args``."""
    for error in (CircuitOpenError(*fields), rejection(*args)):
        assert (error.args, error.name, error.exchange_id) == (args, name, "kraken")
    keyword = CircuitOpenError("trading", "AddOrder", 5.0, ERROR, name=name)
    assert (keyword.args, keyword.name) == (args, name)


@pytest.mark.parametrize(
    ("exchange_id", "name", "expected"),
    [
        ("kraken", None, "kraken"),
        ("kraken", "", "kraken"),
        ("kraken", "market-maker", "kraken[market-maker]"),
        ("krakenfutures", "a b", "krakenfutures[a b]"),
    ],
)
def test_label(exchange_id: str, name: str | None, expected: str) -> None:
    """Log lines and messages name an exchange as ``id[name]``, or ``id`` without a name."""
    assert label(exchange_id, name) == expected


def test_repr_names_group_endpoint_and_wait() -> None:
    """``repr`` shows the constructor call of the first three fields."""
    assert repr(CircuitOpenError(*FIELDS)) == "CircuitOpenError('trading', 'AddOrder', 5.0)"
    assert repr(CircuitOpenError("public")) == "CircuitOpenError('public', None, None)"


def same(error: CircuitOpenError) -> tuple[Any, ...]:
    """Everything a caller can observe of a rejection."""
    return (
        type(error),
        error.args,
        error.group,
        error.endpoint,
        error.retry_after,
        error.last_error,
        error.exchange_id,
        error.name,
        str(error),
        repr(error),
    )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(FIELDS, id="full"),
        pytest.param(("public", None, None, None, "kraken"), id="forced-open"),
        pytest.param(NAMED, id="named"),
    ],
)
def test_rejection_equals_the_constructed_error(fields: tuple[Any, ...]) -> None:
    """``rejection`` (no __init__) builds an error indistinguishable from the constructor's."""
    assert same(rejection(*fields)) == same(CircuitOpenError(*fields))


@pytest.mark.parametrize(
    "build",
    [pytest.param(CircuitOpenError, id="constructed"), pytest.param(rejection, id="rejection")],
)
@pytest.mark.parametrize(
    "clone",
    [
        pytest.param(lambda error: pickle.loads(pickle.dumps(error)), id="pickle"),
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
    ],
)
@pytest.mark.parametrize(
    "fields", [pytest.param(FIELDS, id="unnamed"), pytest.param(NAMED, id="named")]
)
def test_pickles_and_copies(build: Any, clone: Any, fields: tuple[Any, ...]) -> None:
    """A rejection survives pickling (e.g. to a worker process) and copying, field for field."""
    error = build(*fields)
    assert same(clone(error)) == same(CircuitOpenError(*fields))


# --- verdict ----------------------------------------------------------------------------

# (exception, responded, verdict): the README's verdict table, as ccxt's hierarchy gives it.
VERDICTS = [
    # failure: the exchange is down, slow or overloaded, whatever ccxt saw
    *(
        pytest.param(exc, responded, FAILURE, id=f"{type(exc).__name__}-{responded}")
        for exc in (
            ccxt.NetworkError("kraken"),
            ccxt.ExchangeNotAvailable("kraken 520"),
            ccxt.OnMaintenance("kraken"),
            ccxt.RequestTimeout("kraken"),
            ccxt.DDoSProtection("kraken 429"),
            ccxt.RateLimitExceeded(kraken_error("EAPI:Rate limit exceeded")),
            ccxt.BadResponse("kraken"),
            ccxt.NullResponse("kraken"),
        )
        for responded in (True, False, None)
    ),
    # success: any other answer, business errors included
    *(
        pytest.param(exc, responded, SUCCESS, id=f"{type(exc).__name__}-{responded}")
        for exc in (
            ccxt.BaseError("kraken"),
            ccxt.ExchangeError(kraken_error("EGeneral:Invalid arguments")),
            ccxt.InvalidOrder("kraken"),
            ccxt.OrderNotFound("kraken"),
            ccxt.InsufficientFunds("kraken"),
            ccxt.BadRequest("kraken"),
            ccxt.BadSymbol("kraken"),
            ccxt.AuthenticationError("kraken"),
            ccxt.PermissionDenied("kraken"),
        )
        for responded in (True, None)
    ),
    # ...but a business error raised before anything was sent says nothing
    pytest.param(ccxt.ExchangeError("kraken"), False, NEUTRAL, id="ExchangeError-unsent"),
    pytest.param(ccxt.InvalidOrder("kraken"), False, NEUTRAL, id="InvalidOrder-unsent"),
    pytest.param(ccxt.BadSymbol("kraken"), False, NEUTRAL, id="BadSymbol-unsent"),
    # failure: a ccxt error caused by a transport error, answered or not
    *(
        pytest.param(
            caused(ccxt.ExchangeError("kraken"), cause),
            responded,
            FAILURE,
            id=f"ExchangeError-from-{type(cause).__name__}-{responded}",
        )
        for cause in (
            aiohttp.ClientPayloadError("truncated"),
            aiohttp.ServerDisconnectedError(),
            ConnectionResetError(),
            OSError(),
            TimeoutError(),
        )
        for responded in (True, False, None)
    ),
    pytest.param(
        caused(ccxt.BaseError("kraken"), aiohttp.ClientPayloadError("bad gzip")),
        True,
        FAILURE,
        id="BaseError-from-payload-error",
    ),
    # a cause that is no transport error leaves the business verdict alone
    pytest.param(
        caused(ccxt.ExchangeError("kraken"), ValueError("bad json")),
        True,
        SUCCESS,
        id="ExchangeError-from-ValueError",
    ),
    pytest.param(
        caused(ccxt.ExchangeError("kraken"), ValueError("bad json")),
        False,
        NEUTRAL,
        id="ExchangeError-from-ValueError-unsent",
    ),
    pytest.param(
        contexted(ccxt.InvalidOrder("kraken"), OSError()),
        True,
        SUCCESS,
        id="InvalidOrder-during-OSError-without-from",
    ),
    # neutral: no evidence either way
    *(
        pytest.param(exc, responded, NEUTRAL, id=f"{type(exc).__name__}-{responded}")
        for exc in (
            asyncio.CancelledError(),
            KeyboardInterrupt(),
            SystemExit(1),
            GeneratorExit(),
            BaseException("not an Exception"),
            CircuitOpenError(*FIELDS),
            rejection(*FIELDS),
            ccxt.InvalidNonce(kraken_error("EAPI:Invalid nonce")),
            ccxt.ExchangeClosedByUser("closed"),
            caused(ccxt.InvalidNonce("kraken"), OSError()),
            caused(ccxt.ExchangeClosedByUser("closed"), OSError()),
            ValueError("a bug in the bot"),
            KeyError("price"),
            RuntimeError(),
        )
        for responded in (True, False, None)
    ),
    # failure: bare transport errors, as when guarding a coroutine of one's own
    *(
        pytest.param(exc, None, FAILURE, id=f"bare-{type(exc).__name__}")
        for exc in (
            aiohttp.ClientConnectionError(),
            aiohttp.ClientPayloadError("truncated"),
            aiohttp.ClientResponseError(None, (), status=502),  # type: ignore[arg-type]
            ConnectionRefusedError(),
            OSError(),
            TimeoutError(),
        )
    ),
]


@pytest.mark.parametrize(("exc", "responded", "expected"), VERDICTS)
def test_verdict(exc: BaseException, responded: bool | None, expected: Verdict) -> None:
    """Each exception gets the verdict the README's table gives it."""
    assert verdict(exc, responded) is expected


def test_verdict_defaults_to_unknown_response() -> None:
    """Without ``responded`` (a guarded coroutine) a business error counts as an answer."""
    assert verdict(ccxt.InvalidOrder("kraken")) is SUCCESS


# --- endpoint groups and limit domains ------------------------------------------------


@pytest.mark.parametrize(
    ("section", "path", "expected_group", "expected_domain"),
    [
        ("public", "Time", "public", PUBLIC),
        ("public", "Ticker", "public", PUBLIC),
        ("public", "Depth", "public", PUBLIC),
        ("zendesk", "360000292886", "public", PUBLIC),
        # a public section keeps a path public even when it is spelt like a private one
        ("public", "AddOrder", "public", PUBLIC),
        ("public", "DepositMethods", "public", PUBLIC),
        ("public", "Earn/Strategies", "public", PUBLIC),
        *(
            ("private", path, "trading", ORDERS)
            for path in (
                "AddOrder",
                "AddOrderBatch",
                "AmendOrder",
                "EditOrder",
                "CancelOrder",
                "CancelAll",
                "CancelAllOrdersAfter",
                "CancelOrderBatch",
            )
        ),
        *(
            ("private", path, "funding", REST)
            for path in (
                "DepositMethods",
                "DepositAddresses",
                "DepositStatus",
                "WithdrawInfo",
                "Withdraw",
                "WithdrawStatus",
                "WithdrawCancel",
                "WalletTransfer",
                "AccountTransfer",
                "CreateSubaccount",
            )
        ),
        ("private", "Earn/Allocate", "earn", REST),
        ("private", "Earn/Allocations", "earn", REST),
        *(
            ("private", path, "private", REST)
            for path in (
                "Balance",
                "BalanceEx",
                "OpenOrders",
                "Ledgers",
                "GetWebSocketsToken",
                "CancelOrders",  # not a trading endpoint: only the listed names are
                "EarnAllocate",  # Earn/ needs its slash
                "MyDeposits",  # Deposit/Withdraw are prefixes, not substrings
                "Subaccounts",
            )
        ),
    ],
)
def test_group_and_domain(
    section: str, path: str, expected_group: str, expected_domain: str
) -> None:
    """Each endpoint falls in the README's group and in the limit domain of its limiter."""
    assert (group(section, path), domain(section, path)) == (expected_group, expected_domain)


@pytest.mark.parametrize(
    ("section", "expected"),
    [("private", "private"), ("public", "public"), ("zendesk", "public"), ("futures", "public")],
)
def test_section_default(section: str, expected: str) -> None:
    """An endpoint nobody listed goes private only from the private section."""
    assert section_default(section) == expected


def test_endpoint_table() -> None:
    """``describe()['api']`` becomes ``{path: (section, group, domain)}``, costs or lists."""
    api = {
        "zendesk": {"get": ["360000292886"]},
        "public": {"get": {"Time": 1, "Ticker": 1}, "post": {"AssetPairs": 1}},
        "private": {"post": {"AddOrder": 0, "Balance": 3, "Earn/Allocate": 3, "Withdraw": 3}},
    }
    assert endpoint_table(api) == {
        "360000292886": ("zendesk", "public", PUBLIC),
        "Time": ("public", "public", PUBLIC),
        "Ticker": ("public", "public", PUBLIC),
        "AssetPairs": ("public", "public", PUBLIC),
        "AddOrder": ("private", "trading", ORDERS),
        "Balance": ("private", "private", REST),
        "Earn/Allocate": ("private", "earn", REST),
        "Withdraw": ("private", "funding", REST),
    }


def test_endpoint_table_of_ccxt_kraken() -> None:
    """ccxt's own Kraken table puts the README's example endpoints in their groups."""
    table = endpoint_table(ccxt.kraken().describe()["api"])
    assert {path: table[path][1] for path in ("Ticker", "Balance", "AddOrder", "Withdraw")} == {
        "Ticker": "public",
        "Balance": "private",
        "AddOrder": "trading",
        "Withdraw": "funding",
    }


@pytest.mark.parametrize(
    ("scope", "closed"),
    [
        # a lockout bans the key: every signed group
        (KEY, {"private", "trading", "funding", "earn"}),
        # the per-key REST counter: everything signed but orders
        (REST, {"private", "funding", "earn"}),
        # the trading engine's per-pair limiter
        (ORDERS, {"trading"}),
    ],
)
def test_scope_closes_the_groups_of_its_domains(scope: str, closed: set[str]) -> None:
    """A named limit closes the README's groups, by the domains of their endpoints."""
    paths = {
        "public": ("public", "Ticker"),
        "private": ("private", "Balance"),
        "trading": ("private", "AddOrder"),
        "funding": ("private", "Withdraw"),
        "earn": ("private", "Earn/Allocate"),
    }
    assert {name for name, where in paths.items() if domain(*where) in SCOPES[scope]} == closed


# --- outages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "status", "expected"),
    [
        # Kraken's messages that ccxt leaves unclassified
        (kraken_error("EService:Throttled: 1700000060"), None, True),
        (kraken_error("EService:Throttled"), 200, True),
        (kraken_error("EService:Deadline elapsed"), None, True),
        (kraken_error("EService:Market in post_only mode"), 200, True),
        (kraken_error("EService:Market in cancel_only mode"), None, True),
        # business errors are answers
        (kraken_error("EGeneral:Invalid arguments"), None, False),
        (kraken_error("EOrder:Insufficient funds"), 200, False),
        ("", None, False),
        # the status alone: 429, and 500 through 599
        ("", 428, False),
        ("", 429, True),
        ("", 430, False),
        ("", 400, False),
        ("", 499, False),
        ("", 500, True),
        ("", 503, True),
        ("", 599, True),
        ("", 600, False),
        ("", 200, False),
        # either is enough
        (kraken_error("EService:Deadline elapsed"), 400, True),
        (kraken_error("EGeneral:Invalid arguments"), 520, True),
    ],
)
def test_is_outage(message: str, status: int | None, expected: bool) -> None:
    """Outage markers and HTTP 429/5xx turn an unclassified answer into a failure."""
    assert is_outage(message, status) is expected


def test_is_outage_status_defaults_to_unknown() -> None:
    """Without a status only the message decides."""
    assert (is_outage("EService:Deadline elapsed"), is_outage("EGeneral:Invalid")) == (
        True,
        False,
    )


# --- named waits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5.0, 0.0),
        (0.0, 0.0),
        (0.5, 0.5),
        (30.0, 30.0),
        (MAX_NAMED_WAIT - 0.5, MAX_NAMED_WAIT - 0.5),
        (MAX_NAMED_WAIT, MAX_NAMED_WAIT),
        (MAX_NAMED_WAIT + 0.5, MAX_NAMED_WAIT),
        (86_400.0 * 30, MAX_NAMED_WAIT),
    ],
)
def test_wait_is_clamped(seconds: float, expected: float) -> None:
    """A named wait counts from 0 up to one hour."""
    assert _wait(seconds) == expected


def test_max_named_wait_is_one_hour() -> None:
    """The README promises at most one hour for a wait the exchange names."""
    assert MAX_NAMED_WAIT == 3600.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # seconds
        ({"Retry-After": "30"}, 30.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "2.75"}, 2.75),
        ({"Retry-After": " 12 \r\n"}, 12.0),
        ({"Retry-After": "3600"}, MAX_NAMED_WAIT),
        ({"Retry-After": "3601"}, MAX_NAMED_WAIT),
        ({"Retry-After": "1e9"}, MAX_NAMED_WAIT),
        ({"Retry-After": "-5"}, 0.0),
        # an HTTP date counts from the exchange's wall clock
        ({"Retry-After": http_date(120)}, 120.0),
        ({"Retry-After": "  " + http_date(45) + " "}, 45.0),
        ({"Retry-After": http_date(-300)}, 0.0),
        ({"Retry-After": http_date(86_400)}, MAX_NAMED_WAIT),
        # the header name in any case, among other headers
        ({"retry-after": "7"}, 7.0),
        ({"RETRY-AFTER": "7"}, 7.0),
        ({"Content-Type": "application/json", "ReTry-AfTeR": "8"}, 8.0),
        # nothing usable: ignored
        (None, None),
        ({}, None),
        ({"Content-Type": "application/json"}, None),
        ({"Retry-After-Ms": "5"}, None),
        ({"X-Retry-After": "5"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "30s"}, None),
        ({"Retry-After": "Wed, 99 Foo"}, None),
        ({"Retry-After": "Wed, 21 Oct 99999 07:28:00 GMT"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "-inf"}, None),
        ({"Retry-After": "1e400"}, None),
        ({"Retry-After": "nan"}, None),
        # a value that is not a string at all
        ({"Retry-After": 30}, None),
        ({"Retry-After": 30.0}, None),
        ({"Retry-After": b"30"}, None),
        ({"Retry-After": None}, None),
    ],
)
def test_retry_after(headers: dict[str, Any] | None, expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date, clamped; anything else is ignored."""
    assert _retry_after(headers, WALL) == expected


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo", "UTC"])
@pytest.mark.parametrize(
    "date",
    [
        email.utils.formatdate(WALL + 120),  # "-0000": a date in UTC of unknown origin
        email.utils.formatdate(WALL + 120)[: -len(" -0000")],  # no zone at all
        email.utils.formatdate(WALL + 120, usegmt=True),
    ],
)
def test_retry_after_date_is_gmt_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str, date: str
) -> None:
    """An HTTP date without a zone (or with -0000) is GMT, not the machine's local time."""
    # as HTTP defines it
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert _retry_after({"Retry-After": date}, WALL) == 120.0
    finally:
        monkeypatch.undo()
        time.tzset()


# --- named limits ---------------------------------------------------------------------

RA_30 = {"Retry-After": "30"}
RA_1200 = {"Retry-After": "1200"}
THROTTLED_120 = kraken_error(f"EService:Throttled: {WALL + 120:.0f}")


@pytest.mark.parametrize(
    ("message", "status", "headers", "expected"),
    [
        # a lockout bans the key for at least lockoutDuration
        pytest.param(
            kraken_error("EGeneral:Temporary lockout"), 200, None, (KEY, LOCKOUT), id="lockout"
        ),
        pytest.param(
            kraken_error("EGeneral:Temporary lockout"),
            429,
            RA_30,
            (KEY, LOCKOUT),
            id="lockout-longer-than-retry-after",
        ),
        pytest.param(
            kraken_error("EGeneral:Temporary lockout"),
            200,
            RA_1200,
            (KEY, 1200.0),
            id="retry-after-longer-than-lockout",
        ),
        # the per-key REST counter and the order limiter name no time of their own
        pytest.param(
            kraken_error("EAPI:Rate limit exceeded"), 200, None, (REST, 0.0), id="rest-limit"
        ),
        pytest.param(
            kraken_error("EAPI:Rate limit exceeded"),
            429,
            RA_30,
            (REST, 30.0),
            id="rest-limit-retry-after",
        ),
        pytest.param(
            kraken_error("EOrder:Rate limit exceeded"), None, None, (ORDERS, 0.0), id="order-limit"
        ),
        pytest.param(
            kraken_error("EOrder:Rate limit exceeded"),
            200,
            {"Retry-After": http_date(90)},
            (ORDERS, 90.0),
            id="order-limit-retry-after-date",
        ),
        # EService:Throttled: <ts> closes the caller's group until ts
        pytest.param(THROTTLED_120, 200, None, (CALL, 120.0), id="throttled-until"),
        pytest.param(
            THROTTLED_120, 200, RA_30, (CALL, 120.0), id="throttled-longer-than-retry-after"
        ),
        pytest.param(
            THROTTLED_120,
            200,
            {"Retry-After": "300"},
            (CALL, 300.0),
            id="retry-after-longer-than-throttled",
        ),
        pytest.param(
            kraken_error(f"EService:Throttled:{WALL + 12.5}"),
            None,
            None,
            (CALL, 12.5),
            id="throttled-fractional-without-space",
        ),
        pytest.param(
            kraken_error(f"EService:Throttled: {WALL - 60:.0f}"),
            200,
            None,
            (CALL, 0.0),
            id="throttled-in-the-past-normal-open-time-only",
        ),
        pytest.param(
            kraken_error(f"EService:Throttled: {WALL + 86_400:.0f}"),
            200,
            None,
            (CALL, MAX_NAMED_WAIT),
            id="throttled-a-day-ahead-capped",
        ),
        pytest.param(
            kraken_error("EService:Throttled"), 200, None, None, id="throttled-without-timestamp"
        ),
        # HTTP 429 or EGeneral:Too many requests: the caller's group for Retry-After
        pytest.param("kraken 429", 429, None, (CALL, 0.0), id="429"),
        pytest.param("kraken 429", 429, RA_30, (CALL, 30.0), id="429-retry-after"),
        pytest.param(
            "kraken 429",
            429,
            {"retry-after": http_date(120)},
            (CALL, 120.0),
            id="429-retry-after-date",
        ),
        pytest.param(
            "kraken 429", 429, {"Retry-After": "soon"}, (CALL, 0.0), id="429-garbled-retry-after"
        ),
        pytest.param(
            kraken_error("EGeneral:Too many requests"),
            None,
            None,
            (CALL, 0.0),
            id="too-many-requests",
        ),
        pytest.param(
            kraken_error("EGeneral:Too many requests"),
            200,
            RA_30,
            (CALL, 30.0),
            id="too-many-requests-retry-after",
        ),
        # the first signal in the table's order decides
        pytest.param(
            kraken_error("EGeneral:Temporary lockout") + kraken_error("EAPI:Rate limit exceeded"),
            None,
            None,
            (KEY, LOCKOUT),
            id="lockout-before-rest-limit",
        ),
        pytest.param(
            kraken_error("EAPI:Rate limit exceeded") + kraken_error("EOrder:Rate limit exceeded"),
            None,
            None,
            (REST, 0.0),
            id="rest-limit-before-order-limit",
        ),
        pytest.param(
            kraken_error("EOrder:Rate limit exceeded"), 429, None, (ORDERS, 0.0), id="order-429"
        ),
        pytest.param(THROTTLED_120, 429, None, (CALL, 120.0), id="throttled-429"),
        # anything else opens nothing at once
        pytest.param("kraken 428", 428, RA_30, None, id="428"),
        pytest.param("kraken 430", 430, RA_30, None, id="430"),
        pytest.param("kraken 503", 503, RA_30, None, id="503-retry-after"),
        pytest.param(kraken_error("EService:Unavailable"), 200, RA_30, None, id="unavailable"),
        pytest.param(kraken_error("EGeneral:Invalid arguments"), None, None, None, id="business"),
        pytest.param("", None, None, None, id="empty"),
    ],
)
def test_named_limit(
    message: str,
    status: int | None,
    headers: dict[str, str] | None,
    expected: tuple[str, float] | None,
) -> None:
    """Each signal of the README's "Limits open at once" table, its scope and its wait."""
    assert named_limit(message, status, headers, WALL, LOCKOUT) == expected


@pytest.mark.parametrize(
    ("lockout", "headers", "expected"),
    [
        (0.0, None, (KEY, 0.0)),
        (60.0, None, (KEY, 60.0)),
        (7200.0, None, (KEY, 7200.0)),  # lockoutDuration is configured, not capped
        (60.0, {"Retry-After": "90"}, (KEY, 90.0)),
    ],
)
def test_lockout_lasts_the_configured_duration(
    lockout: float, headers: dict[str, str] | None, expected: tuple[str, float]
) -> None:
    """A lockout opens the key's groups for max(lockoutDuration, Retry-After)."""
    message = kraken_error("EGeneral:Temporary lockout")
    assert named_limit(message, 403, headers, WALL, lockout) == expected


# --- the websocket side ------------------------------------------------------------------

KRAKEN_WS_URLS = {
    "public": "wss://ws.kraken.com",
    "publicV2": "wss://ws.kraken.com/v2",
    "private": "wss://ws-auth.kraken.com",
    "privateV2": "wss://ws-auth.kraken.com/v2",
    "beta": "wss://beta-ws.kraken.com",
    "beta-private": "wss://beta-ws-auth.kraken.com",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://ws.kraken.com", "ws-public"),
        ("wss://ws.kraken.com/v2", "ws-public"),
        ("wss://ws-auth.kraken.com", "ws-private"),
        ("wss://ws-auth.kraken.com/v2", "ws-private"),
        ("wss://beta-ws.kraken.com", "ws-public"),
        ("wss://beta-ws-auth.kraken.com", "ws-private"),
        ("wss://proxy.example/ws-auth.kraken.com", "ws-private"),  # not listed: by its name
        ("wss://proxy.example/kraken", "ws-public"),
    ],
)
def test_ws_group_of_a_url(url: str, expected: str) -> None:
    """A socket URL's group comes from its key in ccxt's urls['api']['ws']."""
    from ccxt_breaker._kraken import ws_group

    assert ws_group(url, KRAKEN_WS_URLS) == expected


def test_ws_group_follows_overridden_urls() -> None:
    """A private URL pointed at a local server stays private, whatever its host."""
    from ccxt_breaker._kraken import ws_group

    urls = {"private": "ws://127.0.0.1:1/a", "public": "ws://127.0.0.1:1/b"}
    assert (ws_group(urls["private"], urls), ws_group(urls["public"], urls)) == (
        "ws-private",
        "ws-public",
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"method": "subscribe", "params": {"channel": "ticker"}}, "ticker"),
        ({"event": "subscribe", "subscription": {"name": "ownTrades"}}, "ownTrades"),
        ({"method": "add_order", "params": {"channel": "nope"}}, "add_order"),
        ({"method": "cancel_all"}, "cancel_all"),
        ({"method": "subscribe", "params": {}}, None),
        ("text", None),
        (None, None),
    ],
)
def test_ws_endpoint_of_a_message(message: Any, expected: str | None) -> None:
    """An order method names itself; a subscription is named by its channel (v2 or v1)."""
    from ccxt_breaker._kraken import ws_endpoint

    assert ws_endpoint(message) == expected


@pytest.mark.parametrize(
    ("message", "outage"),
    [
        ("EService:Unavailable", True),
        ("EService:Busy", True),
        ("EGeneral:Internal error", True),
        ("EDatabase:Internal error", True),
        ("EOrder:Rate limit exceeded", True),
        ("EAuth:Too many requests", True),
        ("EGeneral:Temporary lockout", True),
        ("Exceeded msg rate", True),
        ("Currency pair not supported", False),
        ("Subscription depth not supported", False),
        ("EOrder:Insufficient funds", False),
        ("ESession:Invalid session", False),
    ],
)
def test_ws_error_answers(message: str, outage: bool) -> None:
    """Outage and limit answers are failures; the caller's mistakes are not."""
    from ccxt_breaker._kraken import is_ws_outage

    assert is_ws_outage(message) is outage


def test_ws_endpoint_table() -> None:
    """Channels belong to the socket groups (no REST limit domain); orders to trading."""
    from ccxt_breaker._kraken import SOCKET, WS_ORDER_METHODS, ws_endpoint_table

    table = ws_endpoint_table()
    assert table["ticker"] == ("ws", "ws-public", SOCKET)
    assert table["balances"] == ("ws", "ws-private", SOCKET)
    assert {path for path, row in table.items() if row[1] == "trading"} == WS_ORDER_METHODS
    assert all(table[path][2] == ORDERS for path in WS_ORDER_METHODS)
