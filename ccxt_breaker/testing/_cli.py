"""Run the simulator on its own, and script its faults from another process.

``python -m ccxt_breaker simulate --port 8321 --fault 'http 503 --group private --times 3'``
serves it; ``python -m ccxt_breaker simulate control --url URL add|list|remove|...`` talks
to the control API of one that is running.  A fault SPEC is the same words in both
places; it becomes the control API's JSON, which :func:`add_rule` turns into
:meth:`Faults.add`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, get_args

from ._faults import KINDS, Faults, FieldError, add_rule, describe_rule
from ._simulator import CONTROL_PATH, KrakenSimulator, SystemStatus
from ._state import GROUPS, TIERS, WS_GROUPS

__all__ = ["main", "serve"]

PROG = "python -m ccxt_breaker simulate"
EXAMPLE = "add http 503 --group private --times 3"

# The value after a fault's kind: which argument of the Fault class method it is.
_VALUES = {
    "http": "status",
    "kraken_error": "message",
    "throttled": "until",
    "too_many_requests": "retry_after",
    "latency": "seconds",
    "ws_drop": "after",
    "ws_silence": "after",
}

SPEC_HELP = f"""\
A fault SPEC is a kind, its value if it has one, and options:

  http STATUS                 an HTTP error page (Cloudflare's for 520-524): http 503
  kraken_error MESSAGE        Kraken's JSON error: kraken_error EService:Unavailable
                              (--status N for an HTTP status other than 200)
  throttled UNTIL             EService:Throttled until a Unix time
  too_many_requests [AFTER]   HTTP 429; AFTER is the Retry-After header (seconds or
                              any text, 'none' for no header; default 1)
                              (--error TEXT for Kraken's JSON body instead of text)
  latency SECONDS             answer late (--applied: the order is placed first)
  disconnect | truncated | html | empty | hold
  ws_drop [AFTER]             websocket: drop the socket after AFTER messages (default 0)
  ws_silence [AFTER]          websocket: stop its feed after AFTER messages (pongs go on)

  where:   --endpoint NAME (Kraken's: Ticker, AddOrder; on the sockets: connect, the
           dial, or a channel or order method: ticker, add_order) and/or
           --group {"|".join(GROUPS)}
           (or, on the sockets, {"|".join(WS_GROUPS)}); neither: every request
  lasting: --times N (faulted requests), --seconds S, --probability P [--seed N];
           none of them: until removed
  --header NAME:VALUE (repeatable) adds a response header to http and kraken_error.

The oldest active rule that matches a request answers it.  Kinds may be spelt with
'-' for '_'.  Examples:

  {PROG} --port 8321 --fault 'http 520 --group private --times 3' \\
      --fault 'latency 5 --endpoint AddOrder --applied'
  {PROG} control --url http://127.0.0.1:8321 {EXAMPLE}
"""


class _SpecError(Exception):
    """A SPEC that does not parse; raised instead of argparse's exit."""


class _SpecParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _SpecError(message)


def _spec_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("kind", metavar="KIND", help=f"one of {', '.join(KINDS)}")
    parser.add_argument("value", nargs="?", metavar="VALUE", help="the kind's value, if it has one")
    parser.add_argument("--endpoint", metavar="NAME", help="only this Kraken endpoint")
    groups = ", ".join((*GROUPS, *WS_GROUPS))
    parser.add_argument("--group", metavar="GROUP", help=f"only this group ({groups})")
    parser.add_argument("--times", type=int, metavar="N", help="for the next N matching requests")
    parser.add_argument("--seconds", type=float, metavar="S", help="for S seconds from now")
    parser.add_argument("--probability", type=float, metavar="P", help="fault a share P of them")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the --probability coin")
    parser.add_argument("--status", type=int, metavar="N", help="kraken_error's HTTP status")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="a response header"
    )
    parser.add_argument("--error", metavar="TEXT", help="too_many_requests' Kraken error")
    parser.add_argument("--applied", action="store_true", help="latency after the engine ran")
    return parser


def _value(name: str, text: str) -> Any:
    if name == "message":
        return text
    if name == "retry_after":
        if text.lower() == "none":
            return None
        with contextlib.suppress(ValueError):
            return int(text)
        with contextlib.suppress(ValueError):
            return float(text)
        return text
    try:
        return int(text) if name in ("status", "after") else float(text)
    except ValueError:
        raise _SpecError(f"{name} must be a number, not {text!r}") from None


def _rule_json(args: argparse.Namespace) -> dict[str, Any]:
    """The control API's JSON for a parsed SPEC; add_rule judges what it holds."""
    kind = args.kind.replace("-", "_")
    fault: dict[str, Any] = {"kind": kind}
    if args.value is not None:
        if kind not in _VALUES:
            raise _SpecError(f"{kind} faults take no value, not {args.value!r}")
        fault[_VALUES[kind]] = _value(_VALUES[kind], args.value)
    if args.status is not None:
        fault["status"] = args.status
    if args.header:
        headers = {}
        for header in args.header:
            name, colon, value = header.partition(":")
            if not colon:
                raise _SpecError(f"--header takes NAME:VALUE, not {header!r}")
            headers[name.strip()] = value.strip()
        fault["headers"] = headers
    if args.error is not None:
        fault["error"] = args.error
    if args.applied:
        fault["applied"] = True
    rule: dict[str, Any] = {"fault": fault}
    for name in ("endpoint", "group", "times", "seconds", "probability", "seed"):
        if getattr(args, name) is not None:
            rule[name] = getattr(args, name)
    return rule


_SPEC_PARSER = _spec_arguments(_SpecParser(prog="--fault", add_help=False))


def parse_spec(spec: str) -> dict[str, Any]:
    """A fault SPEC (``"http 503 --group private --times 3"``) as the control API's JSON.

    Raises ``ValueError`` with the reason when the SPEC does not parse or the rule it
    describes would be refused.
    """
    try:
        rule = _rule_json(_SPEC_PARSER.parse_args(shlex.split(spec)))
        add_rule(Faults(lambda: 0.0), rule)  # judged here, before the server starts
    except (_SpecError, FieldError) as exc:
        raise ValueError(str(exc)) from None
    return rule


class _ListenError(OSError):
    """The simulator could not bind its address."""


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tier: str = "starter",
    rate_limits: bool = True,
    credentials: Mapping[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
    faults: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Serve a :class:`KrakenSimulator` until cancelled, announcing its URL, a ccxt config
    and its control API.

    ``faults`` are rules to start with, in the control API's JSON form
    (``{"fault": {"kind": "http", "status": 503}, "times": 3}``).
    """
    simulator = KrakenSimulator(
        host=host, port=port, tier=tier, rate_limits=rate_limits, credentials=credentials
    )
    rules = [add_rule(simulator.faults, spec) for spec in faults]
    if announce is None:
        announce = functools.partial(print, flush=True)  # a piped stdout would hold the URL
    try:
        await simulator.start()
    except OSError as exc:
        errno = exc.errno or 0  # a resolver's errors are negative, and have no strerror
        reason = os.strerror(errno).lower() if errno > 0 else exc.strerror
        raise _ListenError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    try:
        config = json.dumps(simulator.ccxt_config(), indent=4)
        announce(f"Kraken simulator listening on {simulator.url}")
        announce(f"exchange = ccxt.async_support.kraken({config})")
        announce(f"Control API on {simulator.control_url}; for example:")
        announce(f"    {PROG} control --url {simulator.url} {EXAMPLE}")
        for rule in rules:
            announce(f"Fault rule {json.dumps(describe_rule(rule, time.monotonic()))}")
        await asyncio.Event().wait()
    finally:
        await simulator.stop()


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options] [--fault SPEC ...]\n       {PROG} control --url URL COMMAND ...",
        description=(
            "Serve a fake Kraken REST API that ccxt's kraken class can talk to, with\n"
            f"scripted faults.  A JSON control API under {CONTROL_PATH}/ on the same port\n"
            "changes them while it runs; from the command line:\n\n"
            f"  {PROG} control --url URL COMMAND\n\n"
            "  COMMAND: add SPEC | list | remove ID | clear | release ID |\n"
            "           status [online|maintenance|cancel_only|post_only] |\n"
            "           requests [--endpoint NAME] [--group GROUP] | reset-log"
        ),
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind; the control API is served there too (default %(default)s)",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument(
        "--tier",
        choices=sorted(TIERS),
        default="starter",
        help="Kraken verification tier for the per-key counters",
    )
    parser.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="do not enforce the per-key REST and order counters",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="start with this fault rule, e.g. 'http 503 --group private --times 3' "
        "(repeatable; SPEC below)",
    )
    return parser


def _control_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} control",
        description=(
            "Script the faults of a running simulator through its control API\n"
            f"(JSON under {CONTROL_PATH}/).  Each command prints the API's JSON answer;\n"
            "a refused command prints the reason and exits with status 1."
        ),
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", required=True, help="the simulator's URL, as it printed at start-up"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _spec_arguments(
        commands.add_parser(
            "add",
            help="add a fault rule: KIND [VALUE] [options] (SPEC below); prints it with its id",
            description="Add a fault rule.",
            epilog=SPEC_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    commands.add_parser("list", help="the active fault rules")
    commands.add_parser("remove", help="remove one rule").add_argument("id", type=int)
    commands.add_parser("clear", help="remove every rule")
    commands.add_parser("release", help="let the requests a hold rule holds through").add_argument(
        "id", type=int
    )
    commands.add_parser(
        "status", help="print SystemStatus, or set it (maintenance also stops private calls)"
    ).add_argument("status", nargs="?", choices=get_args(SystemStatus))
    log = commands.add_parser("requests", help="the request log (no keys or signatures)")
    log.add_argument("--endpoint", help="only this endpoint")
    log.add_argument("--group", help="only this group")
    commands.add_parser("reset-log", help="forget the requests received so far")
    return parser


def _request(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + CONTROL_PATH + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        # not the control API: some other server on that port
        return 502, {"error": f"{base} answered HTTP {status} without JSON: is it the simulator?"}


def _control(argv: list[str]) -> int:
    parser = _control_parser()
    args = parser.parse_args(argv)
    base = args.url.rstrip("/").removesuffix(CONTROL_PATH)
    call: tuple[str, str, Any]
    if args.command == "add":
        try:
            call = ("POST", "/faults", _rule_json(args))
        except _SpecError as exc:
            parser.error(str(exc))
    elif args.command == "list":
        call = ("GET", "/faults", None)
    elif args.command == "remove":
        call = ("DELETE", f"/faults/{args.id}", None)
    elif args.command == "clear":
        call = ("DELETE", "/faults", None)
    elif args.command == "release":
        call = ("POST", f"/faults/{args.id}/release", None)
    elif args.command == "status":
        if args.status is None:
            call = ("GET", "/status", None)
        else:
            call = ("PUT", "/status", {"status": args.status})
    elif args.command == "requests":
        query = urllib.parse.urlencode(
            {k: v for k, v in (("endpoint", args.endpoint), ("group", args.group)) if v}
        )
        call = ("GET", "/requests" + (f"?{query}" if query else ""), None)
    else:  # reset-log
        call = ("DELETE", "/requests", None)
    try:
        status, answer = _request(base, *call)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"{PROG} control: cannot reach a simulator at {base}: {reason}", file=sys.stderr)
        return 1
    if status >= 400:
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        print(f"{PROG} control: {error}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``simulate`` command line; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["control"]:
        return _control(argv[1:])
    parser = _serve_parser()
    args = parser.parse_args(argv)
    specs = []
    for spec in args.fault:
        try:
            specs.append(parse_spec(spec))
        except ValueError as exc:
            parser.error(f"argument --fault {spec!r}: {exc}")
    run = serve(args.host, args.port, tier=args.tier, rate_limits=args.rate_limits, faults=specs)
    try:
        asyncio.run(run)
    except KeyboardInterrupt:
        pass
    except _ListenError as exc:
        print(f"{PROG}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
