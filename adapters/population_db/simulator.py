"""A sandbox C06: real SOAP 1.1 over aiohttp with generated citizens and fault knobs.

Endpoints (any path serves SOAP, so the upstream URL may be ``http://host:port/``)::

    POST <path>              SOAP 1.1: TraCuuThongTinCongDan, XacThucThongTinCongDan
    GET  <path>?wsdl         the WSDL, soap:address pointing at <path> on this server
    GET  <path>?xsd=NAME     its schemas (dancuquocgia.xsd, dancu.xsd)
    GET  /_sim/stats         call counters (JSON)

Auth is C06's: ``Timestamp`` (epoch ms, within ±5 min) and ``Authorization: Basic
base64(username:sha256_hex(url + username + timestamp + secret))`` where *url* is the URL
as this server sees it. Bad or missing credentials get HTTP 401 with a SOAP fault
(``MaLoi`` ``XacThucThatBai``) — the C06 gateway refuses before the service runs.

Data: citizens ``0 … population_size-1`` of :func:`.data.sample_citizen`; lookups find a
record by ID alone (name and birth date are the bus's to compare); verify answers
``TonTai`` true only if ID, upper-cased name and birth date all match. ``error_rate``
answers that fraction with a transient fault (``soap:Server`` + ``TamThoiKhongKhaDung``);
:data:`.data.FAULT_IDS` force a fault per ID. Incoming XML goes through the hardened parser:
a DOCTYPE/entity gets a ``soap:Client`` fault and nothing is read.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree
from lxml.builder import ElementMaker

from adapters.common.auth import c06_signature
from adapters.common.xmlsafe import XmlRejected, parse_xml
from adapters.population_db.data import FAULT_IDS, population
from bus.validation import normalise_name_for_compare

__all__ = ["SimState", "build_app", "lookup_envelope", "serve"]

WSDL_DIR = Path(__file__).parent / "wsdl"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
REQ_NS = "http://dancuquocgia.bca"
RESP_NS = "http://www.mic.gov.vn/dancu/1.0"
_XSDS = ("dancuquocgia.xsd", "dancu.xsd")
_VN_TZ = timezone(timedelta(hours=7))
_SOAP = ElementMaker(namespace=SOAP_ENV, nsmap={"soap": SOAP_ENV})
_DL = ElementMaker(namespace=RESP_NS, nsmap={"dl": RESP_NS})
_PLAIN = ElementMaker()
_HOSTILE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<dl:CongdanCollection xmlns:dl="http://www.mic.gov.vn/dancu/1.0"><dl:CongDan>'
    b"<dl:SoDinhDanh>&x;</dl:SoDinhDanh></dl:CongDan></dl:CongdanCollection>"
    b"</soap:Body></soap:Envelope>"
)


@dataclass
class SimState:
    """The simulator's configuration, data and counters."""

    username: str
    secret: str
    citizens: dict[str, dict[str, Any]]
    by_old_id: dict[str, str]
    latency_s: float = 0.0
    error_rate: float = 0.0
    slow_s: float = 30.0
    max_skew_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    documents: dict[str, str] = field(default_factory=dict)
    """The WSDL and XSDs, read once at start (handlers do no file I/O)."""
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, key: str) -> None:
        """Add one to a counter."""
        self.stats[key] = self.stats.get(key, 0) + 1


STATE = web.AppKey("population_sim_state", SimState)


class _Fault(Exception):
    def __init__(self, code: str, ma_loi: str, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.ma_loi, self.message, self.status = code, ma_loi, message, status


def _xml(root: etree._Element, status: int = 200) -> web.Response:
    body = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")


def _fault_response(fault: _Fault) -> web.Response:
    envelope = _SOAP.Envelope(
        _SOAP.Body(
            _SOAP.Fault(
                _PLAIN.faultcode(f"soap:{fault.code}"),
                _PLAIN.faultstring(fault.message),
                _PLAIN.detail(_DL.ChiTietLoi(_DL.MaLoi(fault.ma_loi))),
            )
        )
    )
    return _xml(envelope, fault.status)


def _check_auth(request: web.Request, state: SimState) -> None:
    timestamp = request.headers.get("Timestamp", "")
    header = request.headers.get("Authorization", "")
    denied = _Fault("Client", "XacThucThatBai", "Xác thực không thành công", status=401)
    if not timestamp.isdigit() or not header.startswith("Basic "):
        raise denied
    if abs(time.time() - int(timestamp) / 1000) > state.max_skew_s:
        raise denied  # a replayed or badly clocked request
    try:
        user, _, signature = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise denied from None
    expected = c06_signature(str(request.url), state.username, timestamp, state.secret)
    if not (hmac.compare_digest(user, state.username) and hmac.compare_digest(signature, expected)):
        raise denied


def _field(parent: etree._Element, name: str) -> str | None:
    el = parent.find(f"{{{REQ_NS}}}{name}")
    if el is None or el.text is None:
        return None
    return el.text.strip() or None


def _birth_out(iso: str) -> etree._Element:
    if len(iso) == 10:
        return _DL.NgayThangNamSinh(_DL.NgayThangNam(iso.replace("-", "")))
    return _DL.NgayThangNamSinh(_DL.Nam(iso[:4]))


def _name_out(tag: str, name: dict[str, str]) -> etree._Element:
    return _DL(tag, _DL.Ho(name["family"]), _DL.ChuDem(name["middle"]), _DL.Ten(name["given"]))


def _address_out(tag: str, addr: dict[str, str]) -> etree._Element:
    return _DL(
        tag,
        _DL.MaTinhThanh(addr["province_code"]),
        _DL.MaPhuongXa(addr["ward_code"]),
        _DL.ChiTiet(addr["detail"]),
    )


def _relative_out(tag: str, person: dict[str, Any]) -> etree._Element:
    return _DL(
        tag,
        _DL.SoDinhDanh(person["personal_id"]),
        _DL.QuocTich(person["nationality"]),
        _name_out("HoVaTen", person["name"]),
    )


def _cong_dan(c: dict[str, Any]) -> etree._Element:
    children = [_DL.SoDinhDanh(c["personal_id"])]
    if c["old_id"]:
        children.append(_DL.SoCMND(c["old_id"]))
    children += [
        _name_out("HoVaTen", c["name"]),
        _birth_out(c["birth_date"]),
        _DL.GioiTinh("1" if c["sex"] == "M" else "2"),
        _DL.DanToc(c["ethnicity_code"]),
        _relative_out("Cha", c["father"]),
        _relative_out("Me", c["mother"]),
        _address_out("NoiOHienTai", c["current_address"]),
        _address_out("ThuongTru", c["permanent_address"]),
        _address_out("QueQuan", c["hometown"]),
    ]
    return _DL.CongDan(*children)


def _now_vn() -> str:
    return datetime.now(_VN_TZ).replace(microsecond=0).isoformat()


def _lookup(citizen: dict[str, Any] | None, request_id: str) -> etree._Element:
    found = citizen is not None
    collection = _DL.CongdanCollection(
        _cong_dan(citizen) if citizen is not None else _DL.CongDan(),
        SoCongDan="1" if found else "0",
        ThoiDiemDuLieu=_now_vn(),
        id=request_id,
    )
    if not found:
        collection.set("GhiChu", "Không tìm thấy công dân")
    return collection


def lookup_envelope(citizen: dict[str, Any] | None, request_id: str) -> bytes:
    """The simulator's TraCuu reply for ``citizen`` (None: not found), as sent on the wire."""
    envelope = _SOAP.Envelope(_SOAP.Body(_lookup(citizen, request_id)))
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def _matches(citizen: dict[str, Any], body: etree._Element) -> bool:
    asked = _field(body, "HoVaTen") or ""
    ascii_form = asked.isascii()  # some clients send the name without diacritics
    same_name = normalise_name_for_compare(
        asked, accent_insensitive=ascii_form
    ) == normalise_name_for_compare(citizen["full_name"], accent_insensitive=ascii_form)
    birth = body.find(f"{{{REQ_NS}}}NgayThangNamSinh")
    if birth is None:
        return same_name
    full, year = _field(birth, "NgayThangNam"), _field(birth, "Nam")
    iso = citizen["birth_date"]
    same_birth = (full == iso.replace("-", "")) if full else (year == iso[:4])
    return same_name and same_birth


async def _forced(kind: str, state: SimState) -> web.Response:
    state.count("forced_" + kind)
    if kind == "transient":
        raise _Fault("Server", "TamThoiKhongKhaDung", "Hệ thống tạm thời không khả dụng")
    if kind == "client":
        raise _Fault("Client", "DuLieuKhongHopLe", "Dữ liệu yêu cầu không hợp lệ")
    if kind == "server":
        raise _Fault("Server", "LoiHeThong", "Lỗi hệ thống")
    if kind == "slow":
        await asyncio.sleep(state.slow_s)
        raise _Fault("Server", "TamThoiKhongKhaDung", "Quá thời gian xử lý")
    if kind == "malformed":
        return web.Response(body=b"<soap:Envelope><unclosed>", content_type="text/xml")
    if kind == "hostile":
        return web.Response(body=_HOSTILE, content_type="text/xml")
    return web.Response(status=503, text="<html>503 Service Unavailable</html>")


async def _payload(request: web.Request, state: SimState) -> tuple[str, etree._Element]:
    """The SOAP 1.1 request's operation and payload element, or the fault it deserves."""
    content_type = request.content_type
    if content_type not in ("text/xml", "application/xml", "application/soap+xml"):
        raise _Fault("Client", "DuLieuKhongHopLe", "Content-Type phải là XML")
    try:
        root = parse_xml(await request.read(), max_bytes=256 * 1024)
    except XmlRejected:
        state.count("rejected_xml")
        raise _Fault("Client", "XmlKhongHopLe", "XML không hợp lệ hoặc không an toàn") from None
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if root.tag != f"{{{SOAP_ENV}}}Envelope" or body is None or len(body) == 0:
        raise _Fault("Client", "DuLieuKhongHopLe", "Không phải SOAP 1.1 Envelope")
    payload = body[0]
    operation = etree.QName(payload).localname.removesuffix("Request")
    if etree.QName(payload).namespace != REQ_NS or operation not in (
        "TraCuuThongTinCongDan",
        "XacThucThongTinCongDan",
    ):
        raise _Fault("Client", "DichVuKhongTonTai", "Không có dịch vụ này")
    return operation, payload


def _ids(payload: etree._Element) -> tuple[str, str | None, str | None]:
    """MaYeuCau and the subject's ID (12 digits) or old ID (9), checked as C06 checks them."""
    request_id = _field(payload, "MaYeuCau")
    id_number, old_id = _field(payload, "SoDinhDanh"), _field(payload, "SoCMND")
    if not (request_id and _field(payload, "MaDVC") and _field(payload, "MaTichHop")):
        raise _Fault("Client", "DuLieuKhongHopLe", "Thiếu MaYeuCau, MaDVC hoặc MaTichHop")
    if id_number is not None:
        if not (len(id_number) == 12 and id_number.isascii() and id_number.isdigit()):
            raise _Fault("Client", "DuLieuKhongHopLe", "SoDinhDanh phải gồm 12 chữ số")
    elif old_id is None or not (len(old_id) == 9 and old_id.isascii() and old_id.isdigit()):
        raise _Fault("Client", "DuLieuKhongHopLe", "Cần SoDinhDanh (12) hoặc SoCMND (9 số)")
    return request_id, id_number, old_id


async def _answer(request: web.Request, state: SimState) -> web.Response:
    operation, payload = await _payload(request, state)
    state.count(operation)
    if state.error_rate and state.rng.random() < state.error_rate:
        raise _Fault("Server", "TamThoiKhongKhaDung", "Hệ thống tạm thời không khả dụng")
    request_id, id_number, old_id = _ids(payload)
    if id_number in FAULT_IDS:
        return await _forced(FAULT_IDS[id_number], state)
    key = id_number or state.by_old_id.get(old_id or "", "")
    citizen = state.citizens.get(key)
    if operation == "TraCuuThongTinCongDan":
        state.count("found" if citizen else "not_found")
        return _xml(_SOAP.Envelope(_SOAP.Body(_lookup(citizen, request_id))))
    if _field(payload, "HoVaTen") is None:
        raise _Fault("Client", "DuLieuKhongHopLe", "Thiếu HoVaTen")
    exists = citizen is not None and _matches(citizen, payload)
    result = _DL.KetQuaXacThucResponse(_DL.TonTai("true" if exists else "false"))
    return _xml(_SOAP.Envelope(_SOAP.Body(result)))


async def _post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.count("calls")
    try:
        _check_auth(request, state)
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        return await _answer(request, state)
    except _Fault as fault:
        state.count("auth_failures" if fault.status == 401 else "faults")
        return _fault_response(fault)


async def _get(request: web.Request) -> web.Response:
    documents = request.app[STATE].documents
    if "wsdl" in request.query:
        here = str(request.url.with_query(None))
        text = documents["dancu.wsdl"].replace("http://localhost:8088/dancu", here)
        for name in _XSDS:
            text = text.replace(f'schemaLocation="{name}"', f'schemaLocation="{here}?xsd={name}"')
        return web.Response(text=text, content_type="text/xml")
    name = request.query.get("xsd", "")
    if name in _XSDS:
        return web.Response(text=documents[name], content_type="text/xml")
    return web.Response(text="C06 simulator (lgsp-bus): SOAP 1.1 here; WSDL at ?wsdl\n")


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats)


def build_app(
    *,
    username: str,
    secret: str,
    seed: int = 0,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    population_size: int = 1000,
    slow_s: float = 30.0,
) -> web.Application:
    """The simulator app (data generated now: ~50 ms per 1000 citizens)."""
    citizens, by_old = population(seed, population_size)
    state = SimState(
        username=username,
        secret=secret,
        citizens=citizens,
        by_old_id=by_old,
        latency_s=latency_ms / 1000,
        error_rate=error_rate,
        slow_s=slow_s,
        rng=random.Random(seed),
        documents={
            name: (WSDL_DIR / name).read_text(encoding="utf-8") for name in ("dancu.wsdl", *_XSDS)
        },
    )
    app = web.Application(client_max_size=256 * 1024)
    app[STATE] = state
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_get("/{tail:.*}", _get)
    app.router.add_post("/{tail:.*}", _post)
    return app


async def serve(host: str = "127.0.0.1", port: int = 8481, **knobs: Any) -> None:
    """Serve :func:`build_app` on ``host:port`` until cancelled."""
    runner = web.AppRunner(build_app(**knobs))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
