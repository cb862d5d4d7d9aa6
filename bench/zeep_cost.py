"""CPU cost of one C06 lookup's SOAP work (zeep build + parse) against the same data as JSON.

Run: ``.venv/bin/python bench/zeep_cost.py [--seconds 1.0]``. Single-threaded, so every
figure is per core. Each row times one step of a ``population.lookup`` on the worker:

* zeep build: canonical → C06 dict → envelope bytes (what the adapter sends);
* safe parse: the hardened lxml parse of the reply alone;
* zeep read: the whole reply path (safe parse + zeep ``process_reply`` + ``serialize_object``);
* hand lxml read: the same reply → the same dict by a hand-written lxml walk (the fast path
  the DESIGN measurement suggested; not used by the adapter);
* mapping: C06 dict → canonical response (pure Python, same for both paths);
* orjson: the same request and reply as JSON (dumps + loads): the floor for any encoding.
"""

# zeep ships py.typed but leaves most functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from lxml import etree
from zeep.helpers import serialize_object

from adapters.common.soap import SoapCodec
from adapters.common.xmlsafe import parse_xml
from adapters.population_db.codec import C06Codec
from adapters.population_db.data import sample_citizen
from adapters.population_db.mapping import lookup_reply, to_c06
from adapters.population_db.models import OperationOptions, PopulationLookup, ServiceOptions
from adapters.population_db.simulator import lookup_envelope

OP = "TraCuuThongTinCongDan"
DL = "{http://www.mic.gov.vn/dancu/1.0}"
BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"


def _hand_read(payload: bytes) -> dict[str, Any]:
    """Reply → the dict zeep produces, walking the tree by hand (no schema checks)."""

    def node(el: etree._Element | None) -> Any:
        if el is None:
            return None
        if len(el) == 0:
            return el.text
        return {etree.QName(child).localname: node(child) for child in el}

    root = parse_xml(payload)
    collection = root.find(f"{BODY}/{DL}CongdanCollection")
    assert collection is not None
    out: dict[str, Any] = dict(collection.attrib)
    out["CongDan"] = [node(c) if len(c) else None for c in collection.findall(f"{DL}CongDan")]
    return out


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a warm-up)."""
    for _ in range(200):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        n += 100
    return n / (time.perf_counter() - start)


def main() -> None:
    """Print µs per call and calls/s per core for each step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row")
    args = parser.parse_args()

    citizen = sample_citizen(0, 3)
    request = PopulationLookup.model_validate(
        {
            "request_id": "01J0000000000000000000000",
            "caller": {
                "system_id": "motcua",
                "unit_code": "000.00.01.H01",
                "officer_id": "001085000123",
            },
            "purpose": {"procedure_code": "1.001234", "dossier_id": "HS-1"},
            "subject": {
                "id_type": "CCCD12",
                "id_number": citizen["personal_id"],
                "full_name": citizen["full_name"],
                "birth_date": citizen["birth_date"],
            },
            "fields": ["personal_id", "name", "birth_date", "sex", "father", "mother"],
        }
    )
    options, op_options = ServiceOptions(ma_dvc="VPCP"), OperationOptions()
    codec = C06Codec.load()
    payload = lookup_envelope(citizen, request.request_id)
    reply = codec.parse(OP, 200, payload)
    assert _hand_read(payload)["CongDan"][0]["SoDinhDanh"] == citizen["personal_id"]
    body = to_c06(request, options, op_options)
    # The two zeep stages inside "zeep read", timed apart to show where the time goes.
    operation = codec._binding.get(OP)
    root = parse_xml(payload)
    processed = operation.process_reply(root)
    reply_json = orjson.dumps(reply, default=str)

    # C06Codec takes its lxml fast paths for plain messages; SoapCodec's methods are zeep's.
    zeep_build = partial(SoapCodec.build, codec, OP)
    zeep_body = partial(codec.read_body, OP, fast=False)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("zeep build (request)", lambda: zeep_build(to_c06(request, options, op_options))),
        ("C06 codec build (fast)", lambda: codec.build(OP, to_c06(request, options, op_options))),
        ("safe lxml parse only", lambda: parse_xml(payload)),
        ("zeep read (reply, parsed)", lambda: zeep_body(root)),
        ("C06 codec read (fast)", lambda: codec.parse(OP, 200, payload)),
        ("  of which process_reply", lambda: operation.process_reply(root)),
        ("  of which serialize_object", lambda: serialize_object(processed, dict)),
        ("hand lxml read (reply)", lambda: _hand_read(payload)),
        ("mapping → canonical", lambda: lookup_reply(request, reply)),
        ("orjson request dumps+loads", lambda: orjson.loads(orjson.dumps(body))),
        ("orjson reply dumps+loads", lambda: orjson.loads(orjson.dumps(reply, default=str))),
        (
            "zeep build + read",
            lambda: (
                zeep_build(to_c06(request, options, op_options)),
                zeep_body(parse_xml(payload)),
            ),
        ),
        (
            "C06 codec build + read",
            lambda: (
                codec.build(OP, to_c06(request, options, op_options)),
                codec.parse(OP, 200, payload),
            ),
        ),
        (
            "orjson request + reply",
            lambda: (orjson.dumps(body), orjson.loads(reply_json)),
        ),
    ]
    print(f"reply {len(payload)} bytes of SOAP, {len(reply_json)} bytes as JSON")
    print(f"{'step':<28} {'µs/call':>9} {'calls/s/core':>13}")
    for name, fn in rows:
        rate = _rate(fn, args.seconds)
        print(f"{name:<28} {1e6 / rate:>9.1f} {rate:>13,.0f}")


if __name__ == "__main__":
    main()
