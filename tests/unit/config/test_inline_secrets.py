"""Issue 21.14: credentials inside an upstream URL or a header's literal value are refused
(``INLINE_SECRET``, located), the secret is never repeated. (By reference, a credential
header is sent with its value: tests/unit/adapters/test_population_adapter.py.)"""

from __future__ import annotations

import pytest

from adapters.base import parse_routing
from bus.config import ConfigError
from bus.config.secretlike import is_credential_name
from bus.config.source import YamlDocument

BASE = """\
version: 1
upstreams:
  moj: {url: "https://hotich.example.gov.vn/api", auth: {kind: bearer, token: env:MOJ}}
  c06: {url: "https://c06.example.gov.vn/ws", auth: {kind: c06, username: u, secret: env:C06}}
services:
  civil-status:
    adapter: civil_status
    upstream: moj
    operations: {lookup: {timeout_s: 5}}
  population:
    adapter: population_db
    upstream: c06
    options:
      ma_dvc: LGSP
      extra_headers: {ESB_SOURCE_TYPE: lgsp, X-Road-Client: VN/GOV/1/X}
    operations: {lookup: {timeout_s: 5}}
"""


def _issues(text: str) -> list[str]:
    doc = YamlDocument.from_text(text)
    with pytest.raises(ConfigError) as info:
        parse_routing(doc.data, doc)
    return [str(i) for i in info.value.issues]


def test_the_base_config_is_valid() -> None:
    parse_routing(YamlDocument.from_text(BASE).data)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("https://svc:hunter2s3cr3t@hotich.example.gov.vn/api", "user:password@"),
        ("https://svc@hotich.example.gov.vn/api", "user:password@"),
        ("https://hotich.example.gov.vn/api?token=hunter2s3cr3t", "'token'"),
        ("https://hotich.example.gov.vn/api?a=1&apiKey=hunter2s3cr3t", "'apiKey'"),
        ("https://hotich.example.gov.vn/api?access_token=hunter2s3cr3t", "'access_token'"),
        ("https://hotich.example.gov.vn/api?X-Amz-Signature=hunter2s3cr3t", "'X-Amz-Signature'"),
        ("https://hotich.example.gov.vn/api?password=hunter2s3cr3t", "'password'"),
        ("https://hotich.example.gov.vn/api?client_secret=hunter2s3cr3t", "'client_secret'"),
    ],
)
def test_an_upstream_url_with_credentials_is_refused(url: str, named: str) -> None:
    text = BASE.replace("https://hotich.example.gov.vn/api", url)
    issues = _issues(text)
    assert len(issues) == 1, issues
    assert issues[0].startswith("upstreams.moj.url (line 3:"), issues
    assert "INLINE_SECRET" in issues[0]
    assert named in issues[0]
    assert "hunter2s3cr3t" not in issues[0]


def test_a_url_query_without_credentials_is_accepted() -> None:
    text = BASE.replace("/api", "/api?version=2&format=json&keyword_mode=x")
    parse_routing(YamlDocument.from_text(text).data)


@pytest.mark.parametrize(
    "header", ["Authorization", "X-Api-Key", "Cookie", "X-Auth-Token", "apikey", "X-Secret"]
)
def test_a_literal_credential_header_is_refused(header: str) -> None:
    text = BASE.replace("ESB_SOURCE_TYPE: lgsp", f"{header}: hunter2s3cr3t")
    issues = _issues(text)
    assert len(issues) == 1, issues
    assert issues[0].startswith("services.population (line 10:"), issues
    assert "options.extra_headers" in issues[0]
    assert "INLINE_SECRET" in issues[0]
    assert header in issues[0]
    assert "hunter2s3cr3t" not in issues[0]


GENERIC = """\
version: 1
upstreams:
  vss: {url: "https://vss.example.gov.vn/", auth: {kind: bearer, token: env:VSS}}
services:
  insurance:
    adapter: rest
    upstream: vss
    personal_data: false
    options: {headers: {X-Client-System: lgsp}}
    operations:
      lookup:
        options:
          path: api/{id}
          fields: {id: {type: string, required: true}}
          query: {format: {const: json}}
"""


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("X-Client-System: lgsp", "X-Api-Key: hunter2s3cr3t"),
        ("format: {const: json}", "api_key: {const: hunter2s3cr3t}"),
    ],
)
def test_a_generic_kind_refuses_a_credential_header_or_fixed_query_parameter(
    old: str, new: str
) -> None:
    parse_routing(YamlDocument.from_text(GENERIC).data)
    issues = _issues(GENERIC.replace(old, new))
    assert any("INLINE_SECRET" in i for i in issues), issues
    assert not any("hunter2s3cr3t" in i for i in issues)


@pytest.mark.parametrize(
    "header", ["Idempotency-Key: '{request_id}'", "Partition-Key: dossier", "X-Request-Id: fixed"]
)
def test_a_header_named_key_that_is_an_id_is_not_a_credential(header: str) -> None:
    parse_routing(YamlDocument.from_text(GENERIC.replace("X-Client-System: lgsp", header)).data)


@pytest.mark.parametrize(
    "name", ["key", "X-Key", "X-Api-Key", "apiKey", "accessKey", "Ocp-Apim-Subscription-Key"]
)
def test_a_key_named_as_a_credential_still_is(name: str) -> None:
    assert is_credential_name(name)
