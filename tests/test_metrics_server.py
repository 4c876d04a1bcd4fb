"""examples/metrics_server.py serves /status, /metrics and the dashboard of a running bot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parent.parent / "examples" / "metrics_server.py"
SCRIPTED = {"private", "trading", "public"}  # the groups its faults open


def get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


def opened(status: Any) -> set[str]:
    (exchange,) = status["exchanges"]
    return {e["group"] for e in exchange["history"] if e["new_state"] == "open"}


def test_example_serves_the_breakers_of_its_bot_and_exits_by_itself() -> None:
    """Run with --duration, it serves its bot's breakers while faults open them, then exits 0."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--duration", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "Dashboard on http://127.0.0.1:PORT/ (...)"
        assert first.startswith("Dashboard on http://127.0.0.1:"), first
        url = first.split()[2].rstrip("/")

        deadline = time.monotonic() + 10
        status = json.loads(get(f"{url}/status")[1])
        while opened(status) != SCRIPTED and time.monotonic() < deadline:
            time.sleep(0.1)
            status = json.loads(get(f"{url}/status")[1])
        assert opened(status) == SCRIPTED
        (exchange,) = status["exchanges"]
        assert (exchange["name"], exchange["account"]) == ("example-bot", "example-bot")

        content_type, metrics = get(f"{url}/metrics")
        assert content_type.startswith("text/plain")
        assert 'ccxt_breaker_state{account="example-bot",exchange="kraken",group="private"' in (
            metrics
        )
        content_type, page = get(f"{url}/")
        assert content_type.startswith("text/html")
        assert "<title>ccxt_breaker</title>" in page

        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for group in SCRIPTED:
        assert f"event: {group} closed -> open" in out
        assert f"event: {group} half_open -> closed" in out
    assert "final: public closed, private closed, trading closed" in out
