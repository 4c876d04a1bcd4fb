"""freqtrade against the Kraken simulator through a public outage, with and without breakers.

    python benchmarks/freqtrade_outage.py --python /path/to/freqtrade-venv/bin/python
    python benchmarks/freqtrade_outage.py --python ... --check   # CI: also assert the claims

freqtrade is not a dependency of this project: install it (pinned) in a venv of its own,
with this package beside it (``pip install freqtrade==2026.9 -e .``), and pass that venv's
Python. For each variant the script starts ``python -m ccxt_breaker simulate``, a dry-run
``freqtrade trade`` on a minimal strategy that holds a position in each pair and reviews it
every loop, as a DCA strategy does (so that its sync client fetches each pair's Ticker
every loop, and its async client the OHLC candles of each new minute), and, after a
warm-up, breaks every public endpoint with HTTP 503 for ``--outage`` seconds, starting a
second before a minute ends. It then reads the simulator's request log and freqtrade's
log, and prints per variant:

- the public requests that reached the simulator during the outage, by endpoint;
- the recovery delay: from the outage's end to the first good OHLC and Ticker answers;
- the log records during the outage (and how many of them are ccxt_breaker's), and
  whether freqtrade kept running;
- tracebacks that pass through ccxt_breaker (there must be none).

Variants: ``plain`` is ``freqtrade trade``; ``breakers`` is
``python -m ccxt_breaker run freqtrade trade`` with the recipe's ``circuitBreaker`` options
in ``ccxt_config``, so both of freqtrade's clients get breakers.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAIRS = ["BTC/USD", "ETH/USD"]
# what the strategy below makes freqtrade fetch again and again, and which client sends it
WATCHED = {"OHLC": "async client", "Ticker": "sync client"}
# The README's recipe (see "freqtrade" there): the two clients share their circuits; for the
# public group, one probe per pair, a fixed 5 s open time (a grown one would delay the first
# candle after an outage by as much), and one good probe closes.
RECIPE: dict[str, Any] = {
    "sharedState": "process",  # freqtrade's sync and async clients: one set of circuits
    "groups": {
        "public": {
            "failureThreshold": 3,
            "halfOpenMaxCalls": len(PAIRS),
            "successThreshold": 1,
            "resetTimeout": 5000,
            "resetTimeoutMultiplier": 1,
        }
    },
}
STRATEGY = '''
from freqtrade.strategy import IStrategy
from pandas import DataFrame


class OutageProbe(IStrategy):
    """Enters every pair at once and reviews each position every loop, as a DCA strategy does."""

    timeframe = "1m"
    minimal_roi = {"0": 10}
    stoploss = -0.99
    startup_candle_count = 2
    process_only_new_candles = False
    position_adjustment_enable = True  # get_rates() every loop: a Ticker per open trade

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
'''
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - ([\w.]+) - ")


@dataclass
class Run:
    """What one variant did."""

    variant: str
    outage: tuple[float, float]  # simulator clock
    requests: list[dict[str, Any]]
    log: list[str]
    returncode: int | None
    alive_at_end: bool
    records: int = 0  # the log records during the outage
    ours: int = 0  # of them, ccxt_breaker's (its transitions)
    during: collections.Counter[str] = field(default_factory=collections.Counter)
    recovery: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        start, end = self.outage
        public = [r for r in self.requests if r["group"] == "public"]
        self.during = collections.Counter(r["endpoint"] for r in public if start <= r["time"] < end)
        for endpoint in WATCHED:
            good = [
                r["time"]
                for r in public
                if r["endpoint"] == endpoint and r["time"] >= end and r["status"] == 200
            ]
            self.recovery[endpoint] = min(good) - end if good else None

    def tracebacks(self) -> list[list[str]]:
        """Every traceback in freqtrade's log, as its lines (the exception's last)."""
        found: list[list[str]] = []
        current: list[str] = []
        for line in self.log:
            if line.startswith("Traceback"):
                current = [line]
            elif current:
                current.append(line)
                if not line.startswith((" ", "\t")):
                    found.append(current)
                    current = []
        return found

    def bugs_of_ours(self) -> list[str]:
        """Tracebacks that end in something other than a ccxt error (CircuitOpenError is
        one) and pass through ccxt_breaker: a bug of this package, not an outage."""
        return [
            "\n".join(trace)
            for trace in self.tracebacks()
            if any("ccxt_breaker" in line for line in trace[1:-1])
            and not trace[-1].startswith(("ccxt.", "ccxt_breaker._errors.CircuitOpenError"))
        ]


def control(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}/_simulator/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def start_simulator(python: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [python, "-m", "ccxt_breaker", "simulate", "--no-rate-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = _LISTENING.search(line)
        if found:
            return process, found.group(1)
    raise RuntimeError("the simulator did not start")


def write_config(where: Path, base: str, breakers: bool) -> Path:
    user_data = where / "user_data"
    (user_data / "strategies").mkdir(parents=True)
    (user_data / "strategies" / "outage_probe.py").write_text(textwrap.dedent(STRATEGY))
    ccxt_config: dict[str, Any] = {"urls": {"api": {"public": base, "private": base}}}
    if breakers:
        ccxt_config["options"] = {"circuitBreaker": RECIPE}
    config = {
        "max_open_trades": len(PAIRS),
        "stake_currency": "USD",
        "stake_amount": 100,
        "dry_run": True,
        "dry_run_wallet": 1000,
        "timeframe": "1m",
        "trading_mode": "spot",
        "exchange": {
            "name": "kraken",
            "key": "",
            "secret": "",
            "ccxt_config": ccxt_config,
            "ccxt_async_config": {},
            "pair_whitelist": PAIRS,
        },
        "pairlists": [{"method": "StaticPairList"}],
        # at the ask: a dry-run entry fills at once, so no order stays open to check
        "entry_pricing": {"price_side": "other", "use_order_book": False},
        "exit_pricing": {"price_side": "same", "use_order_book": False},
        "bot_name": "outage-probe",
        "initial_state": "running",
        "internals": {"process_throttle_secs": 1},
        "db_url": "sqlite://",
        "strategy": "OutageProbe",
        "user_data_dir": str(user_data),
    }
    path = where / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def run_variant(
    python: str, variant: str, warmup: float, outage: float, after: float, keep: Path | None
) -> Run:
    simulator, base = start_simulator(python)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), base, breakers=variant == "breakers")
            command = (
                ["-m", "freqtrade"]
                if variant == "plain"
                else [
                    "-m",
                    "ccxt_breaker",
                    "run",
                    "freqtrade",
                ]
            )
            log_path = Path(tmp) / "freqtrade.log"
            with open(log_path, "w") as log:
                bot = subprocess.Popen(
                    [python, *command, "trade", "--config", str(config), "--dry-run"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                )
                time.sleep(warmup)
                # start a second before a minute ends: freqtrade wants a new 1m candle from
                # the next loop on, and a loop through the outage (each Ticker retried four
                # times, a second each) takes 10-20 s, so the refresh falls in the outage
                time.sleep((59 - time.time()) % 60)
                start = time.monotonic()  # CLOCK_MONOTONIC: the simulator's clock too
                wall = time.time()
                control(
                    base,
                    "POST",
                    "faults",
                    {
                        "fault": {"kind": "http", "status": 503},
                        "group": "public",
                        "seconds": outage,
                    },
                )
                time.sleep(outage + after)
                alive = bot.poll() is None
                bot.send_signal(signal.SIGINT)
                try:
                    code = bot.wait(30)
                except subprocess.TimeoutExpired:
                    bot.kill()
                    code = bot.wait()
            requests = control(base, "GET", "requests")["requests"]
            lines = log_path.read_text(errors="replace").splitlines()
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{variant}.log").write_text("\n".join(lines) + "\n")
                (keep / f"{variant}.requests.json").write_text(
                    json.dumps({"outage": [start, start + outage], "requests": requests})
                )
    finally:
        simulator.terminate()
        simulator.wait(10)
    run = Run(variant, (start, start + outage), requests, lines, code, alive)
    run.records, run.ours = records_during(run, wall, wall + outage)
    return run


def records_during(run: Run, wall_start: float, wall_end: float) -> tuple[int, int]:
    """The log records within the wall-clock window: all of them, and ccxt_breaker's."""
    count = ours = 0
    for line in run.log:
        found = _LOG_TIME.match(line)
        if found:
            stamp = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
            stamp += int(found.group(2)) / 1000
            if wall_start <= stamp < wall_end:
                count += 1
                ours += found.group(3) == "ccxt_breaker"
    return count, ours


def report(runs: list[Run]) -> str:
    endpoints = sorted({*WATCHED, *(e for run in runs for e in run.during)})
    head = " | ".join(endpoints)
    lines = [
        f"| variant | {head} | total | recovery (s), by endpoint | log records (ccxt_breaker's) "
        "| tracebacks | kept running |"
    ]
    lines.append("|---" * (len(endpoints) + 6) + "|")
    for run in runs:
        recovery = ", ".join(
            f"{e} {'-' if r is None else f'{r:.1f}'}" for e, r in run.recovery.items()
        )
        lines.append(
            f"| {run.variant} | "
            + " | ".join(str(run.during[e]) for e in endpoints)
            + f" | {sum(run.during.values())} | {recovery} | {run.records} ({run.ours}) "
            f"| {len(run.tracebacks())} | {run.alive_at_end} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the Python of freqtrade's venv")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--after", type=float, default=20.0, help="seconds after the outage")
    parser.add_argument("--check", action="store_true", help="assert the claims (CI)")
    parser.add_argument("--keep", type=Path, help="keep freqtrade's logs in this directory")
    args = parser.parse_args()
    # freqtrade runs in a directory of its own; abspath, not resolve: a venv's python is a
    # symlink, and the venv is found through the link's path
    args.python = os.path.abspath(args.python)
    # side by side: both outages start at the same second, on the same loaded machine
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                run_variant, args.python, variant, args.warmup, args.outage, args.after, args.keep
            )
            for variant in ("plain", "breakers")
        ]
        runs = [future.result() for future in futures]
    print(f"public requests during a {args.outage:g} s outage of every public endpoint (HTTP 503)")
    print(report(runs))
    plain, guarded = runs
    failures = []
    for run in runs:
        if not run.alive_at_end:
            failures.append(f"{run.variant}: freqtrade did not survive the outage")
        for trace in run.bugs_of_ours():
            failures.append(f"{run.variant}: a traceback through ccxt_breaker:\n{trace}")
    for endpoint, client in WATCHED.items():
        if not plain.during[endpoint]:  # else the run proves nothing of that client
            failures.append(f"plain freqtrade's {client} sent no {endpoint} during the outage")
    public = RECIPE["groups"]["public"]
    # one public circuit for both clients: the failures that open it (and those of the
    # pairs' calls already in flight), then its probes, once per open period
    periods = math.ceil(args.outage * 1000 / public["resetTimeout"])
    bound = public["failureThreshold"] + len(PAIRS) + public["halfOpenMaxCalls"] * periods
    sent, sent_plain = sum(guarded.during.values()), sum(plain.during.values())
    if not sent < sent_plain or sent > bound:
        failures.append(
            f"{sent} public requests during the outage (at most {bound}, and fewer "
            f"than plain freqtrade's {sent_plain})"
        )
    # both clients got breakers, an open on one reached the other through the store, and
    # it refused the calls of both, unsent
    guarded_log = "\n".join(guarded.log)
    for client in ("ccxt.kraken (sync) gets circuit breakers", "ccxt.pro.kraken gets circuit"):
        if client not in guarded_log:
            failures.append(f"no {client.split(' gets')[0]} client with breakers in the log")
    if "circuit 'public' closed -> open (consecutive failures (shared))" not in guarded_log:
        failures.append("the public circuit's open did not reach freqtrade's other client")
    for endpoint, client in WATCHED.items():
        if f"circuit 'public' is open: {endpoint} was not sent" not in guarded_log:
            failures.append(f"the open public circuit refused no {endpoint} ({client})")
    # the first good answer of each, against plain freqtrade's: the README's bound, plus one
    # of freqtrade's loops (its 1 s throttle, and about a second per pair for its reviews)
    for endpoint in WATCHED:
        ours, theirs = guarded.recovery[endpoint], plain.recovery[endpoint]
        limit = 2 * (theirs or 0.0) + public["resetTimeout"] / 1000 + 1.0 + len(PAIRS)
        if ours is None or theirs is None or ours > limit:
            failures.append(
                f"first good {endpoint} after the outage: {ours} s with breakers, {theirs} s "
                f"without (at most {limit:.1f} s with them)"
            )
    # less noise: ccxt_breaker logs its transitions (each client: one open, then two per
    # open period) and refusals at DEBUG only; a refusal's message is one line, with no
    # response body. freqtrade logs each of its retries, so its own records grow with the
    # refusals it retries at once: only a spin (the 921 records of an early version) fails.
    transitions = 2 * (2 * periods + 2)
    if guarded.ours > transitions:
        failures.append(
            f"ccxt_breaker logged {guarded.ours} records during the outage (at most "
            f"{transitions}: its transitions)"
        )
    bodies = [line for line in guarded.log if "CircuitOpenError" in line and "<" in line]
    if bodies:
        failures.append(f"a refusal's message carried a response body: {bodies[0][:200]}")
    if guarded.records > 3 * plain.records + 30:
        failures.append(
            f"{guarded.records} log records during the outage, "
            f"against {plain.records} without breakers"
        )
    for failure in failures:
        print("FAIL", failure, file=sys.stderr)
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
