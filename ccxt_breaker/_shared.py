"""Breaker state shared by the instances on one API key: in this process, or on Redis.

Kraken counts its limits and lockouts per API key, so the instances on one key (several
processes, or several instances in one process) share one set of circuits, and every
instance of a namespace shares ``public`` (public limits are per IP).  A :class:`Store`
holds each circuit's shared record; :class:`ProcessStore` keeps it in this process and
:class:`RedisStore` in Redis.  The breaker knows neither: it talks to its
:class:`SharedCircuit`, which reports what the breaker did and applies what others did.

Staying off the hot path:

* a closed success with no failure streak, and a refusal, never reach the store.
  Transitions decided elsewhere are pushed (Redis pub/sub, one channel per namespace,
  with a full read every ``RESYNC`` seconds to repair a lost message) and applied to
  the local machine, so a refusal is decided locally;
* a failure while closed is one atomic script call that counts the shared streak and
  opens the circuit at the threshold; a success that ends a streak clears it;
* a half-open instance asks the store for one of the ``halfOpenMaxCalls`` probe permits
  that all instances share; a permit expires after ``PROBE_TTL`` seconds, so a crashed
  process cannot hold one forever.

Every shared transition bumps the circuit's generation in the same script, and an update
that carries an older generation changes nothing, so a late result from a slow process
loses.  Open times are wall-clock deadlines, the same in every process.  When Redis is
down or slower than the timeout, the breakers go on locally, and no Redis error reaches a
caller; when it is back, circuits still due to stay open are written back and open ones
from elsewhere are picked up.  Neither the API key nor the secret is ever written: a hash
of the key names the keyed circuits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ._config import SharedState
from ._machine import CLOSED, HALF_OPEN, OPEN, PROBE_WAIT, CircuitState, Transition

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker, Counters

__all__ = [
    "CONNECTED",
    "DEGRADED",
    "ProcessStore",
    "Record",
    "RedisStore",
    "SharedCircuit",
    "Store",
    "circuit_name",
    "key_id",
    "open_store",
]

logger = logging.getLogger("ccxt_breaker")

CONNECTED, DEGRADED = "connected", "degraded"
PREFIX = "ccxt_breaker"
# How long a probe permit outlives a process that crashed holding it (seconds).
PROBE_TTL = 30
# Seconds between full reads of the shared records, which repair a lost message.
RESYNC = 5.0
# Seconds between attempts to reach Redis again while degraded.
RETRY = 0.5
_SHADOW = -1  # CircuitBreaker's SHADOW permit (imported late: _breaker imports this module)

# a step's answer while it is on its way: a task on the caller's loop, or a future from
# the home loop for a thread without one
Pending = asyncio.Future["Record | None"] | concurrent.futures.Future["Record | None"]


def key_id(exchange_id: str, api_key: str | None) -> str:
    """A short hash that names an API key's circuits; the key itself is never stored."""
    return hashlib.sha256(f"{exchange_id}\0{api_key or ''}".encode()).hexdigest()[:16]


def circuit_name(group: str, key: str) -> str:
    """``public`` is shared by the whole namespace (limits per IP); the rest per key."""
    return group if group == "public" else f"{key}:{group}"


@dataclass(frozen=True, slots=True)
class Record:
    """A circuit's shared state, as the store answered it."""

    circuit: str
    generation: int
    state: str  # "closed" or "open"; open past its deadline means half-open
    until: float  # the open deadline, wall clock (epoch seconds)
    forced: bool
    failures: int  # the shared run of consecutive failures while closed
    reason: str
    cause: dict[str, str] | None
    granted: bool = False  # the answer to a probe request

    @classmethod
    def parse(cls, circuit: str, fields: list[Any], granted: Any = 0) -> Record:
        generation, state, until, forced, failures, reason, cause = fields[:7]
        return cls(
            circuit,
            int(generation),
            str(state),
            float(until),
            bool(int(forced)),
            int(failures),
            str(reason),
            json.loads(cause) if cause else None,
            bool(int(granted)),
        )


class Store(Protocol):
    """Where shared records live. Every operation is one atomic step on one circuit."""

    @property
    def status(self) -> str:
        """``"connected"``, or ``"degraded"`` while the breakers go on locally."""

    def attach(self, circuit: SharedCircuit) -> None:
        """Deliver ``circuit``'s records to it from now on."""

    timeout: float
    """How long a step may take before the breakers go on locally (seconds)."""

    def start(self) -> bool:
        """Begin listening (on the running event loop, or on the home loop of a store
        made for sync clients; idempotent); whether the first read of the shared records
        is done."""

    async def ready(self) -> None:
        """Return once the shared records were read (or the timeout passed)."""

    def ready_now(self) -> None:
        """:meth:`ready` for a thread without an event loop."""

    def submit(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Pending | None:
        """Run ``op`` on ``circuit``; the answer is also delivered to the attached circuits.
        ``None`` when nothing was sent (degraded, or no loop to send it from); a future
        that ends in ``None`` when the store failed. Never raises."""

    def step_now(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Record | None:
        """Run ``op`` and wait for its answer, for a caller without an event loop (a sync
        client's thread, holding no breaker lock: the answer is delivered under it);
        ``None`` when the store failed or cannot answer from there. Never raises."""

    @property
    def lock(self) -> threading.RLock | None:
        """The lock that every breaker sharing through this store takes, or ``None`` for a
        lock per instance."""

    async def close(self) -> None:
        """Stop listening and release connections."""


# --- one step on one record: the same rules in Python (ProcessStore) and Lua (Redis) ---


def _fresh(generation: int, op: str, now: float) -> dict[str, Any]:
    # expired, lost in a restart, or never written: start from the caller's generation
    # (a caller asking for a probe is half-open)
    state, until = ("open", now) if op == "probe" else ("closed", 0.0)
    return {
        "g": generation,
        "s": state,
        "u": until,
        "f": 0,
        "n": 0,
        "k": 0,
        "r": "created",
        "c": "",
    }


def _step(
    rec: dict[str, Any], probes: list[float], op: str, gen: int, now: float, args: tuple[Any, ...]
) -> tuple[bool, bool]:
    """Apply ``op`` to ``rec`` and ``probes`` ([count, expiry]) in place; returns
    (changed, granted). Mirrors ``_SCRIPT``."""
    changed = granted = False

    def enter(state: str, until: float, forced: int, reason: str, cause: str) -> None:
        nonlocal changed
        rec.update(g=rec["g"] + 1, s=state, u=until, f=forced, n=0, k=0, r=reason, c=cause)
        probes[:] = [0, 0.0]
        changed = True

    current = rec["g"] == gen
    half_open = rec["s"] == "open" and rec["f"] == 0 and rec["u"] <= now
    if probes[1] <= now:
        probes[:] = [0, 0.0]
    if op == "fail":
        threshold, until, reason, cause = args
        if current and rec["s"] == "closed":
            rec["n"] += 1
            changed = True
            if rec["n"] >= threshold or reason:
                enter("open", until, 0, reason or "consecutive failures", cause)
    elif op == "clear":
        if current and rec["s"] == "closed" and rec["n"] > 0:
            rec["n"] = 0
            changed = True
    elif op == "open":
        until, forced, reason, cause = args
        if rec["s"] == "open" and not half_open:  # still open: extended in place
            if until > rec["u"] or forced > rec["f"]:
                rec.update(u=max(rec["u"], until), f=max(rec["f"], forced))
                changed = True
        elif current or forced:  # force_open() is an order: it wins whatever it saw
            enter("open", until, forced, reason, cause)
    elif op == "reset":
        enter("closed", 0.0, 0, "reset", "")
    elif op == "probe":
        (limit,) = args
        if current and half_open and probes[0] < limit:
            probes[:] = [probes[0] + 1, now + PROBE_TTL]
            granted = True
    elif op == "done":
        outcome, held, successes, until, reason, cause = args
        if current and half_open:
            if held and probes[0] > 0:
                probes[0] -= 1
            if outcome == "success":
                rec["k"] += 1
                changed = True
                if rec["k"] >= successes:
                    enter("closed", 0.0, 0, "probes succeeded", "")
            elif outcome == "failure":
                enter("open", until, 0, reason, cause)
    return changed, granted


_SCRIPT = """
local key, probes = KEYS[1], KEYS[2]
local op, gen, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local f = redis.call('HMGET', key, 'g', 's', 'u', 'f', 'n', 'k', 'r', 'c')
local rec
if f[1] and tonumber(f[1]) >= gen then
  rec = {g = tonumber(f[1]), s = f[2], u = tonumber(f[3]), f = tonumber(f[4]),
         n = tonumber(f[5]), k = tonumber(f[6]), r = f[7], c = f[8]}
else
  rec = {g = gen, s = 'closed', u = 0, f = 0, n = 0, k = 0, r = 'created', c = ''}
  if op == 'probe' then rec.s = 'open'; rec.u = now end
end
local changed, granted = false, 0
local function enter(state, deadline, forced, reason, cause)
  rec.g = rec.g + 1
  rec.s, rec.u, rec.f, rec.n, rec.k, rec.r, rec.c = state, deadline, forced, 0, 0, reason, cause
  redis.call('DEL', probes)
  changed = true
end
local current = rec.g == gen
local half_open = rec.s == 'open' and rec.f == 0 and rec.u <= now
if op == 'fail' then
  if current and rec.s == 'closed' then
    rec.n = rec.n + 1
    changed = true
    if rec.n >= tonumber(ARGV[6]) or ARGV[8] ~= '' then
      local reason = ARGV[8]
      if reason == '' then reason = 'consecutive failures' end
      enter('open', tonumber(ARGV[7]), 0, reason, ARGV[9])
    end
  end
elseif op == 'clear' then
  if current and rec.s == 'closed' and rec.n > 0 then rec.n = 0; changed = true end
elseif op == 'open' then
  local deadline, forced = tonumber(ARGV[6]), tonumber(ARGV[7])
  if rec.s == 'open' and not half_open then
    if deadline > rec.u or forced > rec.f then
      rec.u = math.max(rec.u, deadline); rec.f = math.max(rec.f, forced); changed = true
    end
  elseif current or forced == 1 then
    enter('open', deadline, forced, ARGV[8], ARGV[9])
  end
elseif op == 'reset' then
  enter('closed', 0, 0, 'reset', '')
elseif op == 'probe' then
  if current and half_open then
    if tonumber(redis.call('GET', probes) or '0') < tonumber(ARGV[6]) then
      redis.call('INCR', probes)
      redis.call('EXPIRE', probes, ARGV[7])
      granted = 1
    end
  end
elseif op == 'done' then
  if current and half_open then
    if ARGV[7] == '1' and tonumber(redis.call('GET', probes) or '0') > 0 then
      redis.call('DECR', probes)
    end
    if ARGV[6] == 'success' then
      rec.k = rec.k + 1
      changed = true
      if rec.k >= tonumber(ARGV[8]) then enter('closed', 0, 0, 'probes succeeded', '') end
    elseif ARGV[6] == 'failure' then
      enter('open', tonumber(ARGV[9]), 0, ARGV[10], ARGV[11])
    end
  end
end
local fields = {rec.g, rec.s, tostring(rec.u), rec.f, rec.n, rec.r, rec.c}
if changed then
  redis.call('HSET', key, 'g', rec.g, 's', rec.s, 'u', tostring(rec.u), 'f', rec.f,
             'n', rec.n, 'k', rec.k, 'r', rec.r, 'c', rec.c)
  redis.call('EXPIRE', key, 86400 + math.max(0, math.ceil(rec.u - now)))
  redis.call('PUBLISH', ARGV[4], cjson.encode({ARGV[5], fields}))
end
table.insert(fields, granted)
return fields
"""


def _wire(args: tuple[Any, ...]) -> list[str]:
    """Script arguments as Redis sends them: numbers as text, booleans as 0/1."""
    return [
        str(int(a)) if isinstance(a, bool) else repr(a) if isinstance(a, float) else str(a)
        for a in args
    ]


# --- the stores ------------------------------------------------------------------------


class _Space:
    """The records of one namespace in this process, and the stores that share them."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.probes: dict[str, list[float]] = {}
        self.stores: weakref.WeakSet[ProcessStore] = weakref.WeakSet()
        # The breakers of every instance in the namespace take this one lock: a step
        # applies to all of them at once, from whichever thread made it (a sync client's,
        # or the event loop's), so one lock keeps them from deadlocking on each other.
        self.lock = threading.RLock()


_SPACES: weakref.WeakValueDictionary[str, _Space] = weakref.WeakValueDictionary()


class ProcessStore:
    """Shares state among the instances of this process: no Redis, the same rules."""

    status = CONNECTED
    timeout = 0.0  # every step is done at once

    def __init__(self, namespace: str) -> None:
        space = _SPACES.get(namespace)
        if space is None:
            space = _SPACES[namespace] = _Space()
        self._space = space  # held strongly: the namespace lives while a store uses it
        self._circuits: dict[str, SharedCircuit] = {}
        space.stores.add(self)

    def attach(self, circuit: SharedCircuit) -> None:
        self._circuits[circuit.name] = circuit
        fields = self._space.records.get(circuit.name)
        if fields is not None:
            circuit.adopt(_record(circuit.name, fields), authoritative=True)

    def start(self) -> bool:
        return True

    async def ready(self) -> None:
        pass

    def ready_now(self) -> None:
        pass

    @property
    def lock(self) -> threading.RLock:
        return self._space.lock

    def submit(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> asyncio.Future[Record | None] | None:
        record = self.step_now(circuit, op, generation, now, args)
        try:
            future = asyncio.get_running_loop().create_future()
        except RuntimeError:
            return None
        future.set_result(record)
        return future

    def step_now(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Record:
        space = self._space
        with space.lock:  # one step at a time, from an event loop or a sync client's thread
            fields = space.records.get(circuit)
            if fields is None or fields["g"] < generation:
                fields = _fresh(generation, op, now)
            probes = space.probes.setdefault(circuit, [0, 0.0])
            changed, granted = _step(fields, probes, op, generation, now, args)
            record = _record(circuit, fields, granted)
            if changed:
                space.records[circuit] = fields
                for store in list(space.stores):
                    target = store._circuits.get(circuit)
                    if target is not None:
                        target.adopt(record)
            else:
                mine = self._circuits.get(circuit)
                if mine is not None:
                    mine.adopt(record)
            return record

    async def close(self) -> None:
        self._space.stores.discard(self)


def _record(circuit: str, fields: dict[str, Any], granted: bool = False) -> Record:
    return Record.parse(
        circuit,
        [fields[k] for k in ("g", "s", "u", "f", "n", "r", "c")],
        granted,
    )


def _home_loop() -> asyncio.AbstractEventLoop:
    """The event loop, in a daemon thread of its own, where the Redis stores of sync
    clients listen and run their steps: their threads have no loop. One per process."""
    global _HOME
    with _HOME_LOCK:
        if _HOME is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="ccxt_breaker-redis", daemon=True
            )
            thread.start()
            atexit.register(_stop_home, loop, thread)
            _HOME = loop
        return _HOME


def _stop_home(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """At exit: let the steps still out reach Redis (a reset() just before exit must not
    leave the circuit open for the other processes), then cancel the listeners and stop
    the loop, so that no pending task is destroyed (and reported) with it."""

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        steps = [t for t in tasks if t not in _LISTENERS]
        if steps:
            await asyncio.wait(steps, timeout=1.0)
        for store in list(_HOME_STORES):
            store._closing = True
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(2)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(2)


def _forget_home() -> None:
    """In a forked child: the home loop's thread did not survive the fork. A sync client
    made in the child gets a new one; the stores made before the fork go on locally."""
    global _HOME, _HOME_LOCK
    _HOME, _HOME_LOCK = None, threading.Lock()


_HOME: asyncio.AbstractEventLoop | None = None
_HOME_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_home)
_LISTENERS: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()  # on the home loop
_HOME_STORES: weakref.WeakSet[RedisStore] = weakref.WeakSet()


class RedisStore:
    """Shares state through Redis: one script call per step, pub/sub for the news.

    Made for async clients, it works on their event loop; made for sync clients
    (``home``), on the home loop, which their threads reach through thread-safe calls."""

    def __init__(
        self,
        url: str,
        namespace: str,
        timeout: float,
        home: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "options['circuitBreaker']['sharedState'] on Redis needs redis-py: "
                "pip install 'ccxt-breaker[redis]'"
            ) from exc
        # the timeout bounds every command (below); redis-py's own retries would only
        # spend it again
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), decode_responses=True
        )
        self._script = self._redis.register_script(_SCRIPT)
        self.timeout = timeout
        self._prefix = f"{PREFIX}:{namespace}"
        self._channel = self._prefix
        # a URL may carry a password: logs name the host and the namespace only
        where = urlsplit(url)
        host = where.hostname or where.path or "?"
        self._label = (
            f"{where.scheme}://{host}{f':{where.port}' if where.port else ''} ({namespace})"
        )
        self._circuits: dict[str, SharedCircuit] = {}
        self._status = CONNECTED
        self._listener: asyncio.Task[None] | concurrent.futures.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._synced: asyncio.Event | None = None
        self._ready = threading.Event()  # _synced, for threads without a loop
        self._home = home
        self._loop = home  # the listener's
        self._starting = threading.Lock()  # sync clients start it from any thread
        self._closing = False
        # steps reach Redis in the order they were made: the connection pool would let a
        # reset() overtake the force_open() made just before it
        self._order = asyncio.Lock()
        if home is not None:
            _HOME_STORES.add(self)

    @property
    def status(self) -> str:
        return self._status

    lock = None  # each instance's own: a step's answer is adopted under it

    def _homeless(self) -> bool:
        """Made for sync clients before this process was forked: nothing runs its loop."""
        return self._home is not None and self._home is not _HOME

    def step_now(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Record | None:
        home = self._home
        if home is None or self._status is DEGRADED or self._homeless():
            return None  # an async client's store answers on its loop: see submit()
        step = asyncio.run_coroutine_threadsafe(
            self._submit(circuit, op, generation, now, args), home
        )
        try:
            # _run bounds the round trip by the timeout; the margin is the hop to the loop
            return step.result(self.timeout + 1.0)
        except Exception:  # the home loop is stuck or gone: go on locally
            step.cancel()
            return None

    def attach(self, circuit: SharedCircuit) -> None:
        self._circuits[circuit.name] = circuit

    def start(self) -> bool:
        if self._synced is None:
            with self._starting:
                if self._synced is None:
                    synced = asyncio.Event()
                    if self._home is None:
                        self._loop = asyncio.get_running_loop()
                        self._listener = self._loop.create_task(self._listen())
                    else:
                        self._listener = asyncio.run_coroutine_threadsafe(
                            self._listen(), self._home
                        )
                    self._synced = synced
        return self._ready.is_set()

    async def ready(self) -> None:
        synced = self._synced
        if synced is not None and not synced.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await synced.wait()

    def ready_now(self) -> None:
        if self._synced is not None and not self._homeless():
            self._ready.wait(self.timeout)

    def submit(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Pending | None:
        if self._status is DEGRADED:
            return None  # no round trip while Redis is known to fail: the listener retries
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or (self._home is not None and loop is not self._home):
            # a thread without a loop (a sync client's, or a kill switch's force_open()
            # or reset()): the step runs on the listener's loop, where its answer arrives
            # as every other does
            mine = self._loop
            if mine is None or mine.is_closed() or self._homeless():
                return None
            step = self._submit(circuit, op, generation, now, args)
            return asyncio.run_coroutine_threadsafe(step, mine)
        task = loop.create_task(self._submit(circuit, op, generation, now, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _submit(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Record | None:
        try:
            record = await self._run(circuit, op, generation, now, args)
        except Exception as exc:  # Redis down, slow or confused: go on locally
            self._lost(exc)
            return None
        self._deliver(record)
        return record

    async def _run(
        self, circuit: str, op: str, generation: int, now: float, args: tuple[Any, ...]
    ) -> Record:
        key = f"{self._prefix}:{circuit}"
        wire = [op, str(generation), repr(now), self._channel, circuit, *_wire(args)]
        if op == "probe":
            wire.append(str(PROBE_TTL))
        async with asyncio.timeout(self.timeout), self._order:
            fields = await self._script(keys=[key, f"{key}:probes"], args=wire)
        return Record.parse(circuit, fields, fields[7])

    def _deliver(self, record: Record, authoritative: bool = False) -> None:
        circuit = self._circuits.get(record.circuit)
        if circuit is not None:
            circuit.adopt(record, authoritative)

    def _lost(self, exc: BaseException) -> None:
        if self._status is CONNECTED:
            self._status = DEGRADED
            logger.warning(
                "ccxt_breaker lost its shared state at %s (%s); the breakers go on locally",
                self._label,
                type(exc).__name__,
            )

    async def _resync(self, restoring: bool) -> None:
        """Read every circuit's record; after an outage, first write back the opens made
        meanwhile, then take what Redis says as it is."""
        for circuit in list(self._circuits.values()):
            now = circuit.wall()
            if restoring:
                for op, args in circuit.write_back():
                    self._deliver(await self._run(circuit.name, op, circuit.generation, now, args))
            record = await self._run(circuit.name, "read", circuit.generation, now, ())
            self._deliver(record, authoritative=restoring)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        listener = asyncio.current_task()
        if listener is not None:
            _LISTENERS.add(listener)
        # `closing` ends it too: redis-py's get_message() can swallow a cancellation
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self.timeout):
                    await pubsub.subscribe(self._channel)
                restoring = self._status is DEGRADED
                await self._resync(restoring)
                if restoring:
                    self._status = CONNECTED
                    logger.warning("ccxt_breaker shared state is back at %s", self._label)
                assert self._synced is not None
                self._synced.set()
                self._ready.set()
                due = loop.time() + RESYNC
                while self._status is CONNECTED and not self._closing:
                    message = await pubsub.get_message(timeout=0.1)
                    if message is not None:
                        circuit, fields = json.loads(message["data"])
                        self._deliver(Record.parse(circuit, fields))
                    if loop.time() >= due:
                        await self._resync(False)
                        due = loop.time() + RESYNC
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            assert self._synced is not None
            self._synced.set()  # nobody waits for a Redis that is not there
            self._ready.set()
            if not self._closing:
                await asyncio.sleep(RETRY)

    async def close(self) -> None:
        self._closing = True
        if self._home is not None:  # its connections live on the home loop: closed there
            if self._listener is not None:
                self._listener.cancel()
            asyncio.run_coroutine_threadsafe(self._redis.aclose(), self._home)
            return
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener  # type: ignore[misc]  # a task here
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await self._redis.aclose()


def open_store(spec: SharedState, namespace: str, *, threaded: bool = False) -> Store:
    """The store ``sharedState`` names; ``threaded`` for sync clients, whose threads have
    no event loop (a Redis store then works on the home loop)."""
    if spec.url == "process":
        return ProcessStore(namespace)
    return RedisStore(spec.url, namespace, spec.timeout, _home_loop() if threaded else None)


# --- one breaker's tie to its shared circuit -----------------------------------------


class SharedCircuit:
    """Reports what a breaker does to the store, and applies what other instances did."""

    __slots__ = (
        "_grant_generation",
        "_grants",
        "breaker",
        "generation",
        "name",
        "pending",
        "store",
    )

    def __init__(self, store: Store, name: str, breaker: CircuitBreaker) -> None:
        self.store = store
        self.name = name
        self.breaker = breaker
        self.generation = 0  # the shared generation this instance last applied
        self.pending: Pending | None = None  # the latest report
        # probe permits the store granted this instance, for one local generation
        self._grants = 0
        self._grant_generation = -1

    # --- time ----------------------------------------------------------------------

    def wall(self) -> float:
        return self.breaker._clock.time()

    def _deadline(self) -> float:
        """The local machine's open deadline on the wall clock."""
        clock, m = self.breaker._clock, self.breaker._machine
        return clock.time() + (m.open_until - clock.monotonic())

    # --- reports (sync: each is one store step, in the background) -----------------

    def _send(self, op: str, *args: Any) -> None:
        self.pending = self.store.submit(self.name, op, self.generation, self.wall(), args)

    def settled(
        self,
        permit: int,
        before: CircuitState,
        streak: int,
        success: bool,
        transition: Transition | None,
        cause: dict[str, str] | None,
    ) -> None:
        """An attempt that held the current ``permit`` ended (in state ``before``)."""
        opened = transition is not None and transition.new is OPEN
        text = json.dumps(cause) if cause else ""
        config = self.breaker.config
        if before is CLOSED:
            if not success:
                until = self._deadline() if opened else self.wall() + config.reset_timeout
                reason = transition.reason if opened and transition else ""
                self._send("fail", config.failure_threshold, until, reason, text)
            elif opened and transition:  # a slow-call rate opened it
                self._send("open", self._deadline(), 0, transition.reason, text)
            elif streak:
                self._send("clear")
        elif before is HALF_OPEN:
            outcome = "failure" if opened or not success else "success"
            reason = transition.reason if opened and transition else ""
            until = self._deadline() if opened else 0.0
            held = self._take_grant(permit)
            self._send("done", outcome, held, config.success_threshold, until, reason, text)

    def released(self, permit: int) -> None:
        """A permit came back unjudged: a probe permit from the store goes back too."""
        if self._take_grant(permit):
            self._send("done", "release", True, 0, 0.0, "", "")

    def opened(self, forced: bool, reason: str, cause: dict[str, str] | None) -> None:
        """The breaker opened (or extended its open) on its own: a limit, or force_open."""
        self._send(
            "open", self._deadline(), int(forced), reason, json.dumps(cause) if cause else ""
        )

    def reset(self) -> None:
        self._send("reset")

    async def flush(self) -> None:
        """Wait for the latest report (bounded by the store's timeout; never raises)."""
        pending = self.pending
        if isinstance(pending, asyncio.Future) and not pending.done():
            await asyncio.shield(pending)

    def flush_now(self) -> None:
        """:meth:`flush` for a thread without an event loop, holding no breaker lock."""
        pending = self.pending
        if isinstance(pending, concurrent.futures.Future):
            with contextlib.suppress(Exception):
                pending.result(self.store.timeout + 1.0)

    def write_back(self) -> Iterable[tuple[str, tuple[Any, ...]]]:
        """What to write after an outage: an open still due, made while Redis was away."""
        m = self.breaker._machine
        if m.state is OPEN and (m.forced or m.open_until > self.breaker._clock.monotonic()):
            cause = json.dumps(self.breaker._opened_by) if self.breaker._opened_by else ""
            yield "open", (self._deadline(), int(m.forced), m.reason, cause)

    # --- half-open probes across instances -----------------------------------------

    def asks(self) -> bool:
        """Whether a call must ask the store first: before the first shared read is done
        (the store starts on the first call), and while not closed, for a probe."""
        return not self.store.start() or self.breaker._machine.state is not CLOSED

    async def admit(self, permit: int, counters: Counters, endpoint: str | None) -> int:
        """``permit``, once the store granted it a shared probe permit (or failed, so the
        local permit alone decides); otherwise the call is refused."""
        breaker, m = self.breaker, self.breaker._machine
        try:
            await self.store.ready()
        except BaseException:
            breaker._release(permit)
            raise
        if permit != m.generation and permit != _SHADOW:  # the first read moved the circuit
            breaker._release(permit)
            permit = breaker._admit(counters, endpoint)
        if m.state is not HALF_OPEN or permit == _SHADOW:
            return permit
        pending = self.store.submit(
            self.name, "probe", self.generation, self.wall(), (breaker.config.half_open_max_calls,)
        )
        if pending is None:
            return permit
        # a sync client's store answers from its home loop: awaited here all the same
        future = (
            asyncio.wrap_future(pending)
            if isinstance(pending, concurrent.futures.Future)
            else pending
        )
        try:
            record = await asyncio.shield(future)
        except asyncio.CancelledError:
            breaker._release(permit)
            future.add_done_callback(self._give_back)  # a permit granted too late goes back
            raise
        if record is None:  # the store failed: the local permit alone decides
            return permit
        if record.granted and permit == m.generation:
            return self._granted(permit)
        if record.granted:
            self._give_back(future)
        return self._denied(permit, counters, endpoint)

    def admit_now(self, permit: int, counters: Counters, endpoint: str | None) -> int:
        """:meth:`admit` for a caller without an event loop (a sync client's thread). It
        holds no breaker lock while the store answers: the answer is adopted under it."""
        breaker, m = self.breaker, self.breaker._machine
        store = self.store
        if not store.start():
            try:
                store.ready_now()
            except BaseException:  # KeyboardInterrupt while waiting: the permit goes back
                breaker._release(permit)
                raise
            with breaker._lock:
                if permit != m.generation and permit != _SHADOW:  # the first read moved it
                    breaker._release(permit)
                    permit = breaker._admit(counters, endpoint)
        if m.state is not HALF_OPEN or permit == _SHADOW:
            return permit
        limit = (breaker.config.half_open_max_calls,)
        try:
            record = store.step_now(self.name, "probe", self.generation, self.wall(), limit)
        except BaseException:  # as above; a shared permit granted meanwhile expires (TTL)
            breaker._release(permit)
            raise
        if record is None:  # the store failed: the local permit alone decides
            return permit
        with breaker._lock:
            if record.granted and permit == m.generation:
                return self._granted(permit)
            if record.granted:  # granted too late: the circuit moved meanwhile
                store.submit(
                    self.name,
                    "done",
                    record.generation,
                    self.wall(),
                    ("release", 1, 0, 0.0, "", ""),
                )
            return self._denied(permit, counters, endpoint)

    def _granted(self, permit: int) -> int:
        """Keep a shared probe permit the store granted for ``permit``."""
        if self._grant_generation != permit:
            self._grant_generation, self._grants = permit, 0
        self._grants += 1
        return permit

    def _denied(self, permit: int, counters: Counters, endpoint: str | None) -> int:
        """No shared probe permit: the local one goes back, and the call is refused or,
        if the circuit moved meanwhile, judged again."""
        breaker = self.breaker
        breaker._release(permit)
        if breaker._machine.state is HALF_OPEN:  # every probe is out elsewhere
            return breaker._refuse(counters, endpoint, PROBE_WAIT)
        return breaker._admit(counters, endpoint)  # closed or open since: judged again

    def _take_grant(self, permit: int) -> bool:
        if permit == self._grant_generation and self._grants > 0:
            self._grants -= 1
            return True
        return False

    def _give_back(self, future: asyncio.Future[Record | None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        record = future.result()
        if record is not None and record.granted:
            self.store.submit(
                self.name, "done", record.generation, self.wall(), ("release", 1, 0, 0.0, "", "")
            )

    # --- news from other instances -------------------------------------------------

    def adopt(self, record: Record, authoritative: bool = False) -> None:
        """Apply a record from the store: a newer generation (after an outage, any other)
        as it is; the same generation only as an open extended in place, or the run of
        failures."""
        with self.breaker._lock:  # a step may come from a kill switch's thread
            self._adopt(record, authoritative)

    def _adopt(self, record: Record, authoritative: bool) -> None:
        breaker, m = self.breaker, self.breaker._machine
        clock = breaker._clock
        now, wall = clock.monotonic(), clock.time()
        until = now if record.forced else now + (record.until - wall)
        opened = record.state == "open"
        if record.generation > self.generation or (
            authoritative and record.generation != self.generation
        ):
            self.generation = record.generation
            reason = f"{record.reason} (shared)"
            transition = (
                m.adopt_open(now, until, record.forced, reason)
                if opened
                else m.adopt_close(reason, record.failures)
            )
            if transition is not None:
                breaker._announce(transition, record.cause)
        elif record.generation == self.generation:
            if opened and m.state is not CLOSED and (record.forced or record.until > wall):
                transition = m.adopt_open(now, until, record.forced, f"{record.reason} (shared)")
                if transition is not None:  # half-open here, extended there
                    breaker._announce(transition, record.cause)
            elif not opened and m.state is CLOSED:
                m.adopt_close(record.reason, record.failures)
