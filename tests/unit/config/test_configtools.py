"""``lgsp-bus config validate|explain|diff|schema``: the corpus of broken files, diff pairs
with known changes, explain on its own, and the shipped JSON Schema."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.base import load_routing, parse_routing
from bus.cli.config import schema_text
from bus.cli.main import main
from bus.config import ConfigError, RoutingConfig
from bus.config.diff import diff_configs, grants, needs_restart
from bus.config.explain import explain, render_table
from bus.config.source import YamlDocument
from tests.support.paths import CONFIGS, REPO

ROOT = REPO
CORPUS = sorted(CONFIGS.glob("*.yaml"))

BASE = textwrap.dedent(
    """\
    version: 1
    consumers:
      portal:
        api_keys:
          - key: env:PORTAL_KEY
        allow:
          civil-status: [lookup]
      clerk:
        api_keys:
          - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        allow:
          population: ["*"]
        rate_limit: {rate_per_s: 5, burst: 10}
    upstreams:
      moj:
        url: https://hotich.example.gov.vn/api/
        auth: {kind: bearer, token: env:MOJ_TOKEN}
      c06:
        url: https://dancu.example.gov.vn/ws
        auth: {kind: c06, username: lgsp, secret: env:C06_SECRET}
        breaker: {failure_ratio: 0.3}
    services:
      civil-status:
        adapter: civil_status
        upstream: moj
        operations:
          lookup: {timeout_s: 5}
      population:
        adapter: population_db
        upstream: c06
        options: {ma_dvc: LGSP-T}
        audit: fail_open
        operations:
          lookup: {timeout_s: 8, retry: {attempts: 2}}
    """
)


def parse(text: str) -> RoutingConfig:
    doc = YamlDocument.from_text(text)
    return parse_routing(doc.data, doc)


def variant(change: Callable[[dict[str, Any]], None]) -> str:
    """BASE with ``change`` applied to its data, as YAML text."""
    data = yaml.safe_load(BASE)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- validate: the corpus ---------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_file_gives_exactly_its_expected_errors(path: Path) -> None:
    expected = re.findall(r"^# expect: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    assert expected, f"{path.name} names no expected error"
    with pytest.raises(ConfigError) as info:
        load_routing(path)
    found = [str(issue) for issue in info.value.issues]
    unmatched = list(found)
    for want in expected:
        hit = next((issue for issue in unmatched if issue.startswith(want)), None)
        assert hit is not None, f"{want!r} not among {found}"
        unmatched.remove(hit)
    assert not unmatched, f"unexpected errors: {unmatched}"


def test_corpus_covers_the_mistakes_the_issue_names() -> None:
    names = {p.stem for p in CORPUS}
    assert {
        "unknown_adapter_kind",
        "acl_unknown_service",
        "acl_unknown_operation",
        "inline_secret",
        "duplicate_key",
        "timeout_over_deadline_cap",
        "retry_budget_over_timeout",
        "plain_http_upstream",
        "many_errors_at_once",
    } <= names


def test_inline_secret_value_never_appears_in_the_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "validate", str(CONFIGS / "inline_secret.yaml")])
    assert "9f86d081884c7d659a2f" not in capsys.readouterr().out


def test_validate_json_report_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = CONFIGS / "many_errors_at_once.yaml"
    assert main(["config", "validate", "--json", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert len(report["errors"]) == 4
    first = report["errors"][0]
    assert set(first) == {"path", "line", "column", "message"}
    assert isinstance(first["line"], int)
    good = write(tmp_path, "good.yaml", BASE)
    assert main(["config", "validate", "--json", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_warnings_are_shown_and_fail_only_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace("  c06:\n", "  spare:\n    url: https://x.example.gov.vn/\n  c06:\n")
    text = text.replace("auth: {kind: bearer, token: env:MOJ_TOKEN}", "verify_tls: false")
    path = write(tmp_path, "warn.yaml", text)
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 warning(s)" in out
    assert "warning: upstreams.spare (line " in out
    assert "no service uses this upstream" in out
    assert "upstreams.moj.verify_tls (line 17:5): TLS verification is off" in out
    assert main(["config", "validate", "--strict", str(path)]) == 1


def test_secrets_flag_checks_references_resolve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "r.yaml", BASE)
    for name in ("PORTAL_KEY", "MOJ_TOKEN", "C06_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_KEY", "k")
    assert main(["config", "validate", "--secrets", str(path)]) == 1
    out = capsys.readouterr().out
    assert "upstreams.moj.auth.token (line 17:" in out
    assert "secret env:MOJ_TOKEN does not resolve: environment variable MOJ_TOKEN is not set" in out
    assert "upstreams.c06.auth.secret" in out
    monkeypatch.setenv("MOJ_TOKEN", "t")
    monkeypatch.setenv("C06_SECRET", "s")
    assert main(["config", "validate", "--secrets", str(path)]) == 0


# -- explain (pure) ---------------------------------------------------------------------


def test_explain_allowed_call_shows_what_governs_it() -> None:
    config = parse(BASE)
    e = explain(config, "clerk", "population", "lookup")
    assert (e.allowed, e.status, e.code) == (True, 200, None)
    assert e.grant == "consumers.clerk.allow.population: [*]"
    assert e.adapter == "population_db"
    assert e.upstream is not None
    assert e.upstream["url"] == "https://dancu.example.gov.vn/ws"
    assert (e.queue, e.routing_key) == ("lgsp.svc.population", "population.lookup")
    assert (e.timeout_s, e.deadline_cap_s) == (8, 60)
    assert e.retry is not None
    assert e.retry["attempts"] == 2
    assert e.retry["waits_s"] == 0.1
    # Found by walking the models at each level, most specific first.
    assert e.policies["breaker"]["source"] == "upstreams.c06.breaker"
    assert e.policies["breaker"]["value"]["failure_ratio"] == 0.3
    assert e.policies["rate_limit"] == {
        "source": "consumers.clerk.rate_limit",
        "value": {"rate_per_s": 5.0, "burst": 10},
    }
    assert e.policies["audit"] == {"source": "services.population.audit", "value": "fail_open"}
    table = render_table(e)
    assert "ALLOWED" in table
    assert "upstream" in table
    assert "c06 → https://dancu.example.gov.vn/ws" in table


def test_explain_computed_default_of_an_unset_policy() -> None:
    e = explain(parse(BASE), "portal", "civil-status", "lookup")
    assert e.policies["audit"]["value"] == "fail_closed"  # personal data by default
    assert e.policies["audit"]["source"].startswith("default;")
    assert e.policies["rate_limit"]["value"] is None


@pytest.mark.parametrize(
    ("consumer", "service", "operation", "status", "code", "reason"),
    [
        ("nobody", "civil-status", "lookup", 401, "UNAUTHENTICATED", "no consumer 'nobody'"),
        ("portal", "land", "lookup", 404, "UNKNOWN_SERVICE", "no service 'land'"),
        ("portal", "civil-status", "delete", 404, "UNKNOWN_OPERATION", "(lookup)"),
        ("portal", "population", "lookup", 403, "FORBIDDEN_OPERATION", "no grant for population"),
        ("clerk", "civil-status", "lookup", 403, "FORBIDDEN_OPERATION", "no grant"),
    ],
)
def test_explain_denied_calls_name_the_gateways_error(
    consumer: str, service: str, operation: str, status: int, code: str, reason: str
) -> None:
    e = explain(parse(BASE), consumer, service, operation)
    assert (e.allowed, e.status, e.code) == (False, status, code)
    assert reason in e.reason


def test_explain_cli_exit_codes_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "r.yaml", BASE)
    args = ["config", "explain", str(path), "--consumer", "portal", "--service", "civil-status"]
    assert main([*args, "--operation", "lookup"]) == 0
    assert "ALLOWED" in capsys.readouterr().out
    assert main([*args, "--operation", "delete", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "UNKNOWN_OPERATION"
    bad = CONFIGS / "inline_secret.yaml"
    cmd = ["config", "explain", str(bad), "--consumer", "a", "--service", "b", "--operation", "c"]
    assert main(cmd) == 2


# -- diff --------------------------------------------------------------------------------


def changes_of(old: str, new: str) -> list[str]:
    return [str(c) for c in diff_configs(parse(old), parse(new))]


def test_reformatting_comments_and_explicit_defaults_are_no_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = "# reviewed 2026-01-05\n" + BASE.replace(
        "lookup: {timeout_s: 5}", "lookup:\n        timeout_s: 5.0\n        idempotent: true"
    ).replace('population: ["*"]', "population:\n          - '*'")
    assert changes_of(BASE, same) == []
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", same)
    assert main(["config", "diff", str(old), str(new)]) == 0
    assert "no semantic change" in capsys.readouterr().out


def test_grants_come_first_and_wildcards_expand() -> None:
    def change(data: dict[str, Any]) -> None:
        data["consumers"]["portal"]["allow"] = {"population": ["verify"]}
        data["services"]["population"]["operations"]["verify"] = {"timeout_s": 8}

    new = variant(change)
    found = diff_configs(parse(BASE), parse(new))
    assert [(c.section, c.kind, c.name) for c in found[:3]] == [
        ("acl", "revoked", "portal → civil-status/lookup"),
        ("acl", "granted", "clerk → population/verify"),  # via "*": a new operation
        ("acl", "granted", "portal → population/verify"),
    ]
    assert ("operations", "added", "population/verify") in [
        (c.section, c.kind, c.name) for c in found
    ]
    assert ("clerk", "population", "verify") in grants(parse(new))


def test_known_changes_to_services_upstreams_and_consumers() -> None:
    new = (
        BASE.replace("https://hotich.example.gov.vn/api/", "https://hotich2.example.gov.vn/api/")
        .replace("lookup: {timeout_s: 5}", "lookup: {timeout_s: 4}")
        .replace("      - key: env:PORTAL_KEY\n", "      - key: env:PORTAL_KEY_2026\n")
        .replace("    upstream: c06\n", "    upstream: c06\n    description: C06\n")
        + "  land:\n    adapter: civil_status\n    upstream: moj\n"
        "    operations:\n      lookup: {timeout_s: 5}\n"
    )
    text = "\n".join(changes_of(BASE, new))
    assert "added    services: land\n           adapter: civil_status" in text
    assert "added    operations: land/lookup" in text
    assert "changed  services: population\n           description: (none) → C06" not in text
    assert "description:  → C06" in text
    assert "changed  operations: civil-status/lookup\n           timeout_s: 5.0 → 4.0" in text
    assert "url: https://hotich.example.gov.vn/api/ → https://hotich2.example.gov.vn/api/" in text
    assert "changed  consumers: portal" in text
    assert "env:PORTAL_KEY_2026" in text
    gone = changes_of(BASE, variant(lambda data: data["consumers"].pop("clerk")))
    assert gone == ["revoked  acl: clerk → population/lookup", "removed  consumers: clerk"]


def test_settings_sections_and_restart_only_fields() -> None:
    new = BASE.replace("version: 1\n", "version: 1\nnode: lgsp-2\nbroker: {prefetch: 8}\n")
    old_cfg, new_cfg = parse(BASE), parse(new)
    text = "\n".join(str(c) for c in diff_configs(old_cfg, new_cfg))
    assert "changed  broker: broker\n           prefetch: 32 → 8" in text
    assert "changed  node: node" in text
    assert needs_restart(old_cfg, new_cfg) == ["broker.prefetch", "node"]


def test_diff_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path, "old.yaml", BASE)

    def change(data: dict[str, Any]) -> None:
        data["consumers"]["portal"].pop("allow")
        data["services"]["civil-status"]["operations"]["lookup"]["timeout_s"] = 3

    new = write(tmp_path, "new.yaml", variant(change))
    assert main(["config", "diff", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert out.index("ACL") < out.index("Configuration")
    assert "revoked  acl: portal → civil-status/lookup" in out
    assert main(["config", "diff", "--json", str(old), str(new)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] is True
    assert report["changes"][0]["kind"] == "revoked"
    bad = CONFIGS / "duplicate_key.yaml"
    assert main(["config", "diff", str(old), str(bad)]) == 2
    assert "duplicate key" in capsys.readouterr().err


# -- schema ------------------------------------------------------------------------------


def test_shipped_schema_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = ROOT / "routing.schema.json"
    assert shipped.read_text(encoding="utf-8") == schema_text(), (
        "routing.schema.json is stale: run `lgsp-bus config schema -o routing.schema.json`"
    )
    assert main(["config", "schema", "--check", str(shipped)]) == 0


def test_shipped_routing_yaml_points_editors_at_the_schema() -> None:
    first = (ROOT / "routing.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./routing.schema.json"


def test_schema_cli_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed["additionalProperties"] is False
    assert {"services", "upstreams", "consumers", "admin"} <= set(printed["properties"])
    target = tmp_path / "s.json"
    assert main(["config", "schema", "-o", str(target)]) == 0
    assert main(["config", "schema", "--check", str(target)]) == 0
    target.write_text("{}")
    assert main(["config", "schema", "--check", str(target)]) == 1


def test_schema_accepts_the_shipped_file_and_flags_inline_secrets() -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    import yaml

    validator = jsonschema_rs.validator_for(json.loads(schema_text()))
    data = yaml.safe_load((ROOT / "routing.yaml").read_text(encoding="utf-8"))
    assert validator.is_valid(data)
    data["upstreams"]["moj-civil-status-sim"]["auth"]["token"] = "s3cret"
    assert not validator.is_valid(data)
    data = yaml.safe_load(BASE)
    data["services"]["civil-status"]["operations"]["lookup"]["timout"] = 3
    assert not validator.is_valid(data)
