"""Property-based fuzzing (hypothesis): bad input is always a coded 4xx, never a crash.

* the request models of every operation, fed structure-aware junk: validation either
  succeeds or raises ``ValidationError``; the gateway maps every failure to a documented
  code; what validates passes the personal-data checks without a crash;
* the pure edge parsers (X-Road headers, ``Authorization``, ``requested_at``) and the log
  masker with arbitrary text;
* the same junk as HTTP requests to a running gateway (both brokers): never a 5xx, always
  the one error shape with a documented code.

Bounded: :data:`EXAMPLES` examples per property, no per-example deadline (the machine is
shared); the whole module runs in well under a minute.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from adapters.base import parse_routing
from adapters.civil_status.models import CivilStatusLookup
from adapters.population_db.models import PopulationLookup, PopulationVerify
from bus.canonical import validation_error as _validation_error
from bus.errors import BusError, InvalidRequest, Unauthenticated
from bus.gateway.openapi import ERROR_CODES
from bus.gateway.privacy import (
    FieldFilter,
    check_purpose,
    check_requested_at,
    check_requested_fields,
)
from bus.gateway.security import Authenticator
from bus.logs import mask_text
from bus.xroad import XRoadIdentity
from tests.support.livebus import LiveBus
from tests.support.security import civil_body, population_body, secure_config

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

MODELS: dict[str, type[BaseModel]] = {
    "civil-status/lookup": CivilStatusLookup,
    "population/lookup": PopulationLookup,
    "population/verify": PopulationVerify,
}

FIELD_NAMES = [
    "request_id", "requested_at", "caller", "purpose", "subject", "fields", "record_type",
    "by_registration", "by_person", "id_type", "id_number", "full_name", "birth_date", "sex",
    "authority_code", "number", "book", "registration_date", "procedure_code", "dossier_id",
    "legal_basis", "consent_ref", "officer_id", "unit_code", "system_id", "officer_account",
]  # fmt: skip
"""Every key the request models know, so junk lands inside the structure, not beside it."""

TRICKY = [
    "", " ", "001085012345", "００１０８５０１２３４５", "001-085-012345", "123456789",
    "CCCD12", "CMND9", "BIRTH", "DEATH", "MARRIAGE", "LEGAL_DUTY", "CONSENT", "M", "F",
    "1990-02-31", "2999-01-01", "1899-12-31", "31/01/1990", "1990", "1990-01",
    "Nguyễn Văn An", "NGUYỄN VĂN AN", "Nguyá»…n", "NguyÔn V¨n", "<b>x</b>", "Nguyễn\u200bAn",
    "H'Hen Niê", "😀", "\x00", "\ud7ff", "a" * 101, "req-00000001", "2026-05-01T09:30:00+07:00",
    "ethnicity", "name", "personal_id", "-1", "1e309", "null", "{}", "[]",
    "req-00000001\n", "001085012345\n", "00001\r\n", "H01\n",
]  # fmt: skip

EDGES = ["\n", "\r\n", "\r", "\x00", " ", "\t", "\u200b", "\ufeff", "\u2028"]
"""Suffixes that make a valid string invalid without looking different."""

_text = st.one_of(st.sampled_from(TRICKY), st.text(max_size=40))
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12))
json_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=25,
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with some of its (nested) values replaced by junk, or keys added."""

    @st.composite
    def mutate(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(orjson.dumps(base))
        for _ in range(draw(st.integers(1, 4))):
            target = body
            while True:
                keys = list(target)
                if not keys:
                    break
                key = draw(st.sampled_from(keys))
                if isinstance(target[key], dict) and draw(st.booleans()):
                    target = target[key]
                    continue
                break
            key = draw(st.one_of(st.sampled_from(list(target) or ["x"]), _keys))
            action = draw(st.integers(0, 5))
            if action == 0:
                target.pop(key, None)
            elif action == 1 and isinstance(target.get(key), str):
                # A valid value with an invisible edge: "$" in a regex lets a final "\n" in.
                target[key] = target[key] + draw(st.sampled_from(EDGES))
            else:
                target[key] = draw(json_values)
        return body

    return mutate()


BODIES = {
    "civil-status/lookup": st.one_of(
        _mutations(civil_body()),
        st.dictionaries(_keys, json_values, max_size=8),
    ),
    "population/lookup": st.one_of(
        _mutations(population_body(fields=["name", "ethnicity"])),
        st.dictionaries(_keys, json_values, max_size=8),
    ),
    "population/verify": _mutations(population_body()),
}


@pytest.fixture(scope="module")
def config() -> Any:
    return secure_config("http://127.0.0.1:9/", "http://127.0.0.1:9/")


def _assert_documented(code: str) -> None:
    assert code in ERROR_CODES, f"undocumented error code {code}"


@pytest.mark.parametrize("operation", sorted(MODELS))
def test_request_models_never_crash(operation: str, config: Any) -> None:
    service = operation.split("/")[0]

    @FUZZ
    @given(body=BODIES[operation])
    def check(body: dict[str, Any]) -> None:
        try:
            validated = MODELS[operation].model_validate(body)
        except ValidationError as exc:
            error = _validation_error(exc)
            _assert_documented(error.code)
            assert error.detail["errors"]
            return
        steps: list[Callable[[], None]] = [
            lambda: check_purpose(config.services[service], validated, None),
            lambda: check_requested_fields(config, "portal", service, validated),
            lambda: check_requested_at(validated, datetime.now(UTC), 300),
        ]
        for step in steps:
            try:
                step()
            except BusError as exc:  # anything else is a bug, and fails the property
                _assert_documented(exc.code)
        dumped = validated.model_dump(mode="json", exclude_none=True)
        orjson.dumps(dumped)
        # What validates travels on (XML, query strings, headers, the audit trail): no
        # control or invisible character may be in it.
        for text in _strings_of(dumped):
            assert not any(unicodedata.category(ch) in INVISIBLE for ch in text), repr(text)

    check()


INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _strings_of(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_of(item)


@FUZZ
@given(reply=st.dictionaries(_keys, json_values, max_size=8))
def test_field_filter_never_crashes_and_never_returns_sensitive_keys(
    reply: dict[str, Any], config: Any
) -> None:
    out = FieldFilter.of(config, "minimal", "civil-status").apply(reply)
    orjson.dumps(out.body)
    assert not any(k.startswith(("ethnicity", "religion")) for k in _keys_of(out.body))


def _keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys_of(item)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(
    ["X-Road-Client", "X-Road-Service", "X-Road-Id", "X-Road-UserId"]), _text))  # fmt: skip
def test_xroad_header_parsing_only_raises_coded_errors(headers: dict[str, str]) -> None:
    code = None
    try:
        XRoadIdentity.from_headers(headers)
    except InvalidRequest as exc:
        code = exc.code
    assert code in (None, "INVALID_XROAD_HEADER")


@FUZZ
@given(value=st.one_of(_text, _text.map(lambda t: "Bearer " + t)))
def test_authorization_parsing_only_raises_unauthenticated(value: str, config: Any) -> None:
    auth = _authenticator(config)
    code = None
    try:
        auth.identify(value)
    except Unauthenticated as exc:
        code = exc.code
    assert code == "UNAUTHENTICATED"  # no key of this fuzz is anyone's


_AUTH: dict[int, Authenticator] = {}


def _authenticator(config: Any) -> Authenticator:
    if id(config) not in _AUTH:
        data = {"consumers": {"a": {"api_keys": [{"sha256": "0" * 64}]}}}
        _AUTH[id(config)] = Authenticator(parse_routing(data))
    return _AUTH[id(config)]


@FUZZ
@given(value=st.one_of(_text, st.datetimes().map(str), st.datetimes().map(datetime.isoformat)))
def test_requested_at_parsing_only_raises_coded_errors(value: str) -> None:
    class Timed(BaseModel):
        requested_at: str

    code = None
    try:
        check_requested_at(Timed(requested_at=value), datetime.now(UTC), 300)
    except InvalidRequest as exc:
        code = exc.code
    assert code in (None, "INVALID_TIMESTAMP", "CLOCK_SKEW")


_ID_RUN = re.compile(r"(?<![0-9])(?:[0-9]{12}|[0-9]{9})(?![0-9])")


@FUZZ
@given(text=st.one_of(_text, st.text(alphabet="0123456789 -ANguyễnVăn", max_size=60)))
def test_the_masker_never_crashes_and_leaves_no_id(text: str) -> None:
    out = mask_text(text)
    assert not _ID_RUN.search(out)


# --- through a running gateway -----------------------------------------------------------


@pytest.fixture(scope="module", params=["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def live(request: pytest.FixtureRequest) -> Iterator[LiveBus]:
    url = None
    if request.param == "amqp":
        url = request.getfixturevalue("rabbit_vhost").url()
    with LiveBus(url) as running:
        yield running


@pytest.mark.parametrize("operation", sorted(MODELS))
def test_gateway_answers_junk_with_coded_errors(live: LiveBus, operation: str) -> None:
    @settings(FUZZ, max_examples=EXAMPLES)
    @given(body=BODIES[operation], raw=st.booleans())
    def check(body: dict[str, Any], raw: bool) -> None:
        payload: Any = body
        if raw:  # the same junk, truncated: malformed JSON at every depth
            data = orjson.dumps(body)
            payload = data[: max(1, len(data) // 2)]
        reply = live.call(f"/v1/{operation}", payload)
        # 5xx only as the national DB's own answer (a valid request reached it), never ours.
        assert reply.status != 500, reply.body
        assert reply.status < 500 or str(reply.code).startswith("UPSTREAM_"), reply.body
        if reply.status >= 400:
            _assert_documented(str(reply.code))
            assert set(reply.body["error"]) >= {"code", "message", "request_id", "retryable"}

    check()
