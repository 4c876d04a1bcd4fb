"""Secrets: across the fault matrix no credential or API-Sign value reaches a log record, an
event, a snapshot or an exception string of the package."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker.testing import FakeClock, Fault, KrakenSimulator
from ccxt_breaker.testing._simulator import strict_nonces

from ..support import api, exchange_config

API_KEY = "KEY-zX9q-Leak-Canary-7f1c9a7e"
SECRET_BYTES = b"SECRET-canary-bytes-9d2e5b"
SECRET = base64.b64encode(SECRET_BYTES).decode()
PASSWORD = "PASSWORD-canary-x8z"
# The credentials a copy.copy() twin of the exchange is given.
TWIN_KEY = "KEY-twin-Leak-Canary-3b8e0d"
TWIN_SECRET_BYTES = b"TWIN-secret-canary-bytes-51c7"
TWIN_SECRET = base64.b64encode(TWIN_SECRET_BYTES).decode()

THROTTLED_UNTIL = int(FakeClock().time()) + 90  # the fake clock's wall time plus 90 s

# An echo builds the fault that quotes the API-Key and API-Sign of the request it answers,
# and the secret that signed it.
Echo = Callable[[str], Fault]


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[KrakenSimulator]:
    """The simulator, knowing the canary credentials of the exchange and of its twin."""
    simulator = KrakenSimulator(
        clock=clock.monotonic,
        wall_clock=clock.time,
        rate_limits=False,
        credentials={API_KEY: SECRET, TWIN_KEY: TWIN_SECRET},
    )
    async with simulator:
        yield simulator


FAULTS = [
    pytest.param("Balance", Fault.http(503), id="503"),
    pytest.param("Balance", Fault.http(500), id="500"),
    pytest.param("Balance", Fault.http(520), id="520-html"),
    pytest.param("Balance", Fault.kraken_error("EService:Unavailable"), id="EService:Unavailable"),
    pytest.param("Balance", Fault.kraken_error("EGeneral:Temporary lockout"), id="lockout"),
    pytest.param("Balance", Fault.kraken_error("EAPI:Rate limit exceeded"), id="rate-limit"),
    pytest.param("AddOrder", Fault.kraken_error("EOrder:Rate limit exceeded"), id="order-limit"),
    pytest.param("AddOrder", Fault.throttled(THROTTLED_UNTIL), id="throttled"),
    pytest.param("Balance", Fault.kraken_error("EAPI:Invalid nonce"), id="invalid-nonce"),
    pytest.param("Balance", Fault.kraken_error("EAPI:Invalid key"), id="invalid-key"),
    pytest.param("Balance", Fault.too_many_requests(60), id="429-retry-after"),
    pytest.param("Balance", Fault.latency(0.5), id="timeout"),
    pytest.param("Balance", Fault.disconnect(), id="dropped"),
    pytest.param("Balance", Fault.truncated(), id="truncated"),
    pytest.param("Balance", Fault.html(), id="200-html"),
]


def _page(status: int, text: str) -> Fault:
    # the edge's error page for ``status``, its body replaced by one that quotes the request
    return dataclasses.replace(Fault.http(status), body=text)


def _kraken(*errors: str, status: int = 200, headers: dict[str, str] | None = None) -> Fault:
    # Kraken's envelope with several errors: ccxt maps the first, and quotes the whole body
    fault = Fault.kraken_error(errors[0], status=status, headers=headers)
    return dataclasses.replace(fault, body=json.dumps({"error": list(errors)}))


# (echo, the state of the caller's circuit after it: only failures are summarised)
ECHOES: list[Any] = [
    pytest.param(lambda e: _page(500, f"<html>upstream failed for {e}</html>"), "open", id="500"),
    pytest.param(lambda e: _page(503, f"maintenance page for {e}"), "open", id="503"),
    pytest.param(lambda e: _kraken("EService:Unavailable", e), "open", id="EService"),
    pytest.param(lambda e: _kraken("EGeneral:Temporary lockout", e), "open", id="lockout"),
    pytest.param(
        lambda e: _kraken(f"EService:Throttled: {THROTTLED_UNTIL} {e}"), "open", id="throttled"
    ),
    pytest.param(
        lambda e: _kraken(
            "EGeneral:Too many requests", e, status=429, headers={"Retry-After": "30"}
        ),
        "open",
        id="429-json",
    ),
    pytest.param(lambda e: _kraken(f"EGeneral:Invalid arguments {e}"), "closed", id="business"),
]


class Capture:
    """Everything the package says about a run (logs, events, snapshots, its exceptions), and
    every API-Sign the exchanges sent."""

    def __init__(self, sim: KrakenSimulator, caplog: pytest.LogCaptureFixture) -> None:
        self.sim = sim
        self.caplog = caplog
        self.registry: ccxt_breaker.BreakerRegistry | None = None
        self.events: list[Any] = []
        self.texts: list[str] = []
        self.signs: set[str] = set()
        self.echo: Echo | None = None  # set: the next signed request is answered by an echo

    def watch(self, exchange: Any) -> None:
        """Record what ``exchange`` signs, and answer an echo with the headers it signed."""
        if self.registry is None:
            self.registry = exchange.circuit_breakers
            self.registry.add_listener(self.events.append)
        sign = type(exchange).sign.__get__(exchange)  # the class's, for this very instance

        def tapped(path: str, *args: Any, **kwargs: Any) -> Any:
            request = sign(path, *args, **kwargs)
            headers = request.get("headers") or {}
            if "API-Sign" in headers:
                self.signs.add(headers["API-Sign"])
                if self.echo is not None:  # quoted as a careless proxy might
                    quoted = f"{headers['API-Key']} {headers['API-Sign']} {exchange.secret}"
                    self.sim.faults.add(self.echo(quoted), endpoint=path, times=1)
                    self.echo = None
            return request

        exchange.sign = tapped

    async def call(
        self, exchange: Any, endpoint: str, *, keep_ccxt_error: bool
    ) -> BaseException | None:
        try:
            await exchange.fetch2(endpoint, api("private"), "POST", {"nonce_check": 1})
        except ccxt.BaseError as exc:
            if keep_ccxt_error or isinstance(exc, ccxt_breaker.CircuitOpenError):
                self.texts += [str(exc), repr(exc), repr(exc.args)]
            if isinstance(exc, ccxt_breaker.CircuitOpenError):
                self.texts.append(repr(exc.last_error))
            return exc
        return None

    def everything(self) -> list[str]:
        assert self.registry is not None
        formatter = logging.Formatter("%(message)s %(exc_text)s")
        records = [r for r in self.caplog.records if r.name == "ccxt_breaker"]
        return [
            *self.texts,
            *(formatter.format(r) for r in records),
            *(repr(e) for e in self.events),
            json.dumps(self.registry.snapshot()),
            repr(self.registry),
            *(repr(b) for b in self.registry.values()),
        ]

    def leaks(self, *, twin: bool = False) -> list[tuple[str, str]]:
        """(canary, text) for each credential or API-Sign found in what the package said."""
        canaries = {
            "apiKey": API_KEY,
            "secret": SECRET,
            "secret bytes": SECRET_BYTES.decode(),
            "password": PASSWORD,
            **{f"API-Sign {s[:8]}": s for s in self.signs},
        }
        if twin:
            canaries.update(
                {
                    "twin apiKey": TWIN_KEY,
                    "twin secret": TWIN_SECRET,
                    "twin secret bytes": TWIN_SECRET_BYTES.decode(),
                }
            )
        texts = self.everything()
        return [(name, text) for text in texts for name, value in canaries.items() if value in text]


def secret_exchange(sim: KrakenSimulator, clock: FakeClock) -> Any:
    config = exchange_config(sim, clock, failureThreshold=1)
    config.update(apiKey=API_KEY, secret=SECRET, password=PASSWORD, timeout=300)
    exchange = ccxt_breaker.kraken(config)
    strict_nonces(exchange)
    return exchange


@pytest.mark.parametrize(("endpoint", "fault"), FAULTS)
async def test_fault_matrix_leaks_no_secret(
    sim: KrakenSimulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    endpoint: str,
    fault: Fault,
) -> None:
    """No failure mode puts a credential or API-Sign in a log, event, snapshot or our exception."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = secret_exchange(sim, clock)
    capture = Capture(sim, caplog)
    capture.watch(exchange)
    sim.faults.add(fault, endpoint=endpoint, times=1)
    first = await capture.call(exchange, endpoint, keep_ccxt_error=True)
    for other in ("Balance", "AddOrder", "Withdraw"):  # the rejections, across the key's groups
        await capture.call(exchange, other, keep_ccxt_error=True)
    await exchange.close()

    # ccxt raised its own error, or (HTML with status 200) returned the page
    assert (first is None or isinstance(first, ccxt.BaseError), sim.count(endpoint) >= 1) == (
        True,
        True,
    )
    assert (len(capture.signs) >= 1, capture.leaks()) == (True, [])


async def test_guarded_coroutine_errors_are_scrubbed(
    sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials quoted by a coroutine guarded with breaker.call() are scrubbed too."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = secret_exchange(sim, clock)
    capture = Capture(sim, caplog)
    capture.watch(exchange)
    breaker = exchange.circuit_breakers["private"]

    async def reconnect() -> None:
        raise ccxt.ExchangeNotAvailable(f"login {API_KEY}:{SECRET}:{PASSWORD} refused")

    with pytest.raises(ccxt.ExchangeNotAvailable):
        await breaker.call(reconnect)
    refused = await capture.call(exchange, "Balance", keep_ccxt_error=False)
    await exchange.close()

    assert (type(refused), breaker.state) == (ccxt_breaker.CircuitOpenError, "open")
    assert capture.leaks() == []


async def test_a_copys_credentials_are_scrubbed_from_guarded_coroutines(
    sim: KrakenSimulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy's credentials quoted by a breaker.call() coroutine are scrubbed too."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = secret_exchange(sim, clock)
    twin = copy.copy(exchange)
    twin.apiKey, twin.secret = TWIN_KEY, TWIN_SECRET
    capture = Capture(sim, caplog)
    capture.watch(exchange)
    capture.watch(twin)
    breaker = twin.circuit_breakers["private"]

    async def reconnect() -> None:
        raise ccxt.ExchangeNotAvailable(f"login {TWIN_KEY}:{TWIN_SECRET} and {API_KEY} refused")

    with pytest.raises(ccxt.ExchangeNotAvailable):
        await breaker.call(reconnect)
    refused = await capture.call(twin, "Balance", keep_ccxt_error=False)
    await exchange.close()

    assert (type(refused), breaker.state) == (ccxt_breaker.CircuitOpenError, "open")
    assert capture.leaks(twin=True) == []


@pytest.mark.parametrize(("echo", "state"), ECHOES)
async def test_echoed_credentials_are_scrubbed(
    sim: KrakenSimulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    echo: Echo,
    state: str,
) -> None:
    """Credentials and API-Sign echoed in an error body leak nowhere through the package."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = secret_exchange(sim, clock)
    capture = Capture(sim, caplog)
    capture.watch(exchange)
    capture.echo = echo
    # ccxt's own exception is handed to the caller unchanged, echo included, by contract
    first = await capture.call(exchange, "Balance", keep_ccxt_error=False)
    judged = exchange.circuit_breakers["private"].state
    for other in ("Balance", "AddOrder", "Withdraw"):
        await capture.call(exchange, other, keep_ccxt_error=False)
    await exchange.close()

    signed = any(sign in str(first) for sign in capture.signs)
    echoed = (API_KEY in str(first), SECRET in str(first), signed)
    assert (judged, echoed, capture.leaks()) == (state, (True, True, True), [])


@pytest.mark.parametrize(("echo", "state"), ECHOES)
async def test_copied_exchange_with_its_own_credentials_leaks_neither(
    sim: KrakenSimulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    echo: Echo,
    state: str,
) -> None:
    """A copy.copy() twin with its own apiKey/secret leaks its echoed credentials nowhere either."""
    caplog.set_level(logging.DEBUG, logger="ccxt_breaker")
    exchange = secret_exchange(sim, clock)
    twin = copy.copy(exchange)
    twin.apiKey, twin.secret = TWIN_KEY, TWIN_SECRET
    capture = Capture(sim, caplog)
    capture.watch(exchange)
    capture.watch(twin)
    capture.echo = echo
    first = await capture.call(twin, "Balance", keep_ccxt_error=False)
    judged = twin.circuit_breakers["private"].state
    for caller in (twin, exchange):
        for other in ("Balance", "AddOrder", "Withdraw"):
            await capture.call(caller, other, keep_ccxt_error=False)
    await twin.close()
    await exchange.close()

    assert twin.circuit_breakers is exchange.circuit_breakers
    signed = any(sign in str(first) for sign in capture.signs)
    echoed = (TWIN_KEY in str(first), TWIN_SECRET in str(first), signed)
    assert (judged, echoed, capture.leaks(twin=True)) == (state, (True, True, True), [])
