"""The C06 simulator as a SOAP server: WSDL, auth, hostile input, generated data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from lxml import etree

from adapters.common.auth import C06Auth
from adapters.common.xmlsafe import parse_xml
from adapters.population_db.data import PROVINCES_2025, WARDS_2025, population, sample_citizen
from bus.validation import (
    PROVINCE_CODES_2025,
    check_full_name,
    check_id_against_birth,
    check_partial_date,
    check_personal_id,
)
from tests.support.population import SEED, SIM_SECRET, SIM_USER, serve, sim_app

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
DL = "http://www.mic.gov.vn/dancu/1.0"


def envelope(inner: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:d="http://dancuquocgia.bca"><s:Body>{inner}'
        "</s:Body></s:Envelope>"
    ).encode()


def tra_cuu(id_number: str) -> bytes:
    return envelope(
        "<d:TraCuuThongTinCongDanRequest><d:MaYeuCau>r-1</d:MaYeuCau><d:MaDVC>T</d:MaDVC>"
        f"<d:MaTichHop>037</d:MaTichHop><d:SoDinhDanh>{id_number}</d:SoDinhDanh>"
        "</d:TraCuuThongTinCongDanRequest>"
    )


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with serve(sim_app()) as url, aiohttp.ClientSession() as session:
        yield url, session


async def post(
    sim: tuple[str, aiohttp.ClientSession],
    body: bytes,
    *,
    secret: str = SIM_SECRET,
    content_type: str = "application/xml",
) -> tuple[int, etree._Element | bytes]:
    url, session = sim
    headers = await C06Auth(SIM_USER, secret).headers("POST", url)
    headers["Content-Type"] = content_type
    async with session.post(url, data=body, headers=headers) as resp:
        raw = await resp.read()
    try:
        return resp.status, parse_xml(raw)
    except ValueError:
        return resp.status, raw


def fault_code(root: etree._Element | bytes) -> tuple[str | None, str | None]:
    assert isinstance(root, etree._Element)
    fault = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None
    return fault.findtext("faultcode"), fault.findtext(f"detail/{{{DL}}}ChiTietLoi/{{{DL}}}MaLoi")


async def test_wsdl_points_at_the_simulator(sim: tuple[str, aiohttp.ClientSession]) -> None:
    url, session = sim
    async with session.get(url + "dancu?wsdl") as resp:
        wsdl = parse_xml(await resp.read())
    ns = {"soap": "http://schemas.xmlsoap.org/wsdl/soap/", "xs": "http://www.w3.org/2001/XMLSchema"}
    assert wsdl.xpath("//soap:address/@location", namespaces=ns) == [url + "dancu"]
    locations = wsdl.xpath("//xs:import/@schemaLocation", namespaces=ns)
    assert sorted(locations) == [f"{url}dancu?xsd=dancu.xsd", f"{url}dancu?xsd=dancuquocgia.xsd"]
    for location in locations:
        async with session.get(location) as resp:
            assert parse_xml(await resp.read()).tag == "{http://www.w3.org/2001/XMLSchema}schema"


async def test_zeep_can_consume_the_served_wsdl(sim: tuple[str, aiohttp.ClientSession]) -> None:
    from zeep import Client, Settings
    from zeep.transports import Transport

    def load() -> list[str]:
        transport = Transport(timeout=5)  # type: ignore[no-untyped-call]
        try:
            # Imports are fetched from the simulator itself, so forbid_external stays off here.
            client = Client(
                sim[0] + "?wsdl", transport=transport, settings=Settings(forbid_dtd=True)
            )  # type: ignore[no-untyped-call]
            binding = client.service._binding
            return sorted(binding._operations)
        finally:
            transport.session.close()

    assert await asyncio.to_thread(load) == ["TraCuuThongTinCongDan", "XacThucThongTinCongDan"]


async def test_lookup_answers_from_generated_data(sim: tuple[str, aiohttp.ClientSession]) -> None:
    citizen = sample_citizen(SEED, 0)
    status, root = await post(sim, tra_cuu(citizen["personal_id"]))
    assert status == 200
    assert isinstance(root, etree._Element)
    collection = root.find(f"{{{SOAP}}}Body/{{{DL}}}CongdanCollection")
    assert collection is not None
    assert collection.get("SoCongDan") == "1"
    assert collection.findtext(f"{{{DL}}}CongDan/{{{DL}}}SoDinhDanh") == citizen["personal_id"]
    assert (
        collection.findtext(f"{{{DL}}}CongDan/{{{DL}}}HoVaTen/{{{DL}}}Ten")
        == citizen["name"]["given"]
    )


async def test_not_found_is_an_empty_congdan(sim: tuple[str, aiohttp.ClientSession]) -> None:
    status, root = await post(sim, tra_cuu(sample_citizen(SEED, 10_000)["personal_id"]))
    assert status == 200
    assert isinstance(root, etree._Element)
    collection = root.find(f"{{{SOAP}}}Body/{{{DL}}}CongdanCollection")
    assert collection is not None
    assert collection.get("SoCongDan") == "0"
    assert [len(c) for c in collection] == [0]


@pytest.mark.parametrize("secret", ["wrong-secret", ""])
async def test_bad_credentials_get_401_and_a_fault(
    sim: tuple[str, aiohttp.ClientSession], secret: str
) -> None:
    status, root = await post(sim, tra_cuu("001090012345"), secret=secret)
    assert status == 401
    assert fault_code(root) == ("soap:Client", "XacThucThatBai")


async def test_stale_timestamp_is_refused(sim: tuple[str, aiohttp.ClientSession]) -> None:
    url, session = sim
    headers = await C06Auth(SIM_USER, SIM_SECRET, clock=lambda: 1_000_000.0).headers("POST", url)
    async with session.post(url, data=tra_cuu("001090012345"), headers=headers) as resp:
        assert resp.status == 401


XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    + envelope(
        "<d:TraCuuThongTinCongDanRequest><d:MaYeuCau>&x;</d:MaYeuCau>"
        "</d:TraCuuThongTinCongDanRequest>"
    )[0:]
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<l>&c;</l>"
)
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE s SYSTEM "http://127.0.0.1:9/x.dtd"><s/>'


@pytest.mark.parametrize("payload", [XXE, LAUGHS, EXTERNAL_DTD])
async def test_hostile_requests_get_a_fault_and_nothing_is_read(
    sim: tuple[str, aiohttp.ClientSession], payload: bytes
) -> None:
    status, root = await post(sim, payload)
    assert status == 500
    assert fault_code(root) == ("soap:Client", "XmlKhongHopLe")
    assert isinstance(root, etree._Element)
    assert b"root:" not in etree.tostring(root)
    async with sim[1].get(sim[0] + "_sim/stats") as resp:
        assert (await resp.json())["rejected_xml"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "ma_loi"),
    [
        (b"<not-soap/>", "text/xml", "DuLieuKhongHopLe"),
        (envelope("<d:XoaCongDan/>"), "text/xml", "DichVuKhongTonTai"),
        (envelope("<d:TraCuuThongTinCongDanRequest/>"), "text/xml", "DuLieuKhongHopLe"),
        (tra_cuu("00109001234"), "text/xml", "DuLieuKhongHopLe"),
        (tra_cuu("001090012345"), "application/json", "DuLieuKhongHopLe"),
    ],
)
async def test_bad_requests_get_client_faults(
    sim: tuple[str, aiohttp.ClientSession], body: bytes, content_type: str, ma_loi: str
) -> None:
    status, root = await post(sim, body, content_type=content_type)
    assert status == 500
    assert fault_code(root) == ("soap:Client", ma_loi)


def test_generated_citizens_are_valid_unique_and_deterministic() -> None:
    citizens, by_old = population(SEED, 1000)
    assert len(citizens) == 1000  # IDs are unique
    assert len(set(by_old)) == len(by_old)
    for citizen in citizens.values():
        check_personal_id(citizen["personal_id"])
        check_partial_date(citizen["birth_date"])
        check_id_against_birth(citizen["personal_id"], citizen["birth_date"], citizen["sex"])
        assert check_full_name(citizen["full_name"]) == citizen["full_name"]  # NFC already
        for key in ("permanent_address", "current_address", "hometown"):
            address = citizen[key]
            assert address["province_code"] in PROVINCE_CODES_2025
            assert address["ward_code"] in WARDS_2025[address["province_code"]]
    assert sample_citizen(SEED, 5) == sample_citizen(SEED, 5)
    assert sample_citizen(SEED, 5) != sample_citizen(SEED + 1, 5)
    assert set(PROVINCES_2025) <= PROVINCE_CODES_2025
