"""The pytest plugin: light to load, and exchanges that never sleep for ccxt's rate limiter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ccxt_breaker
from ccxt_breaker.testing.plugin import KrakenFactory

ROOT = Path(ccxt_breaker.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded_by_plugin() -> set[str]:
    """The modules a fresh interpreter holds after importing only the plugin."""
    script = "import sys, ccxt_breaker.testing.plugin; print(*sorted(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "ccxt",
        "aiohttp.web",
        "ccxt_breaker.testing._simulator",
    ],
)
def test_loading_the_plugin_imports_no_heavy_module(
    loaded_by_plugin: set[str], module: str
) -> None:
    """Importing the plugin (as pytest does at every start-up) leaves `module` unimported."""
    assert module not in loaded_by_plugin


async def test_factory_turns_ccxts_rate_limiter_off(kraken_factory: KrakenFactory) -> None:
    """kraken_factory's exchanges have enableRateLimit off unless the test's config asks."""
    assert kraken_factory().enableRateLimit is False


async def test_factory_config_turns_the_rate_limiter_on(kraken_factory: KrakenFactory) -> None:
    """A test's own {"enableRateLimit": True} wins over the factory's default."""
    assert kraken_factory({"enableRateLimit": True}).enableRateLimit is True
