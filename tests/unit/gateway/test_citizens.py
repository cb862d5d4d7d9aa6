"""Which citizens an answer returns (audit keys) and the subject match policy (21.9, 21.12)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import parse_routing, reply_models
from bus.config.matching import MatchPolicy
from bus.errors import InvalidRequest, RateLimited
from bus.gateway.citizens import MismatchLimiter, check_birth_date, citizen_paths, citizens_in


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_found_at_every_declared_path_through_lists() -> None:
    body = {
        "citizen": {"personal_id": "001090000001", "father": {"personal_id": "001060000002"}},
        "persons": [{"personal_id": "001190000003"}, {"personal_id": None}, {"role": "X"}],
    }
    paths = ("citizen.personal_id", "citizen.father.personal_id", "persons.personal_id", "nope.x")
    assert citizens_in(body, paths) == ["001090000001", "001060000002", "001190000003"]
    assert citizens_in({"citizen": None}, paths) == []


def _config(**op: Any) -> Any:
    return parse_routing(
        {
            "upstreams": {
                "c06": {"url": "https://c06.example/", "auth": {"kind": "none"}},
                "moj": {"url": "https://moj.example/", "auth": {"kind": "none"}},
            },
            "services": {
                "population": {
                    "adapter": "population_db",
                    "upstream": "c06",
                    "options": {"ma_dvc": "X"},
                    "operations": {"lookup": {}, "verify": {}},
                },
                "civil": {
                    "adapter": "civil_status",
                    "upstream": "moj",
                    "operations": {"lookup": op},
                },
            },
        }
    )


def test_adapter_kinds_declare_their_reply_ids_and_config_adds_more() -> None:
    config = _config(citizen_ids=["registration.signer_id"])
    paths = citizen_paths(config, reply_models(config))
    assert paths[("population", "lookup")] == (
        "citizen.personal_id",
        "citizen.old_id",
        "citizen.father.personal_id",
        "citizen.mother.personal_id",
    )
    assert ("population", "verify") not in paths  # a verify answer returns nobody
    assert paths[("civil", "lookup")] == ("persons.personal_id", "registration.signer_id")


class _Asked:
    def __init__(self, subject: str | None, date: str | None) -> None:
        self._subject, self._date = subject, date

    def subject_id(self) -> str | None:
        return self._subject

    def subject_birth_date(self) -> str | None:
        return self._date


@pytest.mark.parametrize(
    ("rule", "subject", "date", "refused"),
    [
        ("full_for_cccd", "001090000001", "1990", True),
        ("full_for_cccd", "001090000001", "1990-05", True),
        ("full_for_cccd", "001090000001", "1990-05-01", False),
        ("full_for_cccd", "123456789", "1990", False),  # a CMND does not carry the year
        ("full_for_cccd", None, "1990", False),
        ("full", "123456789", "1990", True),
        ("partial", "001090000001", "1990", False),
        ("full", "001090000001", None, False),
    ],
)
def test_birth_date_policy(rule: Any, subject: str | None, date: str | None, refused: bool) -> None:
    policy = MatchPolicy(birth_date=rule)
    if refused:
        with pytest.raises(InvalidRequest) as err:
            check_birth_date(policy, _Asked(subject, date))
        assert err.value.code == "BIRTH_DATE_INCOMPLETE"
    else:
        check_birth_date(policy, _Asked(subject, date))


def test_mismatch_limiter_per_consumer_and_service_with_a_sliding_window() -> None:
    clock = _Clock()
    limiter = MismatchLimiter(clock)
    policy = MatchPolicy(mismatches=2, window_s=60)
    for _ in range(2):
        limiter.check("a", "pop", policy)
        limiter.note("a", "pop", policy)
        clock.now += 10
    with pytest.raises(RateLimited) as err:
        limiter.check("a", "pop", policy)
    assert (err.value.code, err.value.status, err.value.retry_after) == ("MISMATCH_LIMIT", 429, 40)
    limiter.check("b", "pop", policy)  # another consumer
    limiter.check("a", "civil", policy)  # another service
    clock.now += 40.5  # the first mismatch leaves the window
    limiter.check("a", "pop", policy)
