"""Run ccxt's own static request/response tests for Kraken against a given exchange class.

ccxt ships its static-test harness inside the wheel in two flavours, both built on
``ccxt/test/tests_helpers.py``: ``tests_async.py`` for async classes (``ccxt.async_support``
and ``ccxt.pro``) and ``tests_sync.py`` for sync ones (``ccxt``). ccxt generates the sync one
from the async one: the same code, with plain functions where the async one has coroutines.
This module imports both and calls them; it copies none of either. ``run_static`` and
``run_all`` run the async harness, ``run_static_sync`` and ``run_all_sync`` the sync one, and
``outcomes_of`` picks the one that fits a class. The fixtures they read are ccxt's own (MIT,
see SOURCE.md) and live beside this file under ``ts/src/test/static/``.

How a harness is hooked. These are all the changes, the same for both but where named:

* ``init_exchange`` (a module global of the harness) is swapped, for the duration of one
  run, for a wrapper that builds the class under test when the harness asks for ``kraken``.
  Every other id (the harness also builds a bare ``Exchange`` for bookkeeping) goes to the
  original. The harness still passes its own offline config: fixture markets and currencies,
  fake keys, and an ``httpProxy`` plus ``httpsProxy`` pair, so that ``fetch`` raises
  ``InvalidProxySettings`` after the request is built and before any socket is opened.
* ``get_root_dir`` points the harness at the fixtures beside this file.
* ``dump`` collects the harness's messages instead of printing them.
* ``tests_helpers.IS_SYNCHRONOUS`` is set for the duration of one run: True for the sync
  harness, False for the async one. It is what ccxt's own ``--sync`` flag sets. The sync
  harness reads it through ``is_sync()`` to call the sync helper below, and
  ``set_fetch_response`` reads it to install a plain-function stub instead of a coroutine.
* The helper through which the harness calls each unified method is wrapped:
  ``call_exchange_method_dynamically`` (a coroutine) in the async harness,
  ``call_exchange_method_dynamically_sync`` in the sync one. The wrapper records what the
  unified method returned or raised, and the request the exchange built. The differential
  check uses this.
* A subclass of the harness's ``testMainClass`` wraps ``test_request_statically`` and
  ``test_response_statically``, one call per fixture case, and turns the harness's failure
  flag into a verdict for that case. It also wraps ``test_exchange_request_statically`` and
  ``test_exchange_response_statically`` to note the fixture's case lists, which give each case
  its index. The harness itself lets any exception other than ``InvalidProxySettings``
  escape from a request case, which ends the whole run. The wrapper records that exception as
  the case's failure and goes on to the next case. The wrappers are coroutines for the async
  harness and plain functions for the sync one; ``_wrapped`` makes both from the same code.
* The exchange instance's ``check_proxy_settings`` is wrapped to record its arguments. ccxt's
  base ``fetch`` calls it with the final url, method, headers and body, so this is what would
  have been sent, after any override of ``fetch`` in the class under test.
* The exchange instance gets a fixed ``nonce``. Without it, two runs of a signed request
  differ in ``nonce`` and in the signature header, and the differential check could not
  compare them exactly. The fixtures list ``nonce`` in ``skipKeys``, so ccxt's own
  assertion does not look at it.

For response cases the harness overwrites ``fetch`` on the instance with a canned-response
stub (``set_fetch_response``). An override of ``fetch`` on the class under test is then
bypassed, but ``fetch2`` still runs. For request cases the real ``fetch`` chain runs, so an
override of ``fetch`` on the class under test sees the ``InvalidProxySettings``. No case
gets an HTTP response through ccxt's base ``fetch``, so ``on_rest_response`` never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import ccxt
import ccxt.async_support

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "ts" / "src" / "test" / "static"
KNOWN_STALE_PATH = HERE / "known_stale.json"
EXCHANGE_ID = "kraken"
KINDS = ("request", "response")
FIXED_NONCE = 1_700_000_000_000


@dataclass(frozen=True, order=True)
class CaseKey:
    """One fixture case: the kind, the unified method and the index in that method's list."""

    kind: str
    method: str
    index: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.method}[{self.index}]"


@dataclass
class Outcome:
    """What happened to one case when the harness ran it against one exchange class."""

    key: CaseKey
    description: str
    passed: bool  # ccxt's own assertion passed for this case
    failure: str = ""  # the harness's failure message, if it failed
    # What the unified method did: ("returned", result) or ("raised", type name, message).
    call: tuple[Any, ...] = ()
    # The last request the exchange built (its last_request_url, _body and _headers).
    request: dict[str, Any] = field(default_factory=dict)
    # What ccxt's base fetch was handed to send: url, method, headers and body. Request cases
    # only; in response cases the harness's stub replaces fetch.
    sent: dict[str, Any] = field(default_factory=dict)

    def observable(self) -> dict[str, Any]:
        """Everything the differential check compares between two classes."""
        return {"call": self.call, "request": self.request, "sent": self.sent}


def fixture(kind: str) -> dict[str, Any]:
    """The fixture of one kind (``request`` or ``response``) for Kraken."""
    path = STATIC_DIR / kind / f"{EXCHANGE_ID}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def fixture_cases(kind: str) -> dict[CaseKey, dict[str, Any]]:
    """All cases of one kind in fixture order, including any the fixture marks disabled."""
    methods = fixture(kind)["methods"]
    return {
        CaseKey(kind, method, index): case
        for method, cases in methods.items()
        for index, case in enumerate(cases)
    }


def known_stale() -> dict[str, Any]:
    """The parsed known_stale.json."""
    data: dict[str, Any] = json.loads(KNOWN_STALE_PATH.read_text(encoding="utf-8"))
    return data


def known_stale_keys() -> set[CaseKey]:
    """The cases listed in known_stale.json."""
    return {CaseKey(c["kind"], c["method"], c["index"]) for c in known_stale()["cases"]}


@dataclass(frozen=True)
class Harness:
    """One of ccxt's two static-test harnesses, as shipped in the wheel."""

    module: str  # its module under ccxt/test/
    call_helper: str  # the tests_helpers function it calls each unified method through
    is_async: bool  # its test methods are coroutines
    success: str  # what its closing line says when every case passed ([SYNC]: sync mode)


ASYNC = Harness("tests_async", "call_exchange_method_dynamically", True, "[PY][TEST_SUCCESS]")
SYNC = Harness(
    "tests_sync", "call_exchange_method_dynamically_sync", False, "[PY][SYNC][TEST_SUCCESS]"
)


def _import_harness(name: str) -> Any:
    """Import ccxt's ``tests_async`` or ``tests_sync`` module from the installed ccxt package."""
    test_dir = Path(ccxt.__file__).resolve().parent / "test"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(str(loaded.__file__)).resolve().parent == test_dir:
        return loaded
    # ccxt's harness is written to be run as a script from a ccxt checkout. On import,
    # tests_helpers (1) is imported as the top-level module `tests_helpers`, (2) parses
    # sys.argv with argparse, (3) raises if ccxt.async_support.__file__ contains
    # "site-packages" (its only use of that path), (4) appends to sys.path and (5) installs a
    # sys.excepthook that calls exit(). For the length of the import we put its directory on
    # sys.path and give it an empty argv and a neutral __file__; then we undo all of it.
    # Both harnesses share that one tests_helpers, imported by whichever comes first.
    saved_path = list(sys.path)
    saved_hook = sys.excepthook
    saved_file = ccxt.async_support.__file__
    try:
        sys.path.insert(0, str(test_dir))
        ccxt.async_support.__file__ = "ccxt/async_support/__init__.py"
        with mock.patch.object(sys, "argv", [str(test_dir / f"{name}.py")]):
            return importlib.import_module(name)
    finally:
        ccxt.async_support.__file__ = saved_file
        sys.path[:] = saved_path
        sys.excepthook = saved_hook


def _snapshot_request(exchange: Any) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "url": exchange.last_request_url,
            "body": exchange.last_request_body,
            "headers": exchange.last_request_headers,
        }
    )


def _same(result: Any) -> Any:
    return result


def _wrapped(function: Any, around: Any, is_async: bool) -> Any:
    """``function`` called inside ``with around(*args) as finish``, its result handed through
    ``finish``: a coroutine function for the async harness, a plain one for the sync one.

    Every hook around a harness function goes through this, so each hook is written once.
    """
    if is_async:

        async def wrapped_coroutine(*args: Any, **kwargs: Any) -> Any:
            with around(*args, **kwargs) as finish:
                return finish(await function(*args, **kwargs))
            return True  # reached when `around` recorded a case's exception: the harness's value

        return wrapped_coroutine

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with around(*args, **kwargs) as finish:
            return finish(function(*args, **kwargs))
        return True  # as above

    return wrapped


class _Run:
    """State of one harness run: one kind against one exchange class."""

    def __init__(self, harness: Any, flavour: Harness, exchange_class: type, kind: str) -> None:
        self.harness = harness
        self.flavour = flavour
        self.exchange_class = exchange_class
        self.kind = kind
        self.outcomes: list[Outcome] = []
        self.messages: list[str] = []
        self.exchanges: list[Any] = []
        self.methods: dict[str, list[Any]] = {}
        self.call: tuple[Any, ...] = ()
        self.request: dict[str, Any] = {}
        self.sent: dict[str, Any] = {}
        self.tester: Any = None  # the harness's test object, set by Tester

    def init_exchange(self, original: Any) -> Any:
        def init_exchange(exchange_id: str, args: Any, *rest: Any, **kwargs: Any) -> Any:
            if exchange_id != EXCHANGE_ID:
                return original(exchange_id, args, *rest, **kwargs)
            exchange = self.exchange_class(args)
            exchange.nonce = lambda: FIXED_NONCE
            check_proxy_settings = exchange.check_proxy_settings

            def recording_check(url: Any, method: Any, headers: Any, body: Any) -> Any:
                # ccxt's base fetch calls this with the request exactly as it would be sent,
                # just before it raises InvalidProxySettings: the last point before the wire.
                self.sent = copy.deepcopy(
                    {"url": url, "method": method, "headers": headers, "body": body}
                )
                return check_proxy_settings(url, method, headers, body)

            exchange.check_proxy_settings = recording_check
            self.exchanges.append(exchange)
            return exchange

        return init_exchange

    @contextlib.contextmanager
    def recording(self, exchange: Any, method: str, args: Any) -> Iterator[Any]:
        """Around one unified call: record what it returned or raised, and the request."""

        def returned(result: Any) -> Any:
            self.call = ("returned", copy.deepcopy(result))
            self.request = _snapshot_request(exchange)
            return result

        try:
            yield returned
        except Exception as e:
            self.call = ("raised", type(e).__name__, str(e))
            self.request = _snapshot_request(exchange)
            raise

    def dump(self, *args: Any) -> None:
        self.messages.append(" ".join(str(a) for a in args))

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        h = self.harness
        helpers = sys.modules[h.is_sync.__module__]  # tests_helpers, shared by both harnesses
        call_helper = getattr(h, self.flavour.call_helper)
        with (
            mock.patch.object(h, "init_exchange", self.init_exchange(h.init_exchange)),
            mock.patch.object(
                h,
                self.flavour.call_helper,
                _wrapped(call_helper, self.recording, self.flavour.is_async),
            ),
            mock.patch.object(h, "get_root_dir", return_value=str(HERE) + "/"),
            mock.patch.object(h, "dump", self.dump),
            # what ccxt's own --sync flag sets when tests_helpers parses it
            mock.patch.object(helpers, "IS_SYNCHRONOUS", not self.flavour.is_async),
        ):
            yield

    @contextlib.contextmanager
    def judging(self, method: str, data: dict[str, Any]) -> Iterator[Any]:
        """Around one case run through the harness: record its verdict."""
        flag = f"{self.kind}_tests_failed"
        index = next((i for i, c in enumerate(self.methods[method]) if c is data), None)
        if index is None:
            raise RuntimeError(f"the harness ran a {method} case that is not in the fixture")
        setattr(self.tester, flag, False)
        self.call, self.request, self.sent = (), {}, {}
        first_message = len(self.messages)
        escaped = ""
        try:
            yield _same
        except Exception as e:
            # The harness would end the whole run here; record the case as failed instead.
            escaped = self.harness.exception_message(e)
        failed = bool(escaped) or getattr(self.tester, flag)
        # Cleared again so that the harness's end-of-run check (exit_script(1) on any failure)
        # passes: the verdicts are in self.outcomes.
        setattr(self.tester, flag, False)
        failures = [m for m in self.messages[first_message:] if "[TEST_FAILURE]" in m]
        self.outcomes.append(
            Outcome(
                key=CaseKey(self.kind, method, index),
                description=str(data.get("description")),
                passed=not failed,
                failure="\n".join([*failures, escaped]).strip() if failed else "",
                call=self.call,
                request=self.request,
                sent=self.sent,
            )
        )


# What the Tester does around four of the harness's methods; each gets the harness's own
# arguments (the test object first) and is a context manager yielding a `finish` function.


@contextlib.contextmanager
def _reading_fixture(
    tester: Any, exchange_name: str, exchange_data: Any, *rest: Any
) -> Iterator[Any]:
    tester.run.methods = exchange_data["methods"]
    yield _same


def _judging_request(tester: Any, exchange: Any, method: str, data: Any, *rest: Any) -> Any:
    return tester.run.judging(method, data)


def _judging_response(
    tester: Any, exchange: Any, method: str, skip_keys: Any, data: Any, *rest: Any
) -> Any:
    return tester.run.judging(method, data)


_TESTER_HOOKS = {
    "test_exchange_request_statically": _reading_fixture,
    "test_exchange_response_statically": _reading_fixture,
    "test_request_statically": _judging_request,  # one call per request case
    "test_response_statically": _judging_response,  # one call per response case
}


def _tester_class(harness: Any, is_async: bool) -> type:
    """A subclass of ccxt's ``testMainClass`` that reports a verdict per case."""
    base = harness.testMainClass

    def __init__(self: Any, run: _Run) -> None:
        self.run = run
        run.tester = self
        self.parse_cli_args_and_props()

    namespace = {
        name: _wrapped(getattr(base, name), around, is_async)
        for name, around in _TESTER_HOOKS.items()
    }
    return type("Tester", (base,), {"__init__": __init__, **namespace})


@contextlib.contextmanager
def _running(exchange_class: type, kind: str, flavour: Harness) -> Iterator[_Run]:
    """A hooked run of one harness; the caller runs the harness's static tests in it."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if issubclass(exchange_class, ccxt.async_support.Exchange) != flavour.is_async:
        raise TypeError(f"ccxt's {flavour.module} harness cannot run {exchange_class}")
    harness = _import_harness(flavour.module)
    run = _Run(harness, flavour, exchange_class, kind)
    _tester_class(harness, flavour.is_async)(run)
    with run.hooked():
        try:
            yield run
        # exit_script(1) after a failure outside any case; the sync harness lets an exception
        # outside any case escape where the async one catches it around its gather.
        except (SystemExit, Exception) as e:
            raise RuntimeError(
                f"ccxt's static {kind} harness ({flavour.module}) failed outside any case:\n"
                + "\n".join(run.messages)
            ) from e
    if not any(flavour.success in m for m in run.messages):
        raise RuntimeError(
            f"ccxt's static {kind} harness ({flavour.module}) did not finish:\n"
            + "\n".join(run.messages)
        )


async def run_static(exchange_class: type, kind: str) -> list[Outcome]:
    """Run ccxt's async static ``kind`` tests for Kraken against the async or pro
    ``exchange_class``; one Outcome a case.

    Raises RuntimeError if the harness itself fails outside any case.
    """
    with _running(exchange_class, kind, ASYNC) as run:
        try:
            await run.tester.run_static_tests(kind, EXCHANGE_ID)
        finally:
            for exchange in run.exchanges:
                await exchange.close()
    return run.outcomes


def run_static_sync(exchange_class: type, kind: str) -> list[Outcome]:
    """Run ccxt's sync static ``kind`` tests for Kraken against the sync ``exchange_class``;
    one Outcome a case.

    Raises RuntimeError if the harness itself fails outside any case.
    """
    with _running(exchange_class, kind, SYNC) as run:
        try:
            run.tester.run_static_tests(kind, EXCHANGE_ID)
        finally:
            for exchange in run.exchanges:
                if hasattr(exchange, "close"):  # 4.5.0's sync Exchange has none
                    exchange.close()
    return run.outcomes


def _by_case(runs: Iterable[list[Outcome]]) -> dict[CaseKey, Outcome]:
    outcomes: dict[CaseKey, Outcome] = {}
    for run in runs:
        for outcome in run:
            if outcome.key in outcomes:
                raise RuntimeError(f"the harness ran {outcome.key} twice")
            outcomes[outcome.key] = outcome
    return outcomes


async def run_all(exchange_class: type) -> dict[CaseKey, Outcome]:
    """Run both kinds through ccxt's async harness; outcomes keyed by case."""
    return _by_case([await run_static(exchange_class, kind) for kind in KINDS])


def run_all_sync(exchange_class: type) -> dict[CaseKey, Outcome]:
    """Run both kinds through ccxt's sync harness; outcomes keyed by case."""
    return _by_case(run_static_sync(exchange_class, kind) for kind in KINDS)


def outcomes_of(exchange_class: type) -> dict[CaseKey, Outcome]:
    """All cases for ``exchange_class`` through the harness that fits it: ccxt's sync one
    for a sync ccxt class, else the async one (in an event loop of its own)."""
    if issubclass(exchange_class, ccxt.async_support.Exchange):
        return asyncio.run(run_all(exchange_class))
    return run_all_sync(exchange_class)


def main(argv: list[str] | None = None) -> int:
    """Print one line per case for stock ``ccxt.async_support.kraken`` (or, with ``--sync``,
    ``ccxt.kraken``); exit 1 on an unexpected failure."""
    sync = "--sync" in (sys.argv[1:] if argv is None else argv)
    outcomes = outcomes_of(ccxt.kraken if sync else ccxt.async_support.kraken)
    stale = known_stale_keys()
    bad = 0
    for key, outcome in sorted(outcomes.items()):
        mark = "PASS" if outcome.passed else ("STALE" if key in stale else "FAIL")
        bad += mark == "FAIL"
        print(f"{mark:5} {key} {outcome.description}")
    print(f"ccxt {ccxt.__version__}: {len(outcomes)} cases, {bad} unexpected failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
