"""Run ccxt's own static request/response tests for Kraken against a given exchange class.

ccxt ships its static-test harness inside the wheel (``ccxt/test/tests_async.py`` and
``tests_helpers.py``). This module imports that harness and calls it; it copies none of it.
The fixtures it reads are ccxt's own (MIT, see SOURCE.md) and live beside this file under
``ts/src/test/static/``.

How the harness is hooked. These are all the changes:

* ``init_exchange`` (a module global of ``tests_async``) is swapped, for the duration of one
  run, for a wrapper that builds the class under test when the harness asks for ``kraken``.
  Every other id (the harness also builds a bare ``Exchange`` for bookkeeping) goes to the
  original. The harness still passes its own offline config: fixture markets and currencies,
  fake keys, and an ``httpProxy`` plus ``httpsProxy`` pair, so that ``fetch`` raises
  ``InvalidProxySettings`` after the request is built and before any socket is opened.
* ``get_root_dir`` points the harness at the fixtures beside this file.
* ``dump`` collects the harness's messages instead of printing them.
* ``call_exchange_method_dynamically`` is wrapped. It records what the unified method
  returned or raised, and the request the exchange built. The differential check uses this.
* A subclass of the harness's ``testMainClass`` wraps ``test_request_statically`` and
  ``test_response_statically``, one call per fixture case, and turns the harness's failure
  flag into a verdict for that case. The harness itself lets any exception other than
  ``InvalidProxySettings`` escape from a request case, which ends the whole run. The wrapper
  records that exception as the case's failure and goes on to the next case.
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
from collections.abc import Iterator
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


def _import_harness() -> Any:
    """Import ccxt's ``tests_async`` module from the installed ccxt package."""
    test_dir = Path(ccxt.__file__).resolve().parent / "test"
    loaded = sys.modules.get("tests_async")
    if loaded is not None and Path(str(loaded.__file__)).resolve().parent == test_dir:
        return loaded
    # ccxt's harness is written to be run as a script from a ccxt checkout. On import,
    # tests_helpers (1) is imported as the top-level module `tests_helpers`, (2) parses
    # sys.argv with argparse, (3) raises if ccxt.async_support.__file__ contains
    # "site-packages" (its only use of that path), (4) appends to sys.path and (5) installs a
    # sys.excepthook that calls exit(). For the length of the import we put its directory on
    # sys.path and give it an empty argv and a neutral __file__; then we undo all of it.
    saved_path = list(sys.path)
    saved_hook = sys.excepthook
    saved_file = ccxt.async_support.__file__
    try:
        sys.path.insert(0, str(test_dir))
        ccxt.async_support.__file__ = "ccxt/async_support/__init__.py"
        with mock.patch.object(sys, "argv", [str(test_dir / "tests_async.py")]):
            return importlib.import_module("tests_async")
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


class _Run:
    """State of one harness run: one kind against one exchange class."""

    def __init__(self, harness: Any, exchange_class: type, kind: str) -> None:
        self.harness = harness
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

    def call_method(self, original: Any) -> Any:
        async def call_exchange_method_dynamically(exchange: Any, method: str, args: Any) -> Any:
            try:
                result = await original(exchange, method, args)
            except Exception as e:
                self.call = ("raised", type(e).__name__, str(e))
                self.request = _snapshot_request(exchange)
                raise
            self.call = ("returned", copy.deepcopy(result))
            self.request = _snapshot_request(exchange)
            return result

        return call_exchange_method_dynamically

    def dump(self, *args: Any) -> None:
        self.messages.append(" ".join(str(a) for a in args))

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        h = self.harness
        with (
            mock.patch.object(h, "init_exchange", self.init_exchange(h.init_exchange)),
            mock.patch.object(
                h,
                "call_exchange_method_dynamically",
                self.call_method(h.call_exchange_method_dynamically),
            ),
            mock.patch.object(h, "get_root_dir", return_value=str(HERE) + "/"),
            mock.patch.object(h, "dump", self.dump),
        ):
            yield

    async def case(self, run_case: Any, method: str, data: dict[str, Any]) -> Any:
        """Run one case through the harness and record its verdict."""
        flag = f"{self.kind}_tests_failed"
        index = next((i for i, c in enumerate(self.methods[method]) if c is data), None)
        if index is None:
            raise RuntimeError(f"the harness ran a {method} case that is not in the fixture")
        setattr(self.tester, flag, False)
        self.call, self.request, self.sent = (), {}, {}
        first_message = len(self.messages)
        escaped = ""
        try:
            result = await run_case()
        except Exception as e:
            # The harness would end the whole run here; record the case as failed instead.
            result = True
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
        return result


def _tester_class(harness: Any) -> type:
    """A subclass of ccxt's ``testMainClass`` that reports a verdict per case."""

    class Tester(harness.testMainClass):  # type: ignore[misc]
        def __init__(self, run: _Run) -> None:
            self.run = run
            run.tester = self
            self.parse_cli_args_and_props()

        async def test_exchange_request_statically(
            self, exchange_name: str, exchange_data: Any, *args: Any, **kwargs: Any
        ) -> Any:
            self.run.methods = exchange_data["methods"]
            return await super().test_exchange_request_statically(
                exchange_name, exchange_data, *args, **kwargs
            )

        async def test_exchange_response_statically(
            self, exchange_name: str, exchange_data: Any, *args: Any, **kwargs: Any
        ) -> Any:
            self.run.methods = exchange_data["methods"]
            return await super().test_exchange_response_statically(
                exchange_name, exchange_data, *args, **kwargs
            )

        async def test_request_statically(
            self, exchange: Any, method: str, data: Any, *args: Any
        ) -> Any:
            parent = super().test_request_statically
            return await self.run.case(lambda: parent(exchange, method, data, *args), method, data)

        async def test_response_statically(
            self, exchange: Any, method: str, skip_keys: Any, data: Any, *args: Any
        ) -> Any:
            parent = super().test_response_statically
            return await self.run.case(
                lambda: parent(exchange, method, skip_keys, data, *args), method, data
            )

    return Tester


async def run_static(exchange_class: type, kind: str) -> list[Outcome]:
    """Run ccxt's static ``kind`` tests for Kraken against ``exchange_class``; one Outcome a case.

    Raises RuntimeError if the harness itself fails outside any case.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    harness = _import_harness()
    run = _Run(harness, exchange_class, kind)
    tester = _tester_class(harness)(run)
    with run.hooked():
        try:
            await tester.run_static_tests(kind, EXCHANGE_ID)
        except SystemExit as e:  # exit_script(1) after a failure outside any case
            raise RuntimeError(
                f"ccxt's static {kind} harness exited with {e.code}:\n" + "\n".join(run.messages)
            ) from e
        finally:
            for exchange in run.exchanges:
                await exchange.close()
    if not any("[TEST_SUCCESS]" in m for m in run.messages):
        raise RuntimeError(
            f"ccxt's static {kind} harness did not finish:\n" + "\n".join(run.messages)
        )
    return run.outcomes


async def run_all(exchange_class: type) -> dict[CaseKey, Outcome]:
    """Run both kinds against ``exchange_class``; outcomes keyed by case."""
    outcomes: dict[CaseKey, Outcome] = {}
    for kind in KINDS:
        for outcome in await run_static(exchange_class, kind):
            if outcome.key in outcomes:
                raise RuntimeError(f"the harness ran {outcome.key} twice")
            outcomes[outcome.key] = outcome
    return outcomes


def main() -> int:
    """Print one line per case for stock ``ccxt.async_support.kraken``; exit 1 on a failure."""
    outcomes = asyncio.run(run_all(ccxt.async_support.kraken))
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
