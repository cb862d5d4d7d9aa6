"""routing.yaml: the models, the shipped file, and errors located by YAML path and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.base import load_routing, parse_routing
from bus.cli.main import main
from bus.config import ConfigError, RoutingConfig, resolve_secret
from bus.config.source import YamlDocument
from tests.support.paths import REPO

ROOT = REPO

GOOD = textwrap.dedent(
    """\
    version: 1
    consumers:
      portal:
        api_keys:
          - key: env:PORTAL_KEY
        allow:
          civil-status: [lookup]
    upstreams:
      moj:
        url: https://hotich.example.gov.vn/api/
        auth: {kind: bearer, token: env:MOJ_TOKEN}
    services:
      civil-status:
        adapter: civil_status
        upstream: moj
        operations:
          lookup: {timeout_s: 5}
    """
)


def parse_text(text: str) -> RoutingConfig:
    doc = YamlDocument.from_text(text)
    return parse_routing(doc.data, doc)


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(text)
    return [str(i) for i in info.value.issues]


def test_good_config_parses_into_frozen_models() -> None:
    doc = YamlDocument.from_text(GOOD)
    config = parse_routing(doc.data, doc)
    assert config.services["civil-status"].operations["lookup"].timeout_s == 5
    assert config.services["civil-status"].operations["lookup"].retry.attempts == 3
    with pytest.raises(ValueError, match="frozen"):
        config.services["civil-status"].operations["lookup"].timeout_s = 9  # type: ignore[misc]


def test_shipped_routing_yaml_is_valid() -> None:
    config = load_routing(ROOT / "routing.yaml")
    assert "civil-status" in config.services
    assert config.consumers["demo"].api_keys[0].key == "env:LGSP_DEMO_API_KEY"


def test_unknown_field_is_reported_with_path_and_line() -> None:
    text = GOOD.replace("lookup: {timeout_s: 5}", "lookup: {timeout_s: 5, timout: 3}")
    [issue] = issues_of(text)
    assert issue.startswith("services.civil-status.operations.lookup.timout (line 17:")
    assert "unknown field" in issue


def test_inline_secret_is_rejected() -> None:
    text = GOOD.replace("token: env:MOJ_TOKEN", "token: s3cr3t-value")
    [issue] = issues_of(text)
    assert issue.startswith("upstreams.moj.auth.token (line 11:")
    assert "inline secrets are not allowed" in issue
    assert "s3cr3t-value" not in issue


def test_plain_http_upstream_needs_loopback_and_explicit_flag() -> None:
    text = GOOD.replace("https://hotich.example.gov.vn/api/", "http://hotich.example.gov.vn/")
    [issue] = issues_of(text)
    assert issue.startswith("upstreams.moj (line 9:")
    assert "plain http://" in issue
    loopback = GOOD.replace(
        "url: https://hotich.example.gov.vn/api/",
        "url: http://127.0.0.1:9/\n    allow_plain_http: true",
    )
    doc = YamlDocument.from_text(loopback)
    assert parse_routing(doc.data, doc).upstreams["moj"].allow_plain_http
    remote_with_flag = GOOD.replace(
        "url: https://hotich.example.gov.vn/api/",
        "url: http://10.0.0.5/\n    allow_plain_http: true",
    )
    assert any("plain http://" in i for i in issues_of(remote_with_flag))


def test_every_error_is_reported_at_once() -> None:
    text = (
        GOOD.replace("timeout_s: 5", "timeout_s: -1")
        .replace("upstream: moj", "upstream: nowhere")
        .replace("kind: bearer", "kind: kerberos")
    )
    issues = issues_of(text)
    assert len(issues) >= 2
    joined = "\n".join(issues)
    assert "upstreams.moj.auth (line 11:" in joined
    assert "kerberos" in joined
    assert "services.civil-status.operations.lookup.timeout_s (line 17:" in joined


def test_cross_references_are_checked() -> None:
    text = GOOD.replace("upstream: moj", "upstream: nowhere").replace(
        "civil-status: [lookup]", "civil-status: [lookup, delete]"
    )
    joined = "\n".join(issues_of(text))
    assert "services.civil-status.upstream names unknown upstream 'nowhere'" in joined
    assert "consumers.portal.allow.civil-status names unknown operation 'delete'" in joined


def test_unknown_adapter_kind_lists_the_known_ones() -> None:
    [issue] = issues_of(GOOD.replace("adapter: civil_status", "adapter: fax"))
    assert issue.startswith("services.civil-status.adapter (line 14:")
    assert "unknown adapter kind 'fax'" in issue
    assert "civil_status" in issue


def test_duplicate_key_is_an_error_not_a_silent_override() -> None:
    text = GOOD.replace("      lookup: {timeout_s: 5}", "      lookup: {timeout_s: 5}\n" * 2)
    [issue] = issues_of(text)
    assert "duplicate key" in issue
    assert "(line 18:" in issue


def test_yaml_syntax_error_has_a_line() -> None:
    [issue] = issues_of("services:\n  a: [1, 2\n")
    assert "YAML syntax" in issue
    assert "(line 3:" in issue


def test_secret_references_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGSP_TEST_SECRET", "from-env")
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert resolve_secret("env:LGSP_TEST_SECRET") == "from-env"
    assert resolve_secret(f"file:{secret_file}") == "from-file"
    monkeypatch.delenv("LGSP_TEST_SECRET")
    with pytest.raises(KeyError):
        resolve_secret("env:LGSP_TEST_SECRET")


def test_cli_validate_exit_codes_and_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["config", "validate", str(good)]) == 0
    assert "OK (1 services" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("timeout_s: 5", "timeout_s: 500"))
    assert main(["config", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "1 error(s)" in out
    assert "services.civil-status.operations.lookup.timeout_s (line 17:" in out


def test_json_schema_is_generated_from_the_models() -> None:
    schema = RoutingConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert "services" in schema["properties"]
