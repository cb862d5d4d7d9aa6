"""The fast C06 reply reader gives exactly zeep's dict, or steps aside for zeep.

Every reply is read twice: by :func:`adapters.population_db.fastread.read_reply` and by
zeep's own path (``SoapCodec.read_body(..., fast=False)``); the results must be identical
down to key order and value types (``repr`` equality). Replies come from the simulator's
data generator, then are varied: not found, year-only birth dates, optional parts removed,
blank text, indentation, several records, odd timestamps; shapes the fast reader must refuse
are checked to fall back to zeep (including zeep's schema errors).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from lxml import etree

from adapters.common.soap import SoapCodec
from adapters.common.xmlsafe import parse_xml
from adapters.population_db.codec import C06Codec
from adapters.population_db.data import sample_citizen
from adapters.population_db.fastbuild import build_request
from adapters.population_db.fastread import read_reply
from adapters.population_db.mapping import to_c06
from adapters.population_db.models import OperationOptions, PopulationLookup, ServiceOptions
from adapters.population_db.simulator import lookup_envelope
from bus.errors import InternalError, UpstreamBadResponse, UpstreamUnavailable

LOOKUP = "TraCuuThongTinCongDan"
VERIFY = "XacThucThongTinCongDan"
DL = "http://www.mic.gov.vn/dancu/1.0"
ENV = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    "<s:Body>{}</s:Body></s:Envelope>"
)


@pytest.fixture(scope="module")
def codec() -> C06Codec:
    return C06Codec.load()


def _zeep(codec: C06Codec, operation: str, payload: bytes) -> Any:
    try:
        return codec.read_body(operation, parse_xml(payload), fast=False)
    except UpstreamBadResponse as exc:
        return ("error", str(exc))


def _both(codec: C06Codec, operation: str, payload: bytes) -> tuple[Any, Any]:
    """(fast reader's result or None, zeep's result)."""
    return read_reply(operation, parse_xml(payload)), _zeep(codec, operation, payload)


def _vary(payload: bytes, rng: random.Random) -> bytes:
    """Drop a random subset of optional elements, blank some leaves, maybe re-indent."""
    root = parse_xml(payload)
    for el in list(root.iter(f"{{{DL}}}*")):
        if el.getparent() is None or etree.QName(el).localname in (
            "CongdanCollection",
            "CongDan",
        ):
            continue
        roll = rng.random()
        parent = el.getparent()
        if roll < 0.12 and parent is not None and el in parent:
            parent.remove(el)
        elif roll < 0.17 and not len(el):
            el.text = rng.choice(["", " ", "  x  "])
        elif roll < 0.20 and len(el) and etree.QName(el).localname != "NgayThangNamSinh":
            for child in list(el):
                el.remove(child)  # an empty complex element
    if rng.random() < 0.3:
        etree.indent(root, space="  ")
    if rng.random() < 0.3:
        collection = root[0][0]
        collection.append(copy.deepcopy(collection[0]))  # two records
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def test_generated_lookups_match_zeep(codec: C06Codec) -> None:
    rng = random.Random(20261121)
    fast_hits = 0
    for seed in (0, 1, 7):
        for index in range(0, 400, 3):
            citizen = sample_citizen(seed, index)
            payload = lookup_envelope(citizen, f"r-{seed}-{index}")
            fast, slow = _both(codec, LOOKUP, payload)
            assert fast is not None, "a simulator reply must take the fast path"
            assert repr(fast) == repr(slow)
            varied = _vary(payload, rng)
            fast, slow = _both(codec, LOOKUP, varied)
            if fast is not None:
                fast_hits += 1
                assert repr(fast) == repr(slow), varied.decode()
            # Through the codec the answer is zeep's either way.
            assert repr(codec.parse(LOOKUP, 200, varied)) == repr(slow)
    assert fast_hits > 300  # the variations stay mostly in the fast reader's shape


def test_partial_dates_and_not_found_match_zeep(codec: C06Codec) -> None:
    year_only = [c for c in (sample_citizen(3, i) for i in range(600)) if len(c["birth_date"]) == 4]
    assert year_only, "the generator makes year-only birth dates for old records"
    for citizen in year_only[:20]:
        fast, slow = _both(codec, LOOKUP, lookup_envelope(citizen, "r"))
        assert fast is not None
        assert repr(fast) == repr(slow)
        assert fast["CongDan"][0]["NgayThangNamSinh"] == {
            "Nam": citizen["birth_date"],
            "NgayThangNam": None,
        }
    fast, slow = _both(codec, LOOKUP, lookup_envelope(None, "r"))
    assert fast is not None
    assert repr(fast) == repr(slow)
    assert fast["CongDan"] == [None]


@pytest.mark.parametrize(
    "inner",
    [
        "<dl:CongdanCollection {ns}/>",
        '<dl:CongdanCollection {ns} ThoiDiemDuLieu="2025-01-01T10:00:00"/>',
        '<dl:CongdanCollection {ns} ThoiDiemDuLieu="2025-01-01T10:00:00Z" SoCongDan="0"/>',
        '<dl:CongdanCollection {ns} ThoiDiemDuLieu=" 2025-01-01T10:00:00.5+07:00 "/>',
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:SoDinhDanh/></dl:CongDan>"
        "</dl:CongdanCollection>",
        "<dl:CongdanCollection {ns}><dl:CongDan> </dl:CongDan><dl:CongDan/></dl:CongdanCollection>",
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:HoVaTen> </dl:HoVaTen>"
        "<dl:NgayThangNamSinh><dl:Nam>1990</dl:Nam></dl:NgayThangNamSinh>"
        "<!-- a comment --><dl:GioiTinh>Nữ</dl:GioiTinh></dl:CongDan></dl:CongdanCollection>",
    ],
)
def test_edge_shapes_match_zeep(codec: C06Codec, inner: str) -> None:
    payload = ENV.format(inner.format(ns=f'xmlns:dl="{DL}"')).encode()
    fast, slow = _both(codec, LOOKUP, payload)
    assert fast is not None
    assert repr(fast) == repr(slow)


@pytest.mark.parametrize(
    "inner",
    [
        # unknown element, repeated element, out of order, both choices, attribute,
        # mixed content, unknown attribute, unparseable timestamp, wrong root element
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:Foo>1</dl:Foo></dl:CongDan>"
        "</dl:CongdanCollection>",
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:SoCMND>1</dl:SoCMND><dl:SoCMND>2</dl:SoCMND>"
        "</dl:CongDan></dl:CongdanCollection>",
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:GioiTinh>1</dl:GioiTinh>"
        "<dl:SoDinhDanh>1</dl:SoDinhDanh></dl:CongDan></dl:CongdanCollection>",
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:NgayThangNamSinh><dl:Nam>1990</dl:Nam>"
        "<dl:NgayThangNam>19900101</dl:NgayThangNam></dl:NgayThangNamSinh></dl:CongDan>"
        "</dl:CongdanCollection>",
        '<dl:CongdanCollection {ns}><dl:CongDan><dl:SoDinhDanh xmlns:xsi="http://www.w3.org/'
        '2001/XMLSchema-instance" xsi:nil="true"/></dl:CongDan></dl:CongdanCollection>',
        "<dl:CongdanCollection {ns}><dl:CongDan><dl:SoDinhDanh>1<dl:x/></dl:SoDinhDanh>"
        "</dl:CongDan></dl:CongdanCollection>",
        '<dl:CongdanCollection {ns} extra="1"/>',
        '<dl:CongdanCollection {ns} ThoiDiemDuLieu="yesterday"/>',
        "<dl:KetQuaXacThucResponse {ns}><dl:TonTai>true</dl:TonTai></dl:KetQuaXacThucResponse>",
        "<dl:CongdanCollection {ns}>text<dl:CongDan/></dl:CongdanCollection>",
    ],
)
def test_unexpected_shapes_fall_back_to_zeep(codec: C06Codec, inner: str) -> None:
    payload = ENV.format(inner.format(ns=f'xmlns:dl="{DL}"')).encode()
    assert read_reply(LOOKUP, parse_xml(payload)) is None
    try:
        via_codec: Any = codec.parse(LOOKUP, 200, payload)
    except UpstreamBadResponse as exc:
        via_codec = ("error", str(exc))
    assert repr(via_codec) == repr(_zeep(codec, LOOKUP, payload))


@pytest.mark.parametrize("text", ["true", "false", "1", "0", " true ", "\nfalse\t"])
def test_verify_matches_zeep(codec: C06Codec, text: str) -> None:
    inner = (
        f'<dl:KetQuaXacThucResponse xmlns:dl="{DL}">'
        f"<dl:TonTai>{text}</dl:TonTai></dl:KetQuaXacThucResponse>"
    )
    fast, slow = _both(codec, VERIFY, ENV.format(inner).encode())
    assert fast is not None
    assert repr(fast) == repr(slow)


@pytest.mark.parametrize(
    "inner",
    ["<dl:TonTai>yes</dl:TonTai>", "<dl:TonTai/>", "", "<dl:TonTai>true</dl:TonTai><dl:X/>"],
)
def test_odd_verify_falls_back_to_zeep(codec: C06Codec, inner: str) -> None:
    payload = ENV.format(
        f'<dl:KetQuaXacThucResponse xmlns:dl="{DL}">{inner}</dl:KetQuaXacThucResponse>'
    ).encode()
    assert read_reply(VERIFY, parse_xml(payload)) is None
    try:
        via_codec: Any = codec.parse(VERIFY, 200, payload)
    except UpstreamBadResponse as exc:
        via_codec = ("error", str(exc))
    assert repr(via_codec) == repr(_zeep(codec, VERIFY, payload))


def test_faults_never_reach_the_fast_reader(codec: C06Codec) -> None:
    payload = ENV.format(
        "<s:Fault><faultcode>s:Server</faultcode><faultstring>x</faultstring><detail>"
        f'<dl:ChiTietLoi xmlns:dl="{DL}"><dl:MaLoi>TamThoiKhongKhaDung</dl:MaLoi></dl:ChiTietLoi>'
        "</detail></s:Fault>"
    ).encode()
    assert read_reply(LOOKUP, parse_xml(payload)) is None
    with pytest.raises(UpstreamUnavailable) as caught:
        codec.parse(LOOKUP, 500, payload)
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"


# -- requests --------------------------------------------------------------------------------


def _zeep_build(codec: C06Codec, operation: str, body: dict[str, Any]) -> Any:
    try:
        return SoapCodec.build(codec, operation, body)
    except InternalError as exc:
        return ("error", str(exc))


def _request_bodies() -> list[dict[str, Any]]:
    """C06 request bodies for generated citizens, through the adapter's own mapping."""
    options = ServiceOptions(ma_dvc="VPCP")
    bodies = []
    for seed in (0, 5):
        for index in range(0, 300, 7):
            citizen = sample_citizen(seed, index)
            cmnd = citizen["old_id"] is not None and index % 2 == 0
            request = PopulationLookup.model_validate(
                {
                    "request_id": f"01J{seed:02d}{index:020d}",
                    "caller": {
                        "officer_id": "001085000123",
                        "unit_code": "000.00.01.H01" if index % 3 else None,
                        "officer_account": "canbo@tinh" if index % 5 else None,
                    },
                    "purpose": {"procedure_code": "1.001234", "dossier_id": "HS-1"},
                    "subject": {
                        "id_type": "CMND9" if cmnd else "CCCD12",
                        "id_number": citizen["old_id"] if cmnd else citizen["personal_id"],
                        "full_name": citizen["full_name"],
                        "birth_date": citizen["birth_date"][: 4 if index % 4 == 0 else 10],
                    },
                    "fields": ["personal_id", "name"],
                }
            )
            form = "upper_ascii" if index % 2 else "upper"
            opts = ServiceOptions(ma_dvc="VPCP", name_form=form) if index % 2 else options
            bodies.append(to_c06(request, opts, OperationOptions()))
    return bodies


@pytest.mark.parametrize("operation", [LOOKUP, VERIFY])
def test_generated_requests_are_zeeps_bytes(codec: C06Codec, operation: str) -> None:
    bodies = _request_bodies()
    assert len(bodies) > 50
    for body in bodies:
        fast = build_request(operation, body)
        assert fast is not None
        assert fast == _zeep_build(codec, operation, body)
        # key order in the dict does not matter: zeep writes schema order, and so do we
        shuffled = dict(reversed(list(body.items())))
        assert build_request(operation, shuffled) == fast


@pytest.mark.parametrize(
    "change",
    [
        {"Unknown": "x"},
        {"SoDinhDanh": "001099000001", "SoCMND": "123456789"},  # both ID choices
        {"MaDVC": None},
        {"MaDVC": ""},
        {"HoVaTen": 5},
        {"HoVaTen": "A\x01B"},
        {"NgayThangNamSinh": {"Nam": "1990", "NgayThangNam": "19900101"}},
        {"NgayThangNamSinh": {"Thang": "01"}},
        {"NgayThangNamSinh": "1990"},
    ],
)
def test_odd_requests_are_left_to_zeep(codec: C06Codec, change: dict[str, Any]) -> None:
    body = {**_request_bodies()[0], **change}
    assert build_request(LOOKUP, body) is None
    try:
        via_codec: Any = codec.build(LOOKUP, body)
    except InternalError as exc:
        via_codec = ("error", str(exc))
    assert via_codec == _zeep_build(codec, LOOKUP, body)
