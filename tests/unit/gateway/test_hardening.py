"""Input hardening at the edge, against a running gateway on both brokers.

Every case of DOMAIN.md §6 that a request can carry is sent and must come back with its
stable code, with neither simulator having been called. Then the HTTP edge itself: body
size, header size and count, content types, strict JSON, request ids.

Not reachable through the API today (documented, no request field carries them):
§6.11 admin codes with their ``admin_scheme`` (no request names a scheme), §6.12
``change_type``/``schema_version`` (events have no ingress yet), §6.15 page limits (no bulk
operation). §6.16 (routing config) is tested at the end without a running bus.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from bus.store import Store, open_store
from tests.support.population import subject_of
from tests.support.security import (
    CITIZEN,
    SecureBus,
    caller,
    civil_body,
    population_body,
    purpose,
    secure_bus,
)

CIVIL = "/v1/civil-status/lookup"
LOOKUP = "/v1/population/lookup"


@pytest.fixture
async def bus(broker_url: str | None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SecureBus]:
    async with secure_bus(broker_url, monkeypatch) as running:
        yield running


def pop(**subject_changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: population_body(subject_of(CITIZEN, **subject_changes))


def pop_body(**changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: population_body(**changes)


def civ(**changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: civil_body(**changes)


def by_person(**person: Any) -> Callable[[], dict[str, Any]]:
    return lambda: civil_body(by_registration=None, by_person=person)


def _other_sex() -> str:
    return "F" if CITIZEN["sex"] == "M" else "M"


def _other_year() -> str:
    return str(int(CITIZEN["birth_date"][:4]) - 1)


CASES: list[tuple[str, str, Callable[[], Any], str]] = [
    # §6.1 ID numbers: exactly 12 (CCCD) or 9 (CMND) ASCII digits, nothing stripped
    ("6.1 eleven digits", LOOKUP, pop(id_number="00108501234"), "INVALID_ID_NUMBER"),
    ("6.1 full-width", LOOKUP, pop(id_number="００１０８５０１２３４５"), "INVALID_ID_NUMBER"),
    ("6.1 spaces", LOOKUP, pop(id_number="001 085 012 345"), "INVALID_ID_NUMBER"),
    ("6.1 dashes", LOOKUP, pop(id_number="001-085-012345"), "INVALID_ID_NUMBER"),
    ("6.1 CMND9 of 12", LOOKUP, pop(id_type="CMND9"), "INVALID_ID_NUMBER"),
    ("6.1 civil dashes", CIVIL, by_person(id_number="001-085-012345"), "INVALID_ID_NUMBER"),
    ("6.1 civil arabic-indic", CIVIL, by_person(id_number="٠٠١٠٨٥٠١٢٣٤٥"), "INVALID_ID_NUMBER"),
    ("6.1 civil newline", CIVIL, by_person(id_number="001085012345\n"), "INVALID_ID_NUMBER"),
    ("6.1 newline", LOOKUP, pop(id_number=CITIZEN["personal_id"] + "\n"), "INVALID_ID_NUMBER"),
    # §6.2 CCCD digits against birth date and sex
    ("6.2 century/year", LOOKUP, pop(birth_date=_other_year()), "ID_BIRTH_MISMATCH"),
    ("6.2 sex", LOOKUP, pop(sex=_other_sex()), "ID_SEX_MISMATCH"),
    # §6.3 CCCD prefix
    ("6.3 no province 003", LOOKUP, pop(id_number="003085012345"), "INVALID_ID_PREFIX"),
    ("6.3 no country 999", LOOKUP, pop(id_number="999085012345"), "INVALID_ID_PREFIX"),
    # §6.4 dates
    ("6.4 31 February", LOOKUP, pop(birth_date="1990-02-31"), "INVALID_DATE"),
    ("6.4 dd/MM/yyyy", LOOKUP, pop(birth_date="31/01/1990"), "INVALID_DATE"),
    ("6.4 two-digit year", LOOKUP, pop(birth_date="90-01-31"), "INVALID_DATE"),
    ("6.4 MM/yyyy", LOOKUP, pop(birth_date="01/1990"), "INVALID_DATE"),
    ("6.4 future", LOOKUP, pop(birth_date="2999-01-01"), "DATE_IN_FUTURE"),
    ("6.4 before 1900", LOOKUP, pop(birth_date="1899-12-31"), "DATE_TOO_OLD"),
    (
        "6.4 civil 31 February",
        CIVIL,
        by_person(id_number="001085012345", birth_date="1990-02-31"),
        "INVALID_DATE",
    ),
    # §6.5 names
    ("6.5 empty", LOOKUP, pop(full_name=""), "INVALID_NAME"),
    ("6.5 over 100", LOOKUP, pop(full_name="Nguyễn " + "A" * 100), "INVALID_NAME"),
    ("6.5 digits", LOOKUP, pop(full_name="Nguyễn Văn 3"), "INVALID_NAME"),
    ("6.5 zero-width", LOOKUP, pop(full_name="Nguyễn\u200bVăn An"), "INVALID_NAME"),
    ("6.5 control", LOOKUP, pop(full_name="Nguyễn\x07Văn An"), "INVALID_NAME"),
    ("6.5 emoji", LOOKUP, pop(full_name="Nguyễn Văn An 😀"), "INVALID_NAME"),
    ("6.5 markup", LOOKUP, pop(full_name="<b>Nguyễn</b> Văn An"), "INVALID_NAME"),
    ("6.5 mixed scripts", LOOKUP, pop(full_name="Nguyễn Vаn An"), "INVALID_NAME"),  # Cyrillic а
    (
        "6.5 civil markup",
        CIVIL,
        by_person(id_number="001085012345", full_name="<script>x</script>"),
        "INVALID_NAME",
    ),
    # §6.6 mis-encoded names
    ("6.6 mojibake", LOOKUP, pop(full_name="Nguyá»…n Văn An"), "NAME_ENCODING"),
    ("6.6 TCVN3", LOOKUP, pop(full_name="NguyÔn V¨n An"), "NAME_ENCODING"),
    # §6.7 caller
    ("6.7 no officer", LOOKUP, pop_body(caller={"unit_code": "H01"}), "OFFICER_REQUIRED"),
    ("6.7 no officer civil", CIVIL, civ(caller={"unit_code": "H01"}), "OFFICER_REQUIRED"),
    ("6.7 bad officer", CIVIL, civ(caller=caller(officer_id="0010850")), "INVALID_OFFICER_ID"),
    (
        "6.7 officer newline",
        CIVIL,
        civ(caller=caller(officer_id="001085000123\n")),
        "INVALID_OFFICER_ID",
    ),
    ("6.7 bad unit", CIVIL, civ(caller=caller(unit_code="H01;drop")), "INVALID_CODE"),
    ("6.7 bad system", CIVIL, civ(caller=caller(system_id="")), "INVALID_CODE"),
    ("6.7 account control", CIVIL, civ(caller=caller(officer_account="a\x01")), "INVALID_TEXT"),
    # §6.8 purpose
    ("6.8 dossier control", LOOKUP, pop_body(purpose=purpose(dossier_id="HS\x00")), "INVALID_TEXT"),
    (
        "6.8 consent newline",
        CIVIL,
        civ(purpose=purpose(legal_basis="CONSENT", consent_ref="C-1\u2028")),
        "INVALID_TEXT",
    ),
    (
        "6.8 no procedure",
        CIVIL,
        civ(purpose={"dossier_id": "HS-1", "legal_basis": "LEGAL_DUTY"}),
        "PURPOSE_REQUIRED",
    ),
    (
        "6.8 no dossier",
        LOOKUP,
        pop_body(purpose={"procedure_code": "1.001234", "legal_basis": "LEGAL_DUTY"}),
        "PURPOSE_REQUIRED",
    ),
    (
        "6.8 consent without ref",
        CIVIL,
        civ(purpose=purpose(legal_basis="CONSENT")),
        "CONSENT_REF_REQUIRED",
    ),
    ("6.8 unknown basis", CIVIL, civ(purpose=purpose(legal_basis="CURIOSITY")), "INVALID_FIELD"),
    # §6.10 sensitive fields without the grant
    ("6.10 ethnicity", LOOKUP, pop_body(fields=["name", "ethnicity"]), "FORBIDDEN_FIELD"),
    # §6.12 civil-status query shape
    ("6.12 neither", CIVIL, civ(by_registration=None), "INVALID_QUERY"),
    (
        "6.12 both",
        CIVIL,
        civ(by_person={"id_number": "001085012345"}),
        "INVALID_QUERY",
    ),
    ("6.12 record type", CIVIL, civ(record_type="ADOPTION"), "INVALID_RECORD_TYPE"),
    # §6.13 unknown fields (oversized bodies and XML: see below)
    ("6.13 unknown top-level", CIVIL, civ(colour="red"), "UNKNOWN_FIELD"),
    ("6.13 unknown nested", LOOKUP, pop(nickname="Tí"), "UNKNOWN_FIELD"),
    ("6.13 unknown field name", LOOKUP, pop_body(fields=["salary"]), "INVALID_FIELD"),
    # §6.14 timestamps
    ("6.14 no offset", CIVIL, civ(requested_at="2026-05-01T09:30:00"), "INVALID_TIMESTAMP"),
    ("6.14 skew", CIVIL, civ(requested_at="2020-05-01T09:30:00+07:00"), "CLOCK_SKEW"),
    # request ids of a bounded format
    ("request id short", CIVIL, civ(request_id="abc"), "INVALID_REQUEST_ID"),
    ("request id long", CIVIL, civ(request_id="r" * 65), "INVALID_REQUEST_ID"),
    ("request id space", CIVIL, civ(request_id="req 00000001"), "INVALID_REQUEST_ID"),
    ("request id unicode", CIVIL, civ(request_id="req-0000000đ"), "INVALID_REQUEST_ID"),
    ("request id newline", CIVIL, civ(request_id="req-00000001\n"), "INVALID_REQUEST_ID"),
    ("request id number", CIVIL, civ(request_id=12345678), "INVALID_FIELD"),
]

STATUS = {"FORBIDDEN_FIELD": 403}


@pytest.mark.parametrize(("case", "path", "make", "code"), CASES, ids=[c[0] for c in CASES])
async def test_domain_bad_inputs_are_refused_before_any_upstream(
    bus: SecureBus, case: str, path: str, make: Callable[[], Any], code: str
) -> None:
    body = make()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    before = bus.upstream_calls()
    reply = await bus.call(path, body)
    assert (reply.status, reply.code) == (STATUS.get(code, 400), code), reply.body
    error = reply.body["error"]
    assert set(error) >= {"code", "message", "request_id", "retryable"}
    assert error["retryable"] is False
    assert bus.upstream_calls() == before


async def test_a_reused_request_id_with_another_body_is_409(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'idem.sqlite3'}")
    await store.connect()
    try:
        async with secure_bus(broker_url, monkeypatch, store=store) as bus:
            await _reuse(bus, store)
    finally:
        await store.aclose()


async def _reuse(bus: SecureBus, store: Store) -> None:
    first = civil_body()
    assert (await bus.call(CIVIL, first)).status == 200
    before = bus.upstream_calls()
    other = civil_body(request_id=first["request_id"], record_type="DEATH")
    reply = await bus.call(CIVIL, other)
    assert (reply.status, reply.code) == (409, "IDEMPOTENCY_CONFLICT")
    assert bus.upstream_calls() == before


# --- the HTTP edge -----------------------------------------------------------------------


async def test_an_oversized_body_is_413(bus: SecureBus) -> None:
    before = bus.upstream_calls()
    body = civil_body(purpose=purpose(dossier_id="x" * 70_000))
    reply = await bus.call(CIVIL, body)
    assert (reply.status, reply.code) == (413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        yield b'{"request_id": "req-00000001", "purpose": {"dossier_id": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}}'

    async with bus.stack.session.post(
        bus.url + CIVIL.lstrip("/"),
        data=chunks(),
        headers={
            "Authorization": f"Bearer {bus.keys['portal-new']}",
            "Content-Type": "application/json",
        },
    ) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert bus.upstream_calls() == before


async def _raw(bus: SecureBus, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (aiohttp's client would refuse to send some of these)."""
    import orjson

    port = int(bus.url.rsplit(":", 1)[1].strip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head
    return status, orjson.loads(body)


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        (b"X-Big: " + b"a" * 9000 + b"\r\n", 431, "HEADERS_TOO_LARGE"),
        (b"".join(b"X-H%d: v\r\n" % i for i in range(200)), 431, "HEADERS_TOO_LARGE"),
        (b"Bad Header: v\r\n", 400, "BAD_HTTP_REQUEST"),
    ],
)
async def test_header_limits_answer_in_the_error_shape(
    bus: SecureBus, extra: bytes, status: int, code: str
) -> None:
    before = bus.upstream_calls()
    request = (
        b"POST /v1/civil-status/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n" + extra + b"\r\n{}"
    )
    got, body = await _raw(bus, request)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["request_id"] is None
    assert bus.upstream_calls() == before


async def test_a_long_url_answers_in_the_error_shape(bus: SecureBus) -> None:
    got, body = await _raw(bus, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (got, body["error"]["code"]) == (431, "HEADERS_TOO_LARGE")


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/xml", XXE, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("text/xml", XXE, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("text/plain", b"{}", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("application/x-www-form-urlencoded", b"a=1", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("application/json", b'{"request_id": "req-00000001",', 400, "MALFORMED_JSON"),
        ("application/json", b"[]", 400, "MALFORMED_JSON"),
        ("application/json", b'"text"', 400, "MALFORMED_JSON"),
        ("application/json", b'{"request_id": NaN}', 400, "MALFORMED_JSON"),
        ("application/json", b'{"request_id": "\xff\xfe"}', 400, "MALFORMED_JSON"),
        ("application/json", b"[" * 5000 + b"]" * 5000, 400, "MALFORMED_JSON"),
        ("application/json", XXE, 400, "MALFORMED_JSON"),
        ("application/json", b"", 400, "MALFORMED_JSON"),
    ],
)
async def test_content_type_and_json_are_strict(
    bus: SecureBus, content_type: str, body: bytes, status: int, code: str
) -> None:
    before = bus.upstream_calls()
    reply = await bus.call(CIVIL, body, headers={"Content-Type": content_type})
    assert (reply.status, reply.code) == (status, code)
    assert bus.upstream_calls() == before


async def test_duplicate_security_headers_are_refused(bus: SecureBus) -> None:
    # 21.15: two Authorization (or deadline) headers were accepted.
    before = bus.upstream_calls()
    auth = ("Authorization", f"Bearer {bus.keys['portal-new']}")
    json_type = ("Content-Type", "application/json")
    for extra in (auth, ("X-Lgsp-Timeout-Ms", "5000"), ("X-Lgsp-Timeout-Ms", "5000")):
        headers = CIMultiDict([auth, json_type, extra])
        if extra[0] != "Authorization":
            headers.add(*extra)
        async with bus.stack.session.post(
            bus.url + CIVIL.lstrip("/"), data=orjson.dumps(civil_body()), headers=headers
        ) as r:
            body = await r.json()
        assert (r.status, body["error"]["code"]) == (400, "DUPLICATE_HEADER"), extra
    assert bus.upstream_calls() == before
    assert (await bus.call(CIVIL, civil_body())).status == 200


async def test_deep_json_and_corrupt_compressed_bodies_are_4xx(bus: SecureBus) -> None:
    # 21.13: nested 990-1023 deep (orjson parses it; recursive helpers did not survive it)
    # and a gzip/deflate body that does not inflate used to be 500s.
    before = bus.upstream_calls()
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    reply = await bus.call(CIVIL, deep)
    assert (reply.status, reply.code) == (400, "JSON_TOO_DEEP")
    listed = b"[" * 1000 + b"]" * 1000
    reply = await bus.call(CIVIL, b'{"request_id": ' + listed + b"}")
    assert (reply.status, reply.code) == (400, "JSON_TOO_DEEP")
    for encoding in ("gzip", "deflate"):
        reply = await bus.call(
            CIVIL,
            b"\x1f\x8b\x08\x00garbage-not-deflate",
            headers={"Content-Encoding": encoding, "Connection": "close"},
        )
        assert (reply.status, reply.code) == (400, "MALFORMED_BODY"), encoding
    good = gzip.compress(orjson.dumps(civil_body()))
    reply = await bus.call(CIVIL, good, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert bus.upstream_calls() == before + 1


async def test_unknown_fields_name_their_path(bus: SecureBus) -> None:
    body = civil_body(by_registration={"authority_code": "00001", "number": "1", "colour": "red"})
    reply = await bus.call(CIVIL, body)
    assert (reply.status, reply.code) == (400, "UNKNOWN_FIELD")
    assert reply.body["error"]["detail"]["errors"][0]["path"] == "by_registration.colour"
    assert reply.body["error"]["request_id"] == body["request_id"]


async def test_a_malformed_x_request_id_is_replaced(bus: SecureBus) -> None:
    for bad in ("has space", "x" * 65, "<script>", "ümlaut"):
        reply = await bus.call(CIVIL, civil_body(), headers={"X-Request-Id": bad})
        assert reply.status == 200
        assert reply.headers["X-Request-ID"] != bad
        assert len(reply.headers["X-Request-ID"]) == 32  # a fresh uuid4 hex
    good = f"trace-{uuid.uuid4().hex[:8]}"
    reply = await bus.call(CIVIL, civil_body(), headers={"X-Request-Id": good})
    assert reply.headers["X-Request-ID"] == good


async def test_an_invalid_timeout_header_is_refused(bus: SecureBus) -> None:
    before = bus.upstream_calls()
    for bad in ("0", "-5", "1e3", "600001", "soon", "²", "1²"):  # "²".isdigit() is True
        reply = await bus.call(CIVIL, civil_body(), headers={"X-Lgsp-Timeout-Ms": bad})
        assert (reply.status, reply.code) == (400, "INVALID_TIMEOUT"), bad
    assert bus.upstream_calls() == before


async def test_wrong_methods_and_paths_have_codes(bus: SecureBus) -> None:
    reply = await bus.call(CIVIL, method="GET")
    assert (reply.status, reply.code) == (405, "METHOD_NOT_ALLOWED")
    assert reply.headers["Allow"] == "POST"  # RFC 9110 §15.5.6
    reply = await bus.call("/v1/civil-status/lookup/extra", civil_body())
    assert (reply.status, reply.code) == (404, "NOT_FOUND")
    reply = await bus.call("/v1/land/lookup", civil_body())
    assert (reply.status, reply.code) == (404, "UNKNOWN_SERVICE")
