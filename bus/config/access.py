"""routing.yaml models and checks of access control: credentials, rate limits, field grants.

Kept apart from :mod:`bus.config` (which uses them) so that module stays a readable map of
the file. Cross-checks that need the whole config (duplicate credentials, grants naming
unknown services or sensitive fields, certificates without mutual TLS) are in
:func:`security_problems`, run by :class:`bus.config.RoutingConfig`'s validator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bus.errors import Forbidden

if TYPE_CHECKING:
    from bus.config.models import RoutingConfig

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "XROAD_CLIENT_RE",
    "XROAD_SERVICE_RE",
    "ClientCert",
    "RateLimit",
    "allowed_operations",
    "authorize",
    "parse_expiry",
    "parse_subject",
    "security_problems",
    "sensitive_name",
    "subject_attribute",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_XROAD_PART = r"[A-Za-z0-9._:-]{1,64}"
XROAD_CLIENT_RE = re.compile(rf"^{_XROAD_PART}(?:/{_XROAD_PART}){{2,3}}$")
"""X-Road client id: ``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``."""
XROAD_SERVICE_RE = re.compile(rf"^{_XROAD_PART}(?:/{_XROAD_PART}){{4,5}}$")
"""X-Road service id: ``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]``."""
DEFAULT_SENSITIVE_FIELDS = ("ethnicity", "religion")
"""Sensitive personal data (PDP law): returned only on an explicit grant. A name covers the
reply keys spelled like it or starting with it and ``_`` (``ethnicity_code``)."""


def sensitive_name(key: str, names: Iterable[str]) -> str | None:
    """The sensitive field ``key`` falls under (``ethnicity_code`` → ``ethnicity``), if any."""
    for name in names:
        if key == name or key.startswith(name + "_"):
            return name
    return None


def parse_expiry(value: str) -> datetime:
    """``expires`` as an aware datetime: a bare date means the end of that day (UTC)."""
    try:
        if "T" not in value and " " not in value:
            day = date.fromisoformat(value)
            return datetime.combine(day, datetime.max.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "expires is an ISO date (2026-12-31) or a date-time with offset "
            "(2026-12-31T17:00:00+07:00)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("expires needs an offset (…+07:00 or …Z) when it names a time")
    return parsed


class ClientCert(_Frozen):
    """A client certificate (mutual TLS) that identifies a consumer."""

    subject: str | None = Field(
        None, description="exact subject, e.g. 'CN=motcua.tinh.gov.vn,O=So TTTT,C=VN' (any order)"
    )
    sha256: str | None = Field(None, description="SHA-256 fingerprint of the DER certificate")

    @field_validator("sha256")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("sha256 is 64 hex digits (colons allowed), the DER fingerprint")
        return digest

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None:
            parse_subject(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> ClientCert:
        if (self.subject is None) == (self.sha256 is None):
            raise ValueError("give exactly one of subject or sha256")
        return self


_SUBJECT_NAMES = {
    "cn": "CN",
    "commonname": "CN",
    "o": "O",
    "organizationname": "O",
    "ou": "OU",
    "organizationalunitname": "OU",
    "c": "C",
    "countryname": "C",
    "l": "L",
    "localityname": "L",
    "st": "ST",
    "stateorprovincename": "ST",
    "street": "STREET",
    "streetaddress": "STREET",
    "dc": "DC",
    "domaincomponent": "DC",
    "uid": "UID",
    "userid": "UID",
    "emailaddress": "emailAddress",
    "serialnumber": "serialNumber",
}


def subject_attribute(name: str) -> str:
    """The short name of a subject attribute (``commonName`` → ``CN``; unknown: as given)."""
    return _SUBJECT_NAMES.get(name.lower(), name)


def parse_subject(value: str) -> frozenset[tuple[str, str]]:
    """``CN=a,O=b`` → ``{("CN", "a"), ("O", "b")}`` (order-free; values may not hold commas)."""
    pairs: set[tuple[str, str]] = set()
    for part in value.split(","):
        name, sep, attr = part.partition("=")
        name, attr = name.strip(), attr.strip()
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name) or not attr:
            raise ValueError("subject is NAME=value pairs separated by commas, e.g. CN=x,O=y")
        pairs.add((subject_attribute(name), attr))
    return frozenset(pairs)


class RateLimit(_Frozen):
    """A token bucket: ``rate_per_s`` tokens refill each second, at most ``burst`` saved up."""

    rate_per_s: float = Field(gt=0, le=100_000, description="sustained requests per second")
    burst: int = Field(ge=1, le=1_000_000, description="requests allowed at once after a pause")


_FIELD_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def security_problems(config: RoutingConfig) -> list[str]:  # noqa: C901 (ARCHITECTURE.md)
    """Field grants, sensitive grants, duplicate credentials, certificates without mTLS."""
    problems: list[str] = []
    digests: dict[str, str] = {}
    certs: dict[tuple[str, str], str] = {}
    tls = config.gateway.tls
    for cname, consumer in config.consumers.items():
        where = f"consumers.{cname}"
        for sname, paths in consumer.fields.items():
            svc = config.services.get(sname)
            if svc is None:
                problems.append(f"{where}.fields names unknown service {sname!r}")
                continue
            granted = set(consumer.sensitive.get(sname, ()))
            for path in paths:
                if not _FIELD_PATH_RE.fullmatch(path):
                    problems.append(
                        f"{where}.fields.{sname} names {path!r}, not a dotted field path"
                    )
                    continue
                for part in path.split("."):
                    name = sensitive_name(part, svc.sensitive_fields)
                    if name is not None and name not in granted:
                        problems.append(
                            f"{where}.fields.{sname} names sensitive {path!r}: grant {name!r} "
                            f"under {where}.sensitive.{sname} as well"
                        )
        for sname, names in consumer.sensitive.items():
            svc = config.services.get(sname)
            if svc is None:
                problems.append(f"{where}.sensitive names unknown service {sname!r}")
                continue
            for name in names:
                if name not in svc.sensitive_fields:
                    problems.append(
                        f"{where}.sensitive.{sname} names {name!r}, not one of the service's "
                        f"sensitive_fields ({', '.join(svc.sensitive_fields) or 'none'})"
                    )
        for key in consumer.api_keys:
            if key.sha256 is not None:
                other = digests.setdefault(key.sha256, cname)
                if other != cname:
                    problems.append(f"{where}.api_keys holds a key that is also {other}'s")
        for cert in consumer.client_certs:
            ident = ("sha256", cert.sha256) if cert.sha256 else ("subject", str(cert.subject))
            if ident[0] == "subject":
                ident = (
                    "subject",
                    ",".join(f"{k}={v}" for k, v in sorted(parse_subject(ident[1]))),
                )
            other = certs.setdefault(ident, cname)
            if other != cname:
                problems.append(f"{where}.client_certs names a certificate that is also {other}'s")
        if consumer.require_client_cert and not consumer.client_certs:
            problems.append(f"{where}.require_client_cert needs client_certs to require")
        if consumer.client_certs and (tls is None or tls.client_auth == "none"):
            problems.append(
                f"{where}.client_certs needs gateway.tls with client_auth optional or required"
            )
    return problems


# -- decisions over a config (pure) ---------------------------------------------------


def allowed_operations(config: RoutingConfig, consumer: str) -> dict[str, list[str]]:
    """Service → operations ``consumer`` may call (``*`` expanded)."""
    spec = config.consumers.get(consumer)
    if spec is None:
        return {}
    out: dict[str, list[str]] = {}
    for service, ops in spec.allow.items():
        svc = config.services.get(service)
        if svc is None:
            continue
        names = list(svc.operations) if "*" in ops else [op for op in ops if op in svc.operations]
        if names:
            out[service] = names
    return out


def authorize(config: RoutingConfig, consumer: str, service: str, operation: str) -> None:
    """Raise ``Forbidden`` unless ``consumer`` may call ``service.operation``."""
    spec = config.consumers.get(consumer)
    ops = spec.allow.get(service) if spec else None
    if not ops or ("*" not in ops and operation not in ops):
        raise Forbidden(f"consumer may not call {service}/{operation}")
