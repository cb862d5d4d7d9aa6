"""Personal data never reaches logs or metrics.

First the masking processor on its own (IDs, name keys, names in free text, the request's
own names in any spelling, stdlib records), then the grep: a whole bus, on both brokers,
driven through every endpoint with known IDs and names — found, not found, mismatched,
refused, failing upstream, malformed HTTP — while every log line of the process is
captured (debug level, JSON) along with the gateway's and the worker's ``/metrics``. None
of the IDs or names may appear anywhere, in any spelling.
"""

from __future__ import annotations

import io
import logging
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from adapters.civil_status.data import sample_person
from adapters.civil_status.models import RecordType
from adapters.population_db.data import sample_citizen
from bus import logs
from bus.admin.deadletters import detail
from bus.broker.deadletters import dead_letter_from
from bus.logs import mask_id, mask_name, mask_pii, mask_text, pii_of, remember_pii
from bus.observe.accesslog import AccessLogObserver
from bus.observe.health import WorkerStatus, build_worker_app
from bus.observe.metrics import Metrics
from tests.support.population import POPULATION, SEED, subject_of
from tests.support.security import (
    OFFICER,
    SecureBus,
    caller,
    civil_body,
    population_body,
    secure_bus,
)
from tests.support.stack import serve_app


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the process logs (structlog and stdlib), as production renders it."""
    buf = io.StringIO()
    logs.configure("json", "debug", stream=buf, cache=False)
    yield buf
    logs.reset()


def _event(**values: Any) -> dict[str, Any]:
    return dict(mask_pii(None, "info", {"event": "test.event", **values}))


# --- the processor -----------------------------------------------------------------------


def test_ids_are_masked_wherever_they_are() -> None:
    assert mask_id("001085012345") == "001*******45"
    out = _event(
        text="lookup 001085012345 and 123456789 and 0010850123456",
        nested={"list": ["001085012345", {"deep": "x 079203001234 y"}]},
        number=1234,
    )
    assert out["text"] == "lookup 001*******45 and 123****89 and 0010850123456"
    assert out["nested"] == {"list": ["001*******45", {"deep": "x 079*******34 y"}]}
    assert out["number"] == 1234


def test_config_and_code_valued_keys_are_still_masked_and_their_memo_is_bounded() -> None:
    # service/consumer/code/event values are remembered masked (they repeat on every line);
    # an ID or a free-text name put into one (a poison message's header) is still masked.
    event = _event(service="001085012345", consumer="Nguyễn Văn An", code="OK")
    assert event["service"] == "001*******45"
    assert "Nguyễn" not in event["consumer"]
    assert "An" not in event["consumer"].split()
    assert event["code"] == "OK"
    assert event["event"] == "test.event"
    for i in range(logs._STATIC_MEMO_MAX + 100):  # hostile variety cannot grow it unbounded
        _event(service=f"svc-{i}")
    assert len(logs._STATIC_MEMO) <= logs._STATIC_MEMO_MAX
    assert _event(service="svc-late")["service"] == "svc-late"  # past the bound: still masked
    assert _event(service="late 079203001234")["service"] == "late 079*******34"


def test_timestamps_are_the_stampers_and_do_not_fill_the_memo(log_output: io.StringIO) -> None:
    # The stamper overwrites a caller's timestamp (an ID put there never reaches the line),
    # and unique times do not take the static memo's room from the values that repeat.
    logs._STATIC_MEMO.clear()  # as in a fresh process (another test may have filled it)
    log = structlog.get_logger("test")
    for _ in range(3):
        log.info("test.timed", timestamp="001085012345")
    lines = [orjson.loads(line) for line in log_output.getvalue().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["timestamp"].startswith("20")
        assert "001085012345" not in line["timestamp"]
    assert not {line["timestamp"] for line in lines} & set(logs._STATIC_MEMO)
    assert set(logs._STATIC_MEMO) <= {"test.timed", "info", "test"}


def test_values_of_name_keys_become_initials() -> None:
    assert mask_name("Nguyễn Văn An") == "N*** V*** A***"
    out = _event(
        full_name="Nguyễn Văn An",
        citizen={"name": {"family": "Nguyễn", "middle": "Văn", "given": "An", "full": "X Y"}},
        nksHoTen="Trần Thị Bình",
        signer_name="Lê Văn Ký",
    )
    assert out["full_name"] == "N*** V*** A***"
    assert out["citizen"]["name"] == {
        "family": "N***",
        "middle": "V***",
        "given": "A***",
        "full": "X*** Y***",
    }
    assert out["nksHoTen"] == "T*** T*** B***"
    assert out["signer_name"] == "L*** V*** K***"


@pytest.mark.parametrize(
    "text",
    [
        "upstream said Nguyễn Văn An is unknown",
        "upstream said NGUYỄN VĂN AN is unknown",
        "upstream said Nguyen Van An is unknown",
        "upstream said NGUYEN VAN AN is unknown",
        "upstream said Đặng Thị Mỹ Lệ is unknown",
    ],
)
def test_vietnamese_names_in_free_text_are_masked(text: str) -> None:
    masked = mask_text(text)
    assert masked.startswith("upstream said ")
    assert masked.endswith(" is unknown")
    assert "***" in masked
    for word in ("An", "AN", "Lệ", "Mỹ"):
        assert f" {word} " not in masked


def test_ordinary_log_words_are_left_alone() -> None:
    for text in (
        "worker.request_served",
        "civil-status",
        "UPSTREAM_TIMEOUT",
        "gateway listening on http://127.0.0.1:8080/",
        "the lookup took 12.5 ms for consumer portal",
        "Le",  # one word is no name
    ):
        assert mask_text(text) == text


def test_the_requests_own_names_are_masked_in_any_spelling() -> None:
    body = {"subject": {"full_name": "Hoàng Thị Mỹ Lệ", "id_number": "079203001234"}}
    with remember_pii(pii_of(body)):
        for text, hidden in (
            ("C06: hoang thi my le not found", "hoang thi my le"),
            ("C06: HOÀNG THỊ MỸ LỆ not found", "HOÀNG THỊ MỸ LỆ"),
            ("C06: Hoàng  Thị Mỹ   Lệ", "Mỹ"),
            ("ref 0792030012345", "079203001234"),
        ):
            assert hidden not in mask_text(text), text
    # Outside the request, only the general rules apply.
    assert "hoang thi my le" in mask_text("C06: hoang thi my le not found")


def test_exceptions_and_stdlib_records_are_masked(log_output: io.StringIO) -> None:
    log = structlog.get_logger("test.pii")
    try:
        raise ValueError("no citizen 001085012345 named Phạm Văn Đồng")
    except ValueError:
        log.exception("test.failed")
    logging.getLogger("aiohttp.server").error("bad request from Trần Văn Bảy 079203001234")
    text = log_output.getvalue()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert [line["event"] for line in lines][-2] == "test.failed"
    for raw in ("001085012345", "079203001234", "Phạm Văn Đồng", "Trần Văn Bảy"):
        assert raw not in text
    assert "001*******45" in text


# --- the grep ----------------------------------------------------------------------------


CIVIL_PERSON = sample_person(0, RecordType.BIRTH, 7)
CITIZEN = sample_citizen(SEED, 3)
STRANGER = sample_citizen(SEED, POPULATION + 5)
OLD_ID = "031085123"  # a CMND9 asked for


def _forms(value: str) -> set[str]:
    """A value and the spellings it may be logged in (upper case, no diacritics)."""
    folded = "".join(
        c
        for c in unicodedata.normalize("NFD", value.replace("đ", "d").replace("Đ", "D"))
        if unicodedata.category(c) != "Mn"
    )
    return {value, value.upper(), folded, folded.upper()}


def _secrets() -> set[str]:
    found: set[str] = set()
    for value in (
        CIVIL_PERSON["id_number"],
        CIVIL_PERSON["full_name"],
        CITIZEN["personal_id"],
        CITIZEN["full_name"],
        STRANGER["personal_id"],
        STRANGER["full_name"],
        OFFICER,
        OLD_ID,
        "Nguyễn Văn Khác",
    ):
        found |= _forms(value)
    return found


async def _drive(bus: SecureBus) -> None:
    """Every endpoint, with the known IDs and names, in success and in failure."""
    person = {k: CIVIL_PERSON[k] for k in ("id_number", "full_name")}
    calls: list[tuple[str, Any, dict[str, str]]] = [
        ("/v1/civil-status/lookup", civil_body(by_registration=None, by_person=person), {}),
        (
            "/v1/civil-status/lookup",
            civil_body(by_registration=None, by_person={**person, "birth_date": "1990-02-31"}),
            {},
        ),
        (
            "/v1/civil-status/lookup",
            civil_body(by_registration={"authority_code": "00001", "number": "REJECT"}),
            {},
        ),
        (
            "/v1/civil-status/lookup",
            civil_body(by_registration={"authority_code": "00001", "number": "FAIL503"}),
            {"X-Request-Id": CITIZEN["personal_id"]},
        ),
        (
            "/v1/civil-status/lookup",
            civil_body(by_person=person),  # both queries: INVALID_QUERY
            {"X-Road-UserId": OFFICER},
        ),
        ("/v1/population/lookup", population_body(fields=["name", "father", "mother"]), {}),
        ("/v1/population/verify", population_body(), {}),
        ("/v1/population/lookup", population_body(subject_of(STRANGER)), {}),
        (
            "/v1/population/lookup",
            population_body(subject_of(CITIZEN, full_name="Nguyễn Văn Khác")),
            {},
        ),
        (
            "/v1/population/lookup",
            population_body(
                {
                    "id_type": "CMND9",
                    "id_number": OLD_ID,
                    "full_name": CITIZEN["full_name"],
                    "birth_date": CITIZEN["birth_date"],
                }
            ),
            {},
        ),
        (
            "/v1/population/lookup",
            population_body(subject_of(CITIZEN, id_number="001099999901", birth_date="1999")),
            {},
        ),
        (
            "/v1/population/lookup",
            population_body(subject_of(CITIZEN, full_name=CITIZEN["full_name"] + " 9")),
            {},
        ),
        ("/v1/population/lookup", population_body(caller=caller(officer_id=None)), {}),
        (f"/v1/{CITIZEN['personal_id']}/lookup", population_body(), {}),
    ]
    for path, body, headers in calls:
        if isinstance(body, dict) and isinstance(body.get("caller"), dict):
            body["caller"] = {k: v for k, v in body["caller"].items() if v is not None}
        await bus.call(path, {k: v for k, v in body.items() if v is not None}, headers=headers)
    await bus.call("/v1/population/lookup", population_body(), key="outsider")
    await bus.call("/v1/population/lookup", population_body(), raw_key=CITIZEN["personal_id"])
    for path in (
        "/v1/services",
        "/healthz",
        "/readyz",
        "/openapi.json",
        f"/v1/messages/{CITIZEN['personal_id']}",
        f"/{CITIZEN['personal_id']}",
    ):
        await bus.call(path, method="GET")
    # A header too large for the parser: aiohttp's own error text would quote it.
    await bus.call(
        "/v1/population/lookup",
        population_body(),
        headers={"X-Note": (CITIZEN["full_name"] + " " + CITIZEN["personal_id"]) * 400},
    )


async def test_no_id_or_name_reaches_logs_or_metrics(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    gateway_metrics, worker_metrics = Metrics(role="gateway"), Metrics(role="worker")
    async with secure_bus(
        broker_url, monkeypatch, gateway_metrics=gateway_metrics, worker_metrics=worker_metrics
    ) as bus:
        worker_app = build_worker_app(
            WorkerStatus(bus.stack.worker.config, bus.stack.worker_broker, ["civil-status"]),
            worker_metrics,
        )
        bus.stack.gateway.add_observer(AccessLogObserver())  # as `lgsp-bus run` has it
        await _drive(bus)
        metrics = await bus.call("/metrics", method="GET", key=None)
        assert metrics.status == 200
        async with (
            serve_app(worker_app) as worker_url,
            bus.stack.session.get(worker_url + "metrics") as r,
        ):
            worker_text = await r.text()
        async with bus.stack.session.get(bus.url + "metrics") as r:
            gateway_text = await r.text()
    logged = log_output.getvalue()
    assert "worker.request_served" in logged  # the capture works
    assert "gateway.request_finished" in logged
    assert "gateway.bad_http_request" in logged
    assert "lgsp_" in gateway_text
    assert "lgsp_" in worker_text
    for where, text in (
        ("logs", logged),
        ("gateway metrics", gateway_text),
        ("worker", worker_text),
    ):
        leaked = sorted(s for s in _secrets() if s in text)
        assert not leaked, f"{where} carry personal data: {len(leaked)} value(s)"


def test_logs_and_dead_letters_share_one_masker() -> None:
    """One key list: what a dead letter shown to an operator hides, a log line hides too."""
    record = {
        "subject": {"id_number": "001085012345", "birth_date": "1985-03-02"},
        "contact": {"phone": "0912345678", "home_address": "12 Hang Bac"},
        "full_name": "Nguyễn Văn An",
        "note": "about 001085012345",
    }
    logged = mask_pii(None, "", {"event": "x", **record})
    shown = detail(dead_letter_from("x", orjson.dumps(record), {}, "c"), reveal=False)["body"]
    for section, key in [
        ("subject", "birth_date"),
        ("contact", "phone"),
        ("contact", "home_address"),
    ]:
        assert logged[section][key] == shown[section][key] == "***"
    assert logged["subject"]["id_number"] == shown["subject"]["id_number"] == "***"
    assert logged["note"] == shown["note"] == "about 001*******45"
    assert "An" not in logged["full_name"]
    assert shown["full_name"] == "***"


# --- exchange ids ------------------------------------------------------------------------


def test_exchange_ids_are_never_altered_but_the_requests_own_id_numbers_in_them_are() -> None:
    # A caller's id with digit runs that are no one's ID number: logged as sent, so a grep
    # for the id the caller reports finds its lines.
    for value in ("trace-123456789-abc", "req-001085012345", "a123456789012b"):
        event = _event(correlation_id=value, request_id=value, trace_id=value)
        assert (event["correlation_id"], event["request_id"], event["trace_id"]) == (value,) * 3
        assert _event(detail={"request_id": value})["detail"]["request_id"] == value
    # The same digits anywhere else are still masked.
    assert _event(note="trace-123456789-abc")["note"] == "trace-123****89-abc"
    # The citizen's own ID number put into a request_id is masked there too.
    with remember_pii(["079203001234"]):
        event = _event(request_id="dossier-079203001234-1", correlation_id="x079203001234")
    assert event["request_id"] == "dossier-079*******34-1"
    assert event["correlation_id"] == "x079*******34"
    # An id that is nothing but an ID number cannot be told from one: masked.
    assert _event(correlation_id="038204756860")["correlation_id"] == "038*******60"


def test_ids_the_bus_generates_never_look_like_an_id_number() -> None:
    from bus.canonical import new_id

    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(uuid.UUID(hex=i).version == 4 for i in ids)  # each a well-formed uuid4
    assert all(uuid.UUID(hex=i).variant == uuid.RFC_4122 for i in ids)
    # Wherever one lands (free text, a header, an id key), the masker leaves it whole.
    text = " ".join(ids)
    assert mask_text(text) == text
