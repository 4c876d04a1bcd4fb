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

from .support import Backend, Reply, exchange_config


@pytest.fixture
def installed() -> Iterator[None]:
    ccxt_breaker.install()
    yield
    ccxt_breaker.uninstall()


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("cls", [ccxt.async_support.kraken, ccxt.pro.kraken])
async def test_flag_turns_breakers_on_for_plain_ccxt(backend: Backend, cls: type) -> None:
    """After install(), options['circuitBreaker'] gives a plain ccxt instance breakers."""
    exchange = cls(exchange_config(backend.url, failureThreshold=1))
    assert isinstance(exchange, cls)
    backend.always("Time", Reply(503, "down"))
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.publicGetTime()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.publicGetTime()
    await exchange.close()
    assert backend.hits["Time"] == 1
    assert exchange.circuit_breakers["public"].state == "open"


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("flag", [None, False, {"enabled": False}])
async def test_without_the_flag_ccxt_is_untouched(backend: Backend, flag: object) -> None:
    """Without the flag (or with it off) an instance keeps its exact ccxt class."""
    config = exchange_config(backend.url)
    config["options"] = {} if flag is None else {"circuitBreaker": flag}
    exchange = ccxt.async_support.kraken(config)
    assert type(exchange) is ccxt.async_support.kraken
    assert not hasattr(exchange, "circuit_breakers")
    await exchange.close()


def test_install_is_idempotent_and_uninstall_reverses_it() -> None:
    """Installing twice patches once; uninstall() restores ccxt's own constructor."""
    before = ccxt.async_support.kraken.__dict__.get("__init__")
    ccxt_breaker.install()
    patched = ccxt.async_support.kraken.__dict__["__init__"]
    ccxt_breaker.install()
    assert ccxt.async_support.kraken.__dict__["__init__"] is patched
    ccxt_breaker.uninstall()
    ccxt_breaker.uninstall()
    assert ccxt.async_support.kraken.__dict__.get("__init__") is before
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
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['earn', 'funding', 'private', 'public', 'trading']"


async def test_pro_class_guards_rest_calls(backend: Backend) -> None:
    """ccxt_breaker.pro.kraken is a ccxt.pro.kraken whose REST calls are guarded."""
    exchange = ccxt_breaker.pro.kraken(exchange_config(backend.url))
    assert isinstance(exchange, ccxt.pro.kraken)
    exchange.circuit_breakers["private"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError) as caught:
        await exchange.authenticate()
    assert caught.value.endpoint == "GetWebSocketsToken"
    exchange.circuit_breakers["public"].force_open()
    with pytest.raises(ccxt_breaker.CircuitOpenError):
        await exchange.load_markets()
    await exchange.close()
    assert sum(backend.hits.values()) == 0


def test_both_classes_share_one_implementation() -> None:
    """The async and pro classes get their breakers from the same mixin, not a copy."""
    from ccxt_breaker._hook import BreakerMixin

    for cls in (ccxt_breaker.kraken, ccxt_breaker.pro.kraken):
        assert cls.__mro__[1] is BreakerMixin
        assert not {"fetch2", "fetch", "sleep", "on_rest_response"} & set(vars(cls))
