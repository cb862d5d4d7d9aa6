"""The pure parts of access control: token buckets, field filter, purpose rules, X-Road
headers, certificate subjects, keys and the routing.yaml checks of all of them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.base import parse_routing
from bus.config import ConfigError, RoutingConfig
from bus.errors import RateLimited, Unauthenticated
from bus.gateway.ratelimit import RateLimiter, TokenBucket
from bus.gateway.security import Authenticator, PeerCertificate, key_digest


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate limits ---------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 100  # a long pause refills up to the burst, no more
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_token_bucket_ignores_a_clock_going_backwards() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.take() == 0.0
    clock.now -= 50
    assert bucket.take() == pytest.approx(1.0)


def test_rate_limiter_raises_rate_limited_with_retry_after() -> None:
    config = _config(
        consumers={"a": {"allow": {}, "rate_limit": {"rate_per_s": 0.5, "burst": 1}}, "b": {}}
    )
    clock = Clock()
    limit = config.consumers["a"].rate_limit
    assert limit is not None
    limiter = RateLimiter({"a": limit}, clock=clock)
    limiter.check("a")
    with pytest.raises(RateLimited) as info:
        limiter.check("a")
    assert info.value.retry_after == pytest.approx(2.0)
    assert (info.value.status, info.value.code, info.value.retryable) == (429, "RATE_LIMITED", True)
    for _ in range(100):
        limiter.check("b")  # no rate_limit: unlimited
    assert RateLimiter.from_config(config)._buckets.keys() == {"a"}


# --- config ----------------------------------------------------------------------------

_SERVICE = {
    "adapter": "civil_status",
    "upstream": "moj",
    "operations": {"lookup": {"timeout_s": 5}},
}


def _data(**top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "upstreams": {"moj": {"url": "https://moj.example.gov.vn/"}},
        "services": {"civil-status": _SERVICE},
        "consumers": {},
    }
    data.update(top)
    return data


def _config(**top: Any) -> RoutingConfig:
    return parse_routing(_data(**top))


def _issues(**top: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routing(_data(**top))
    return "\n".join(str(i) for i in info.value.issues)


@pytest.mark.parametrize(
    ("consumers", "gateway", "expected"),
    [
        ({"a": {"fields": {"land": ["x"]}}}, {}, "names unknown service 'land'"),
        ({"a": {"sensitive": {"land": ["ethnicity"]}}}, {}, "names unknown service 'land'"),
        (
            {"a": {"sensitive": {"civil-status": ["blood_type"]}}},
            {},
            "names 'blood_type', not one of the service's sensitive_fields",
        ),
        (
            {"a": {"fields": {"civil-status": ["persons.ethnicity"]}}},
            {},
            "names sensitive 'persons.ethnicity': grant 'ethnicity'",
        ),
        ({"a": {"fields": {"civil-status": ["persons..x"]}}}, {}, "not a dotted field path"),
        (
            {
                "a": {"api_keys": [{"sha256": "a" * 64}]},
                "b": {"api_keys": [{"sha256": "a" * 64}]},
            },
            {},
            "holds a key that is also a's",
        ),
        (
            {"a": {"client_certs": [{"subject": "CN=x"}]}},
            {},
            "client_certs needs gateway.tls with client_auth optional or required",
        ),
        ({"a": {"api_keys": [{"key": "env:K", "expires": "31/12/2026"}]}}, {}, "expires is"),
        (
            {"a": {"api_keys": [{"key": "env:K", "expires": "2026-12-31T17:00:00"}]}},
            {},
            "needs an offset",
        ),
        ({"a": {"api_keys": [{"key": "plain-text-key"}]}}, {}, "inline secrets are not allowed"),
        ({"a": {"client_certs": [{"sha256": "zz"}]}}, {}, "sha256 is 64 hex digits"),
        ({"a": {"client_certs": [{"subject": "just a name"}]}}, {}, "NAME=value pairs"),
        ({"a": {"client_certs": [{}]}}, {}, "exactly one of subject or sha256"),
        ({"a": {"rate_limit": {"rate_per_s": 0, "burst": 1}}}, {}, "greater than 0"),
        ({"a": {"xroad_client": "VN/GOV"}}, {}, "xroad_client"),
        ({}, {"tls": {"cert_file": "c", "key_file": "k", "client_auth": "required"}}, "needs"),
        ({"a": {"allow": {"civil-status": ["lookup"]}, "colour": "red"}}, {}, "colour"),
    ],
)
def test_config_rejects_bad_access_settings(
    consumers: dict[str, Any], gateway: dict[str, Any], expected: str
) -> None:
    assert expected in _issues(consumers=consumers, gateway=gateway)


def test_config_accepts_every_access_setting() -> None:
    config = _config(
        gateway={
            "tls": {
                "cert_file": "/etc/lgsp/gw.pem",
                "key_file": "/etc/lgsp/gw.key",
                "key_password": "env:GW_KEY_PASS",
                "client_ca_file": "/etc/lgsp/ca.pem",
                "client_auth": "optional",
            },
            "xroad_provider": "VN/GOV/000.00.00.H99/LGSP",
            "max_clock_skew_s": 120,
        },
        consumers={
            "a": {
                "api_keys": [
                    {"key": "env:A_OLD", "expires": "2026-12-31", "label": "2026"},
                    {"sha256": "b" * 64, "expires": "2027-06-30T17:00:00+07:00"},
                ],
                "client_certs": [
                    {"subject": "CN=motcua.tinh.gov.vn,O=So TTTT,C=VN"},
                    {"sha256": "AB:" * 31 + "AB"},
                ],
                "allow": {"civil-status": ["*"]},
                "fields": {"civil-status": ["registration", "persons.full_name"]},
                "sensitive": {"civil-status": ["ethnicity"]},
                "rate_limit": {"rate_per_s": 50, "burst": 200},
                "xroad_client": "VN/GOV/000.00.00.H31/MOTCUA",
            }
        },
    )
    consumer = config.consumers["a"]
    assert consumer.client_certs[1].sha256 == "ab" * 32
    assert config.services["civil-status"].sensitive_fields == ["ethnicity", "religion"]


# --- keys and certificates -------------------------------------------------------------


def test_keys_resolve_once_and_missing_references_fail_readably(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("T5_UNSET_KEY", raising=False)
    config = _config(consumers={"a": {"api_keys": [{"key": "env:T5_UNSET_KEY"}]}})
    with pytest.raises(ValueError, match=r"consumers\.a\.api_keys\[0\]: .*T5_UNSET_KEY"):
        Authenticator(config)
    monkeypatch.setenv("T5_UNSET_KEY", "")
    with pytest.raises(ValueError, match="the key is empty"):
        Authenticator(config)


def test_the_same_key_for_two_consumers_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T5_SHARED", "one-key")
    config = _config(
        consumers={
            "a": {"api_keys": [{"key": "env:T5_SHARED"}]},
            "b": {"api_keys": [{"sha256": key_digest("one-key")}]},
        }
    )
    with pytest.raises(ValueError, match="another consumer's key"):
        Authenticator(config)


def test_expiry_is_checked_per_call_and_a_date_lasts_the_whole_day() -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    in_a_minute = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    config = _config(
        consumers={
            "a": {
                "api_keys": [
                    {"sha256": key_digest("old"), "expires": yesterday},
                    {
                        "sha256": key_digest("today"),
                        "expires": datetime.now(UTC).date().isoformat(),
                    },
                    {"sha256": key_digest("soon"), "expires": in_a_minute, "label": "soon"},
                ]
            }
        }
    )
    auth = Authenticator(config)
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer old")
    assert auth.authenticate("Bearer today") == "a"
    assert auth.identify("Bearer soon").credential == "soon"


def test_peer_certificate_subject_and_fingerprint() -> None:
    info = {
        "subject": (
            (("countryName", "VN"),),
            (("organizationName", "So TTTT"),),
            (("commonName", "motcua.tinh.gov.vn"),),
        )
    }
    cert = PeerCertificate.from_ssl(b"DER", info)
    assert cert is not None
    assert cert.subject == {("C", "VN"), ("O", "So TTTT"), ("CN", "motcua.tinh.gov.vn")}
    assert cert.sha256 == hashlib.sha256(b"DER").hexdigest()
    assert PeerCertificate.from_ssl(None, None) is None
    assert PeerCertificate.from_ssl(b"DER", {}) is None  # not verified: no identity


def test_a_consumer_can_require_its_certificate_with_its_key() -> None:
    # 21.15: a consumer with a certificate could not be made to require it (its key alone
    # worked). With require_client_cert the key counts only together with the certificate.
    cert = PeerCertificate(b"cert-der", frozenset({("CN", "motcua")}))
    tls = {"cert_file": "/dev/null", "key_file": "/dev/null", "client_ca_file": "/dev/null"}
    consumers = {
        "a": {
            "api_keys": [{"sha256": key_digest("key-a")}],
            "client_certs": [{"sha256": cert.sha256}],
            "require_client_cert": True,
        },
        "b": {"api_keys": [{"sha256": key_digest("key-b")}], "client_certs": []},
    }
    auth = Authenticator(
        _config(consumers=consumers, gateway={"tls": {**tls, "client_auth": "optional"}})
    )
    with pytest.raises(Unauthenticated):
        auth.identify("Bearer key-a")
    assert auth.identify("Bearer key-a", cert).consumer == "a"
    assert auth.identify("Bearer key-b").consumer == "b"  # not asked of b
    issues = _issues(consumers={"c": {"api_keys": [], "require_client_cert": True}})
    assert "require_client_cert needs client_certs" in issues
