"""``python -m ccxt_breaker demo`` and the command line around it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from ccxt_breaker.__main__ import main
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET
from ccxt_breaker.testing._demo import Scenario, _Printer, run_demo

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


# PYTHONIOENCODING: what a UTF-8 terminal, an ASCII one and a cp1252 redirect on Windows
# give the demo's stdout; each gets the symbols it can encode, and ASCII stand-ins for the rest.
ENCODINGS = [
    pytest.param("utf-8", "\u2192", "\u00b7", id="utf-8"),
    pytest.param("ascii", "->", "/", id="ascii"),
    pytest.param("cp1252", "->", "\u00b7", id="cp1252"),
]
STATUS_PART = re.compile(
    r"(public|private|trading|funding|earn) "
    r"(closed|half_open|open, \d+\.\d s left|open, next call probes)"
)


@pytest.mark.parametrize(("encoding", "arrow", "dot"), ENCODINGS)
def test_demo_command_prints_the_timeline_and_the_summary(
    encoding: str, arrow: str, dot: str
) -> None:
    """The demo exits 0 in any stdout encoding, printing each circuit opening and closing."""
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "ccxt_breaker", *DEMO],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": encoding},
        timeout=30,
    )

    assert (result.returncode, result.stderr) == (0, b""), result.stderr.decode(errors="replace")
    out = result.stdout.decode(encoding)  # strict: every byte is in the stream's encoding
    other = {"\u2192", "->"} - {arrow}
    assert arrow in out
    assert not any(symbol in out for symbol in other)
    a = re.escape(arrow)
    for group in sorted(SCRIPTED):
        # an opening says when the next call may go
        assert re.search(rf"{group} +closed {a} open \(.+\), retry in \d+\.\d s$", out, re.M)
        assert re.search(rf"{group} +half_open {a} closed \(probes succeeded\)", out), group
        assert re.search(rf"^  {group} +\d+ +\d+ +[1-9]\d* +closed$", out, re.M), group
    statuses = re.findall(r"^t=\+\d+\.\ds +status +(.+) \| sent \d+, rejected \d+$", out, re.M)
    assert statuses
    for status in statuses:  # each group's state, and the time left while open
        parts = status.split(f" {dot} ")
        assert [STATUS_PART.fullmatch(part) is not None for part in parts] == [True] * 5, status
    assert re.search(r"^summary of the \d+\.\d s run$", out, re.M)
    assert re.search(
        r"^  private API outage +private +t=\+\d+\.\ds +\d+\.\d s +\d+\.\d s$", out, re.M
    )
    assert "CircuitOpenError  (refused, nothing sent)" in out
    assert "\x1b[" not in out
    assert DEFAULT_SECRET not in out


@pytest.mark.parametrize(
    ("state", "retry_after", "text"),
    [
        ("open", 2.5, "private open, 2.5 s left"),
        ("open", 0.04, "private open, next call probes"),
        ("open", 0.0, "private open, next call probes"),
        ("open", None, "private open until reset"),
        ("half_open", 0.0, "private half_open"),
        ("closed", 0.0, "private closed"),
    ],
)
def test_status_says_how_long_an_open_circuit_has_left(
    state: str, retry_after: float | None, text: str
) -> None:
    """A status entry gives an open circuit's time left, or that the next call is a probe."""
    assert _Printer(io.StringIO(), color=False).status("private", state, retry_after) == text


def test_text_the_stream_cannot_encode_is_escaped_not_raised() -> None:
    """A message with a character the stream cannot encode prints escaped, and the demo goes on."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    printer = _Printer(out, color=False)
    printer.write("EService:Unavailable \u2014 caf\u00e9\n")

    assert (printer.arrow, printer.dot) == ("->", "/")
    assert raw.getvalue() == b"EService:Unavailable \\u2014 caf\\xe9\n"


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
