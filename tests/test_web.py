"""ccxt_breaker.web: /status, /metrics and the dashboard, the last in a real headless browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import ccxt.async_support
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import ccxt_breaker
from ccxt_breaker._kraken import DEFAULT_GROUPS
from ccxt_breaker.testing import FakeClock
from ccxt_breaker.web import status_app

KEY = "key-that-must-never-show"
SECRET = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1zaG93"  # base64, as Kraken's secrets are
# Text that would run, or fetch from outside, if the page ever wrote it as HTML.
EVIL_GROUP = "<img src=x onerror=\"document.title='pwned'\">"
EVIL_NAME = "<b>desk</b>"
EVIL_MESSAGE = '<img src="http://203.0.113.9/x.png"><script>document.title="pwned"</script>'


def config(**breaker: Any) -> dict[str, Any]:
    return {
        "apiKey": KEY,
        "secret": SECRET,
        "timeout_on_exit": 0,  # ccxt sleeps this long in close()
        "options": {"circuitBreaker": breaker},
    }


@contextlib.asynccontextmanager
async def exchanges(*exchange: Any) -> AsyncIterator[tuple[Any, ...]]:
    try:
        yield exchange
    finally:
        for each in exchange:
            await each.close()


async def fail(message: str) -> None:
    raise OSError(message)  # a transport error: a failure to a breaker


async def open_by_failures(breaker: ccxt_breaker.CircuitBreaker, message: str) -> None:
    """Open ``breaker`` the ordinary way: failed calls up to its threshold."""
    for _ in range(breaker.config.failure_threshold):
        with contextlib.suppress(OSError, ccxt_breaker.CircuitOpenError):
            await breaker.call(fail, message)
    assert breaker.state == "open"


@contextlib.asynccontextmanager
async def client(app: web.Application) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def get_json(app: web.Application, path: str) -> Any:
    async with client(app) as c:
        answer = await c.get(path)
        assert answer.status == 200, await answer.text()
        return await answer.json()


# --- /status -----------------------------------------------------------------------


async def test_status_shows_every_exchange_with_its_groups_and_merged_history() -> None:
    """/status has one entry per exchange, in order: id, name, account, snapshots, history."""
    clock = FakeClock()
    async with exchanges(
        ccxt_breaker.kraken(config(name="desk-a", clock=clock)),
        ccxt_breaker.kraken(config(clock=clock)),
        ccxt.async_support.kraken({"timeout_on_exit": 0}),  # plain ccxt: no breakers
        ccxt_breaker.kraken(config(enabled=False)),
    ) as (named, unnamed, plain, disabled):
        named.circuit_breakers["trading"].force_open()
        clock.advance(5)
        await open_by_failures(named.circuit_breakers["private"], "boom")
        body = await get_json(status_app(named, unnamed, plain, disabled), "/status")

    entries = body["exchanges"]
    assert [(e["index"], e["id"], e["name"], e["account"]) for e in entries] == [
        (0, "kraken", "desk-a", "desk-a"),
        (1, "kraken", None, "1"),
        (2, "kraken", None, "2"),
        (3, "kraken", None, "3"),
    ]
    first = entries[0]
    assert first["time"] == clock.time()  # the breakers' own clock
    assert first["groups"] == named.circuit_breakers.snapshot()
    assert list(first["groups"]) == list(DEFAULT_GROUPS)
    assert first["groups"]["private"]["last_error"] == {"type": "OSError", "message": "boom"}
    assert first["history"] == named.circuit_breakers.history()
    assert [(e["group"], e["new_state"], e["time"]) for e in first["history"]] == [
        ("trading", "open", clock.time() - 5),
        ("private", "open", clock.time()),
    ]
    assert entries[1]["groups"] == unnamed.circuit_breakers.snapshot()
    assert {g: s["state"] for g, s in entries[1]["groups"].items()} == dict.fromkeys(
        DEFAULT_GROUPS, "closed"
    )
    assert entries[1]["history"] == []
    for without in entries[2:]:
        assert (without["groups"], without["history"]) == ({}, [])


async def test_status_tells_exchanges_with_one_id_and_one_name_apart() -> None:
    """Two exchanges of one id and one name get distinct accounts: the name and a position."""
    async with exchanges(
        ccxt_breaker.kraken(config(name="desk")),
        ccxt_breaker.kraken(config(name="desk")),
        ccxt_breaker.kraken(config(name="other")),
    ) as (first, second, third):
        first.circuit_breakers["public"].force_open()
        body = await get_json(status_app(first, second, third), "/status")
    entries = body["exchanges"]
    assert [e["account"] for e in entries] == ["desk#0", "desk#1", "other"]
    assert [e["name"] for e in entries] == ["desk", "desk", "other"]
    assert [e["groups"]["public"]["state"] for e in entries] == ["open", "closed", "closed"]


async def test_status_window_keeps_only_recent_transitions() -> None:
    """/status?window=S keeps the transitions of the last S seconds; a bad window is a 400."""
    clock = FakeClock()
    async with exchanges(ccxt_breaker.kraken(config(clock=clock))) as (exchange,):
        exchange.circuit_breakers["trading"].force_open()
        clock.advance(100)
        exchange.circuit_breakers["trading"].reset()
        app = status_app(exchange)
        recent = await get_json(app, "/status?window=50")
        everything = await get_json(app, "/status")
        async with client(app) as c:
            refused = [(await c.get(f"/status?window={w}")).status for w in ("0", "-1", "x", "inf")]
    assert [e["new_state"] for e in recent["exchanges"][0]["history"]] == ["closed"]
    assert [e["new_state"] for e in everything["exchanges"][0]["history"]] == ["open", "closed"]
    assert refused == [400] * 4


async def test_status_metrics_and_page_hold_no_credentials() -> None:
    """Neither /status, /metrics nor / ever shows the API key or the secret."""
    async with exchanges(ccxt_breaker.kraken(config(name="desk"))) as (exchange,):
        # an error message that quotes both: the breakers scrub it
        await open_by_failures(exchange.circuit_breakers["private"], f"bad {KEY} {SECRET}")
        async with client(status_app(exchange)) as c:
            texts = [await (await c.get(path)).text() for path in ("/status", "/metrics", "/")]
    assert "bad *** ***" in texts[0]  # the message is there, scrubbed
    for text in texts:
        assert KEY not in text
        assert SECRET not in text


async def test_status_app_refuses_what_is_not_a_list_of_exchanges() -> None:
    """status_app() takes exchanges as separate arguments, each once."""
    async with exchanges(ccxt_breaker.kraken(config())) as (exchange,):
        with pytest.raises(TypeError, match=r"status_app\(\*exchanges\)"):
            status_app([exchange])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="exchange 1 twice"):
            status_app(exchange, exchange)


# --- /metrics ----------------------------------------------------------------------


async def test_metrics_exposes_every_exchange_under_its_account() -> None:
    """/metrics is Prometheus text for every exchange, labelled by name or position."""
    from prometheus_client.parser import text_string_to_metric_families

    async with exchanges(
        ccxt_breaker.kraken(config(name="desk")),
        ccxt_breaker.kraken(config()),
        ccxt.async_support.kraken({"timeout_on_exit": 0}),
    ) as (named, unnamed, plain):
        named.circuit_breakers["trading"].force_open()
        async with client(status_app(named, unnamed, plain)) as c:
            answer = await c.get("/metrics")
            text = await answer.text()
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "ccxt_breaker_state",
        "ccxt_breaker_calls",
        "ccxt_breaker_transitions",
        "ccxt_breaker_retry_after_seconds",
    } <= set(families)
    states = {
        (s.labels["account"], s.labels["group"], s.labels["state"]): s.value
        for s in families["ccxt_breaker_state"].samples
    }
    assert {account for account, _, _ in states} == {"desk", "1"}  # plain ccxt: nothing
    assert states["desk", "trading", "open"] == 1.0
    assert states["1", "trading", "open"] == 0.0
    assert states["1", "trading", "closed"] == 1.0


async def test_metrics_without_prometheus_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without prometheus-client, /metrics is a 501 whose one line names the extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    async with (
        exchanges(ccxt_breaker.kraken(config())) as (exchange,),
        client(status_app(exchange)) as c,
    ):
        answer = await c.get("/metrics")
        text = await answer.text()
        assert (await c.get("/status")).status == 200
    assert answer.status == 501
    assert text.count("\n") == 1
    assert "pip install 'ccxt-breaker[prometheus]'" in text


# --- the page, as text ---------------------------------------------------------------

URL = re.compile(r"(?:https?:)?//[\w.-]", re.IGNORECASE)


async def test_page_is_self_contained_and_refers_to_nothing_outside() -> None:
    """The dashboard is one HTML page: no http(s) URL, no external script, style or font."""
    async with (
        exchanges(ccxt_breaker.kraken(config())) as (exchange,),
        client(status_app(exchange)) as c,
    ):
        answer = await c.get("/")
        page = await answer.text()
    assert answer.status == 200
    assert answer.content_type == "text/html"
    assert URL.findall(page) == []
    assert not re.search(r"<(?:script|link|img|iframe)\b[^>]*\bsrc=", page)
    assert not re.search(r"@import|@font-face|url\(", page)
    assert re.findall(r"<link\b[^>]*>", page) == ['<link rel="icon" href="data:,">']
    # and the browser is told so: nothing but its own inline code and /status
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy


async def test_page_writes_what_it_reads_as_text_never_as_html() -> None:
    """The page's script builds the DOM with textContent, never an HTML-parsing sink."""
    async with (
        exchanges(ccxt_breaker.kraken(config())) as (exchange,),
        client(status_app(exchange)) as c,
    ):
        page = await (await c.get("/")).text()
    script = page[page.index("<script>") : page.index("</script>")]
    assert "textContent" in script
    sinks = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|srcdoc|eval\(|Function\("
    assert re.findall(sinks, script) == []


def test_page_ships_in_the_wheel(tmp_path: Any) -> None:
    """The wheel holds the dashboard page that ccxt_breaker.web serves."""
    import subprocess
    import zipfile
    from pathlib import Path

    root = Path(__file__).parent.parent
    build = "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))"
    name = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()[-1]
    with zipfile.ZipFile(tmp_path / name) as wheel:
        shipped = wheel.read("ccxt_breaker/_dashboard.html").decode()
    assert shipped == (root / "ccxt_breaker" / "_dashboard.html").read_text(encoding="utf-8")


# --- the page, in a real headless browser ---------------------------------------------
#
# Debian's chromium driven by selenium through Debian's chromedriver.  Without them the
# tests skip, unless CCXT_BREAKER_BROWSER=required (as in CI), when they fail instead.

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # a closed network: no calls home
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
]


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CCXT_BREAKER_BROWSER") == "required":
        pytest.fail(f"{reason}, and CCXT_BREAKER_BROWSER=required", pytrace=False)
    pytest.skip(
        f"{reason}: install Debian's chromium and chromium-driver (CI does, and sets "
        "CCXT_BREAKER_BROWSER=required so that this test cannot skip there)"
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless chromium, fresh profile, logging every request the page makes."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
    except ImportError:
        unavailable("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        unavailable(f"no browser found (chromium: {chromium}, chromedriver: {driver})")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*BROWSER_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:  # a path to the driver: selenium looks for nothing online
        session = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    except WebDriverException as e:
        unavailable(f"chromium did not start: {e.msg}")
    try:
        yield session
    finally:
        session.quit()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 by a real aiohttp runner, on this test's loop."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def wait_for(driver: Any, script: str, *args: Any, timeout: float = 15.0) -> Any:
    """Poll ``script`` in the page until it returns something truthy, and return that."""
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.05)
    return wait.until(lambda d: d.execute_script(script, *args))


async def in_browser(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking selenium call off the loop, which must keep serving the page."""
    return await asyncio.to_thread(fn, *args, **kwargs)


# The row of (exchange index, group) as `r`, read in one go inside the page (never stale).
ROW = """
const row = [...document.querySelectorAll("#rows tr")].find(
  (tr) => tr.dataset.exchange === String(arguments[0]) && tr.dataset.group === arguments[1]);
const badge = row && row.querySelector(".state");
const r = row && {
  state: badge.dataset.state, text: badge.textContent,
  color: getComputedStyle(badge).backgroundColor,
  group: row.querySelector(".group").textContent,
  retry: row.querySelector(".retry").textContent,
  error: row.querySelector(".error").textContent,
  segments: [...row.querySelectorAll(".seg")].map((s) => s.className),
  refreshes: Number(document.body.dataset.refreshes),
};
"""
RED, GREEN = "rgb(198, 40, 40)", "rgb(46, 125, 50)"


def requests_and_errors(driver: Any, base: str = "") -> tuple[list[str], list[str]]:
    """Every URL that the pages of ``base`` requested since the last call (the browser's own
    pages, such as its new tab, aside), and the errors in the console."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent" and params.get(
            "documentURL", ""
        ).startswith(f"{base}/"):
            urls.append(params["request"]["url"])
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return urls, errors


def assert_only_local(driver: Any, base: str) -> None:
    """The page asked 127.0.0.1 for /status, asked nothing of anywhere else, and logged no
    error (a request its Content-Security-Policy refused is logged as one)."""
    urls, errors = requests_and_errors(driver, base)
    assert f"{base}/status?window=3600" in urls
    assert [url for url in urls if not url.startswith((f"{base}/", "data:"))] == []
    assert errors == []


async def test_browser_shows_a_forced_open_within_two_refreshes(browser: Any) -> None:
    """In chromium, force_open() turns the row and its strip red within two refreshes."""
    async with (
        exchanges(ccxt_breaker.kraken(config())) as (exchange,),
        serving(status_app(exchange)) as base,
    ):
        await in_browser(requests_and_errors, browser)  # forget earlier tests' requests
        await in_browser(browser.get, f"{base}/?refresh=0.3")
        before = await in_browser(wait_for, browser, ROW + "return r;", 0, "trading")
        assert (before["state"], before["color"], before["retry"]) == ("closed", GREEN, "")
        assert before["segments"] == ["seg closed"]

        exchange.circuit_breakers["trading"].force_open()
        # every refresh that starts from now on sees it open, and at most one was in flight
        count = "return Number(document.body.dataset.refreshes);"
        now = await in_browser(browser.execute_script, count)
        script = ROW + "return r && r.state === 'open' && r;"
        shown = await in_browser(wait_for, browser, script, 0, "trading")
        assert shown["refreshes"] <= now + 2
        assert (shown["text"], shown["color"], shown["retry"]) == ("open", RED, "until reset()")
        assert shown["segments"] == ["seg closed", "seg open"]  # drawn from the history
        await in_browser(assert_only_local, browser, base)


async def test_browser_counts_retry_after_down_between_refreshes(browser: Any) -> None:
    """The time to the next probe counts down in the page while /status stays the same."""
    clock = FakeClock()  # frozen: every /status says 30 s
    breaker_config = config(clock=clock, failureThreshold=1, resetTimeout=30_000)
    async with (
        exchanges(ccxt_breaker.kraken(breaker_config)) as (exchange,),
        serving(status_app(exchange)) as base,
    ):
        await open_by_failures(exchange.circuit_breakers["private"], "down")
        assert exchange.circuit_breakers["private"].retry_after == 30.0
        await in_browser(requests_and_errors, browser)
        await in_browser(browser.get, f"{base}/?refresh=60")  # no refresh meanwhile
        script = ROW + "return r && parseFloat(r.retry) <= 29.5 && r;"
        shown = await in_browser(wait_for, browser, script, 0, "private")
        assert re.fullmatch(r"\d+\.\d s", shown["retry"])
        assert shown["refreshes"] == 1
        assert (shown["state"], shown["error"]) == ("open", "OSError: down")
        await in_browser(assert_only_local, browser, base)


async def test_browser_shows_names_and_messages_as_text(browser: Any) -> None:
    """Markup in a group name, a configured name or an error message shows as plain text."""
    breaker_config = config(name=EVIL_NAME, failureThreshold=1, endpoints={"Ticker": EVIL_GROUP})
    async with (
        exchanges(ccxt_breaker.kraken(breaker_config)) as (exchange,),
        serving(status_app(exchange)) as base,
    ):
        await open_by_failures(exchange.circuit_breakers[EVIL_GROUP], EVIL_MESSAGE)
        await in_browser(requests_and_errors, browser)
        await in_browser(browser.get, f"{base}/?refresh=0.3")
        shown = await in_browser(wait_for, browser, ROW + "return r;", 0, EVIL_GROUP)
        assert (shown["group"], shown["error"]) == (EVIL_GROUP, f"OSError: {EVIL_MESSAGE}")
        page = await in_browser(
            browser.execute_script,
            "return [document.title, document.querySelectorAll('#rows *:is(img, b, script)')"
            ".length, document.getElementById('rows').textContent];",
        )
        assert page[:2] == ["ccxt_breaker", 0]
        assert f"kraken \u00b7 {EVIL_NAME}" in page[2]
        await in_browser(assert_only_local, browser, base)
