"""install(): the config flag for plain ccxt classes; and the pro class."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

import ccxt_breaker
import ccxt_breaker.pro
from ccxt_breaker._hook import BreakerMixin
from ccxt_breaker.testing import Fault, KrakenSimulator

from .support import exchange_config


@pytest.fixture
def installed() -> Iterator[None]:
    ccxt_breaker.install()
    yield
    ccxt_breaker.uninstall()


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("cls", [ccxt.async_support.kraken, ccxt.pro.kraken])
async def test_flag_turns_breakers_on_for_plain_ccxt(sim: KrakenSimulator, cls: type) -> None:
    """After install(), options['circuitBreaker'] gives a plain ccxt instance breakers, and
    its camelCase twin is the same registry."""
    exchange = cls(exchange_config(sim, failureThreshold=1))
    assert isinstance(exchange, cls)
    assert exchange.circuitBreakers is exchange.circuit_breakers
    sim.faults.add(Fault.http(503), endpoint="Time")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert sim.count("Time") == 1
    assert exchange.circuit_breakers["public"].state == "open"


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("flag", [None, False, {"enabled": False}])
async def test_without_the_flag_ccxt_is_untouched(sim: KrakenSimulator, flag: object) -> None:
    """Without the flag (or with it off) an instance keeps its exact ccxt class."""
    config = exchange_config(sim)
    config["options"] = {} if flag is None else {"circuitBreaker": flag}
    exchange = ccxt.async_support.kraken(config)
    assert type(exchange) is ccxt.async_support.kraken
    assert not hasattr(exchange, "circuit_breakers")
    await exchange.close()


def test_install_is_idempotent_and_uninstall_reverses_it() -> None:
    """Installing twice patches once; uninstall() restores ccxt's own construction."""
    before = ccxt.async_support.kraken.__dict__.get("after_construct")
    ccxt_breaker.install()
    patched = ccxt.async_support.kraken.__dict__["after_construct"]
    ccxt_breaker.install()
    assert ccxt.async_support.kraken.__dict__["after_construct"] is patched
    ccxt_breaker.uninstall()
    ccxt_breaker.uninstall()
    assert ccxt.async_support.kraken.__dict__.get("after_construct") is before
    plain = ccxt.async_support.kraken({"options": {"circuitBreaker": True}})
    assert type(plain) is ccxt.async_support.kraken


@pytest.mark.usefixtures("installed")
def test_bad_flag_fails_at_construction() -> None:
    """A typo in the flag's config fails when the plain ccxt instance is built."""
    with pytest.raises(ValueError, match="did you mean 'failureThreshold'"):
        ccxt.async_support.kraken({"options": {"circuitBreaker": {"failureTreshold": 3}}})


@pytest.mark.parametrize("pro_first", [True, False])
def test_install_works_whatever_the_import_order(pro_first: bool) -> None:
    """install() reaches ccxt.pro.kraken whether ccxt.pro was imported before or after."""
    imports = ["import ccxt.pro", "import ccxt_breaker; ccxt_breaker.install()"]
    script = "\n".join(imports if pro_first else imports[::-1]) + textwrap.dedent("""
        import ccxt.pro
        ex = ccxt.pro.kraken({"options": {"circuitBreaker": True}})
        print(sorted(ex.circuit_breakers))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['earn', 'funding', 'private', 'public', 'trading']"


async def test_pro_class_guards_rest_calls(sim: KrakenSimulator) -> None:
    """ccxt_breaker.pro.kraken is a ccxt.pro.kraken whose REST calls are guarded."""
    exchange = ccxt_breaker.pro.kraken(exchange_config(sim))
    assert isinstance(exchange, ccxt.pro.kraken)
    exchange.circuit_breakers["private"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
        await exchange.authenticate()
    assert caught.value.endpoint == "GetWebSocketsToken"
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.load_markets()
    await exchange.close()
    assert sim.requests == []


def test_both_classes_share_one_implementation() -> None:
    """The async and pro classes get their breakers from the same mixin, not a copy."""
    hooked = {"fetch2", "fetch", "sleep", "on_rest_response", "after_construct", "request"}
    for cls in (ccxt_breaker.kraken, ccxt_breaker.pro.kraken):
        assert cls.__mro__[1] is BreakerMixin
        assert not hooked & set(vars(cls))


@pytest.mark.usefixtures("installed")
def test_a_bots_own_class_runs_around_the_hook() -> None:
    """Under install(), a bot's own subclass (and ccxt.pro) come before the hook in the
    method order, and the hook sits before ccxt's kraken, as the drop-in class has it."""

    class Bot(ccxt.pro.kraken):
        pass

    exchange = Bot({"options": {"circuitBreaker": True}})
    mro = type(exchange).__mro__
    order = [mro.index(c) for c in (Bot, ccxt.pro.kraken, BreakerMixin, ccxt.async_support.kraken)]
    assert order == sorted(order)
    assert type(exchange).__name__ == "Bot"
    assert isinstance(exchange, Bot)
