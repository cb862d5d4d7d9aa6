"""Canonical ⇄ C06 mapping and the kind's config checks: pure, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from adapters.population_db import KIND, PopulationLookup, PopulationVerify
from adapters.population_db.codec import C06Codec, fault_error
from adapters.population_db.mapping import (
    birth_for_c06,
    date_from_c06,
    lookup_reply,
    name_for_c06,
    sex_from_c06,
    to_c06,
    verify_reply,
)
from adapters.population_db.models import OperationOptions, ServiceOptions
from bus.config import ServiceConfig
from bus.errors import (
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.support.population import request, service_config

SUBJECT = {
    "id_type": "CCCD12",
    "id_number": "001090012345",
    "full_name": "Nguyễn Văn Đức",
    "birth_date": "1990-03-04",
    "sex": "M",
}


def lookup(**changes: Any) -> PopulationLookup:
    fields = changes.pop("fields", None)
    extra = {"fields": fields} if fields is not None else {}
    return PopulationLookup.model_validate(request({**SUBJECT, **changes}, **extra))


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "SoDinhDanh": "001090012345",
        "SoCMND": "123456789",
        "HoVaTen": {"Ho": "Nguyễn", "ChuDem": "Văn", "Ten": "Đức"},
        "NgayThangNamSinh": {"NgayThangNam": "19900304", "Nam": None},
        "GioiTinh": "1",
        "DanToc": "01",
        "Cha": {
            "SoDinhDanh": "001060000001",
            "QuocTich": "VN",
            "HoVaTen": {"Ho": "Nguyễn", "ChuDem": "Văn", "Ten": "Hùng"},
        },
        "Me": None,
        "NoiOHienTai": None,
        "ThuongTru": {"MaTinhThanh": "01", "MaPhuongXa": "00070", "ChiTiet": "Số 1 Hàng Bạc"},
        "QueQuan": {"MaTinhThanh": None, "MaPhuongXa": None, "ChiTiet": None},
    }
    base.update(changes)
    return base


def collection(*records: Any) -> dict[str, Any]:
    return {
        "CongDan": list(records),
        "SoCongDan": str(len(records)),
        "ThoiDiemDuLieu": datetime(2025, 7, 1, 9, 30),
    }


OPTIONS = ServiceOptions(ma_dvc="VPCP")


def test_request_mapping_cccd() -> None:
    body = to_c06(lookup(), OPTIONS, OperationOptions())
    assert body == {
        "MaYeuCau": "req-00000001",
        "MaDVC": "VPCP",
        "MaTichHop": "037",
        "MaCanBo": "001085000123",
        "MaDonVi": "000.00.01.H01",
        "SoDinhDanh": "001090012345",
        "HoVaTen": "NGUYỄN VĂN ĐỨC",
        "NgayThangNamSinh": {"NgayThangNam": "19900304"},
    }


def test_request_mapping_cmnd_partial_date_and_overrides() -> None:
    model = lookup(id_type="CMND9", id_number="123456789", birth_date="1990-03", sex=None)
    options = ServiceOptions(ma_dvc="VPCP", name_form="upper_ascii", ma_don_vi="X")
    body = to_c06(model, options, OperationOptions(ma_tich_hop="033"))
    assert body["SoCMND"] == "123456789"
    assert "SoDinhDanh" not in body
    assert body["HoVaTen"] == "NGUYEN VAN DUC"
    assert body["NgayThangNamSinh"] == {"Nam": "1990"}  # C06 has no year-month form
    assert body["MaTichHop"] == "033"
    assert body["MaDonVi"] == "000.00.01.H01"  # the caller's unit wins over the default


def test_name_and_date_helpers() -> None:
    assert name_for_c06("Đặng thị Ấn") == "ĐẶNG THỊ ẤN"
    assert name_for_c06("Đặng thị Ấn", "upper_ascii") == "DANG THI AN"
    assert birth_for_c06("1990") == {"Nam": "1990"}
    assert date_from_c06({"NgayThangNam": "19900304"}) == "1990-03-04"
    assert date_from_c06({"Nam": "1990"}) == "1990"
    assert date_from_c06({"NgayThangNam": "19900000"}) == "1990"
    assert date_from_c06({"NgayThangNam": "19900300"}) == "1990-03"
    assert date_from_c06(None) is None
    with pytest.raises(UpstreamBadResponse, match="unknown format"):
        date_from_c06({"NgayThangNam": "04/03/1990"})
    assert [sex_from_c06(x) for x in ("1", "2", "Nam", "Nữ", "0", None)] == [
        "M",
        "F",
        "M",
        "F",
        None,
        None,
    ]


def test_lookup_found_returns_only_asked_fields() -> None:
    out = lookup_reply(
        lookup(fields=["name", "father", "permanent_address", "hometown"]), collection(record())
    )
    assert out["status"] == "FOUND"
    assert out["data_as_of"] == "2025-07-01T09:30:00+07:00"
    assert out["source"] == "C06"
    citizen = out["citizen"]
    assert set(citizen) == {"name", "father", "permanent_address", "hometown"}
    assert citizen["name"] == {
        "family": "Nguyễn",
        "middle": "Văn",
        "given": "Đức",
        "full": "Nguyễn Văn Đức",
    }
    assert citizen["father"] == {
        "personal_id": "001060000001",
        "full_name": "Nguyễn Văn Hùng",
        "nationality": "VN",
    }
    assert citizen["permanent_address"] == {
        "admin_scheme": "GSO_2025",
        "province_code": "01",
        "ward_code": "00070",
        "detail": "Số 1 Hàng Bạc",
    }
    assert citizen["hometown"] is None  # an all-empty address is no address


def test_lookup_default_fields() -> None:
    out = lookup_reply(lookup(), collection(record()))
    assert set(out["citizen"]) == {"personal_id", "name", "birth_date"}


@pytest.mark.parametrize(
    "reply", [collection(None), collection(), {"CongDan": [record(**dict.fromkeys(record()))]}]
)
def test_empty_congdan_is_not_found(reply: dict[str, Any]) -> None:
    out = lookup_reply(lookup(), reply)
    assert out["status"] == "NOT_FOUND"
    assert "citizen" not in out


@pytest.mark.parametrize(
    ("changes", "wrong"),
    [
        ({"HoVaTen": {"Ho": "Nguyễn", "ChuDem": "Văn", "Ten": "Đực"}}, ["full_name"]),
        ({"NgayThangNamSinh": {"NgayThangNam": "19900305"}}, ["birth_date"]),
        ({"GioiTinh": "2"}, ["sex"]),
        ({"SoDinhDanh": "001090099999"}, ["id_number"]),
    ],
)
def test_mismatch_names_fields_but_discloses_nothing(
    changes: dict[str, Any], wrong: list[str]
) -> None:
    out = lookup_reply(lookup(fields=["name", "birth_date"]), collection(record(**changes)))
    assert out["status"] == "MISMATCH"
    assert "mismatch" not in out  # 21.12: which field differed is not said by default
    assert "citizen" not in out
    named = lookup_reply(
        lookup(fields=["name", "birth_date"]),
        collection(record(**changes)),
        reveal_mismatch=True,
    )
    assert named["mismatch"] == wrong
    assert "citizen" not in named


def test_compare_is_normalised_and_optionally_accent_insensitive() -> None:
    upper = record(HoVaTen={"Ho": "NGUYỄN", "ChuDem": "VĂN", "Ten": "ĐỨC"})
    assert lookup_reply(lookup(), collection(upper))["status"] == "FOUND"
    plain = record(HoVaTen={"Ho": "NGUYEN", "ChuDem": "VAN", "Ten": "DUC"})
    assert lookup_reply(lookup(), collection(plain))["status"] == "MISMATCH"
    assert lookup_reply(lookup(), collection(plain), accent_insensitive=True)["status"] == "FOUND"


def test_year_only_record_matches_a_full_date() -> None:
    year_only = record(NgayThangNamSinh={"NgayThangNam": None, "Nam": "1990"})
    assert lookup_reply(lookup(), collection(year_only))["status"] == "FOUND"


def test_the_record_with_the_asked_id_is_chosen() -> None:
    other = record(SoDinhDanh="001090099999", HoVaTen={"Ho": "Lê", "ChuDem": None, "Ten": "Tám"})
    out = lookup_reply(lookup(), collection(other, record()))
    assert out["status"] == "FOUND"


def test_verify_reply() -> None:
    model = PopulationVerify.model_validate(request(SUBJECT))
    assert verify_reply(model, {"TonTai": True})["verified"] is True
    assert verify_reply(model, {"TonTai": False})["status"] == "NOT_FOUND"
    with pytest.raises(UpstreamBadResponse):
        verify_reply(model, {})


def test_kind_models_and_config_checks() -> None:
    svc = service_config()
    assert KIND.check("population", svc) == []
    assert KIND.request_model(svc, "lookup") is PopulationLookup
    assert KIND.request_model(svc, "verify") is PopulationVerify
    bad = ServiceConfig.model_validate(
        {
            "adapter": "population_db",
            "upstream": "c06",
            "options": {"ma_tich_hop": "037", "surprise": 1},
            "operations": {
                "xac-minh": {},
                "check": {"options": {"c06_operation": "XacThucThongTinCongDan"}},
                "odd": {"options": {"c06_operation": "XoaCongDan"}},
            },
        }
    )
    problems = KIND.check("population", bad)
    assert any("options.ma_dvc" in p for p in problems)
    assert any("options.surprise" in p for p in problems)
    assert any("'xac-minh'" in p and "c06_operation" in p for p in problems)
    assert any("operations.odd.options.c06_operation" in p for p in problems)
    assert not any("check" in p for p in problems)


# --- SOAP faults and odd replies (codec, pure) ---------------------------------------------

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


@pytest.mark.parametrize(
    ("faultcode", "ma_loi", "namespace", "error", "retryable"),
    [
        ("soap:Server", "TamThoiKhongKhaDung", None, UpstreamUnavailable, True),
        ("soap:Server.Busy", "HeThongQuaTai", None, UpstreamUnavailable, True),
        ("soap:Client", "DuLieuKhongHopLe", None, UpstreamRejected, False),
        ("Client", None, None, UpstreamRejected, False),
        ("soap:Client", "XacThucThatBai", None, UpstreamAuthFailed, False),
        ("wsse:FailedAuthentication", None, WSSE_NS, UpstreamAuthFailed, False),
        ("soap:Server", "LoiHeThong", None, UpstreamError, False),
        (None, None, None, UpstreamError, False),
    ],
)
def test_fault_mapping(
    faultcode: str | None, ma_loi: str | None, namespace: str | None, error: type, retryable: bool
) -> None:
    exc = fault_error(faultcode, ma_loi, namespace)
    assert type(exc) is error
    assert exc.retryable is retryable


def test_fault_detail_drops_codes_that_could_carry_data() -> None:
    exc = fault_error("soap:Client", "Không tìm thấy 001090012345 Nguyễn", None)
    assert exc.detail == {"fault_code": "Client"}
    assert "001090012345" not in exc.message


@pytest.fixture(scope="module")
def codec() -> C06Codec:
    return C06Codec.load()


def test_codec_rejects_non_envelopes(codec: C06Codec) -> None:
    with pytest.raises(UpstreamBadResponse, match=r"not a SOAP 1\.1 envelope"):
        codec.parse("TraCuuThongTinCongDan", 200, b"<CongdanCollection/>")
    with pytest.raises(UpstreamUnavailable):
        codec.parse("TraCuuThongTinCongDan", 503, b"<html><body>busy</body></html>")
    with pytest.raises(UpstreamAuthFailed):
        codec.parse("TraCuuThongTinCongDan", 401, b"")


def test_codec_rejects_replies_outside_the_schema(codec: C06Codec) -> None:
    reply = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<d:KetQuaXacThucResponse xmlns:d="http://www.mic.gov.vn/dancu/1.0">'
        b"<d:Bogus>1</d:Bogus></d:KetQuaXacThucResponse></s:Body></s:Envelope>"
    )
    with pytest.raises(UpstreamBadResponse, match="does not match its schema"):
        codec.parse("XacThucThongTinCongDan", 200, reply)


def test_codec_builds_schema_valid_requests(codec: C06Codec) -> None:
    body = to_c06(lookup(), OPTIONS, OperationOptions())
    xml = codec.build("TraCuuThongTinCongDan", body)
    assert xml.startswith(b"<?xml")
    assert "<ns0:HoVaTen>NGUYỄN VĂN ĐỨC</ns0:HoVaTen>".encode() in xml
    assert codec.operations() == ["TraCuuThongTinCongDan", "XacThucThongTinCongDan"]


def test_public_api_names_exist() -> None:
    import adapters.common.xmlsafe as xmlsafe
    import adapters.population_db as package
    import bus.validation as validation

    for module in (package, validation, xmlsafe):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
