"""The gateway's OpenAPI document, as a client author uses it.

It passes openapi-spec-validator; every schema and parameter compiles in ajv (the JS
validator most generators sit on: ECMA-262 patterns, no Python ``\\Z``); each operation
documents its answer model and the headers it sends; every endpoint is in it; and a client
generated from it by openapi-python-client gets typed answers from a running bus.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from adapters.base import reply_models, request_models
from adapters.civil_status.simulator import build_app
from bus.gateway.openapi import openapi_document
from tests.fixtures.generic_config import business_registry_service, social_insurance_service
from tests.support.stack import BusStack, new_secret, running_bus, serve_app, stack_config

AJV_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lgsp-bus-ajv"
AJV_CHECK = """
const Ajv2020 = require("ajv/dist/2020").default;
const doc = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const ajv = new Ajv2020({ strict: false, unicodeRegExp: true });
ajv.addSchema({ $id: "https://lgsp-bus.invalid/doc", components: doc.components });
let n = 0;
for (const name of Object.keys(doc.components.schemas)) {
  ajv.getSchema("https://lgsp-bus.invalid/doc#/components/schemas/" + name); n++;
}
for (const item of Object.values(doc.paths)) for (const op of Object.values(item))
  for (const p of op.parameters || []) { ajv.compile(p.schema); n++; }
console.log(n);
"""


@pytest.fixture
async def bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BusStack]:
    token, key = new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    async with serve_app(build_app(token=token, hang_s=30)) as sim_url:
        config = stack_config(civil_url=sim_url, token_env="T_MOJ_TOKEN", key_env="T_PORTAL_KEY")
        async with running_bus(config, None, key) as stack:
            yield stack


async def _document(bus: BusStack) -> dict[str, Any]:
    async with bus.session.get(bus.url + "openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
    return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, op) for path, item in doc["paths"].items() for op in item.values()]


def _check_document(doc: dict[str, Any]) -> None:
    validate(doc)  # openapi-spec-validator: OpenAPI 3.1 and its JSON Schema dialect
    assert "\\Z" not in json.dumps(doc), "Python-only regex syntax"
    assert doc["info"]["license"]["identifier"] == "Apache-2.0"
    assert doc["servers"]
    for path in ("/v1/services", "/v1/messages/{request_id}", "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"], path
    calls = [(path, item["post"]) for path, item in doc["paths"].items() if "post" in item]
    calls = [(path, op) for path, op in calls if path.startswith("/v1/")]
    for path, op in calls:
        ok = op["responses"]["200"]
        assert "$ref" in ok["content"]["application/json"]["schema"], path  # a typed answer
        assert {"X-Request-Id", "X-Road-Request-Hash", "X-Lgsp-Withheld-Fields"} <= set(
            ok["headers"]
        )
        assert "Idempotent-Replayed" in ok["headers"]
        assert {"Location", "Retry-After"} <= set(op["responses"]["202"]["headers"])
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "RateLimit-Limit" in op["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert "Allow" in op["responses"]["405"]["headers"]
    assert calls


def _ajv(doc: dict[str, Any], tmp_path: Path) -> int:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed for the ajv check")
        pytest.skip("node/npm absent: the document was not compiled in ajv")
    if not (AJV_CACHE / "node_modules" / "ajv").is_dir():
        AJV_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(AJV_CACHE),
             "ajv@8"],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    out = subprocess.run(
        [node, "-e", AJV_CHECK, str(path)],
        cwd=AJV_CACHE,
        env={**os.environ, "NODE_PATH": str(AJV_CACHE / "node_modules")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


async def test_the_document_validates_compiles_in_ajv_and_is_complete(
    bus: BusStack, tmp_path: Path
) -> None:
    doc = await _document(bus)
    _check_document(doc)
    assert _ajv(doc, tmp_path) > 10


def test_the_generic_kinds_document_their_declared_answer_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("T_MOJ_TOKEN", "T_PORTAL_KEY", "T_PORTAL_KEY_OUTSIDER", "T_VSS_PASSWORD"):
        monkeypatch.setenv(name, new_secret())
    upstreams = {
        name: {"url": "http://127.0.0.1:9/", "allow_plain_http": True, "auth": auth}
        for name, auth in (
            ("dkkd", {"kind": "wsse", "username": "u", "password": "env:T_VSS_PASSWORD"}),
            ("vss", {"kind": "basic", "username": "u", "password": "env:T_VSS_PASSWORD"}),
        )
    }
    config = stack_config(
        civil_url="http://127.0.0.1:9/",
        token_env="T_MOJ_TOKEN",
        key_env="T_PORTAL_KEY",
        extra_upstreams=upstreams,
        extra_services={
            "business-registry": business_registry_service("dkkd"),
            "social-insurance": social_insurance_service("vss"),
        },
    )
    doc = openapi_document(config, request_models(config), reply_models(config))
    _check_document(doc)
    _ajv(doc, tmp_path)
    answers = {
        name: schema for name, schema in doc["components"]["schemas"].items() if "Answer" in name
    }
    assert answers
    for schema in answers.values():
        assert {"status", "source", "request_id"} <= set(schema["properties"])
        assert len(schema["properties"]) > 4  # the declared response targets


def _generate(spec: Path, out: Path) -> None:
    tool = Path(sys.executable).parent / "openapi-python-client"
    subprocess.run(
        [str(tool), "generate", "--path", str(spec), "--output-path", str(out), "--meta", "none"],
        check=True,
        timeout=300,
        capture_output=True,
    )


async def test_a_generated_client_gets_typed_answers(
    bus: BusStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = await _document(bus)
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(doc), encoding="utf-8")
    await asyncio.to_thread(_generate, spec, tmp_path / "lgsp_client")
    monkeypatch.syspath_prepend(str(tmp_path))
    client_mod = importlib.import_module("lgsp_client.client")
    call = importlib.import_module("lgsp_client.api.default.civil_status_lookup")
    listing = importlib.import_module("lgsp_client.api.default.services_list")
    models = importlib.import_module("lgsp_client.models")
    client = client_mod.AuthenticatedClient(base_url=bus.url.rstrip("/"), token=bus.key)
    body = models.CivilStatusLookup.from_dict(
        {
            "request_id": "req-openapi-0001",
            "record_type": "BIRTH",
            "caller": {"system_id": "motcua", "unit_code": "H01", "officer_id": "001085000123"},
            "purpose": {
                "procedure_code": "1.001234",
                "dossier_id": "HS-2026-0001",
                "legal_basis": "LEGAL_DUTY",
            },
            "by_registration": {"authority_code": "00001", "number": "1"},
        }
    )
    stranger = client_mod.AuthenticatedClient(base_url=bus.url.rstrip("/"), token="not-a-key")
    async with client, stranger:  # the generated clients' HTTP connections closed after
        answer = await call.asyncio(client=client, body=body)
        refused = await call.asyncio(client=stranger, body=body)
        services = await listing.asyncio(client=client)
    assert isinstance(answer, models.CivilStatusLookupResult), answer
    assert str(answer.status.value) == "FOUND"
    assert answer.registration.authority_code == "00001"
    assert isinstance(refused, models.Error)
    assert str(refused.error.code.value) == "UNAUTHENTICATED"
    assert services is not None
    assert services.services[0].service == "civil-status"
