"""The population_db adapter against the C06 simulator: real SOAP 1.1 over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.base import Adapter, registry
from adapters.population_db import KIND
from adapters.population_db.data import FAULT_IDS, sample_citizen
from bus.errors import (
    BusError,
    InvalidRequest,
    NotFoundError,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.support.population import (
    POPULATION,
    SEED,
    ctx,
    population_adapter,
    request,
    serve,
    sim_app,
    subject_of,
)

CITIZEN = sample_citizen(SEED, 3)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C06_TEST_SECRET", "s3cret-for-tests")


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    async with serve(sim_app()) as url:
        yield url


@pytest.fixture
async def adapter(sim_url: str) -> AsyncIterator[Adapter]:
    async with population_adapter(sim_url) as a:
        yield a


async def stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(url + "_sim/stats") as resp:
        data: dict[str, int] = await resp.json()
        return data


def test_registered() -> None:
    assert registry.get("population_db") is KIND


async def test_lookup_found(adapter: Adapter, sim_url: str) -> None:
    fields = ["personal_id", "name", "birth_date", "sex", "mother", "current_address"]
    out = await adapter.call("lookup", request(subject_of(CITIZEN), fields=fields), ctx())
    assert out["status"] == "FOUND"
    assert out["correlation_id"] == "corr-1"
    assert out["data_as_of"].endswith("+07:00")
    citizen = out["citizen"]
    assert set(citizen) == set(fields)
    assert citizen["personal_id"] == CITIZEN["personal_id"]
    assert citizen["name"]["full"] == CITIZEN["full_name"]
    assert citizen["birth_date"] == CITIZEN["birth_date"]
    assert citizen["sex"] == CITIZEN["sex"]
    assert citizen["mother"]["full_name"] == " ".join(CITIZEN["mother"]["name"].values())
    assert citizen["current_address"]["admin_scheme"] == "GSO_2025"
    assert citizen["current_address"]["ward_code"] == CITIZEN["current_address"]["ward_code"]
    assert (await stats(sim_url))["TraCuuThongTinCongDan"] == 1


async def test_lookup_by_old_id(adapter: Adapter) -> None:
    citizen = next(c for i in range(POPULATION) if (c := sample_citizen(SEED, i))["old_id"])
    subject = subject_of(citizen, id_type="CMND9", id_number=citizen["old_id"])
    out = await adapter.call("lookup", request(subject, fields=["personal_id", "old_id"]), ctx())
    assert out["status"] == "FOUND"
    assert out["citizen"] == {"personal_id": citizen["personal_id"], "old_id": citizen["old_id"]}


async def test_lookup_not_found(adapter: Adapter) -> None:
    absent = sample_citizen(SEED, POPULATION + 1)  # valid, but beyond the population
    out = await adapter.call("lookup", request(subject_of(absent)), ctx())
    assert out["status"] == "NOT_FOUND"
    assert "citizen" not in out


async def test_lookup_mismatch(adapter: Adapter) -> None:
    other_name = "Phạm Thị Lan" if CITIZEN["full_name"] != "Phạm Thị Lan" else "Lê Văn Tám"
    subject = subject_of(CITIZEN, full_name=other_name)
    out = await adapter.call("lookup", request(subject), ctx())
    assert out == {
        "request_id": "req-00000001",
        "correlation_id": "corr-1",
        "status": "MISMATCH",  # which field differed is not said (reveal_mismatch off)
        "source": "C06",
        "data_as_of": out["data_as_of"],
    }


async def test_lookup_accepts_upper_case_and_nfd_names(adapter: Adapter) -> None:
    import unicodedata

    shouted = unicodedata.normalize("NFD", CITIZEN["full_name"].upper())
    out = await adapter.call("lookup", request(subject_of(CITIZEN, full_name=shouted)), ctx())
    assert out["status"] == "FOUND"


async def test_verify_true_and_false(adapter: Adapter) -> None:
    yes = await adapter.call("verify", request(subject_of(CITIZEN)), ctx("verify"))
    assert (yes["status"], yes["verified"]) == ("FOUND", True)
    wrong_day = CITIZEN["birth_date"][:4]
    if len(CITIZEN["birth_date"]) == 10:  # same year (the CCCD says so), another day
        day = int(CITIZEN["birth_date"][8:]) % 28 + 1
        wrong_day = f"{CITIZEN['birth_date'][:8]}{day:02d}"
    no = await adapter.call(
        "verify", request(subject_of(CITIZEN, birth_date=wrong_day)), ctx("verify")
    )
    assert (no["status"], no["verified"]) == ("NOT_FOUND", False)


def fault_subject(kind: str) -> dict[str, Any]:
    id_number = next(i for i, k in FAULT_IDS.items() if k == kind)
    return {
        "id_type": "CCCD12",
        "id_number": id_number,
        "full_name": "Lê Văn Tám",
        "birth_date": "1999",
        "sex": "M",
    }


@pytest.mark.parametrize(
    ("kind", "error", "code", "retryable"),
    [
        ("transient", UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", True),
        ("client", UpstreamRejected, "UPSTREAM_REJECTED", False),
        ("server", UpstreamError, "UPSTREAM_ERROR", False),
        ("malformed", UpstreamBadResponse, "UPSTREAM_BAD_RESPONSE", False),
        ("hostile", UpstreamBadResponse, "UPSTREAM_BAD_RESPONSE", False),
        ("http503", UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", True),
    ],
)
async def test_faults_map_to_bus_errors(
    adapter: Adapter, kind: str, error: type[BusError], code: str, retryable: bool
) -> None:
    with pytest.raises(error) as info:
        await adapter.call("lookup", request(fault_subject(kind)), ctx())
    exc = info.value
    assert type(exc) is error
    assert (exc.code, exc.retryable) == (code, retryable)
    text = f"{exc.message} {exc.detail}"
    assert fault_subject(kind)["id_number"] not in text  # no personal data in errors
    assert "Tám" not in text
    assert "TÁM" not in text


async def test_fault_detail_carries_the_upstream_code(adapter: Adapter) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await adapter.call("lookup", request(fault_subject("transient")), ctx())
    assert info.value.detail == {"fault_code": "Server", "upstream_code": "TamThoiKhongKhaDung"}


async def test_hostile_reply_is_refused_with_a_clear_message(adapter: Adapter) -> None:
    with pytest.raises(UpstreamBadResponse, match="DOCTYPE") as info:
        await adapter.call("lookup", request(fault_subject("hostile")), ctx())
    assert "root:" not in info.value.message  # nothing of /etc/passwd was read


async def test_slow_upstream_times_out_at_the_deadline(adapter: Adapter) -> None:
    with pytest.raises(UpstreamTimeout):
        await adapter.call("lookup", request(fault_subject("slow")), ctx(timeout=0.3))


async def test_no_time_left(adapter: Adapter, sim_url: str) -> None:
    with pytest.raises(UpstreamTimeout):
        await adapter.call("lookup", request(subject_of(CITIZEN)), ctx(timeout=-1))
    assert "TraCuuThongTinCongDan" not in await stats(sim_url)


async def test_wrong_secret_is_upstream_auth_failed(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C06_TEST_SECRET", "not-the-secret")
    async with population_adapter(sim_url) as adapter:
        with pytest.raises(UpstreamAuthFailed) as info:
            await adapter.call("lookup", request(subject_of(CITIZEN)), ctx())
    assert info.value.code == "UPSTREAM_AUTH_FAILED"
    assert "not-the-secret" not in info.value.message
    assert (await stats(sim_url))["auth_failures"] == 1


async def test_error_rate_gives_retryable_faults() -> None:
    async with serve(sim_app(error_rate=1.0)) as url, population_adapter(url) as adapter:
        with pytest.raises(UpstreamUnavailable):
            await adapter.call("lookup", request(subject_of(CITIZEN)), ctx())


async def test_unreachable_upstream() -> None:
    async with population_adapter("http://127.0.0.1:9/") as adapter:
        with pytest.raises(UpstreamUnavailable, match="cannot reach"):
            await adapter.call("lookup", request(subject_of(CITIZEN)), ctx())


async def test_worker_side_validation(adapter: Adapter, sim_url: str) -> None:
    bad = request(subject_of(CITIZEN, id_number="001 090012345"))
    with pytest.raises(InvalidRequest) as info:
        await adapter.call("lookup", bad, ctx())
    assert info.value.code == "INVALID_ID_NUMBER"
    with pytest.raises(NotFoundError):
        await adapter.call("delete", request(subject_of(CITIZEN)), ctx())
    assert (await stats(sim_url)).get("calls", 0) == 0  # nothing reached C06


async def test_a_credential_header_given_by_reference_is_sent_with_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    monkeypatch.setenv("C06_API_KEY", "the-key-value")
    headers = {"X-Api-Key": "env:C06_API_KEY", "ESB_SOURCE_TYPE": "lgsp"}
    async with serve(app) as url, population_adapter(url, extra_headers=headers) as adapter:
        with pytest.raises(UpstreamError):
            await adapter.call("lookup", request(subject_of(CITIZEN)), ctx())
    assert seen
    assert seen[0]["X-Api-Key"] == "the-key-value"
    assert seen[0]["ESB_SOURCE_TYPE"] == "lgsp"
