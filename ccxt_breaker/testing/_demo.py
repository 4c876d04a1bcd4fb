"""``python -m ccxt_breaker demo``: the breakers at work against the embedded Kraken simulator.

A small bot polls two tickers (public), streams one over the websocket (ws-public),
reads its balance (private), and places and cancels limit orders (trading), while a
script breaks the simulated Kraken: a private-API outage, a websocket outage (the socket
drops and every dial is answered 503), a trading rate limit with ``Retry-After``, then
public answers slower than the client's timeout.  Each transition prints as it happens, a
status line of every group follows at regular intervals, and a summary and each circuit's
states drawn across the run (:func:`timeline_lines`) end it.  The script and the breaker
settings scale with the duration, so a short run tells the same story faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, TextIO

import ccxt

from .._errors import CircuitOpenError
from .._events import Event, StateChanged
from ..pro import kraken
from ._faults import Fault, FaultRule
from ._simulator import KrakenSimulator, RequestRecord, strict_nonces
from ._state import GROUPS

__all__ = [
    "MIN_DURATION",
    "DashboardUnavailable",
    "IncidentResult",
    "Scenario",
    "Summary",
    "run_demo",
    "timeline_lines",
]

# Below this the client timeout and Retry-After (whole seconds) no longer fit the timeline.
MIN_DURATION = 2.0
SYMBOLS = ("BTC/USD", "ETH/USD")
# A buy far below the simulator's fixed 50,000 mid price: it rests on the book until cancelled.
ORDER = ("BTC/USD", "limit", "buy", 0.001, 40_000)
# Public requests held back by the slow-answers incident: enough to open the circuit.
SLOW_REQUESTS = 4
# The groups the demo shows: the REST ones, and the public websocket's.
DEMO_GROUPS = (*GROUPS, "ws-public")

_KRAKEN_ERROR = re.compile(r"\b[EW][A-Z][A-Za-z]*:[^\"\]]+")
_HTTP_STATUS = re.compile(r" ([45]\d\d) ")
_COLORS = {"closed": "32", "half_open": "33", "open": "31"}

# The timeline's glyphs: ASCII in plain output, shapes that tell the states apart without
# their colours in coloured output (on a stream that can encode them).
ASCII_GLYPHS = {"closed": "-", "open": "#", "half_open": "~"}
FANCY_GLYPHS = {"closed": "\u2500", "open": "\u2588", "half_open": "\u2592"}
# Columns of the timeline: with the group names and the bars its lines take 79 columns.
TIMELINE_WIDTH = 65
# A column the circuit spent in several states shows the first of them in this order, so
# that a half-open probe, or an opening, shorter than a column stays visible.
_PRECEDENCE = ("half_open", "open", "closed")
# Tick steps of the time axis in seconds; the axis takes the smallest that leaves
# _TICK_GAP columns from one tick to the next.
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_TICK_GAP = 8


@dataclass(frozen=True, slots=True)
class Scenario:
    """The timeline and the tuning of one run, all in seconds and scaled to ``duration``.

    At the default 30 s a circuit first stays open for 3 s and the client gives up on a
    request after 1 s; a shorter run shrinks both, so that every incident still opens its
    circuit and sees it close again before the end.
    """

    duration: float
    pace: float
    timeout: float
    reset_timeout: float
    retry_after: int
    outage_at: float
    outage_for: float
    limit_at: float
    slow_at: float
    ws_at: float
    ws_for: float

    @classmethod
    def scaled(cls, duration: float = 30.0, pace: float | None = None) -> Scenario:
        """The scenario for a run of ``duration`` s; ``pace`` is the bot's loop interval."""
        if duration < MIN_DURATION:
            raise ValueError(f"duration must be at least {MIN_DURATION:g} s, not {duration:g}")
        if pace is not None and pace <= 0:
            raise ValueError(f"pace must be positive, not {pace:g}")
        return cls(
            duration=duration,
            pace=min(0.5, max(0.05, duration / 60)) if pace is None else pace,
            timeout=max(0.15, duration / 30),
            reset_timeout=duration / 10,
            retry_after=max(1, round(duration / 10)),  # HTTP names whole seconds
            outage_at=0.05 * duration,
            outage_for=0.27 * duration,
            limit_at=0.45 * duration,
            slow_at=0.6 * duration,
            ws_at=0.3 * duration,
            # long enough for ccxt's own dial backoff (0.2, 0.4, 0.8 s) to let out the
            # failures that open the circuit
            ws_for=max(0.1 * duration, 1.0),
        )

    def breaker_options(self) -> dict[str, Any]:
        """``options['circuitBreaker']`` for the bot's exchange."""
        reset = round(self.reset_timeout * 1000)
        return {
            "failureThreshold": 3,
            "successThreshold": 2,
            "resetTimeout": reset,
            "resetTimeoutMultiplier": 2,
            "maxResetTimeout": 4 * reset,
            "resetTimeoutJitter": 0,  # the same timeline on every run
        }


@dataclass(frozen=True, slots=True)
class IncidentResult:
    """One scripted incident; times are seconds since the start, ``None`` if never reached."""

    name: str
    group: str
    started: float
    opened: float | None
    cleared: float | None
    closed: float | None

    @property
    def time_to_open(self) -> float | None:
        return None if self.opened is None else self.opened - self.started

    @property
    def time_to_recover(self) -> float | None:
        """From the fault clearing to the circuit closing again."""
        if self.closed is None or self.cleared is None:
            return None
        return max(0.0, self.closed - self.cleared)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did: requests per group, refusals, incidents and the errors the bot saw."""

    duration: float
    sent: dict[str, int]
    rejected: dict[str, int]
    failures: dict[str, int]
    states: dict[str, str]
    incidents: tuple[IncidentResult, ...]
    exceptions: dict[str, int]
    done: dict[str, int]


class DashboardUnavailable(OSError):
    """The dashboard's port could not be opened (taken, or not ours to open)."""


@dataclass(frozen=True, slots=True)
class _Incident:
    name: str
    group: str
    started: float
    rule: FaultRule
    ends: float | None  # for a time span; a counted fault ends with its last request


async def run_demo(
    duration: float = 30.0,
    *,
    pace: float | None = None,
    out: TextIO | None = None,
    color: bool | None = None,
    dashboard: int | None = None,
) -> Summary:
    """Run the demo for about ``duration`` s, printing to ``out`` (default stdout).

    ``color`` defaults to whether ``out`` is a terminal and ``NO_COLOR`` is unset.  With
    ``dashboard``, a port (0: a free one), the live dashboard of :mod:`ccxt_breaker.web`
    is served on 127.0.0.1 while the demo runs, and its address printed before the bot
    starts; :class:`DashboardUnavailable` if the port cannot be opened.
    """
    scenario = Scenario.scaled(duration, pace)
    out = sys.stdout if out is None else out
    if color is None:
        color = _wants_color(out)
    # The demo prints every transition itself; the logger's warnings would repeat them
    # on stderr when the application has configured no logging.
    logger = logging.getLogger("ccxt_breaker")
    quiet = logging.NullHandler()
    logger.addHandler(quiet)
    try:
        # The scripted incidents are the only ones: the simulator's per-key counters
        # would add their own at the bot's pace.
        async with KrakenSimulator(rate_limits=False, ws_interval=scenario.pace) as sim:
            exchange = kraken(
                {
                    **sim.ccxt_config(),
                    "enableRateLimit": False,  # the bot paces its own loops
                    "timeout": round(scenario.timeout * 1000),
                    "timeout_on_exit": 0,  # no TLS to wind down on 127.0.0.1
                    "options": {"circuitBreaker": scenario.breaker_options()},
                }
            )
            strict_nonces(exchange)
            try:
                async with _dashboard(exchange, dashboard) as url:
                    return await _Run(scenario, sim, exchange, _Printer(out, color), url).play()
            finally:
                await exchange.close()
    finally:
        logger.removeHandler(quiet)


@contextlib.asynccontextmanager
async def _dashboard(exchange: Any, port: int | None) -> AsyncIterator[str | None]:
    """Serve ``status_app(exchange)`` on 127.0.0.1:``port`` inside the block; yields its
    address, or ``None`` (and serves nothing) when ``port`` is ``None``."""
    if port is None:
        yield None
        return
    from aiohttp import web

    from ..web import status_app

    runner = web.AppRunner(status_app(exchange), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            # aiohttp's own message repeats the address; the system's names the reason
            reason = os.strerror(exc.errno) if exc.errno else exc.strerror
            raise DashboardUnavailable(
                exc.errno, f"cannot serve the dashboard on 127.0.0.1:{port}: {reason}"
            ) from exc
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


class _Bot:
    """An ordinary ccxt bot: each task loops at its own pace and notes what it sees."""

    def __init__(self, exchange: Any, pace: float, stop: asyncio.Event) -> None:
        self.exchange = exchange
        self.pace = pace
        self.stop = stop
        self.seen: Counter[str] = Counter()  # ccxt exceptions by class name
        self.done: Counter[str] = Counter()
        self.resting: list[str] = []  # placed orders not yet cancelled
        # Kraken refuses a nonce lower than one it has already seen, so the signed calls
        # of one key go out one at a time and arrive in the order they were signed.
        self.signing = asyncio.Lock()

    async def run(self) -> None:
        await asyncio.gather(
            *(self._loop(self._ticker, symbol) for symbol in SYMBOLS),
            self._loop(self._balance),
            self._loop(self._trade),
            self._stream(SYMBOLS[0]),
        )

    async def _stream(self, symbol: str) -> None:
        """Watch a ticker over the websocket; sleep ``retry_after`` when refused."""
        while not self.stop.is_set():
            wait = self.pace
            try:
                # ccxt leaves a watch waiting after some errors: never longer than this
                await asyncio.wait_for(self.exchange.watch_ticker(symbol), 4 * self.pace + 1)
                self.done["ticker updates"] += 1
                continue  # the next update is the wait
            except CircuitOpenError as exc:  # nothing dialed: sleep until a probe may go
                self.seen[type(exc).__name__] += 1
                if exc.retry_after is not None:
                    wait = max(exc.retry_after, 0.01)
            except ccxt.BaseError as exc:
                self.seen[type(exc).__name__] += 1
            except TimeoutError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), wait)

    async def _loop(self, step: Callable[..., Awaitable[None]], *args: str) -> None:
        while not self.stop.is_set():
            try:
                await step(*args)
            except ccxt.BaseError as exc:
                self.seen[type(exc).__name__] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.pace)

    async def _ticker(self, symbol: str) -> None:
        await self.exchange.fetch_ticker(symbol)
        self.done["tickers"] += 1

    async def _balance(self) -> None:
        async with self.signing:
            await self.exchange.fetch_balance()
        self.done["balances"] += 1

    async def _trade(self) -> None:
        await self.cancel_resting()
        async with self.signing:
            order = await self.exchange.create_order(*ORDER)
        self.resting.append(order["id"])
        self.done["orders placed"] += 1
        await self.cancel_resting()

    async def cancel_resting(self) -> None:
        while self.resting:
            try:
                async with self.signing:
                    await self.exchange.cancel_order(self.resting[0], ORDER[0])
            except ccxt.OrderNotFound:
                pass
            else:
                self.done["orders cancelled"] += 1
            self.resting.pop(0)


class _Printer:
    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        # A stream that cannot encode a symbol (an ASCII terminal, a cp1252 redirect on
        # Windows) gets its ASCII stand-in instead of a UnicodeEncodeError.
        self.arrow = _symbol(out, "\u2192", "->")
        self.dot = _symbol(out, "\u00b7", "/")
        # the timeline stays ASCII in plain output; coloured, it draws shapes where it can
        fancy = color and _symbol(out, "".join(FANCY_GLYPHS.values()), "") != ""
        self.glyphs = FANCY_GLYPHS if fancy else ASCII_GLYPHS
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def line(self, text: str, at: float | None = None) -> None:
        stamp = f"t=+{self.now() if at is None else at:.1f}s"
        self.write(f"{stamp:<9} {text}\n")

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
        except UnicodeEncodeError:
            # text the demo does not choose (an exchange's message) may hold anything
            encoding = getattr(self.out, "encoding", None) or "ascii"
            self.out.write(text.encode(encoding, "backslashreplace").decode(encoding))
        self.out.flush()

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def state(self, state: str, width: int = 0) -> str:
        return self.paint(f"{state:<{width}}", _COLORS.get(state, "0"))

    def transition(self, at: float, event: StateChanged) -> None:
        arrow = f"{self.state(event.old_state)} {self.arrow} {self.state(event.new_state)}"
        text = f"{event.group:<9} {arrow} ({event.reason}"
        cause = _brief(event.cause) if event.new_state == "open" else ""
        text += f"; {cause})" if cause else ")"
        if event.new_state == "open" and event.retry_after is not None:
            text += f", retry in {event.retry_after:.1f} s"
        self.line(text, at)

    def status(self, group: str, state: str, retry_after: float | None) -> str:
        """``private open, 2.5 s left``: a group's state and, while open, the time left."""
        text = f"{group} {self.state(state)}"
        if state != "open":
            return text
        if retry_after is None:
            return f"{text} until reset"  # forced open
        if round(retry_after, 1) > 0:
            return f"{text}, {retry_after:.1f} s left"
        return f"{text}, next call probes"  # the open time is over; half-open comes lazily


class _Run:
    def __init__(
        self,
        scenario: Scenario,
        sim: KrakenSimulator,
        exchange: Any,
        p: _Printer,
        dashboard: str | None = None,
    ):
        self.scenario = scenario
        self.dashboard = dashboard
        self.sim = sim
        self.exchange = exchange
        self.p = p
        self.breakers = exchange.circuit_breakers
        self.stop = asyncio.Event()
        self.bot = _Bot(exchange, scenario.pace, self.stop)
        self.incidents: list[_Incident] = []
        self.transitions: list[tuple[float, str, str]] = []  # (time, group, new state)
        self.calm = asyncio.Event()  # set while every circuit is closed
        self.calm.set()

    def on_event(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            at = self.p.now()
            self.transitions.append((at, event.group, event.new_state))
            self.p.transition(at, event)
            if all(b.state == "closed" for b in self.breakers.values()):
                self.calm.set()
            else:
                self.calm.clear()

    async def play(self) -> Summary:
        s, p = self.scenario, self.p
        p.write(
            f"A Kraken simulator on {self.sim.url} and, for {s.duration:g} s, a bot that every "
            f"{s.pace:.2f} s\nfetches the {' and '.join(SYMBOLS)} tickers (public), streams "
            f"{SYMBOLS[0]} (ws-public), reads its\nbalance (private), and places and "
            "cancels an order (trading); the client gives "
            f"up on a request after {s.timeout:.2f} s. Each group's\nbreaker opens after 3 "
            f"failures and stays open {s.reset_timeout:.1f} s at first (twice as long after a "
            "failed\nprobe), then closes after 2 good probes. t=+N.Ns: seconds since the bot "
            "started.\n\n"
        )
        if self.dashboard is not None:
            p.write(f"dashboard: {self.dashboard}  (live until the demo ends)\n\n")
        await self.exchange.load_markets()
        p.start = time.monotonic()  # the timeline starts with the bot
        began = time.time()  # the same moment on the clock of the breakers' history
        self.breakers.add_listener(self.on_event)
        tasks = [asyncio.create_task(c) for c in (self.bot.run(), self._script(), self._status())]
        try:
            await self._until(s.duration)
            # A circuit still open at the end gets a little longer to show its recovery.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.calm.wait(), s.duration / 2)
        finally:
            self.stop.set()
            for task in tasks[1:]:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            self.breakers.remove_listener(self.on_event)
            ended = time.time()
        for outcome in outcomes:  # a bug in the bot or the script must not pass silently
            if isinstance(outcome, Exception):
                raise outcome
        with contextlib.suppress(ccxt.BaseError):
            await self.bot.cancel_resting()
        summary = self._summary()
        self._print_summary(summary)
        lines = timeline_lines(
            self.breakers.history(),
            began,
            ended,
            TIMELINE_WIDTH,
            DEMO_GROUPS,
            glyphs=p.glyphs,
            color=p.color,
        )
        p.write("\n" + "".join(f"  {line}\n" for line in lines))
        return summary

    async def _until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.p.now()))

    def _incident(
        self,
        name: str,
        group: str,
        text: str,
        fault: Fault,
        seconds: float | None = None,
        times: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        now = self.p.now()
        rule = self.sim.faults.add(
            fault, endpoint=endpoint, group=group, seconds=seconds, times=times
        )
        ends = None if seconds is None else now + seconds
        self.incidents.append(_Incident(name, group, now, rule, ends))
        self.p.line(self.p.paint(f"incident: {text}", "1"), now)

    async def _script(self) -> None:
        s = self.scenario
        await self._until(s.outage_at)
        self._incident(
            "private API outage",
            "private",
            f"private API outage lasting {s.outage_for:.1f} s (EService:Unavailable)",
            Fault.kraken_error("EService:Unavailable"),
            seconds=s.outage_for,
        )
        await self._until(s.ws_at)
        self._incident(
            "websocket outage",
            "ws-public",
            f"websocket outage lasting {s.ws_for:.1f} s: the public socket drops, and "
            "every dial is answered 503",
            Fault.http(503),
            seconds=s.ws_for,
            endpoint="connect",
        )
        self.sim.websocket.drop("ws-public")
        await self._until(s.outage_at + s.outage_for)
        self.p.line(self.p.paint("incident over: the private API answers again", "1"))
        await self._until(s.ws_at + s.ws_for)
        self.p.line(self.p.paint("incident over: the public socket takes dials again", "1"))
        await self._until(s.limit_at)
        self._incident(
            "trading rate limit",
            "trading",
            f"trading rate limit: HTTP 429 with Retry-After: {s.retry_after} "
            f"(wait {s.retry_after} s)",
            Fault.too_many_requests(s.retry_after),
            times=1,
        )
        delay = 3 * s.timeout
        await self._until(s.slow_at)
        self._incident(
            "slow public answers",
            "public",
            f"the next {SLOW_REQUESTS} public answers each take {delay:.2f} s; "
            f"the client gives up after {s.timeout:.2f} s",
            Fault.latency(delay),
            times=SLOW_REQUESTS,
        )

    async def _status(self) -> None:
        every = self.scenario.duration / 10
        while True:
            await asyncio.sleep(every)
            parts = [
                self.p.status(g, self.breakers[g].state.value, self.breakers[g].retry_after)
                for g in DEMO_GROUPS
            ]
            sent = len(self.sim.requests) + self.sim.dials()
            rejected = sum(b.snapshot()["rejected"] for b in self.breakers.values())
            tail = f"| sent {sent}, rejected {rejected}"
            self.p.line(self.p.paint("status   ", "2") + f" {self.p.dot} ".join(parts) + " " + tail)

    def _summary(self) -> Summary:
        snapshot = self.breakers.snapshot()
        urls = self.sim.ws_urls
        public_dials = self.sim.dials(urls["public"]) + self.sim.dials(urls["publicV2"])
        requests = self.sim.requests
        results = []
        for incident in self.incidents:
            opened = next(
                (
                    t
                    for t, g, st in self.transitions
                    if g == incident.group and st == "open" and t >= incident.started
                ),
                None,
            )
            closed = None
            if opened is not None:
                closed = next(
                    (
                        t
                        for t, g, st in self.transitions
                        if g == incident.group and st == "closed" and t > opened
                    ),
                    None,
                )
            results.append(
                IncidentResult(
                    incident.name,
                    incident.group,
                    incident.started,
                    opened,
                    self._cleared(incident, requests),
                    closed,
                )
            )
        return Summary(
            duration=self.p.now(),
            sent={**{g: self.sim.count(group=g) for g in GROUPS}, "ws-public": public_dials},
            rejected={g: snapshot[g]["rejected"] for g in DEMO_GROUPS},
            failures={g: snapshot[g]["failures"] for g in DEMO_GROUPS},
            states={g: snapshot[g]["state"] for g in DEMO_GROUPS},
            incidents=tuple(results),
            exceptions=dict(self.bot.seen.most_common()),
            done=dict(self.bot.done),
        )

    def _cleared(self, incident: _Incident, requests: list[RequestRecord]) -> float | None:
        if incident.ends is not None:
            return incident.ends
        if incident.rule.hits < (incident.rule.times or 0):
            return None  # the fault still waits for requests
        # A counted fault clears with the last request it answered; the log shares the
        # monotonic clock with the printer.
        hit = [r.time for r in requests if r.group == incident.group and r.fault is not None]
        return max(hit) - self.p.start if hit else None

    def _print_summary(self, summary: Summary) -> None:
        lines: list[str] = []
        w = lines.append
        w(f"\nsummary of the {summary.duration:.1f} s run\n\n")
        w(f"  {'group':<9} {'sent':>6} {'failed':>7} {'rejected':>9}  state\n")
        for g in DEMO_GROUPS:
            w(
                f"  {g:<9} {summary.sent[g]:>6} {summary.failures[g]:>7} "
                f"{summary.rejected[g]:>9}  {self.p.state(summary.states[g])}\n"
            )
        w(
            "  sent: requests (ws-public: dials) that reached the simulator; rejected: calls "
            "refused by an\n  open circuit without sending\n\n"
        )
        w(
            f"  {'incident':<21} {'group':<9} {'started':>8} {'time to open':>13} "
            f"{'time to recover':>16}\n"
        )
        for r in summary.incidents:
            w(
                f"  {r.name:<21} {r.group:<9} {f't=+{r.started:.1f}s':>8} "
                f"{_seconds(r.time_to_open):>13} {_seconds(r.time_to_recover):>16}\n"
            )
        w(
            "  time to open: from the incident's start to its circuit opening; time to "
            "recover: from the\n  fault clearing (the outage's end, the last faulted "
            "request) to the circuit closing again\n"
        )
        w("\n  ccxt exceptions the bot saw\n")
        for name, count in summary.exceptions.items():
            note = "  (refused, nothing sent)" if name == "CircuitOpenError" else ""
            w(f"  {count:>6}  {name}{note}\n")
        if not summary.exceptions:
            w("  none\n")
        done = ", ".join(f"{n} {k}" for k, n in summary.done.items())
        w(f"\n  the bot's successful calls: {done or 'none'}\n")
        self.p.write("".join(lines))


def _brief(cause: dict[str, str] | None) -> str:
    """``ExchangeNotAvailable EService:Unavailable`` from a cause's type and message."""
    if not cause:
        return ""
    kind, message = cause.get("type", "?"), cause.get("message", "")
    found = _KRAKEN_ERROR.search(message)
    if found:
        return f"{kind} {found.group(0)}"
    status = _HTTP_STATUS.search(message)
    return f"{kind} HTTP {status.group(1)}" if status else kind


def _seconds(value: float | None) -> str:
    """A duration for the summary's table: ``0.3 s``, or ``-`` when it never ended."""
    return "-" if value is None else f"{value:.1f} s"


def _wants_color(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def _symbol(out: TextIO, symbol: str, ascii_: str) -> str:
    """``symbol`` if ``out``'s encoding can encode it, else its ASCII stand-in."""
    try:
        symbol.encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return ascii_
    return symbol


def timeline_lines(
    history: Iterable[Mapping[str, Any]],
    start: float,
    end: float,
    width: int,
    groups: Sequence[str],
    *,
    glyphs: Mapping[str, str] = ASCII_GLYPHS,
    color: bool = False,
) -> list[str]:
    """Each group's circuit states from ``start`` to ``end``, drawn as lines of text.

    ``history`` is ``circuit_breakers.history()``, its times on the clock of ``start`` and
    ``end``.  The lines are a legend, a row per group in ``groups`` (its name, then
    ``width`` columns between ``|`` bars) and a time axis in seconds since ``start``.
    Column ``i`` stands for the slice ``[start + i*w, start + (i+1)*w)`` of the run,
    ``w = (end - start) / width`` (the last one includes ``end``), and shows the state in
    force during it; when the circuit moved within a column, of the states it was in there
    the column shows the first of half_open, open, closed, so a half-open probe shorter than
    a column still shows.  Before its first transition a group was in that transition's
    old state (closed if it has none); transitions after ``end`` are left out.  ``glyphs``
    maps each state to its character; ``color`` paints them with ANSI colours.
    """
    if not end > start:
        raise ValueError(f"end must come after start, not {end!r} <= {start!r}")
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width!r}")
    span, column = end - start, (end - start) / width

    def paint(text: str, state: str) -> str:
        return f"\x1b[{_COLORS.get(state, '0')}m{text}\x1b[0m" if color else text

    def glyph(state: str) -> str:
        return glyphs.get(state, "?")  # a state this drawing does not know

    legend = "  ".join(f"{paint(glyph(s), s)} {s}" for s in ("closed", "open", "half_open"))
    lines = [f"timeline, a column is {column:.2g} s: {legend}"]
    pad = max(map(len, groups), default=0) + 1
    events = sorted(history, key=lambda e: float(e["time"]))  # stable: ties keep their order
    for group in groups:
        own = [e for e in events if e["group"] == group and e["time"] <= end]
        state = str(own[0]["old_state"]) if own else "closed"
        by_column: list[list[str]] = [[] for _ in range(width)]  # new states, per column
        starts_with: set[int] = set()  # columns with a transition right at their start
        for event in own:
            if event["time"] < start:
                state = str(event["new_state"])
                continue
            col = min(width - 1, int((event["time"] - start) / column))
            if not by_column[col] and event["time"] <= start + col * column:
                starts_with.add(col)
            by_column[col].append(str(event["new_state"]))
        cells: list[str] = []  # the state each column shows
        for col, entered in enumerate(by_column):
            seen = entered if col in starts_with else [state, *entered]
            cells.append(min(seen, key=_rank))
            state = seen[-1]
        # a run of one state is painted once: fewer escape sequences
        row = "".join(paint(glyph(cell) * len(list(run)), cell) for cell, run in groupby(cells))
        lines.append(f"{group:<{pad}}|{row}|")
    lines.append(_axis(span, width, pad + 1))
    return lines


def _rank(state: str) -> int:
    return _PRECEDENCE.index(state) if state in _PRECEDENCE else len(_PRECEDENCE)


def _axis(span: float, width: int, offset: int) -> str:
    """Tick labels in seconds, each starting where its time falls; the last one at the
    closing bar moves left to end there, and a label too close to the one before is left out."""
    step = next((s for s in _TICK_STEPS if s * width >= _TICK_GAP * span), span)
    length = offset + width + 1  # the rows' length, closing bar included
    axis = [" "] * length
    free = 0  # the first position a label may take
    for k in range(int(span / step + 1e-9) + 1):
        label = f"{round(k * step, 6):g}s"
        at = min(offset + round(k * step / span * width), length - len(label))
        if at >= free:
            axis[at : at + len(label)] = label
            free = at + len(label) + 1
    return "".join(axis).rstrip()
