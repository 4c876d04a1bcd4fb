"""``python -m ccxt_breaker simulate``: start-up faults, the control command, and failures,
in real subprocesses."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import ccxt_breaker
from ccxt_breaker.testing import KrakenSimulator
from ccxt_breaker.testing._cli import main, parse_spec
from ccxt_breaker.testing._faults import KINDS

from .support import until

ROOT = Path(ccxt_breaker.__file__).resolve().parents[1]
SIMULATE = [sys.executable, "-m", "ccxt_breaker", "simulate"]
DEADLINE = 60  # seconds for a subprocess to start or answer: a hung one fails, a slow one not


@asynccontextmanager
async def simulate(*args: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A ``simulate --port 0`` process: its URL and the lines it printed at start-up."""
    process = await asyncio.create_subprocess_exec(
        *SIMULATE, "--port", "0", *args, stdout=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].lstrip().startswith("python -m ccxt_breaker"):
            line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
            assert line, f"simulate exited early after printing {lines}"
            lines.append(line.decode().rstrip("\n"))
        yield lines[0].rsplit(" ", 1)[1], lines
    finally:
        process.terminate()
        await process.wait()


async def control(url: str, *args: str) -> tuple[int, Any, str]:
    """Run ``simulate control --url URL ARGS``: exit code, printed JSON, stderr."""
    process = await asyncio.create_subprocess_exec(
        *SIMULATE,
        "control",
        "--url",
        url,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out else None, err.decode()


async def rules(url: str) -> list[dict[str, Any]]:
    """The active rules, read with an aiohttp client."""
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{url}/_simulator/faults") as response,
    ):
        listed: list[dict[str, Any]] = (await response.json())["faults"]
    return listed


async def status_of(url: str) -> int:
    """The HTTP status of a GET."""
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIMULATE, *args], capture_output=True, text=True, cwd=ROOT, timeout=DEADLINE, check=False
    )


async def test_startup_prints_the_control_url_and_an_example() -> None:
    """Beside the ccxt config, start-up prints the control API's URL and a working command."""
    async with simulate() as (url, lines):
        assert f"Control API on {url}/_simulator; for example:" in lines
        example = lines[-1].split()
        assert example[:7] == ["python", "-m", "ccxt_breaker", "simulate", "control", "--url", url]
        code, rule, _ = await control(url, *example[7:])
        assert (code, rule["id"]) == (0, 1)
        assert [r["fault"]["kind"] for r in await rules(url)] == ["http"]


async def test_fault_flags_start_the_script() -> None:
    """Each --fault SPEC becomes a rule before the first request, in order."""
    specs = ["http 503 --group private --times 3", "latency 2 --endpoint AddOrder --applied"]
    async with simulate("--fault", specs[0], "--fault", specs[1]) as (url, _):
        listed = await rules(url)
    assert [(r["fault"], r["group"], r["endpoint"], r["times"]) for r in listed] == [
        ({"kind": "http", "status": 503, "headers": {}}, "private", None, 3),
        ({"kind": "latency", "seconds": 2.0, "applied": True}, None, "AddOrder", None),
    ]


async def test_control_command_reaches_a_simulator_in_another_process() -> None:
    """control add, list and clear, run as processes, change the running simulator."""
    async with simulate() as (url, _):
        code, added, _ = await control(url, "add", "http", "503", "--group", "private")
        assert (code, added["group"], added["fault"]["status"]) == (0, "private", 503)
        code, listed, _ = await control(f"{url}/_simulator/", "list")
        assert (code, [r["id"] for r in listed["faults"]]) == (0, [1])
        assert await control(url, "clear") == (0, {"removed": 1}, "")
        assert await rules(url) == []


async def test_each_control_command_calls_its_route(
    sim: KrakenSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every control command does its job on the simulator and prints the API's answer."""
    # add, list, remove, clear, release, status, requests, reset-log

    async def command(*args: str) -> Any:
        code = await asyncio.to_thread(main, ["control", "--url", sim.url, *args])
        out = capsys.readouterr().out
        assert code == 0
        return json.loads(out)

    assert (await command("add", "http", "503", "--endpoint", "Time", "--times", "2"))["id"] == 1
    await command("add", "kraken_error", "EService:Busy", "--group", "private")
    assert [r["id"] for r in (await command("list"))["faults"]] == [1, 2]
    assert (await command("remove", "1"))["id"] == 1
    assert [r.id for r in sim.faults] == [2]
    assert await command("clear") == {"removed": 1}
    assert list(sim.faults) == []
    gate = (await command("add", "hold", "--endpoint", "Time"))["id"]
    held = asyncio.create_task(status_of(f"{sim.url}/0/public/Time"))
    await until(lambda: sim.count("Time") == 1)
    await command("release", str(gate))
    assert await asyncio.wait_for(held, DEADLINE) == 200
    assert await command("status", "maintenance") == {"status": "maintenance"}
    assert (sim.status, await command("status")) == ("maintenance", {"status": "maintenance"})
    log = await command("requests", "--endpoint", "Time", "--group", "public")
    assert [r["endpoint"] for r in log["requests"]] == ["Time"]
    assert await command("reset-log") == {"removed": 1}
    assert sim.requests == []


async def test_control_reports_a_refused_rule_in_one_line() -> None:
    """A rule the simulator refuses exits 1 with one line naming the field, no traceback."""
    async with simulate() as (url, _):
        code, out, err = await control(url, "add", "http", "503", "--times", "0")
        assert await rules(url) == []
    assert (code, out, err) == (
        1,
        None,
        "python -m ccxt_breaker simulate control: times must be at least 1\n",
    )


async def test_control_without_a_simulator_fails_in_one_line() -> None:
    """control against a port where nothing listens exits 1 with one line, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await control(f"http://127.0.0.1:{port}", "list")
    assert (code, out, err.count("\n")) == (1, None, 1)
    assert err.startswith(
        f"python -m ccxt_breaker simulate control: cannot reach a simulator at http://127.0.0.1:{port}"
    )


def test_port_in_use_fails_in_one_line() -> None:
    """simulate on a busy port prints one line naming the port, and exits 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--port", str(port))
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"python -m ccxt_breaker simulate: cannot listen on 127.0.0.1:{port}: "
        "address already in use\n",
    )


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("http 600", "fault.status must be an HTTP error status, 4xx or 5xx, not 600"),
        ("http five", "status must be a number, not 'five'"),
        ("latency", "fault.seconds is required for latency faults"),
        ("html 3", "html faults take no value, not '3'"),
        ("nope", "fault.kind must be one of"),
        ("http 503 --group nope", "group must be one of"),
        ("http 503 --times", "argument --times: expected one argument"),
    ],
)
def test_bad_fault_spec_is_a_usage_error(
    spec: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --fault SPEC that would be refused stops start-up with exit 2 and the reason."""
    with pytest.raises(SystemExit) as exited:
        main(["--fault", spec])
    assert exited.value.code == 2
    assert f"error: argument --fault {spec!r}: {reason}" in capsys.readouterr().err


def test_bad_fault_spec_exits_before_serving() -> None:
    """In a real process, a bad --fault SPEC is a one-line usage error: no traceback, no URL."""
    result = run("--fault", "http 600 --group private")
    assert (result.returncode, result.stdout, result.stderr.splitlines()[-1]) == (
        2,
        "",
        "python -m ccxt_breaker simulate: error: argument --fault 'http 600 --group private': "
        "fault.status must be an HTTP error status, 4xx or 5xx, not 600",
    )


def test_help_documents_the_spec() -> None:
    """simulate --help explains the SPEC: every kind, the scope and duration options."""
    result = run("--help")
    assert result.returncode == 0
    for word in ["--fault SPEC", "control --url URL", "--endpoint NAME", "--group", "--times N"]:
        assert word in result.stdout
    for word in ["--seconds S", "--probability P", "--seed N", "--header NAME:VALUE"]:
        assert word in result.stdout
    spec = result.stdout.split("A fault SPEC", 1)[1]
    assert [kind for kind in KINDS if not re.search(rf"\b{kind}\b", spec)] == []


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("http 520", {"fault": {"kind": "http", "status": 520}}),
        (
            "kraken-error 'EGeneral:Internal error' --status 500 --header X-Ray:1",
            {
                "fault": {
                    "kind": "kraken_error",
                    "message": "EGeneral:Internal error",
                    "status": 500,
                    "headers": {"X-Ray": "1"},
                }
            },
        ),
        ("throttled 1800000000", {"fault": {"kind": "throttled", "until": 1800000000.0}}),
        ("too_many_requests 30", {"fault": {"kind": "too_many_requests", "retry_after": 30}}),
        ("too_many_requests none", {"fault": {"kind": "too_many_requests", "retry_after": None}}),
        (
            "too_many_requests soon --error EAPI:Rate",
            {"fault": {"kind": "too_many_requests", "retry_after": "soon", "error": "EAPI:Rate"}},
        ),
        ("latency 1.5 --applied", {"fault": {"kind": "latency", "seconds": 1.5, "applied": True}}),
        (
            "ws_drop 3 --group ws-public --endpoint connect",
            {"fault": {"kind": "ws_drop", "after": 3}, "group": "ws-public", "endpoint": "connect"},
        ),
        ("ws-silence", {"fault": {"kind": "ws_silence"}}),
        (
            "disconnect --endpoint AddOrder --seconds 10 --probability 0.5 --seed 3",
            {
                "fault": {"kind": "disconnect"},
                "endpoint": "AddOrder",
                "seconds": 10.0,
                "probability": 0.5,
                "seed": 3,
            },
        ),
        (
            "hold --group trading --times 1",
            {"fault": {"kind": "hold"}, "group": "trading", "times": 1},
        ),
    ],
)
def test_spec_is_the_control_apis_json(spec: str, rule: dict[str, Any]) -> None:
    """A SPEC reads as the JSON body of POST /_simulator/faults."""
    assert parse_spec(spec) == rule
