"""The command line: ``python -m ccxt_breaker demo`` and ``python -m ccxt_breaker simulate``."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
        description="Circuit breakers for ccxt's async Kraken client.",
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
    return parser, demo


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser, demo = _parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
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
