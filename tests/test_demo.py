"""``python -m ccxt_breaker demo`` and the command line around it."""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from ccxt_breaker.__main__ import main
from ccxt_breaker.testing import DEFAULT_API_KEY, DEFAULT_SECRET
from ccxt_breaker.testing._demo import (
    ASCII_GLYPHS,
    FANCY_GLYPHS,
    TIMELINE_WIDTH,
    Scenario,
    _Printer,
    run_demo,
    timeline_lines,
)

SCRIPTED = {"private", "trading", "public", "ws-public"}
DEMO = ["demo", "--duration", "4", "--no-color"]
EXCEPTIONS = {
    "CircuitOpenError",
    "ExchangeNotAvailable",
    "NetworkError",  # a websocket dial answered 503, or the socket dropped
    "RateLimitExceeded",
    "RequestTimeout",
}


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
    r"(public|private|trading|funding|earn|ws-public) "
    r"(closed|half_open|open, \d+\.\d s left|open, next call probes)"
)


@pytest.mark.parametrize(("encoding", "arrow", "dot"), ENCODINGS)
def test_demo_command_prints_the_timeline_and_the_summary(
    encoding: str, arrow: str, dot: str
) -> None:
    """The demo exits 0 in any encoding, printing transitions, a summary and an ASCII timeline."""
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
        assert [STATUS_PART.fullmatch(part) is not None for part in parts] == [True] * 6, status
    assert re.search(r"^summary of the \d+\.\d s run$", out, re.M)
    assert re.search(
        r"^  private API outage +private +t=\+\d+\.\ds +\d+\.\d s +\d+\.\d s$", out, re.M
    )
    assert "CircuitOpenError  (refused, nothing sent)" in out
    # the timeline ends the output, in ASCII whatever the encoding: plain output
    timeline = out[out.index("\n  timeline, a column is ") :].splitlines()[1:]
    # about 4 s / 67 columns: the run lasts longer when a circuit is still open at 4 s
    assert re.fullmatch(
        r"  timeline, a column is 0\.\d+ s: - closed  # open  ~ half_open", timeline[0]
    )
    rows = {line[2:12].strip(): line[12:] for line in timeline[1:-1]}
    assert list(rows) == ["public", "private", "trading", "funding", "earn", "ws-public"]
    for group, row in rows.items():
        assert re.fullmatch(rf"\|[-#~]{{{TIMELINE_WIDTH}}}\|", row), row
        # each scripted circuit opens and probes, and is not open again; the others stay closed
        assert re.fullmatch(r"\|-+#.*~-*\|" if group in SCRIPTED else r"\|-+\|", row), row
    assert re.fullmatch(r" {13}0s( +\d+(\.\d+)?s){3,}", timeline[-1]), timeline[-1]
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
        (["demo", "--dashboard", "http"], "argument --dashboard: not a port number: 'http'"),
        (["demo", "--dashboard", "65536"], "argument --dashboard: must be 0 to 65535"),
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


def _event(group: str, old: str, new: str, at: float) -> dict[str, Any]:
    return {
        "group": group,
        "old_state": old,
        "new_state": new,
        "reason": "scripted",
        "cause": None,
        "retry_after": None,
        "time": at,
        "name": None,
    }


# A run from t=100 to t=110 drawn in 10 columns of 1 s each.
HISTORY = [
    _event("trading", "closed", "open", 95.0),  # before the run: its state at the start
    _event("public", "closed", "open", 100.0),  # at the very start
    _event("funding", "half_open", "closed", 100.0),  # a probe that ended right at the start
    _event("trading", "open", "half_open", 101.5),
    _event("private", "closed", "open", 102.5),
    _event("trading", "half_open", "closed", 102.5),
    _event("public", "open", "half_open", 104.0),  # a 0.2 s probe, at a column's start
    _event("public", "half_open", "closed", 104.2),
    _event("private", "open", "half_open", 105.5),  # a 0.1 s probe that fails
    _event("private", "half_open", "open", 105.6),
    _event("private", "open", "half_open", 107.9),  # a probe across two columns
    _event("private", "half_open", "closed", 108.05),
    _event("public", "closed", "open", 110.0),  # at the very end
    _event("trading", "closed", "open", 111.0),  # after the run: left out
]


def test_timeline_draws_each_state_in_force_per_column() -> None:
    """A scripted history draws as one row of glyphs per group, with a legend and a time axis."""
    groups = ["public", "private", "trading", "funding", "earn"]
    lines = timeline_lines(HISTORY, 100.0, 110.0, 10, groups)

    assert lines == [
        "timeline, a column is 1 s: - closed  # open  ~ half_open",
        "public  |####~----#|",  # no closed column before the opening at the very start
        "private |--###~#~~-|",  # a column that saw a probe shows it, even among open ones
        "trading |#~~-------|",
        "funding |----------|",  # half-open only before the start
        "earn    |----------|",  # no transitions: closed throughout
        "         0s      10s",  # the last label ends at the closing bar
    ]


def test_timeline_of_a_history_without_transitions_is_all_closed() -> None:
    """With no transitions every group is closed from start to end."""
    lines = timeline_lines([], 0.0, 30.0, 12, ["public", "private"])

    assert lines[1:] == [
        "public  |------------|",
        "private |------------|",
        "         0s        30s",
    ]


def test_timeline_paints_the_glyphs_in_the_demo_colours() -> None:
    """Coloured, each run of a state is painted once: green closed, red open, yellow half-open."""
    history = [_event("public", "closed", "open", 1.0), _event("public", "open", "half_open", 3.0)]
    lines = timeline_lines(history, 0.0, 4.0, 4, ["public"], glyphs=FANCY_GLYPHS, color=True)

    assert lines[0] == (
        "timeline, a column is 1 s: \x1b[32m\u2500\x1b[0m closed  \x1b[31m\u2588\x1b[0m open  "
        "\x1b[33m\u2592\x1b[0m half_open"
    )
    assert lines[1] == (
        "public |\x1b[32m\u2500\x1b[0m\x1b[31m\u2588\u2588\x1b[0m\x1b[33m\u2592\x1b[0m|"
    )


@pytest.mark.parametrize("seconds", [2.0, 3.0, 4.2, 30.0, 45.0, 600.0, 7200.0])
def test_timeline_fits_80_columns_with_rising_ticks(seconds: float) -> None:
    """At the demo's width every line fits 79 columns and the axis counts up from 0 s."""
    groups = ["public", "private", "trading", "funding", "earn", "ws-public"]
    lines = timeline_lines([], 0.0, seconds, TIMELINE_WIDTH, groups)

    assert max(len(f"  {line}") for line in lines) <= 79
    ticks = [float(t) for t in re.findall(r"(\d+(?:\.\d+)?)s", lines[-1])]
    assert len(ticks) >= 3
    assert ticks[0] == 0
    assert ticks == sorted(set(ticks))
    assert ticks[-1] <= seconds


@pytest.mark.parametrize(
    ("encoding", "color", "glyphs"),
    [
        ("utf-8", True, FANCY_GLYPHS),
        ("utf-8", False, ASCII_GLYPHS),
        ("ascii", True, ASCII_GLYPHS),
        ("cp1252", True, ASCII_GLYPHS),
    ],
)
def test_timeline_glyphs_are_ascii_unless_coloured_on_a_stream_that_encodes_more(
    encoding: str, color: bool, glyphs: dict[str, str]
) -> None:
    """Plain output, or a stream that cannot encode the block glyphs, draws the ASCII ones."""
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding)

    assert _Printer(out, color=color).glyphs == glyphs


async def test_dashboard_serves_status_while_the_demo_runs() -> None:
    """`dashboard=0` serves /status on a printed 127.0.0.1 address during the demo, not after."""
    out = io.StringIO()
    demo = asyncio.create_task(run_demo(duration=2, out=out, dashboard=0))
    while not (
        found := re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)  ", out.getvalue(), re.M)
    ):
        assert not demo.done(), out.getvalue()
        await asyncio.sleep(0.01)
    url = found.group(1)

    async with aiohttp.ClientSession() as session:
        async with session.get(url + "status") as response:
            assert (response.status, response.content_type) == (200, "application/json")
            status = await response.json()
        assert not demo.done()  # answered while the demo ran
        await demo
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url + "status")

    assert [e["id"] for e in status["exchanges"]] == ["kraken"]
    assert list(status["exchanges"][0]["groups"]) == [
        "public",
        "private",
        "trading",
        "funding",
        "earn",
        "ws-private",  # the demo's bot is ccxt_breaker.pro.kraken
        "ws-public",
    ]
    assert out.getvalue().index("\ndashboard: ") < out.getvalue().index("\nt=+")  # before the bot


@pytest.mark.parametrize(
    ("argv", "port"), [([], None), (["--dashboard"], 0), (["--dashboard", "8123"], 8123)]
)
def test_dashboard_option_takes_an_optional_port(
    argv: list[str], port: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--dashboard` alone asks for a free port (0), `--dashboard PORT` for PORT; no flag, none."""
    seen: dict[str, Any] = {}

    async def fake_run_demo(duration: float, **options: Any) -> None:
        seen.update(options)

    monkeypatch.setattr("ccxt_breaker.testing._demo.run_demo", fake_run_demo)

    assert main(["demo", *argv, "--no-color"]) == 0
    assert seen["dashboard"] == port


def test_dashboard_on_a_taken_port_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dashboard port already in use ends the demo with exit code 1 and a one-line reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        assert main(["demo", "--duration", "2", "--no-color", "--dashboard", str(port)]) == 1

    assert capsys.readouterr().err == (
        f"python -m ccxt_breaker demo: cannot serve the dashboard on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


async def test_processes_demo_one_lockout_stops_every_bot(redis_url: str) -> None:
    """--processes 3 --redis: the lockout answered to one bot opens every bot's keyed
    circuits, and no keyed request reaches Kraken more than 100 ms after it."""
    from ccxt_breaker.testing._demo_processes import run_processes_demo

    out = io.StringIO()
    summary = await run_processes_demo(3, redis_url, duration=4, pace=0.1, out=out)
    assert summary["locked_out"]
    assert summary["bots_opened"] == 3
    assert summary["keyed_requests_later"] == 0
    assert summary["refused_unsent"] > 0
    text = out.getvalue()
    assert "Kraken locks the key out" in text
    assert re.search(r"bot \d  private  closed -> open \(limit named by the exchange\)", text)
    assert len(re.findall(r"private  closed -> open \(.*\(shared\)\)", text)) == 2


def test_processes_without_redis_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--processes needs --redis, and --redis needs --processes."""
    for argv in (["demo", "--processes", "2"], ["demo", "--redis", "redis://h"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "--processes N (at least 1) and --redis URL go together" in capsys.readouterr().err
