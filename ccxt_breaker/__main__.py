"""The command line: ``python -m ccxt_breaker demo``, ``simulate`` and ``run``."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import runpy
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {text}")
    return value


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m ccxt_breaker",
        description="Circuit breakers for ccxt's Kraken clients.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="watch the breakers work against an embedded Kraken simulator",
        description=(
            "Start a Kraken simulator and a small bot in this process, break the "
            "simulator on a schedule, and print each circuit's transitions and a summary. "
            "Needs no network, keys or configuration."
        ),
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="length of the run; the incidents and breaker timings scale with it "
        "(default %(default)g, at least 2)",
    )
    demo.add_argument(
        "--pace",
        type=_seconds,
        metavar="SECONDS",
        help="interval of the bot's loops (default: duration/60, between 0.05 and 0.5)",
    )
    demo.add_argument(
        "--no-color",
        action="store_true",
        help="plain output (also when stdout is not a terminal or NO_COLOR is set)",
    )
    demo.add_argument(
        "--dashboard",
        type=_port,
        nargs="?",
        const=0,
        metavar="PORT",
        help="serve the live dashboard on http://127.0.0.1:PORT/ while the demo runs and "
        "print its address (PORT 0 or none: a free port)",
    )
    demo.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run N bot processes on one API key instead, sharing their breakers through "
        "Redis (--redis), and lock the key out part way (needs the redis extra)",
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis server the --processes bots share state in (redis://host:port/db)",
    )
    # Its options belong to ccxt_breaker.testing's own parser, which also answers --help.
    commands.add_parser(
        "simulate",
        add_help=False,
        help="serve a fake Kraken REST API for a bot in another process, with faults "
        "scripted at start-up or while it runs (see simulate --help)",
    )
    # Its arguments are the command's own, taken as they are (see _launch).
    commands.add_parser(
        "run",
        add_help=False,
        help="run COMMAND [ARGS...] (an installed console script, or a .py file) in this "
        "process with ccxt_breaker.install() done first, e.g. "
        "`python -m ccxt_breaker run freqtrade trade --config config.json`",
    )
    return parser, demo


_RUN_USAGE = """usage: python -m ccxt_breaker run COMMAND [ARGS...]

Call ccxt_breaker.install(), then run COMMAND with ARGS in this process, as if it had
been run by itself: COMMAND is an installed console script (freqtrade, or the path of
its script) or a Python file. Every Kraken exchange it builds with
options['circuitBreaker'] set gets breakers, and the ccxt_breaker logger says so at INFO.
The exit code is COMMAND's.
"""


def _console_script(command: str) -> Callable[[], Any]:
    """The function behind ``command``: a console script by name or by the path of its
    wrapper script, or a Python file; ``LookupError`` names the nearest script."""
    name = os.path.basename(command)
    found = entry_points(group="console_scripts", name=name)
    for entry in found:
        return entry.load()  # type: ignore[no-any-return]
    if command.endswith(".py") and os.path.isfile(command):
        return lambda: runpy.run_path(command, run_name="__main__") and None
    scripts = sorted(entry.name for entry in entry_points(group="console_scripts"))
    hint = difflib.get_close_matches(name, scripts, n=1)
    raise LookupError(
        f"no console script named {name!r} in this environment"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
        + " (a Python file must end in .py)"
    )


def _launch(argv: list[str]) -> int:
    """``run COMMAND [ARGS...]``: install(), then COMMAND in this process."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_RUN_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    try:
        target = _console_script(command)
    except LookupError as exc:
        print(f"python -m ccxt_breaker run: {exc.args[0]}", file=sys.stderr)
        return 2
    from ._hook import install

    install()
    sys.argv = [command, *args]
    try:
        result = target()
    except SystemExit as exc:
        result = exc.code
    # what a console script's wrapper does with the result: sys.exit(main())
    if result is None or isinstance(result, int):
        return result or 0
    print(result, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # before argparse: the command's options are its own
        return _launch(argv[1:])
    parser, demo = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulate":
        from .testing import main as simulate

        return simulate(rest)
    if rest:
        demo.error(f"unrecognized arguments: {' '.join(rest)}")
    from .testing._demo import MIN_DURATION, DashboardUnavailable, run_demo

    if args.duration < MIN_DURATION:
        demo.error(f"argument --duration: must be at least {MIN_DURATION:g}, not {args.duration:g}")
    if args.processes is not None or args.redis is not None:
        if args.processes is None or args.redis is None or args.processes < 1:
            demo.error("--processes N (at least 1) and --redis URL go together")
        from .testing._demo_processes import run_processes_demo

        try:
            asyncio.run(run_processes_demo(args.processes, args.redis, args.duration))
        except KeyboardInterrupt:
            return 130
        return 0
    # without --no-color, color follows the terminal and NO_COLOR
    color = False if args.no_color else None
    try:
        asyncio.run(run_demo(args.duration, pace=args.pace, color=color, dashboard=args.dashboard))
    except KeyboardInterrupt:
        return 130
    except DashboardUnavailable as exc:
        print(f"python -m ccxt_breaker demo: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
