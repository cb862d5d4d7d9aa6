"""The webhook signature and per-subscription field minimisation."""

from __future__ import annotations

import time

from bus.config.delivery import EventType, Subscription
from bus.delivery.fields import minimise
from bus.delivery.signature import sign, verify

SECRET = b"whsec-test"
BODY = b'{"event_id":"e1"}'


def test_a_signature_verifies_only_for_its_secret_body_and_time() -> None:
    header = sign(SECRET, BODY)
    assert verify(SECRET, BODY, header)
    assert not verify(b"other", BODY, header)
    assert not verify(SECRET, BODY + b" ", header)
    old = sign(SECRET, BODY, timestamp=int(time.time()) - 301)
    assert not verify(SECRET, BODY, old)  # a replay of an old delivery
    assert verify(SECRET, BODY, old, tolerance_s=600)
    for broken in ("", "t=x,v1=00", "v1=" + header.split("v1=")[1], header.replace("v1=", "v0=")):
        assert not verify(SECRET, BODY, broken)


def test_the_signed_text_is_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    header = sign(SECRET, BODY, timestamp=1700000000)
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


EVENT = {
    "event_id": "e1",
    "event_type": "a.changed",
    "schema_version": "1.0.0",
    "subject": {"personal_id_hmac": "ab" * 32, "region": "01"},
    "change_type": "BIRTH_REGISTERED",
    "cause_ref": "HS-1",
}
TYPE = EventType.model_validate(
    {"schema": {"type": "object"}, "sensitive_fields": ["cause_ref", "subject.region"]}
)


def sub(fields: list[str] | None) -> Subscription:
    return Subscription(kind="pull", events=["a.changed"], fields=fields)


def test_without_a_list_a_subscriber_gets_all_but_the_sensitive_fields() -> None:
    got = minimise(EVENT, TYPE, sub(None))
    assert got == {
        "event_id": "e1",
        "event_type": "a.changed",
        "schema_version": "1.0.0",
        "subject": {"personal_id_hmac": "ab" * 32},
        "change_type": "BIRTH_REGISTERED",
    }


def test_with_a_list_only_those_and_the_identity_fields() -> None:
    got = minimise(EVENT, TYPE, sub(["subject.region", "cause_ref"]))
    assert got == {
        "event_id": "e1",
        "event_type": "a.changed",
        "schema_version": "1.0.0",
        "subject": {"region": "01"},
        "cause_ref": "HS-1",
    }
