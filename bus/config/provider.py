"""``provider:`` in routing.yaml: provincial services served to X-Road/NDXP callers (pure).

The bus then answers the other direction too: a national system, a ministry or another
province asks the province through its X-Road security server. Each provider service names
a ``services.<s>.operations.<o>`` of the bus (a ``rest`` or ``soap`` upstream, as for
consumers) and the X-Road ``serviceCode``/``serviceVersion`` it is published under::

    provider:
      member: VN/GOV/000.00.00.H31/LGSP        # this bus's X-Road subsystem id
      security_servers:                       # who may present X-Road-Client identities
        - {address: 127.0.0.1}                # sandbox: a loopback / allow-listed address
        - {subject: "CN=ss01.tinh.gov.vn,O=So TTTT,C=VN"}   # production: its mTLS cert
      services:
        getDossierStatus: {service: dossier-status, operation: status, version: v1}

A caller is a consumer whose ``xroad_client`` is its X-Road client id: that consumer's
``allow``, ``fields``, ``sensitive`` and ``rate_limit`` apply to it as to any consumer.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bus.config.access import XROAD_CLIENT_RE, parse_subject

if TYPE_CHECKING:
    from bus.config.models import RoutingConfig

__all__ = [
    "SERVICE_CODE_RE",
    "ProviderService",
    "ProviderSettings",
    "SecurityServer",
    "provider_problems",
]

SERVICE_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
"""An X-Road ``serviceCode`` the bus publishes (also the SOAP body element's name, so an
XML NCName without dots or dashes)."""
METASERVICES = frozenset({"listMethods", "allowedMethods", "getWsdl", "getOpenAPI"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecurityServer(_Frozen):
    """A security server whose ``X-Road-Client`` identities the bus trusts."""

    address: str | None = Field(
        None, description="its address or network (127.0.0.1, 10.0.5.0/24): sandbox use"
    )
    subject: str | None = Field(None, description="the subject of its mTLS client certificate")
    sha256: str | None = Field(None, description="SHA-256 fingerprint of that certificate")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)  # ValueError names the problem
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None:
            parse_subject(value)
        return value

    @field_validator("sha256")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("sha256 is 64 hex digits (colons allowed), the DER fingerprint")
        return digest

    @model_validator(mode="after")
    def _one(self) -> SecurityServer:
        if sum(v is not None for v in (self.address, self.subject, self.sha256)) != 1:
            raise ValueError("give exactly one of address, subject or sha256")
        return self


class ProviderService(_Frozen):
    """One service published to X-Road callers."""

    service: str = Field(description="a service of services: (rest or soap upstream)")
    operation: str = Field(description="the operation of that service this serviceCode calls")
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")] = Field(
        "v1", description="the serviceVersion callers name"
    )
    description: str = ""


class ProviderSettings(_Frozen):
    """This bus as an X-Road service provider."""

    member: Annotated[str, Field(pattern=XROAD_CLIENT_RE.pattern)] = Field(
        description="this bus's X-Road subsystem (INSTANCE/CLASS/MEMBER/SUBSYSTEM)"
    )
    security_servers: list[SecurityServer] = Field(
        min_length=1, description="the only peers whose X-Road-Client identity is trusted"
    )
    namespace: str = Field(
        "urn:lgsp-bus:provider", pattern=r"^[ -~]{1,200}$", description="target namespace"
    )
    services: dict[str, ProviderService] = Field(
        default_factory=dict, description="serviceCode → the operation it calls"
    )

    @field_validator("member")
    @classmethod
    def _subsystem(cls, value: str) -> str:
        if value.count("/") != 3:
            raise ValueError("name the subsystem: INSTANCE/CLASS/MEMBER/SUBSYSTEM")
        return value

    @field_validator("services")
    @classmethod
    def _codes(cls, value: dict[str, ProviderService]) -> dict[str, ProviderService]:
        for code in value:
            if not SERVICE_CODE_RE.fullmatch(code):
                raise ValueError(f"serviceCode {code!r}: letters, digits and _ (at most 64)")
            if code in METASERVICES:
                raise ValueError(f"serviceCode {code!r} is an X-Road metaservice")
        return value


def provider_problems(config: RoutingConfig) -> list[str]:
    """Provider services naming unknown services/operations; consumers sharing an id."""
    provider = config.provider
    if provider is None:
        return []
    problems: list[str] = []
    for code, spec in provider.services.items():
        svc = config.services.get(spec.service)
        where = f"provider.services.{code}"
        if svc is None:
            problems.append(f"{where}.service names unknown service {spec.service!r}")
        elif spec.operation not in svc.operations:
            problems.append(f"{where}.operation names unknown operation {spec.operation!r}")
    owners: dict[str, str] = {}
    for name, consumer in config.consumers.items():
        if consumer.xroad_client is None:
            continue
        other = owners.setdefault(consumer.xroad_client, name)
        if other != name:
            problems.append(
                f"consumers.{name}.xroad_client is also {other}'s: an X-Road client is one caller"
            )
    return problems
