"""The civil-status simulator on loopback, called directly and through the real adapter."""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.base import CallContext, registry
from adapters.civil_status import KIND, CivilStatusAdapter, RecordType
from adapters.civil_status.data import (
    AUTHORITIES,
    HORIZON,
    PROVINCE_CODES,
    build_dataset,
    sample_person,
    sample_record,
    sample_registration,
)
from adapters.civil_status.simulator import STATS, build_app, serve, serving
from adapters.common.dates import PartialDate, from_moj
from bus.config import ServiceConfig, UpstreamConfig
from bus.errors import (
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

TOKEN = "sim-token-for-tests"
SEED = 11
REQUEST_ID = "01HZX3K9V6Q7T8R2M4N5P6Q7R8"
SUBJECT = {
    RecordType.BIRTH: "SUBJECT",
    RecordType.MARRIAGE: "HUSBAND",
    RecordType.DEATH: "DECEASED",
}


def ctx(seconds: float = 5.0) -> CallContext:
    return CallContext(
        request_id=REQUEST_ID,
        correlation_id="corr-1",
        consumer="mot-cua",
        service="civil-status",
        operation="lookup",
        deadline=time.time() + seconds,
    )


def request(record_type: RecordType, **query: Any) -> dict[str, Any]:
    return {"request_id": REQUEST_ID, "record_type": record_type.value, **query}


async def make_adapter(url: str, env: str = "CS_SIM_TOKEN") -> CivilStatusAdapter:
    upstream = UpstreamConfig.model_validate(
        {"url": url, "allow_plain_http": True, "auth": {"kind": "bearer", "token": f"env:{env}"}}
    )
    service = ServiceConfig.model_validate(
        {"adapter": "civil_status", "upstream": "moj", "operations": {"lookup": {"timeout_s": 5}}}
    )
    assert KIND.check("civil-status", service) == []
    return await KIND.create("civil-status", service, upstream)


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    async with serving(build_app(token=TOKEN, seed=SEED)) as url:
        yield url


@pytest.fixture
async def adapter(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CivilStatusAdapter]:
    monkeypatch.setenv("CS_SIM_TOKEN", TOKEN)
    built = await make_adapter(sim_url)
    yield built
    await built.aclose()


async def fault(adapter: CivilStatusAdapter, number: str, seconds: float = 5.0) -> dict[str, Any]:
    by_registration = {"authority_code": "00001", "number": number}
    return await adapter.call(
        "lookup", request(RecordType.BIRTH, by_registration=by_registration), ctx(seconds)
    )


# --- through the adapter -----------------------------------------------------------------


@pytest.mark.parametrize("record_type", list(RecordType))
@pytest.mark.parametrize("index", [0, 57, 1999])
async def test_found_by_registration(
    adapter: CivilStatusAdapter, record_type: RecordType, index: int
) -> None:
    reg = sample_registration(SEED, record_type, index)
    answer = await adapter.call("lookup", request(record_type, by_registration=reg), ctx())
    assert answer["status"] == "FOUND"
    assert answer["record_type"] == record_type.value
    assert answer["registration"]["number"] == reg["number"]
    assert answer["registration"]["date"] == reg["registration_date"]
    subject = sample_person(SEED, record_type, index)
    assert answer["persons"][0]["role"] == SUBJECT[record_type]
    assert answer["persons"][0]["personal_id"] == subject["id_number"]
    assert (answer["death"] is not None) is (record_type is RecordType.DEATH)
    assert (answer["marriage"] is not None) is (record_type is RecordType.MARRIAGE)


@pytest.mark.parametrize("record_type", list(RecordType))
async def test_found_by_person(adapter: CivilStatusAdapter, record_type: RecordType) -> None:
    person = sample_person(SEED, record_type, 33)
    answer = await adapter.call("lookup", request(record_type, by_person=person), ctx())
    assert answer["status"] == "FOUND"
    assert answer["match_count"] == 1
    assert answer["persons"][0]["full_name"] == person["full_name"]
    assert (
        answer["registration"]
        == (
            await adapter.call(
                "lookup",
                request(record_type, by_registration=sample_registration(SEED, record_type, 33)),
                ctx(),
            )
        )["registration"]
    )


async def test_by_person_matches_the_wife_too_and_names_loosely(
    adapter: CivilStatusAdapter,
) -> None:
    rec = sample_record(SEED, RecordType.MARRIAGE, 5)
    name = unicodedata.normalize("NFD", rec["voHoTen"].upper())
    person = {"id_number": rec["voSoGiayToTuyThan"], "full_name": name}
    answer = await adapter.call("lookup", request(RecordType.MARRIAGE, by_person=person), ctx())
    assert answer["status"] == "FOUND"
    assert [p["role"] for p in answer["persons"]] == ["HUSBAND", "WIFE"]


@pytest.mark.parametrize("record_type", list(RecordType))
async def test_not_found(adapter: CivilStatusAdapter, record_type: RecordType) -> None:
    cases: list[dict[str, Any]] = [
        {"by_registration": {"authority_code": "00001", "number": "998"}},
        {"by_registration": {"authority_code": "99999", "number": "1"}},
        {"by_registration": sample_registration(SEED, record_type, 1) | {"book": "77"}},
        {"by_person": {"id_number": "001100000000"}},
        {"by_person": sample_person(SEED, record_type, 2) | {"full_name": "Không Có Ai"}},
        {"by_person": sample_person(SEED, record_type, 2) | {"birth_date": "1901"}},
    ]
    for query in cases:
        answer = await adapter.call("lookup", request(record_type, **query), ctx())
        assert answer == {
            "record_type": record_type.value,
            "status": "NOT_FOUND",
            "registration": None,
            "persons": [],
            "death": None,
            "marriage": None,
            "foreign_registration": None,
            "match_count": 0,
            "data_source": "MOJ_CIVIL_STATUS",
        }


async def test_partial_dates_narrow_but_do_not_exclude(adapter: CivilStatusAdapter) -> None:
    reg = sample_registration(SEED, RecordType.BIRTH, 4)
    for precision in (4, 7, 10):
        query = reg | {"registration_date": reg["registration_date"][:precision]}
        answer = await adapter.call(
            "lookup", request(RecordType.BIRTH, by_registration=query), ctx()
        )
        assert answer["status"] == "FOUND"


async def test_bad_token_is_upstream_auth_failed(
    sim_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CS_WRONG_TOKEN", "not-the-token")
    wrong = await make_adapter(sim_url, env="CS_WRONG_TOKEN")
    person = sample_person(SEED, RecordType.BIRTH, 0)
    try:
        with pytest.raises(UpstreamAuthFailed) as info:
            await wrong.call("lookup", request(RecordType.BIRTH, by_person=person), ctx())
    finally:
        await wrong.aclose()
    assert person["id_number"] not in str(info.value)


@pytest.mark.parametrize(
    ("number", "error"),
    [
        ("FAIL503", UpstreamUnavailable),
        ("FAIL500", UpstreamError),
        ("BADJSON", UpstreamBadResponse),
        ("REJECT", UpstreamRejected),
    ],
)
async def test_faults_map_to_bus_errors(
    adapter: CivilStatusAdapter, number: str, error: type[UpstreamError]
) -> None:
    with pytest.raises(error) as info:
        await fault(adapter, number)
    assert type(info.value) is error


async def test_hang_is_upstream_timeout_before_the_deadline(adapter: CivilStatusAdapter) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await fault(adapter, "HANG", seconds=1.0)
    elapsed = time.monotonic() - started
    # The adapter keeps 0.2 s back, so the caller hears of it before its 1 s deadline.
    assert 0.7 < elapsed < 1.0


async def test_no_time_left_is_upstream_timeout_without_a_call(adapter: CivilStatusAdapter) -> None:
    with pytest.raises(UpstreamTimeout):
        await fault(adapter, "1", seconds=0.1)


async def test_unknown_operation_and_invalid_request(adapter: CivilStatusAdapter) -> None:
    with pytest.raises(InvalidRequest) as info:
        await adapter.call("push", request(RecordType.BIRTH), ctx())
    assert info.value.code == "UNKNOWN_OPERATION"
    bad = request(RecordType.BIRTH, by_person={"id_number": "12345"})
    with pytest.raises(InvalidRequest) as info:
        await adapter.call("lookup", bad, ctx())
    assert info.value.code == "INVALID_ID_NUMBER"
    assert "12345" not in str(info.value)


async def test_error_rate_one_fails_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_SIM_TOKEN", TOKEN)
    async with serving(build_app(token=TOKEN, error_rate=1.0)) as url:
        failing = await make_adapter(url)
        try:
            for _ in range(3):
                with pytest.raises(UpstreamUnavailable):
                    await fault(failing, "1")
        finally:
            await failing.aclose()


async def test_timeout_rate_one_hangs_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_SIM_TOKEN", TOKEN)
    async with serving(build_app(token=TOKEN, timeout_rate=1.0)) as url:
        hanging = await make_adapter(url)
        try:
            with pytest.raises(UpstreamTimeout):
                await fault(hanging, "1", seconds=0.5)
        finally:
            await hanging.aclose()


async def test_latency_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_SIM_TOKEN", TOKEN)
    async with serving(build_app(token=TOKEN, latency_ms=150)) as url:
        slow = await make_adapter(url)
        try:
            started = time.monotonic()
            await fault(slow, "1")
            assert time.monotonic() - started >= 0.15
        finally:
            await slow.aclose()


async def _canned(request: web.Request) -> web.Response:
    who = f"{request.query.get('hoTen')} ({request.query.get('soDinhDanh')})"
    replies: dict[str, tuple[int, Any]] = {
        "/echo400": (400, {"status": "0", "errorDescription": f"Sai tham số: {who}"}),
        "/echo0": (200, {"status": "0", "errorDescription": f"Không tìm thấy {who}"}),
        "/nostatus": (200, {"data": []}),
        "/notlist": (200, {"status": "1", "data": {"so": "1"}}),
        "/badrecord": (200, {"status": "1", "data": [{"so": "1", "ngayDangKy": "31/02/2020"}]}),
        "/nulldata": (200, {"status": "1", "errorDescription": None, "data": None}),
    }
    status, body = replies[request.path]
    return web.json_response(body, status=status)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/echo400", UpstreamRejected),
        ("/echo0", UpstreamRejected),
        ("/nostatus", UpstreamBadResponse),
        ("/notlist", UpstreamBadResponse),
        ("/badrecord", UpstreamBadResponse),
        ("/nulldata", None),
    ],
)
async def test_odd_upstream_replies_never_leak_the_query(
    path: str, error: type[UpstreamError] | None
) -> None:
    canned = web.Application()
    canned.router.add_get(path, _canned)
    async with serving(canned) as url:
        upstream = UpstreamConfig.model_validate({"url": url, "allow_plain_http": True})
        service = ServiceConfig.model_validate(
            {
                "adapter": "civil_status",
                "upstream": "odd",
                "operations": {"lookup": {}},
                "options": {"paths": {"BIRTH": path}},
            }
        )
        odd = await KIND.create("civil-status", service, upstream)
        person = {"id_number": "001190000001", "full_name": "Trần Thị Bích"}
        call = odd.call("lookup", request(RecordType.BIRTH, by_person=person), ctx())
        try:
            if error is None:
                assert (await call)["status"] == "NOT_FOUND"
                return
            with pytest.raises(error) as info:
                await call
        finally:
            await odd.aclose()
    message = str(info.value)
    assert type(info.value) is error
    for secret in ("001190000001", "Trần", "Bích", "31/02/2020"):
        assert secret not in message


def test_registry_finds_the_kind() -> None:
    assert registry.get("civil_status") is KIND


# --- the simulator on the wire -----------------------------------------------------------


async def get(url: str, path: str, token: str | None = TOKEN, **params: str) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, params=params, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_reply_shape_and_utf8(sim_url: str) -> None:
    reg = sample_registration(SEED, RecordType.BIRTH, 0)
    status, body = await get(
        sim_url, "api/hotich/khaisinh", noiDangKy=reg["authority_code"], so=reg["number"]
    )
    assert status == 200
    assert body["status"] == "1"
    assert body["errorDescription"] == ""
    assert body["data"] == [sample_record(SEED, RecordType.BIRTH, 0)]
    status, body = await get(sim_url, "api/hotich/khaitu", noiDangKy="00001", so="999")
    assert (status, body["data"]) == (200, [])


@pytest.mark.parametrize("token", [None, "wrong", ""])
async def test_missing_or_bad_token_is_401_json(sim_url: str, token: str | None) -> None:
    status, body = await get(sim_url, "api/hotich/kethon", token=token, noiDangKy="00001", so="1")
    assert status == 401
    assert body["status"] == "0"
    assert body["errorDescription"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"noiDangKy": "00001"},
        {"noiDangKy": "00001", "so": "1", "soDinhDanh": "001190000001"},
        {"noiDangKy": "00001", "so": "1", "trang": "2"},
        {"noiDangKy": "00001", "so": "1", "ngayDangKy": "31/02/2020"},
        {"noiDangKy": "00001", "so": " "},
        {"soDinhDanh": "00119000000x"},
    ],
)
async def test_malformed_queries_are_400_json(sim_url: str, params: dict[str, str]) -> None:
    status, body = await get(sim_url, "api/hotich/khaisinh", **params)
    assert status == 400
    assert body["status"] == "0"
    assert body["errorDescription"]
    for value in params.values():
        if len(value) > 2:
            assert value not in body["errorDescription"]


async def test_stats_count_api_calls(sim_url: str) -> None:
    for _ in range(3):
        await get(sim_url, "api/hotich/khaisinh", noiDangKy="00001", so="1")
    await get(sim_url, "api/hotich/khaisinh", token=None, noiDangKy="00001", so="1")
    status, stats = await get(sim_url, "_sim/stats", token=None)
    assert status == 200
    assert stats == {
        "requests": 4,
        "by_path": {"/api/hotich/khaisinh": 4},
        "by_status": {"200": 3, "401": 1},
    }


async def test_app_stats_key_and_error_rate_is_deterministic() -> None:
    async def statuses(seed: int) -> list[int]:
        app = build_app(token=TOKEN, seed=seed, error_rate=0.4)
        async with serving(app) as url:
            out = [
                (await get(url, "api/hotich/khaitu", noiDangKy="00001", so="1"))[0]
                for _ in range(20)
            ]
        assert app[STATS].requests == 20
        return out

    first = await statuses(5)
    assert first == await statuses(5)
    assert {200, 503} == set(first)


async def test_shutdown_releases_hanging_requests() -> None:
    async def hang(url: str) -> int:
        status, _ = await get(url, "api/hotich/khaisinh", noiDangKy="00001", so="HANG")
        return status

    started = time.monotonic()
    async with serving(build_app(token=TOKEN)) as url:
        pending = asyncio.ensure_future(hang(url))
        await asyncio.sleep(0.2)
    assert await pending == 504
    assert time.monotonic() - started < 3


async def test_serve_runs_until_cancelled() -> None:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(serve("127.0.0.1", 0, token=TOKEN, seed=1))
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
    assert task.cancelled()


def test_build_app_refuses_bad_knobs() -> None:
    with pytest.raises(ValueError, match="token"):
        build_app(token="")
    with pytest.raises(ValueError, match="fractions"):
        build_app(token=TOKEN, error_rate=0.7, timeout_rate=0.7)
    with pytest.raises(ValueError, match="negative"):
        build_app(token=TOKEN, latency_ms=-1)


# --- the generated data ------------------------------------------------------------------


def test_data_is_deterministic_per_seed() -> None:
    assert sample_record(SEED, RecordType.BIRTH, 3) == sample_record(SEED, RecordType.BIRTH, 3)
    assert sample_record(SEED, RecordType.BIRTH, 3) != sample_record(SEED + 1, RecordType.BIRTH, 3)
    # A record does not depend on how many the dataset holds.
    small = build_dataset(SEED, per_authority=5)
    assert small.find_registration(RecordType.DEATH, "00001", "5") == sample_record(
        SEED, RecordType.DEATH, 40
    )


def _check_id(id_number: str, born: str, sex: int | None) -> None:
    if len(id_number) == 9:
        assert id_number.isdigit()
        return
    assert len(id_number) == 12
    assert id_number.isascii()
    assert id_number.isdigit()
    assert id_number[:3] in PROVINCE_CODES
    year = PartialDate.parse_iso(born).year
    century, female = divmod(int(id_number[3]), 2)
    assert 1900 + 100 * century == year // 100 * 100
    assert id_number[4:6] == f"{year % 100:02d}"
    if sex is not None:
        assert female == sex - 1


def test_generated_people_are_valid_by_structure() -> None:
    data = build_dataset(SEED)
    assert len(data.by_registration) == 3 * len(AUTHORITIES) * 200
    for (record_type, authority, _), rec in data.by_registration.items():
        assert rec["noiDangKy"] == authority
        for prefix in ("nks", "me", "cha", "chong", "vo", "nkt"):
            id_number = rec.get(prefix + "SoDinhDanh") or rec.get(prefix + "SoGiayToTuyThan")
            if not id_number:
                continue
            born = from_moj(rec[prefix + "NgaySinh"])
            assert born is not None
            _check_id(id_number, born, rec.get(prefix + "GioiTinh"))
            name = rec[prefix + "HoTen"]
            assert name == unicodedata.normalize("NFC", name)
            assert len(name.split()) == 3
        for key, value in rec.items():
            if key.startswith("ngay") or key.endswith(("NgaySinh", "NgayChet", "Ngay")):
                parsed = from_moj(value)
                assert parsed is not None
                assert PartialDate.parse_iso(parsed).latest() <= HORIZON
        if record_type is RecordType.BIRTH:
            assert rec["nksSoDinhDanh"][:3] == dict(AUTHORITIES)[authority]
    for (_, _), recs in data.by_id.items():
        assert len(recs) == 1
