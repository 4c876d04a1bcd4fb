"""The simulator's control API under /_simulator/, driven by a real aiohttp client."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ccxt_breaker.testing import FakeClock, Fault, Faults, KrakenSimulator
from ccxt_breaker.testing._faults import describe_fault

from .support import until

HTTP_503 = {"kind": "http", "status": 503}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    client: aiohttp.ClientSession, sim: KrakenSimulator, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """(status, JSON answer) of one control call."""
    async with client.request(method, sim.control_url + path, json=body) as response:
        return response.status, await response.json()


async def kraken(client: aiohttp.ClientSession, sim: KrakenSimulator, endpoint: str) -> int:
    """The HTTP status of one public Kraken call."""
    async with client.get(f"{sim.url}/0/public/{endpoint}") as response:
        await response.read()
        return response.status


async def test_added_fault_answers_kraken_requests(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """POST /faults adds a rule (201, with its id) that answers the next matching requests."""
    body = {"fault": HTTP_503, "endpoint": "Time", "times": 2}
    status, rule = await call(client, sim, "POST", "/faults", body)
    assert (status, rule["id"], rule["fault"]["status"], rule["times"]) == (201, 1, 503, 2)
    statuses = [await kraken(client, sim, "Time") for _ in range(3)]
    assert (statuses, await kraken(client, sim, "Assets")) == ([503, 503, 200], 200)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(520, headers={"CF-Ray": "1"}),
        Fault.kraken_error("EService:Busy", status=503),
        Fault.throttled(1_700_000_000),
        Fault.too_many_requests(30),
        Fault.too_many_requests("Wed, 21 Oct 2015 07:28:00 GMT", error="EGeneral:Too many"),
        Fault.too_many_requests(None),
        Fault.latency(1.5, applied=True),
        Fault.disconnect(),
        Fault.truncated(),
        Fault.html(),
        Fault.empty(),
        Fault.hold(),
    ],
    ids=lambda fault: fault.kind,
)
async def test_every_kind_of_fault_can_be_added(
    client: aiohttp.ClientSession, sim: KrakenSimulator, fault: Fault
) -> None:
    """Each Fault class method has a JSON form; the rule it adds holds the same fault."""
    status, _ = await call(client, sim, "POST", "/faults", {"fault": describe_fault(fault)})
    [rule] = sim.faults
    assert (status, rule.fault) == (201, fault)


async def test_scope_and_duration_are_those_of_faults_add(
    client: aiohttp.ClientSession, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """endpoint, group, times, seconds, probability and seed mean what they mean in Faults.add."""
    scope: dict[str, Any] = {
        "group": "private",
        "times": 4,
        "seconds": 30.0,
        "probability": 0.5,
        "seed": 7,
    }
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, **scope})
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "endpoint": "Ticker"})
    by_http = list(sim.faults)
    by_python = Faults(clock.monotonic)
    by_python.add(Fault.http(503), **scope)
    by_python.add(Fault.http(503), endpoint="Ticker")
    for mine, theirs in zip(by_http, by_python, strict=True):
        assert (mine.endpoint, mine.group, mine.times, mine.until, mine.probability) == (
            theirs.endpoint,
            theirs.group,
            theirs.times,
            theirs.until,
            theirs.probability,
        )
    assert by_http[0]._random.getstate() == random.Random(7).getstate()


async def test_list_shows_only_active_rules(
    client: aiohttp.ClientSession, sim: KrakenSimulator, clock: FakeClock
) -> None:
    """GET /faults lists the rules still active: spent ones (times, seconds) are gone."""
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "endpoint": "Time", "times": 1})
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "seconds": 10})
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "endpoint": "Ticker"})
    assert await kraken(client, sim, "Time") == 503
    clock.advance(10)
    status, listed = await call(client, sim, "GET", "/faults")
    assert (status, [r["id"] for r in listed["faults"]]) == (200, [3])
    assert listed["faults"][0] == {
        "id": 3,
        "fault": {"kind": "http", "status": 503, "headers": {}},
        "endpoint": "Ticker",
        "group": None,
        "times": None,
        "seconds_left": None,
        "probability": 1.0,
        "hits": 0,
    }


async def test_remove_one_rule_and_clear_all(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """DELETE /faults/ID removes that rule (404 for an unknown one); DELETE /faults all."""
    for endpoint in ("Time", "Assets", "Ticker"):
        await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "endpoint": endpoint})
    status, removed = await call(client, sim, "DELETE", "/faults/1")
    assert (status, removed["endpoint"], [r.id for r in sim.faults]) == (200, "Time", [2, 3])
    assert await call(client, sim, "DELETE", "/faults/1") == (
        404,
        {"error": "no active fault rule 1"},
    )
    assert await call(client, sim, "DELETE", "/faults") == (200, {"removed": 2})
    assert list(sim.faults) == []


async def test_release_lets_held_requests_through(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """POST /faults/ID/release answers the requests a hold rule holds; other kinds are a 409."""
    await call(client, sim, "POST", "/faults", {"fault": {"kind": "hold"}, "endpoint": "Time"})
    await call(client, sim, "POST", "/faults", {"fault": HTTP_503, "endpoint": "Assets"})
    held = asyncio.create_task(kraken(client, sim, "Time"))
    await until(lambda: sim.count("Time") == 1)
    status, _ = await call(client, sim, "POST", "/faults/1/release")
    assert (status, await asyncio.wait_for(held, 30)) == (200, 200)  # a deadline, not a timing
    status, answer = await call(client, sim, "POST", "/faults/2/release")
    assert (status, answer["error"]) == (409, "fault rule 2 is http: only a hold is released")


async def test_status_sets_systemstatus(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """PUT /status sets what SystemStatus reports, maintenance included; GET /status reads it."""
    assert await call(client, sim, "PUT", "/status", {"status": "maintenance"}) == (
        200,
        {"status": "maintenance"},
    )
    async with client.get(f"{sim.url}/0/public/SystemStatus") as response:
        assert (await response.json())["result"]["status"] == "maintenance"
    assert await call(client, sim, "GET", "/status") == (200, {"status": "maintenance"})
    assert sim.status == "maintenance"


async def test_request_log_without_secrets(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """GET /requests returns the log, filtered, never a key or signature; DELETE forgets it."""
    # control calls themselves are not logged
    headers = {"API-Key": sim.api_key, "API-Sign": "c2lnbmF0dXJl"}
    async with client.post(
        f"{sim.url}/0/private/Balance", data="nonce=1234567", headers=headers
    ) as response:
        await response.read()
    await kraken(client, sim, "Time")
    async with client.get(sim.control_url + "/requests") as response:
        raw = await response.text()
    for secret in (sim.api_key, sim.secret, "c2lnbmF0dXJl", "1234567"):
        assert secret not in raw
    _, log = await call(client, sim, "GET", "/requests?group=private")
    [record] = log["requests"]
    assert (record["endpoint"], record["error"], record["finished"]) == (
        "Balance",
        "EAPI:Invalid signature",
        True,
    )
    _, log = await call(client, sim, "GET", "/requests?endpoint=Time")
    assert [r["endpoint"] for r in log["requests"]] == ["Time"]
    assert await call(client, sim, "DELETE", "/requests") == (200, {"removed": 2})
    assert sim.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "fault"),
        ({"fault": {"kind": "nope"}}, "fault.kind"),
        ({"fault": {"kind": "http"}}, "fault.status"),
        ({"fault": {"kind": "http", "status": "503"}}, "fault.status"),
        ({"fault": {"kind": "http", "status": 600}}, "fault.status"),
        ({"fault": {"kind": "http", "status": 503, "colour": "red"}}, "fault.colour"),
        ({"fault": {"kind": "http", "status": 503, "headers": {"X-A": 1}}}, "fault.headers.X-A"),
        ({"fault": {"kind": "kraken_error", "message": ""}}, "fault.message"),
        ({"fault": {"kind": "latency", "seconds": -1}}, "fault.seconds"),
        ({"fault": {"kind": "latency", "seconds": 1, "applied": "yes"}}, "fault.applied"),
        ({"fault": HTTP_503, "times": 0}, "times"),
        ({"fault": HTTP_503, "times": True}, "times"),
        ({"fault": HTTP_503, "seconds": 0}, "seconds"),
        ({"fault": HTTP_503, "probability": 1.5}, "probability"),
        ({"fault": HTTP_503, "group": "nope"}, "group"),
        ({"fault": HTTP_503, "endpoint": 5}, "endpoint"),
        ({"fault": HTTP_503, "seed": "x"}, "seed"),
        ({"fault": HTTP_503, "tims": 3}, "tims"),
    ],
)
async def test_bad_rule_is_a_400_naming_the_field(
    client: aiohttp.ClientSession, sim: KrakenSimulator, body: Any, field: str
) -> None:
    """A refused rule is a 400 whose JSON names the bad field, and adds nothing."""
    status, answer = await call(client, sim, "POST", "/faults", body)
    assert (status, answer["field"], answer["error"].startswith(f"{field} ")) == (400, field, True)
    assert list(sim.faults) == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/faults", b"{not json", "body"),
        ("PUT", "/status", b'{"status": "closed"}', "status"),
        ("PUT", "/status", b'{"state": "online"}', "state"),
        ("GET", "/requests?group=nope", None, "group"),
        ("GET", "/requests?key=1", None, "key"),
    ],
)
async def test_other_bad_input_is_a_400_naming_the_field(
    client: aiohttp.ClientSession,
    sim: KrakenSimulator,
    method: str,
    path: str,
    body: bytes | None,
    field: str,
) -> None:
    """Bad JSON, an unknown status and unknown filters are 400s naming what was wrong."""
    async with client.request(method, sim.control_url + path, data=body) as response:
        assert (response.status, (await response.json())["field"]) == (400, field)
    assert sim.status == "online"


async def test_unknown_routes_answer_json(
    client: aiohttp.ClientSession, sim: KrakenSimulator
) -> None:
    """An unknown control path is a JSON 404, a wrong method a JSON 405 with Allow."""
    assert await call(client, sim, "GET", "/nope") == (
        404,
        {"error": "Not Found: GET /_simulator/nope"},
    )
    async with client.put(sim.control_url + "/faults") as response:
        assert (response.status, await response.json()) == (
            405,
            {"error": "Method Not Allowed: PUT /_simulator/faults"},
        )
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST", "DELETE"}
