"""DOMAIN.md §6.16: a routing config naming an unknown service, a plain-HTTP upstream or an
inline secret is refused, by the loader and by ``lgsp-bus config validate``, without
repeating the secret. (A PII metric label cannot be configured: labels are fixed in code.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.base import parse_routing
from bus.config import ConfigError

# --- §6.16: the routing config -----------------------------------------------------------


GOOD = """\
version: 1
consumers:
  portal:
    api_keys: [{key: env:PORTAL_KEY}]
    allow: {civil-status: [lookup]}
upstreams:
  moj: {url: "https://hotich.example.gov.vn/", auth: {kind: bearer, token: env:MOJ}}
services:
  civil-status:
    adapter: civil_status
    upstream: moj
    operations: {lookup: {timeout_s: 5}}
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("allow: {civil-status: [lookup]}", "allow: {land: [lookup]}", "unknown service 'land'"),
        ('"https://hotich', '"http://hotich', "plain http:// upstream"),
        ("token: env:MOJ", "token: s3cr3t-token", "inline secrets are not allowed"),
        ("{key: env:PORTAL_KEY}", "{key: my-api-key}", "inline secrets are not allowed"),
    ],
)
def test_routing_config_refuses_unknown_services_plain_http_and_inline_secrets(
    old: str, new: str, expected: str
) -> None:
    from bus.config.source import YamlDocument

    parse_routing(YamlDocument.from_text(GOOD).data)
    doc = YamlDocument.from_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        parse_routing(doc.data, doc)
    assert expected in "\n".join(str(i) for i in info.value.issues)
    # The secret itself is never repeated back.
    assert "s3cr3t-token" not in "\n".join(str(i) for i in info.value.issues)


def test_config_validate_command_refuses_an_inline_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bus.cli.main import main

    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(GOOD.replace("env:MOJ", "s3cr3t-token")), encoding="utf-8")
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "inline secrets are not allowed" in out
    assert "s3cr3t-token" not in out
