"""Tracing (bus/observe/tracing.py): off by default at no cost; the traceparent codec."""

from __future__ import annotations

import time

import pytest

from adapters.base import parse_routing
from bus.envelope import Request, decode_request, encode_request
from bus.observe import tracing
from tests.e2e.test_e2e_civil_status import lookup
from tests.support.stack import running_bus, stack_config


def test_on_only_when_asked() -> None:
    off = parse_routing({"version": 1})
    on = parse_routing({"version": 1, "tracing": {"enabled": True}})
    assert not tracing.wanted(off, {})
    assert tracing.wanted(on, {})
    assert tracing.wanted(off, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.wanted(on, {"OTEL_SDK_DISABLED": "true"})


def test_traceparent_travels_in_the_amqp_headers() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    req = Request("r", "svc", "op", "c", "corr", round(time.time()) + 5.0, {}, traceparent=parent)
    body, headers = encode_request(req)
    assert headers["traceparent"] == parent
    assert decode_request(body, {**headers, "traceparent": parent.encode()}, "corr") == req
    plain = Request("r", "svc", "op", "c", "corr", time.time() + 5, {})
    assert "traceparent" not in encode_request(plain)[1]


async def test_off_makes_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_span(*_: object, **__: object) -> None:
        raise AssertionError("a span was made while tracing is off")

    monkeypatch.setattr(tracing, "span", no_span)
    monkeypatch.setattr(tracing, "traceparent", no_span)
    monkeypatch.setenv("T_TR_KEY", "k" * 24)
    monkeypatch.setenv("T_TR_KEY_OUTSIDER", "o" * 24)
    monkeypatch.setenv("T_TR_TOKEN", "t" * 24)
    from adapters.civil_status.data import sample_registration
    from adapters.civil_status.models import RecordType
    from adapters.civil_status.simulator import build_app
    from tests.support.stack import serve_app

    assert not tracing.enabled()
    async with serve_app(build_app(token="t" * 24)) as sim_url:
        config = stack_config(civil_url=sim_url, token_env="T_TR_TOKEN", key_env="T_TR_KEY")
        async with running_bus(config, None, "k" * 24) as bus:
            body = lookup(by_registration=sample_registration(0, RecordType.BIRTH, 1))
            status, reply = await bus.post("/v1/civil-status/lookup", body)
    assert status == 200, reply


def test_asked_for_without_the_otel_extra_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    for name in list(sys.modules):
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # an import of it fails
    on = parse_routing({"version": 1, "tracing": {"enabled": True}})
    with pytest.raises(tracing.TracingUnavailable, match=r"lgsp-bus\[otel\]"):
        tracing.configure(on, "gateway")
    assert not tracing.enabled()
    assert tracing.configure(parse_routing({"version": 1}), "gateway") is False  # off: fine


def test_an_endpoint_with_a_password_is_refused() -> None:
    from bus.config import ConfigError

    with pytest.raises(ConfigError, match="inline secrets"):
        parse_routing({"version": 1, "tracing": {"endpoint": "http://u:p@collector:4318/"}})
