"""ccxt's own static request/response tests for Kraken, run against ccxt_breaker's classes.

The harnesses and the way they are hooked are described in ccxt_static/run_static.py. Every
case is run once per class: ccxt's async harness for ``ccxt_breaker.kraken`` and
``ccxt_breaker.pro.kraken``, its sync harness for ``ccxt_breaker.sync.kraken``, each beside
the stock ccxt class of the same flavour. A case passes when:

* ccxt's own assertion passes for ccxt_breaker's class, and for stock ccxt as a sanity
  check. This applies to every case not listed in ccxt_static/known_stale.json;
* ccxt_breaker's class behaves exactly like stock ccxt. That means the same return value or
  the same exception type and message, and the same built request (url, body and headers,
  signature included). This applies to every case, and it is the only check for the
  known-stale ones.

The fixtures were vetted on the ccxt version named in known_stale.json. On any other ccxt,
a non-stale case that stock ccxt itself fails is skipped in the fixture test, with the
reason shown. It is still judged by the differential test.
"""

from __future__ import annotations

import importlib.util
import pprint
import sys
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

from ccxt_breaker import kraken
from ccxt_breaker.pro import kraken as pro_kraken
from ccxt_breaker.sync import kraken as sync_kraken


def _load_runner() -> Any:
    # Loaded by path, so the import works whatever pytest's import mode and whether or not
    # tests/ is a package.
    path = Path(__file__).resolve().parent / "ccxt_static" / "run_static.py"
    spec = importlib.util.spec_from_file_location("ccxt_static_run_static", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rs = _load_runner()

# (stock class, ccxt_breaker class) per flavour; rs.outcomes_of runs a sync class through
# ccxt's sync harness, the others through its async one
FLAVOURS = {
    "async": (ccxt.async_support.kraken, kraken),
    "pro": (ccxt.pro.kraken, pro_kraken),
    "sync": (ccxt.kraken, sync_kraken),
}
# Cases that ccxt's harness runs: the fixture's cases minus the one marked "disabled".
EXPECTED_CASES = {"request": 35, "response": 15}
EXPECTED_STALE = 6

STALE = rs.known_stale_keys()
VETTED_VERSION = rs.known_stale()["ccxt_version"]
ON_VETTED_CCXT = ccxt.__version__ == VETTED_VERSION
ENABLED = sorted(
    key
    for kind in rs.KINDS
    for key, case in rs.fixture_cases(kind).items()
    if not case.get("disabled")
)
ALL_CASES = [pytest.param(f, key, id=f"{f}-{key}") for f in FLAVOURS for key in ENABLED]
FIXTURE_CASES = [
    pytest.param(f, key, id=f"{f}-{key}") for f in FLAVOURS for key in ENABLED if key not in STALE
]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, Any]]:
    """Every case run once per class: {flavour: {"stock": {key: Outcome}, "breaker": ...}}."""
    return {
        flavour: {"stock": rs.outcomes_of(stock), "breaker": rs.outcomes_of(breaker)}
        for flavour, (stock, breaker) in FLAVOURS.items()
    }


def _outcome(outcomes: dict[str, dict[str, Any]], flavour: str, side: str, key: Any) -> Any:
    found = outcomes[flavour][side].get(key)
    assert found is not None, f"ccxt's harness did not run {key} for the {side} {flavour} class"
    return found


def _failure(outcome: Any) -> str:
    # The harness's message ends with ccxt's AssertionError, after a traceback.
    return str(outcome.failure)[-2500:]


def test_fixture_case_counts() -> None:
    """The fixtures hold 35 request and 15 response cases that run, 6 of them known-stale."""
    counts = {kind: sum(key.kind == kind for key in ENABLED) for kind in rs.KINDS}
    assert counts == EXPECTED_CASES
    assert len(STALE) == EXPECTED_STALE
    described = {
        rs.CaseKey(c["kind"], c["method"], c["index"]): c["description"]
        for c in rs.known_stale()["cases"]
    }
    for key, description in described.items():
        assert key in ENABLED, f"known_stale.json names {key}, which the harness does not run"
        case = rs.fixture_cases(key.kind)[key]
        assert case["description"] == description, f"known_stale.json mislabels {key}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_harness_runs_every_case(outcomes: dict[str, dict[str, Any]], flavour: str) -> None:
    """ccxt's harness runs each enabled fixture case exactly once for both classes."""
    for side in ("stock", "breaker"):
        ran = sorted(outcomes[flavour][side])
        assert len(ran) == sum(EXPECTED_CASES.values()), f"{side}: ran {len(ran)} cases"
        assert ran == ENABLED, f"{side}: ran a different set of cases"


@pytest.mark.skipif(
    not ON_VETTED_CCXT, reason=f"known_stale.json was vetted on ccxt {VETTED_VERSION}"
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_known_stale_list_is_exact(outcomes: dict[str, dict[str, Any]], flavour: str) -> None:
    """On the vetted ccxt, stock ccxt fails ccxt's assertion on exactly the known-stale cases."""
    failing = {key for key, o in outcomes[flavour]["stock"].items() if not o.passed}
    assert failing == STALE, f"stock ccxt ({flavour}) failing: {sorted(map(str, failing))}"


@pytest.mark.parametrize(("flavour", "key"), FIXTURE_CASES)
def test_fixture_case_passes(outcomes: dict[str, dict[str, Any]], flavour: str, key: Any) -> None:
    """ccxt's own static assertion passes for ccxt_breaker's class, as it does for stock ccxt."""
    stock = _outcome(outcomes, flavour, "stock", key)
    breaker = _outcome(outcomes, flavour, "breaker", key)
    if not stock.passed:
        if ON_VETTED_CCXT:
            pytest.fail(f"stock ccxt {ccxt.__version__} fails {key}:\n{_failure(stock)}")
        pytest.skip(
            f"stock ccxt {ccxt.__version__} fails {key} too (fixtures vetted on "
            f"{VETTED_VERSION}); judged by test_behaves_like_stock"
        )
    assert breaker.passed, f"ccxt_breaker fails {key}:\n{_failure(breaker)}"


@pytest.mark.parametrize(("flavour", "key"), ALL_CASES)
def test_behaves_like_stock(outcomes: dict[str, dict[str, Any]], flavour: str, key: Any) -> None:
    """ccxt_breaker's class returns or raises, and builds its request, exactly as stock ccxt."""
    stock = _outcome(outcomes, flavour, "stock", key)
    breaker = _outcome(outcomes, flavour, "breaker", key)
    assert stock.call, f"the harness never called the unified method for {key}"
    assert breaker.observable() == stock.observable(), (
        f"{key} differs from stock ccxt\nstock:\n{pprint.pformat(stock.observable())[:3000]}"
        f"\nccxt_breaker:\n{pprint.pformat(breaker.observable())[:3000]}"
    )
    assert breaker.passed == stock.passed
