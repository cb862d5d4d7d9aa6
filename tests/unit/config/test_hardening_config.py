"""DOMAIN.md §6.16: a routing config naming an unknown service, a plain-HTTP upstream or an
inline secret is refused, by the loader and by ``lgsp-bus config validate``, without
repeating the secret. (A PII metric label cannot be configured: labels are fixed in code.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.base import parse_routing
from bus.config import ConfigError
from bus.config.source import YamlDocument

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


async def test_a_key_value_used_as_admin_and_consumer_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 21.6: the roles are told apart by the key's value, not the reference's name.
    from bus.admin.access import AdminTarget
    from bus.cli.main import main

    shared = "k-" + "9" * 30
    monkeypatch.setenv("PORTAL_KEY", shared)
    monkeypatch.setenv("MOJ", "t" * 32)
    text = GOOD + "admin:\n  api_keys: [{name: ops, key: env:LGSP_ADMIN_KEY}]\n"
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LGSP_ADMIN_KEY", "a-" + "1" * 30)
    assert main(["config", "validate", "--secrets", str(path)]) == 0
    ok = parse_routing(YamlDocument.from_text(text).data)
    monkeypatch.setenv("LGSP_ADMIN_KEY", shared)
    assert main(["config", "validate", "--secrets", str(path)]) == 1
    out = capsys.readouterr().out
    assert "admin.api_keys[0] has the same value as consumers.portal.api_keys[0]" in out
    assert shared not in out
    config = parse_routing(YamlDocument.from_text(text).data)
    with pytest.raises(ValueError, match="an admin key must be a key of its own"):
        AdminTarget(config)  # `run` refuses to start
    monkeypatch.setenv("LGSP_ADMIN_KEY", "a-" + "1" * 30)
    target = AdminTarget(ok)
    monkeypatch.setenv("LGSP_ADMIN_KEY", shared)
    with pytest.raises(ValueError, match="an admin key must be a key of its own"):
        await target.prepare(ok, config)  # a reload is rejected


def test_secret_files_are_read_with_a_bound_and_validate_checks_the_audit_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 21.14: file:/dev/zero as a secret was read without end; a 2-character audit key
    # passed `validate --secrets` and was refused by `run` only.
    from bus.cli.main import main
    from bus.config import resolve_secret

    with pytest.raises(ValueError, match="not a regular file"):
        resolve_secret("file:/dev/zero")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ValueError, match="longer than"):
        resolve_secret(f"file:{big}")
    small = tmp_path / "token"
    small.write_text("  tok-123\n", encoding="utf-8")
    assert resolve_secret(f"file:{small}") == "tok-123"

    monkeypatch.setenv("PORTAL_KEY", "p" * 32)
    monkeypatch.setenv("AUDIT_KEY", "ab")
    path = tmp_path / "routing.yaml"
    path.write_text(
        GOOD.replace("env:MOJ", "file:/dev/zero") + "audit:\n  subject_key: env:AUDIT_KEY\n",
        encoding="utf-8",
    )
    assert main(["config", "validate", "--secrets", str(path)]) == 1
    out = capsys.readouterr().out
    assert "the audit key must be at least 16 characters" in out
    assert "not a regular file" in out


BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: " + "[" * 3000 + "]" * 3000, "YAML nests deeper than 64 levels"),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 200)), "nests deeper than 64"),
        (BOMB, "YAML expands to more than 200000 nodes"),
    ],
)
def test_deep_yaml_and_alias_bombs_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    # 21.14: a traceback (RecursionError) for deep YAML; 25 s and 3 GiB for a 2.5 KB bomb.
    from bus.cli.main import main

    with pytest.raises(ConfigError, match=expected):
        YamlDocument.from_text(text)
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["config", "validate", str(path)]) == 1
    assert expected in capsys.readouterr().out


def test_anchors_and_merge_keys_still_work() -> None:
    doc = YamlDocument.from_text("base: &b {timeout_s: 5}\nop:\n  <<: *b\n  x: 1\n")
    assert doc.data["op"] == {"timeout_s": 5, "x": 1}
