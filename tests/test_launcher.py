"""``python -m ccxt_breaker run COMMAND [ARGS...]``: install(), then a console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A bot installed as a console script (a distribution on PYTHONPATH with an entry point),
# which builds its exchanges from a config that carries the flag, as freqtrade does.
BOT = """
import logging
import sys

import ccxt
import ccxt.async_support


def main():
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    flag = {"options": {"circuitBreaker": {"failureThreshold": 3}}}
    sync, async_ = ccxt.kraken(flag), ccxt.async_support.kraken(flag)
    plain = ccxt.kraken()
    print("argv", sys.argv)
    print("guarded", hasattr(sync, "circuit_breakers"), hasattr(async_, "circuit_breakers"))
    print("plain", type(plain) is ccxt.kraken)
    print("subclass", isinstance(sync, ccxt.kraken), isinstance(async_, ccxt.async_support.kraken))
    return int(sys.argv[-1]) if sys.argv[-1].isdigit() else None


def fail():
    raise SystemExit("the bot could not start")
"""


@pytest.fixture
def bot_path(tmp_path: Path) -> Path:
    """A directory holding the module ``fakebot`` and a distribution that installs it as
    the console scripts ``fakebot`` and ``fakebot-fail``."""
    (tmp_path / "fakebot.py").write_text(BOT)
    info = tmp_path / "fakebot-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakebot\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nfakebot = fakebot:main\nfakebot-fail = fakebot:fail\n"
    )
    return tmp_path


def launch(path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "ccxt_breaker", "run", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_run_installs_then_runs_the_console_script_with_its_arguments(bot_path: Path) -> None:
    """The script gets its own argv, its flagged Kraken instances (sync and async) get
    breakers, unflagged ones stay plain ccxt, and its return value is the exit code."""
    done = launch(bot_path, "fakebot", "trade", "--config", "config.json", "7")
    assert done.returncode == 7, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "argv ['fakebot', 'trade', '--config', 'config.json', '7']",
        "guarded True True",
        "plain True",
        "subclass True True",
    ]


def test_run_logs_one_info_line_per_exchange_that_gets_breakers(bot_path: Path) -> None:
    """Each flagged instance logs one INFO line naming its class and groups; others none."""
    done = launch(bot_path, "fakebot")
    assert done.returncode == 0, done.stderr
    infos = [line for line in done.stderr.splitlines() if line.startswith("ccxt_breaker INFO")]
    groups = "public, private, trading, funding, earn"
    assert infos == [
        f"ccxt_breaker INFO ccxt.kraken (sync) gets circuit breakers: {groups}",
        f"ccxt_breaker INFO ccxt.async_support.kraken gets circuit breakers: {groups}",
    ]


def test_run_takes_a_python_file_and_the_path_of_a_script(bot_path: Path) -> None:
    """A .py file runs as __main__; a path whose name is a console script runs that script."""
    script = bot_path / "start.py"
    script.write_text("import fakebot\nraise SystemExit(fakebot.main())\n")
    done = launch(bot_path, str(script), "5")
    assert (done.returncode, done.stdout.splitlines()[1]) == (5, "guarded True True")
    done = launch(bot_path, "/some/venv/bin/fakebot", "4")
    assert done.returncode == 4, done.stderr


def test_run_passes_a_scripts_exit_message_and_code_through(bot_path: Path) -> None:
    """A script that exits with a message prints it to stderr and exits 1, as it would."""
    done = launch(bot_path, "fakebot-fail")
    assert (done.returncode, done.stderr.strip()) == (1, "the bot could not start")


@pytest.mark.parametrize(
    ("argv", "code", "stream", "text"),
    [
        ((), 2, "stderr", "usage: python -m ccxt_breaker run COMMAND [ARGS...]"),
        (("--help",), 0, "stdout", "usage: python -m ccxt_breaker run COMMAND [ARGS...]"),
        (
            ("fakebott",),
            2,
            "stderr",
            "no console script named 'fakebott' in this environment; did you mean 'fakebot'?",
        ),
    ],
)
def test_run_without_a_known_command_says_what_it_takes(
    bot_path: Path, argv: tuple[str, ...], code: int, stream: str, text: str
) -> None:
    """No command prints the usage (exit 2); an unknown one is named, with the nearest."""
    done = launch(bot_path, *argv)
    assert done.returncode == code
    assert text in getattr(done, stream)


def test_run_is_listed_in_the_help() -> None:
    """`python -m ccxt_breaker --help` lists run beside demo and simulate."""
    done = subprocess.run(
        [sys.executable, "-m", "ccxt_breaker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")]
    assert [name for name in listed if name in ("demo", "simulate", "run")] == [
        "demo",
        "simulate",
        "run",
    ]
