"""The ``options`` a ``soap`` service and its operations take in ``routing.yaml`` (pure)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.common.soap import FaultPolicy
from adapters.generic.mapping import Rules
from adapters.generic.shared import OperationMapping, ServiceMapping

__all__ = ["FaultOptions", "SoapOperationOptions", "SoapServiceOptions"]


class FaultOptions(BaseModel):
    """How the upstream's SOAP faults map into error codes (``options.faults``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detail_code: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", description="element in <detail>"
    )
    transient: list[str] = Field(default_factory=list, description="→ UPSTREAM_UNAVAILABLE")
    auth: list[str] = Field(default_factory=list, description="→ UPSTREAM_AUTH_FAILED")
    rejected: list[str] = Field(default_factory=list, description="→ UPSTREAM_REJECTED")


class SoapServiceOptions(ServiceMapping):
    """``services.<name>.options`` of a ``soap`` service."""

    wsdl: str = Field(description="absolute path of the WSDL file (its imports beside it)")
    service: str | None = None
    port: str | None = None
    content_type: str = Field(
        "text/xml; charset=utf-8", pattern=r"^[ -~]{1,200}$", description="SOAP 1.1's own"
    )
    faults: FaultOptions = FaultOptions()

    @field_validator("wsdl")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("the WSDL is a local file, never fetched: give its path")
        if not Path(value).is_absolute():
            raise ValueError(
                "give an absolute path (a relative one depends on where the bus starts)"
            )
        return value

    def fault_policy(self, what: str) -> FaultPolicy:
        """The fault mapping for this service."""
        f = self.faults
        return FaultPolicy(
            what, f.detail_code, frozenset(f.transient), frozenset(f.auth), frozenset(f.rejected)
        )


class SoapOperationOptions(OperationMapping):
    """``services.<name>.operations.<op>.options`` of a ``soap`` service."""

    operation: str = Field(min_length=1, description="the WSDL operation")
    request: Rules = Field(default_factory=dict, description="input element ← request path")
    soap_action: str | None = Field(
        None, pattern=r"^[ -~]{0,200}$", description="default: the WSDL's soapAction"
    )
