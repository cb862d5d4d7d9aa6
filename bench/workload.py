"""What the load sends: the targets, and the request templates for each.

The bus and both baselines get the same canonical civil-status lookups (records the
simulator of seed 0 has, BIRTH/MARRIAGE/DEATH mixed) — baseline B as the MOJ GET they map
to; the SOAP targets get population lookups of citizens the C06 simulator has, with the
caller and purpose a personal-data call needs. The load generator gives every body a fresh
``request_id``, so no request is ever answered from the bus's idempotency store.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.population_db.data import sample_citizen
from bench.baseline import moj_query

__all__ = [
    "TARGETS",
    "baseline_requests",
    "bus_requests",
    "civil_bodies",
    "direct_requests",
    "population_bodies",
]

TARGETS = {
    "B": "baseline B: the civil-status simulator called directly over HTTP (the floor)",
    "A": "baseline A: aiohttp → aio-pika RPC → consumer → simulator, written in bench/",
    "bus-rest": "the bus on RabbitMQ (gateway + worker processes), civil-status REST",
    "bus-soap": "the bus on RabbitMQ (gateway + worker processes), population SOAP",
    "embedded-rest": "lgsp-bus run --no-sim (in-memory broker, one process), civil-status REST",
    "embedded-soap": "lgsp-bus run --no-sim (in-memory broker, one process), population SOAP",
}
"""Target names (in the table's order) and what each measures."""

_CALLER = {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"}
_PURPOSE = {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001", "legal_basis": "LEGAL_DUTY"}
_FIELDS = ["personal_id", "name", "birth_date", "permanent_address"]
_JSON = {"Content-Type": "application/json"}


def civil_bodies(count: int = 60) -> list[dict[str, Any]]:
    """Canonical civil-status lookups of records the simulator (seed 0) has, types mixed."""
    return [
        {
            "caller": _CALLER,
            "purpose": _PURPOSE,
            "record_type": rt.value,
            "by_registration": sample_registration(0, rt, i),
        }
        for i in range(count)
        for rt in (RecordType.BIRTH, RecordType.MARRIAGE, RecordType.DEATH)
    ]


def population_bodies(count: int = 100) -> list[dict[str, Any]]:
    """Canonical population lookups (caller, purpose, subject) of citizens the simulator has."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < count:
        citizen = sample_citizen(0, i)
        i += 1
        if len(citizen["birth_date"]) != 10:
            # Known to the year only: the default match policy (full_for_cccd) refuses a
            # CCCD lookup without a full date; the workload is the common full-date case.
            continue
        subject = {
            "id_type": "CCCD12",
            "id_number": citizen["personal_id"],
            "full_name": citizen["full_name"],
            "birth_date": citizen["birth_date"],
        }
        out.append({"caller": _CALLER, "purpose": _PURPOSE, "subject": subject, "fields": _FIELDS})
    return out


def direct_requests(sim_url: str, token: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline B: the MOJ GET each civil-status lookup maps to, straight to the simulator."""
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    for body in bodies:
        path, params = moj_query(body)
        url = f"{sim_url.rstrip('/')}{path}?{urlencode(params)}"
        out.append({"method": "GET", "url": url, "headers": headers, "body": None})
    return out


def baseline_requests(port: int, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline A: the canonical bodies to its gateway."""
    url = f"http://127.0.0.1:{port}/lookup"
    return [{"method": "POST", "url": url, "headers": _JSON, "body": b} for b in bodies]


def bus_requests(
    port: int, service: str, api_key: str, bodies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The bus: ``POST /v1/<service>/lookup`` with the consumer's API key."""
    url = f"http://127.0.0.1:{port}/v1/{service}/lookup"
    headers = {"Authorization": f"Bearer {api_key}", **_JSON}
    return [{"method": "POST", "url": url, "headers": headers, "body": b} for b in bodies]
