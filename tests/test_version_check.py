"""The supported ccxt range: one set of bounds, checked at import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import ccxt
import pytest

import ccxt_breaker
from ccxt_breaker import _hook

ROOT = Path(__file__).parent.parent
RANGE = f">={_hook._CCXT_OLDEST},<{_hook._CCXT_BELOW}"


def test_bounds_agree_with_pyproject_and_ci() -> None:
    """pyproject's ccxt requirement is the range the import check uses."""
    # and .ci/run's oldest ccxt is its lower bound
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [r for r in project["dependencies"] if re.match(r"ccxt\b", r)]
    assert requirements == [f"ccxt{RANGE}"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.findall(r"^OLDEST_CCXT=(\S+)$", ci, re.MULTILINE) == [_hook._CCXT_OLDEST]


@pytest.mark.parametrize("version", ["4.4.99", "4.6.0", "4.6", "5.0.1", "3.9.0", "unknown"])
def test_ccxt_outside_the_range_warns(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """A ccxt below or above the range gets a CcxtVersionWarning naming both versions."""
    monkeypatch.setattr(ccxt, "__version__", version)
    with pytest.warns(ccxt_breaker.CcxtVersionWarning) as caught:
        _hook._check_ccxt_version()
    [warning] = caught
    message = str(warning.message)
    assert f"ccxt {version} is running" in message
    assert f"supports ccxt{RANGE}" in message


@pytest.mark.parametrize("version", ["4.5.0", "4.5.90", "4.5.999"])
def test_ccxt_inside_the_range_is_quiet(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """Every 4.5.x, the oldest included, passes the check without a warning."""
    monkeypatch.setattr(ccxt, "__version__", version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _hook._check_ccxt_version()


def test_the_check_runs_once_when_the_hook_is_first_used() -> None:
    """The first use of the hook (drop-in class or install()) runs the check, once."""
    # `import ccxt_breaker` alone loads no ccxt, so it checks nothing; the suite's ccxt passes
    script = (
        "import ccxt\n{patch}import ccxt_breaker\n"
        "ccxt_breaker.kraken\nccxt_breaker.install()\nccxt_breaker.kraken\n"
    )
    run = [sys.executable, "-W", "always", "-c"]
    unsupported = subprocess.run(
        [*run, script.format(patch="ccxt.__version__ = '4.6.2'\n")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stderr
    assert unsupported.count("CcxtVersionWarning") == 1
    assert "ccxt 4.6.2 is running" in unsupported
    running = subprocess.run(
        [*run, script.format(patch="")], capture_output=True, text=True, check=True, cwd=ROOT
    ).stderr
    assert "CcxtVersionWarning" not in running
