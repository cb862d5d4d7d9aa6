"""CPU cost of refusing duplicate JSON keys (``bus.gateway.jsonbody``) beside the parse.

Run: ``.venv/bin/python bench/json_duplicates.py [--rounds 200000]``. Single-threaded. For
a civil-status and a population request body (as the README's examples, compact JSON, and
with ``ensure_ascii`` escapes plus a colon written ``\\u003a`` — the tokenising path), it
prints the time of ``orjson.loads`` and of the duplicate check per body, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from bus.gateway.jsonbody import duplicate_key

CALLER = {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"}
PURPOSE = {"procedure_code": "1.001234", "dossier_id": "HS-2026-0001", "legal_basis": "LEGAL_DUTY"}
CIVIL = {
    "request_id": "req-0123456789abcdef",
    "record_type": "BIRTH",
    "caller": CALLER,
    "purpose": PURPOSE,
    "by_registration": {"authority_code": "00001", "number": "1"},
}
POPULATION = {
    "request_id": "req-0123456789abcdef",
    "requested_at": "2026-11-21T10:00:00+07:00",
    "caller": CALLER,
    "purpose": PURPOSE,
    "subject": {
        "id_type": "CCCD",
        "id_number": "079088007919",
        "full_name": "Dương Quang Sơn",
        "birth_date": "1988-11-09",
    },
    "fields": ["name", "birth_date", "permanent_address"],
}


def per_call_us(action: Callable[[], Any], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    rounds = parser.parse_args().rounds
    escaped = json.dumps(POPULATION).replace("10:00", "10\\u003a00").encode()
    cases = {
        "civil (compact)": orjson.dumps(CIVIL),
        "population (compact)": orjson.dumps(POPULATION),
        "population (escapes, \\u003a)": escaped,
    }
    print(f"{'body':32} {'bytes':>5} {'parse µs':>9} {'check µs':>9} {'check/parse':>11}")
    for name, raw in cases.items():
        body = orjson.loads(raw)
        assert duplicate_key(raw, body) is None
        parse = per_call_us(partial(orjson.loads, raw), rounds)
        check = per_call_us(partial(duplicate_key, raw, body), rounds)
        print(f"{name:32} {len(raw):5} {parse:9.2f} {check:9.2f} {check / parse:11.2f}")


if __name__ == "__main__":
    main()
