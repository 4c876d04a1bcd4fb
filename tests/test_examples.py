"""The examples run offline, as a user would run them, and show what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected", "absent"),
    [
        (
            "drop_in.py",
            ["skipped, circuit 'private' open", "private is closed", "BTC/USD last 50000.0"],
            [],
        ),
        (
            "existing_bot_flag.py",
            [
                # the named limit opens trading at its first answer, failureThreshold 5 or not
                "log: WARNING ccxt_breaker: kraken circuit 'trading' closed -> open "
                "(limit named by the exchange) cause=DDoSProtection",
                'order failed: DDoSProtection: kraken {"error": ["EOrder:Rate limit exceeded"]}',
                "order failed: CircuitOpenError",
                "'trading': 'open'",
                "'public': 'closed'",
                "AddOrder requests that reached Kraken: 1",
            ],
            ["consecutive failures"],
        ),
        (
            "inspect_state.py",
            [
                "AddOrder is guarded by trading",
                "event: public closed -> open",
                "event: public half_open -> closed",
                "order refused, retry_after = None",
                "order placed: True",
            ],
            [],
        ),
        (
            "ws_bot.py",
            [
                "turn 3: dial failed: NetworkError",
                "turn 4: circuit 'ws-public' open, sleeping 1.0s",
                "turn 5: BTC/USD last 50000.0",
                "ws-public is closed; dials that reached Kraken: 4; turns: 5",
            ],
            [],
        ),
    ],
)
def test_example_runs_and_shows_a_group_open_and_recover(
    script: str, expected: list[str], absent: list[str]
) -> None:
    """Each example exits 0 offline and prints the breaker behaviour it demonstrates."""
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for line in expected:
        assert line in run.stdout
    for text in absent:
        assert text not in run.stdout
    assert "Traceback" not in run.stderr
