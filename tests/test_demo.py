"""``python -m ccxt_breaker demo`` and the command line around it."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from ccxt_breaker.__main__ import main
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET
from ccxt_breaker.testing._demo import Scenario, run_demo

SCRIPTED = {"private", "trading", "public"}
DEMO = ["demo", "--duration", "4", "--no-color"]
EXCEPTIONS = {"CircuitOpenError", "ExchangeNotAvailable", "RateLimitExceeded", "RequestTimeout"}


async def test_compressed_demo_opens_and_recovers_every_scripted_group() -> None:
    """A 3 s run opens each incident's circuit, closes it again, and refuses calls meanwhile."""
    out = io.StringIO()
    summary = await run_demo(duration=3, out=out)

    assert {r.group: (r.opened is not None, r.closed is not None) for r in summary.incidents} == {
        group: (True, True) for group in SCRIPTED
    }
    assert summary.states == dict.fromkeys(summary.states, "closed")
    assert {g for g, n in summary.rejected.items() if n} == SCRIPTED
    assert {g for g, n in summary.sent.items() if n} == SCRIPTED
    assert set(summary.exceptions) == EXCEPTIONS
    text = out.getvalue()
    assert "\x1b[" not in text
    assert DEFAULT_API_KEY not in text
    assert DEFAULT_SECRET not in text


def test_demo_command_prints_the_timeline_and_the_summary() -> None:
    """The demo command exits 0 and prints each scripted circuit opening and closing."""
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "ccxt_breaker", *DEMO],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert (result.returncode, result.stderr) == (0, "")
    out = result.stdout
    arrow = "(?:→|->)"
    for group in sorted(SCRIPTED):
        assert re.search(rf"{group} +closed {arrow} open \(", out), group
        assert re.search(rf"{group} +half_open {arrow} closed \(probes succeeded\)", out), group
        assert re.search(rf"^  {group} +\d+ +\d+ +[1-9]\d* +closed$", out, re.M), group
    assert "summary after" in out
    assert "CircuitOpenError  (refused, nothing sent)" in out
    assert "\x1b[" not in out
    assert DEFAULT_SECRET not in out


def test_simulate_delegates_to_the_simulator_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --help` prints the simulator's own usage and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--help"])

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ccxt_breaker simulate")
    assert "--port" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required: COMMAND"),
        (["demo", "--duration", "1"], "argument --duration: must be at least 2"),
        (["demo", "--duration", "soon"], "not a number of seconds: 'soon'"),
        (["demo", "--pace", "0"], "argument --pace: must be positive"),
        (["demo", "--port", "8080"], "unrecognized arguments: --port 8080"),
    ],
)
def test_bad_command_lines_exit_2_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown command or a bad demo option exits 2 with the usage and the reason."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m ccxt_breaker")
    assert message in err


def test_default_scenario_timings() -> None:
    """At 30 s the bot polls every 0.5 s, circuits open for 3 s and requests time out after 1 s."""
    s = Scenario.scaled(30)

    assert (s.pace, s.reset_timeout, s.timeout, s.retry_after) == (0.5, 3.0, 1.0, 3)
    assert s.breaker_options()["resetTimeout"] == 3000
