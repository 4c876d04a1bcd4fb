"""install(): the config flag for plain ccxt classes; and the pro class."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

import ccxt_breaker
import ccxt_breaker.pro
from ccxt_breaker import _hook
from ccxt_breaker._hook import BreakerMixin, SyncBreakerMixin
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
    """After install(), options['circuitBreaker'] gives a plain ccxt instance breakers."""
    # and its camelCase twin is the same registry
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


def _construction_hooks() -> dict[type, Any]:
    """``after_construct`` as each class holds it itself (not inherited), for every class
    between ccxt's exchanges and object."""
    classes = {
        base
        for cls in (ccxt.kraken, ccxt.binance, ccxt.pro.kraken, ccxt.pro.binance)
        for base in cls.__mro__
    }
    return {cls: vars(cls).get("after_construct") for cls in classes}


def test_install_is_idempotent_and_uninstall_reverses_it() -> None:
    """Installing twice patches once; uninstall() restores every class's construction exactly."""
    # the kraken hook and the base-class watcher alike
    before = _construction_hooks()
    ccxt_breaker.install()
    patched = _construction_hooks()
    assert {cls for cls in before if patched[cls] is not before[cls]} == {
        ccxt.async_support.kraken,
        ccxt.kraken,
        _hook._construction_root(),
    }
    ccxt_breaker.install()
    assert _construction_hooks() == patched
    ccxt_breaker.uninstall()
    ccxt_breaker.uninstall()
    assert all(hook is before[cls] for cls, hook in _construction_hooks().items())
    plain = ccxt.async_support.kraken({"options": {"circuitBreaker": True}})
    assert type(plain) is ccxt.async_support.kraken
    assert type(ccxt.kraken({"options": {"circuitBreaker": True}})) is ccxt.kraken


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
    rest = "'earn', 'funding', 'private', 'public', 'trading'"
    assert out.strip() == f"[{rest}, 'ws-private', 'ws-public']"  # pro: the ws groups too


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
        assert BreakerMixin in cls.__mro__[1:3]  # (pro: after the websocket hook)
        assert not hooked & set(vars(cls))


@pytest.mark.usefixtures("installed")
def test_a_bots_own_class_runs_around_the_hook() -> None:
    """Under install(), a bot's own subclass and ccxt.pro come before the hook in the MRO."""
    # and the hook sits before ccxt's kraken, as the drop-in class has it

    class Bot(ccxt.pro.kraken):
        pass

    exchange = Bot({"options": {"circuitBreaker": True}})
    mro = type(exchange).__mro__
    order = [mro.index(c) for c in (Bot, ccxt.pro.kraken, BreakerMixin, ccxt.async_support.kraken)]
    assert order == sorted(order)
    assert type(exchange).__name__ == "Bot"
    assert isinstance(exchange, Bot)


# --- a flag that gives no breakers: one warning per class ----------------------------


def flag() -> dict[str, Any]:
    return {"options": {"circuitBreaker": True}}


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ccxt_breaker logger's WARNING messages, with no class warned about before."""
    monkeypatch.setattr(_hook, "_WARNED", weakref.WeakSet())
    caplog.set_level(logging.WARNING, logger="ccxt_breaker")

    def messages() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "ccxt_breaker" and r.levelno == logging.WARNING
        ]

    return messages


@pytest.mark.usefixtures("installed")
def test_flag_on_sync_kraken_gives_it_breakers_without_a_warning(warnings_log: Any) -> None:
    """After install(), the flag on sync ccxt.kraken gives it breakers, and logs nothing."""
    exchange = ccxt.kraken(flag())
    assert isinstance(exchange, SyncBreakerMixin)
    assert list(exchange.circuit_breakers) == ["public", "private", "trading", "funding", "earn"]
    assert warnings_log() == []


def test_install_after_flagged_instances_were_built_says_they_are_unguarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """install() warns once about Kraken instances built with the flag before it, which get
    no breakers; instances without the flag, and those built after, are not counted."""
    early = [ccxt.kraken(flag()), ccxt.async_support.kraken(flag()), ccxt.kraken()]
    try:
        with caplog.at_level(logging.WARNING, "ccxt_breaker"):
            ccxt_breaker.install()
            late = ccxt.kraken(flag())
            ccxt_breaker.install()  # the early ones are still there: said again
    finally:
        ccxt_breaker.uninstall()
    messages = [r.getMessage() for r in caplog.records if r.name == "ccxt_breaker"]
    expected = (
        "2 Kraken instance(s) built with options['circuitBreaker'] before "
        "ccxt_breaker.install() get no circuit breakers (ccxt.async_support.kraken, "
        "ccxt.kraken (sync))"
    )
    assert [m.split(":")[0] for m in messages] == [expected, expected]
    assert "python -m ccxt_breaker run" in messages[0]
    assert not any(isinstance(e, SyncBreakerMixin) for e in early)
    assert isinstance(late, SyncBreakerMixin)


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (ccxt.binance, "ccxt.binance (sync)"),
        (ccxt.async_support.binance, "ccxt.async_support.binance"),
        (ccxt.pro.binance, "ccxt.pro.binance"),
    ],
)
def test_flag_on_another_exchange_warns_once(warnings_log: Any, cls: type, name: str) -> None:
    """After install(), the flag on a non-Kraken exchange logs one WARNING for the class."""
    # sync, async or pro alike; it says Kraken only, remove the flag
    cls(flag())
    cls(flag())
    [message] = warnings_log()
    assert message.startswith(f"{name} gets no circuit breakers")
    assert "Kraken" in message
    assert "Remove the flag" in message


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("base", [ccxt.binance, ccxt.async_support.binance])
def test_each_subclass_is_warned_about_once(warnings_log: Any, base: type) -> None:
    """A bot's own subclass gets its own single WARNING, naming it and its ccxt class."""

    class Bot(base):  # type: ignore[misc,valid-type]
        pass

    class OtherBot(base):  # type: ignore[misc,valid-type]
        pass

    for cls in (Bot, OtherBot, Bot, OtherBot):
        cls(flag())
    flavour = ", sync" if base is ccxt.binance else ""
    assert [message.split(" gets ")[0] for message in warnings_log()] == [
        f"{__name__}.{cls.__qualname__} (a {base.__module__} subclass{flavour})"
        for cls in (Bot, OtherBot)
    ]


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("cls", [ccxt.kraken, ccxt.binance, ccxt.async_support.binance])
@pytest.mark.parametrize("flag", ["absent", None, False, {"enabled": False}])
def test_no_warning_without_the_flag(warnings_log: Any, cls: type, flag: object) -> None:
    """A flag that is absent, None, False or {'enabled': False} never warns."""
    cls({} if flag == "absent" else {"options": {"circuitBreaker": flag}})
    assert warnings_log() == []


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("flag", [True, {"failureThreshold": 2}, {"enabled": False}])
def test_no_warning_for_kraken_itself(warnings_log: Any, flag: object) -> None:
    """Kraken's own classes get what the flag asks for, and no warning."""
    # the async and pro classes, a bot's subclass of them and the drop-in classes

    class Bot(ccxt.async_support.kraken):  # type: ignore[misc]
        pass

    classes = [ccxt.async_support.kraken, ccxt.pro.kraken, Bot, ccxt_breaker.kraken]
    for cls in [*classes, ccxt_breaker.pro.kraken]:
        cls({"options": {"circuitBreaker": flag}})
    assert warnings_log() == []


def test_no_warning_unless_installed(warnings_log: Any) -> None:
    """Without install() (or after uninstall()) the flag on another exchange logs nothing."""
    # ccxt is untouched
    ccxt_breaker.install()
    ccxt_breaker.uninstall()
    ccxt.kraken(flag())
    ccxt.async_support.binance(flag())
    assert warnings_log() == []
