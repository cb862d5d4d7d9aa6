"""Authentication and authorisation against a running gateway, on both brokers.

API keys (rotation, expiry, digests, malformed headers), mutual TLS (subject, fingerprint,
unknown certificate, wrong CA, optional and required), the ACL matrix, ``/v1/services``,
and the per-consumer rate limit. Every refusal shows its code and that no upstream was
called.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.security import Reply, SecureBus, civil_body, population_body, secure_bus

CIVIL = "/v1/civil-status/lookup"
LOOKUP = "/v1/population/lookup"
VERIFY = "/v1/population/verify"


@pytest.fixture
async def bus(broker_url: str | None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SecureBus]:
    async with secure_bus(broker_url, monkeypatch) as running:
        yield running


async def test_both_keys_of_a_rotation_work(bus: SecureBus) -> None:
    for credential in ("portal-old", "portal-new"):
        reply = await bus.call(CIVIL, civil_body(), key=credential)
        assert reply.status == 200, reply.body
        assert reply.body["status"] == "FOUND"
        listing = await bus.call("/v1/services", key=credential, method="GET")
        assert listing.body["consumer"] == "portal"


async def test_a_key_stored_as_its_digest_works(bus: SecureBus) -> None:
    reply = await bus.call(CIVIL, civil_body(), key="hashed")
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "credentials are required"),
        ("Basic dXNlcjpwYXNz", "invalid credentials"),
        ("Bearer", "invalid credentials"),
        ("Bearer    ", "invalid credentials"),
        ("Bearer " + "k" * 600, "invalid credentials"),
        ("Bearer not-a-key-of-anyone", "invalid credentials"),
        ("Token {portal}", "invalid credentials"),
        ("Bearer {expired}", "invalid credentials"),
    ],
)
async def test_unknown_malformed_and_expired_credentials_are_one_401(
    bus: SecureBus, authorization: str | None, message: str
) -> None:
    before = bus.upstream_calls()
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            portal=bus.keys["portal-new"], expired=bus.keys["expired"]
        )
    reply = await bus.call(CIVIL, civil_body(), key=None, headers=headers)
    assert (reply.status, reply.code) == (401, "UNAUTHENTICATED")
    # Nothing about why: an expired key reads exactly like a wrong one.
    assert message in reply.body["error"]["message"]
    assert reply.body["error"]["retryable"] is False
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 6750 §3
    assert bus.upstream_calls() == before


async def test_the_bearer_scheme_is_case_insensitive(bus: SecureBus) -> None:
    reply = await bus.call(
        CIVIL, civil_body(), key=None, headers={"Authorization": f"bearer {bus.keys['portal-new']}"}
    )
    assert reply.status == 200, reply.body


MATRIX: dict[str, dict[str, bool]] = {
    "portal-new": {CIVIL: True, LOOKUP: True, VERIFY: True},
    "outsider": {CIVIL: False, LOOKUP: False, VERIFY: False},
    "verifier": {CIVIL: False, LOOKUP: False, VERIFY: True},
    "sensitive": {CIVIL: False, LOOKUP: True, VERIFY: False},
}


@pytest.mark.parametrize("credential", sorted(MATRIX))
async def test_acl_matrix(bus: SecureBus, credential: str) -> None:
    for path, allowed in MATRIX[credential].items():
        body = civil_body() if path == CIVIL else population_body()
        before = bus.upstream_calls()
        reply = await bus.call(path, body, key=credential)
        if allowed:
            assert reply.status == 200, (path, reply.body)
            assert bus.upstream_calls() == before + 1
        else:
            assert (reply.status, reply.code) == (403, "FORBIDDEN_OPERATION"), path
            assert bus.upstream_calls() == before
    listing = await bus.call("/v1/services", key=credential, method="GET")
    listed = {
        f"/v1/{s['service']}/{o['operation']}"
        for s in listing.body["services"]
        for o in s["operations"]
    }
    assert listed == {path for path, ok in MATRIX[credential].items() if ok}


async def test_a_forbidden_call_is_refused_before_its_body_is_read(bus: SecureBus) -> None:
    reply = await bus.call(CIVIL, b'{"not json', key="outsider")
    assert (reply.status, reply.code) == (403, "FORBIDDEN_OPERATION")


async def test_rate_limit_is_429_with_retry_after_and_costs_nothing(bus: SecureBus) -> None:
    for _ in range(2):  # the burst
        reply = await bus.call(CIVIL, civil_body(), key="limited")
        assert reply.status == 200, reply.body
    before = bus.upstream_calls()
    body = civil_body()
    reply = await bus.call(CIVIL, body, key="limited")
    assert (reply.status, reply.code) == (429, "RATE_LIMITED")
    assert reply.body["error"]["retryable"] is True
    # The refusal names the request it refused, though the body was never validated.
    assert reply.body["error"]["request_id"] == body["request_id"]
    # One token per 1000 s: the caller is told to wait whole seconds, rounded up.
    assert 900 <= int(reply.headers["Retry-After"]) <= 1000
    assert reply.headers["RateLimit-Limit"] == "2"  # the burst
    assert reply.headers["RateLimit-Remaining"] == "0"
    assert reply.headers["RateLimit-Reset"] == reply.headers["Retry-After"]
    # A body without a well-formed request_id gets none echoed.
    reply = await bus.call(CIVIL, {**body, "request_id": "<x> y"}, key="limited")
    assert (reply.status, reply.body["error"]["request_id"]) == (429, None)
    assert bus.upstream_calls() == before
    # Other consumers have buckets of their own.
    assert (await bus.call(CIVIL, civil_body(), key="portal-new")).status == 200


# --- mutual TLS -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a test PKI: a CA, the gateway's certificate, client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]
    """name → (certificate, key); ``stranger`` is signed by another CA."""
    fingerprints: dict[str, str]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "So TTTT"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _issue(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: x509.GeneralName | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = path.with_suffix(".key")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    import ipaddress

    root = tmp_path_factory.mktemp("pki")
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name, other_name = _name("Test Provincial CA"), _name("Some Other CA")
    ca = _issue(ca_name, ca_name, ca_key, ca_key, ca=True)
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        _name("127.0.0.1"),
        ca_name,
        server_key,
        ca_key,
        san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    server_key_path = _write(root / "server.pem", server, server_key)
    clients: dict[str, tuple[Path, Path]] = {}
    fingerprints: dict[str, str] = {}
    for name, signer, issuer in (
        ("motcua", ca_key, ca_name),
        ("fingerprinted", ca_key, ca_name),
        ("unmapped", ca_key, ca_name),
        ("stranger", other_key, other_name),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(f"{name}.tinh.gov.vn"), issuer, key, signer)
        clients[name] = (root / f"{name}.pem", _write(root / f"{name}.pem", cert, key))
        fingerprints[name] = cert.fingerprint(hashes.SHA256()).hex()
    return Pki(root / "ca.pem", root / "server.pem", server_key_path, clients, fingerprints)


def _tls(pki: Pki, client_auth: str) -> dict[str, str]:
    return {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca),
        "client_auth": client_auth,
    }


def _client_ssl(pki: Pki, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        cert_path, key_path = pki.clients[cert]
        ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def _cert_consumers(pki: Pki) -> dict[str, object]:
    allow = {"civil-status": ["lookup"]}
    return {
        "by-subject": {
            "client_certs": [{"subject": "CN=motcua.tinh.gov.vn, O=So TTTT, C=VN"}],
            "allow": allow,
        },
        "by-fingerprint": {
            # Colons and upper case, as openssl prints fingerprints: both are accepted.
            "client_certs": [
                {
                    "sha256": ":".join(
                        pki.fingerprints["fingerprinted"][i : i + 2].upper()
                        for i in range(0, 64, 2)
                    )
                }
            ],
            "allow": allow,
        },
    }


@asynccontextmanager
async def _tls_bus(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch, pki: Pki, client_auth: str
) -> AsyncIterator[SecureBus]:
    async with secure_bus(
        broker_url,
        monkeypatch,
        tls=_tls(pki, client_auth),
        client_ssl=_client_ssl(pki),
        consumers=_cert_consumers(pki),
    ) as running:
        yield running


async def _as(bus: SecureBus, pki: Pki, cert: str | None, *, key: str | None = None) -> Reply:
    connector = aiohttp.TCPConnector(ssl=_client_ssl(pki, cert))
    async with aiohttp.ClientSession(connector=connector) as session:
        return await bus.call(CIVIL, civil_body(), key=key, session=session)


async def _who(bus: SecureBus, pki: Pki, cert: str) -> str:
    connector = aiohttp.TCPConnector(ssl=_client_ssl(pki, cert))
    async with aiohttp.ClientSession(connector=connector) as session:
        listing = await bus.call("/v1/services", key=None, method="GET", session=session)
    assert listing.status == 200, listing.body
    return str(listing.body["consumer"])


async def test_mtls_optional_maps_certificates_to_consumers(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    async with _tls_bus(broker_url, monkeypatch, pki, "optional") as bus:
        assert bus.url.startswith("https://")
        assert await _who(bus, pki, "motcua") == "by-subject"
        assert await _who(bus, pki, "fingerprinted") == "by-fingerprint"
        reply = await _as(bus, pki, "motcua")
        assert reply.status == 200, reply.body
        assert reply.body["status"] == "FOUND"
        # Optional: no certificate, an API key still works over HTTPS.
        reply = await _as(bus, pki, None, key="portal-new")
        assert reply.status == 200, reply.body
        before = bus.upstream_calls()
        # A certificate from the right CA that names no consumer is no credential.
        reply = await _as(bus, pki, "unmapped")
        assert (reply.status, reply.code) == (401, "UNAUTHENTICATED")
        # Key and certificate of two different consumers: refused, not either one.
        reply = await _as(bus, pki, "motcua", key="portal-new")
        assert (reply.status, reply.code) == (401, "UNAUTHENTICATED")
        # A certificate from another CA never completes the handshake.
        with pytest.raises(aiohttp.ClientError):
            await _as(bus, pki, "stranger")
        assert bus.upstream_calls() == before


async def test_mtls_required_refuses_a_handshake_without_certificate(
    broker_url: str | None, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    async with _tls_bus(broker_url, monkeypatch, pki, "required") as bus:
        before = bus.upstream_calls()
        with pytest.raises(aiohttp.ClientError):
            await _as(bus, pki, None, key="portal-new")
        assert bus.upstream_calls() == before
        reply = await _as(bus, pki, "motcua")
        assert reply.status == 200, reply.body
