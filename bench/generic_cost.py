"""CPU cost of the generic kinds' own work per call (no I/O): declarative mapping and zeep.

Run: ``.venv/bin/python bench/generic_cost.py [--seconds 1.0]``. Single-threaded, so every
figure is per core. The services are the test fixtures' (tests/fixtures/generic_config.py):
a ``soap`` enterprise lookup (5 request rules, 10 answer rules with a 2-item list) and a
``rest`` participant lookup (1 query + 1 header rule, 6 answer rules). Rows:

* validate: the declared request model (what the worker does again after the gateway);
* map request / map answer: :func:`adapters.mapping.apply_rules` (+ canonical JSON);
* zeep build / safe parse + zeep read: :class:`adapters.common.soap.SoapCodec` through zeep;
* safe parse + fast read: the same reply through the compiled reader
  (:mod:`adapters.common.fastread`), which the codec uses when the reply's shape allows;
* whole: all of one call's work but the network, for each kind.
"""

# zeep ships py.typed but leaves most functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from lxml import etree
from lxml.builder import ElementMaker

from adapters.common.soap import SoapCodec
from adapters.common.xmlsafe import parse_upstream
from adapters.generic.mapping import apply_rules
from adapters.generic.shared import answer, context_values, operation_model
from adapters.rest.kind import RestOperationOptions
from adapters.soap.kind import SoapOperationOptions, SoapServiceOptions
from bus.config import ServiceConfig
from tests.fixtures.generic_config import business_registry_service, social_insurance_service

NS = "http://dkkd.lgsp-bus.test/enterprise/1.0"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


def _reply() -> bytes:
    e = ElementMaker(namespace=NS, nsmap={"e": NS})
    s = ElementMaker(namespace=SOAP, nsmap={"soap": SOAP})
    owners = [
        e.Owner(e.Name("Nguyễn Văn An"), e.SharePercent("60.5")),
        e.Owner(e.Name("Trần Thị Bình"), e.SharePercent("39.5")),
    ]
    enterprise = e.Enterprise(
        e.EnterpriseCode("0101234567"),
        e.NameVi("Công ty TNHH Thương mại Đồng Xuân"),
        e.Status("DANG_HOAT_DONG"),
        e.FoundedOn("2004-03-15"),
        e.CharterCapital("5000000000.00"),
        e.HeadOffice(e.ProvinceCode("01"), e.WardCode("00070")),
        e.LegalRepresentative(e.FullName("Nguyễn Văn An")),
        e.Owners(*owners),
    )
    body = e.GetEnterpriseInfoResponse(enterprise, e.DataAsOf("2026-01-05T08:30:00+07:00"))
    return bytes(etree.tostring(s.Envelope(s.Body(body)), xml_declaration=True, encoding="utf-8"))


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a warm-up)."""
    for _ in range(50):
        fn()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            fn()
        calls += 50
    return calls / elapsed


def rows() -> list[tuple[str, Callable[[], object]]]:
    """The measured steps."""
    svc = ServiceConfig.model_validate(business_registry_service("dkkd"))
    opts = SoapOperationOptions.model_validate(svc.operations["lookup"].options)
    sopts = SoapServiceOptions.model_validate(svc.options)
    codec = SoapCodec.from_wsdl(Path(sopts.wsdl), sopts.fault_policy("DKDN"), port=sopts.port)
    model = operation_model(svc, "lookup", opts)
    request = {"request_id": "req-12345678", "enterprise_code": "0101234567", "as_of": "2026-01-02"}
    reply = _reply()
    context = context_values("corr", datetime.now(UTC))
    canonical = model.model_validate(request).model_dump(mode="json", exclude_none=True)
    body = apply_rules(opts.request, canonical, context)
    parsed = codec.parse("GetEnterpriseInfo", 200, reply)

    def soap_whole() -> object:
        c = model.model_validate(request).model_dump(mode="json", exclude_none=True)
        codec.build("GetEnterpriseInfo", apply_rules(opts.request, c, context))
        r = codec.parse("GetEnterpriseInfo", 200, reply)
        return answer(True, "DKDN", apply_rules(opts.response, r, context))

    rsvc = ServiceConfig.model_validate(social_insurance_service("vss"))
    ropts = RestOperationOptions.model_validate(rsvc.operations["lookup"].options)
    rmodel = operation_model(rsvc, "lookup", ropts)
    rrequest: dict[str, Any] = {
        "request_id": "req-12345678",
        "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
        "purpose": {"procedure_code": "1.001", "dossier_id": "HS-1"},
        "subject": {"id_number": "001090012345"},
        "as_of": "2026-01-02",
    }
    record = {"maSoBhxh": "0123456789", "hoTen": "Nguyễn Văn An", "ngaySinh": "15/03/1990"}
    rbody = orjson.dumps(
        {"code": "00", "data": [{**record, "trangThai": "1"}], "thoiDiem": "2026-01-05T08:30:00"}
    )

    def rest_whole() -> object:
        c = rmodel.model_validate(rrequest).model_dump(mode="json", exclude_none=True)
        apply_rules(ropts.query, c, context, flat=True)
        apply_rules(ropts.headers, c, context, flat=True)
        return answer(True, "VSS", apply_rules(ropts.response, orjson.loads(rbody), context))

    return [
        ("soap: validate request", lambda: model.model_validate(request)),
        ("soap: map request (5 rules)", lambda: apply_rules(opts.request, canonical, context)),
        ("soap: zeep build", lambda: codec.build("GetEnterpriseInfo", body)),
        (
            "soap: safe parse + zeep read",
            lambda: codec.read_body("GetEnterpriseInfo", parse_upstream(reply), fast=False),
        ),
        ("soap: safe parse + fast read", lambda: codec.parse("GetEnterpriseInfo", 200, reply)),
        (
            "soap: map answer (10 rules)",
            lambda: answer(True, "D", apply_rules(opts.response, parsed, context)),
        ),
        ("soap: whole call but I/O", soap_whole),
        ("rest: whole call but I/O", rest_whole),
    ]


def main() -> None:
    """Print µs per call and calls per second per core for each step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row")
    args = parser.parse_args()
    print(f"{'step':34} {'µs/call':>9} {'calls/s/core':>13}")
    for name, fn in rows():
        rate = _rate(fn, args.seconds)
        print(f"{name:34} {1e6 / rate:9.1f} {rate:13,.0f}")


if __name__ == "__main__":
    main()
