"""The README's examples run as written."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ccxt_breaker.pro
import ccxt_breaker.sync

README = Path(__file__).parent.parent / "README.md"


def python_block(starting: str) -> str:
    """The README's python code block whose first line is ``starting``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    matches = [block for block in blocks if block.startswith(starting)]
    assert len(matches) == 1, f"one README block should start with {starting!r}"
    return matches[0]


def test_bot_test_example_passes_in_an_empty_project(tmp_path: Path) -> None:
    """The README's test example passes when pasted into an empty project."""
    # the plugin's fixtures load from the installed package, with pytest-asyncio in strict mode
    (tmp_path / "test_my_bot.py").write_text(python_block("# test_my_bot.py\n"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_bot.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_freqtrade_recipe_is_the_one_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's freqtrade recipe is the one benchmarks/freqtrade_outage.py (CI) runs,
    and a sync and an async client built from it share one public circuit."""
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    [block] = [b for b in blocks if '"circuitBreaker"' in b and '"ccxt_config"' in b]
    readme = json.loads("{" + block + "}")["exchange"]["ccxt_config"]["options"]["circuitBreaker"]
    path = README.parent / "benchmarks" / "freqtrade_outage.py"
    spec = importlib.util.spec_from_file_location("freqtrade_outage", path)
    assert spec is not None
    assert spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, harness)  # its dataclass looks itself up
    spec.loader.exec_module(harness)
    assert readme == harness.RECIPE
    config = {"options": {"circuitBreaker": readme}}
    sync, pro = ccxt_breaker.sync.kraken(config), ccxt_breaker.pro.kraken(config)
    sync.circuit_breakers["public"].force_open()
    assert pro.circuit_breakers["public"].state == "open"
    sync.circuit_breakers["public"].reset()
