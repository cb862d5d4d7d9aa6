"""Canonical message parts shared by every service (DOMAIN.md §5): caller, purpose, request id.

Validation failures raise ``PydanticCustomError`` whose *type* is the stable error code
(``INVALID_ID_NUMBER``, ``INVALID_NAME`` …); the gateway reports that code to the caller.
Field constraints that pydantic checks itself map to ``INVALID_FIELD``/``UNKNOWN_FIELD``/
``MISSING_FIELD`` (:func:`validation_error`, the one mapper).
"""

from __future__ import annotations

import os
import re
import unicodedata
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bus.errors import InvalidRequest

__all__ = [
    "Caller",
    "CanonicalRequest",
    "LegalBasis",
    "Purpose",
    "RequestId",
    "StrictModel",
    "exchange_id",
    "new_id",
    "validation_error",
]

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}$")
"""A request_id in a body: the caller's idempotency key (8-64 characters, a ULID or UUID)."""
_EXCHANGE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
"""What may name an exchange anywhere else: an ``X-Request-Id`` header (the correlation id,
which is also the request_id of a body without one), a ``GET /v1/messages/{id}``, an id
kept in the audit trail. Every request_id matches it; free text (a name) never does."""


_DIGIT_RUN = re.compile(r"[0-9]{9}")


def new_id() -> str:
    """A fresh exchange id: 32 hex digits (a uuid4) with no run of nine digits or more, so it
    can never look like an ID number to the log masker (:mod:`bus.logs`) — about 1 in 200
    uuid4s has such a run and is drawn again."""
    while True:
        # uuid.uuid4().hex without building a UUID object (new_id 1.7 → 1.2 µs, bench.hotpath_cost):
        # 16 random bytes, version 4 and the RFC 4122 variant set.
        raw = bytearray(os.urandom(16))
        raw[6] = raw[6] & 0x0F | 0x40
        raw[8] = raw[8] & 0x3F | 0x80
        value = raw.hex()
        if _DIGIT_RUN.search(value) is None:
            return value


def exchange_id(value: str | None) -> str | None:
    """``value`` if it can name an exchange (see above), else ``None``."""
    return value if value is not None and _EXCHANGE_ID_RE.match(value) else None


_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_OFFICER_RE = re.compile(r"^[0-9]{12}$")
_ERROR_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]+\Z")


def validation_error(exc: ValidationError) -> InvalidRequest:
    """A request model's failure as one coded error — at the gateway, and again at a worker
    if a message fails its model there. A custom error's *type* is its code; pydantic's own
    map to ``UNKNOWN_FIELD``/``MISSING_FIELD``/``INVALID_FIELD``. Values are never echoed."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        kind = err["type"]
        if _ERROR_TYPE_RE.match(kind):
            code = kind
        elif kind == "extra_forbidden":
            code = "UNKNOWN_FIELD"
        elif kind == "missing":
            code = "MISSING_FIELD"
        else:
            code = "INVALID_FIELD"
        path = ".".join(str(p) for p in err["loc"])
        errors.append({"path": path, "code": code, "message": err["msg"]})
    first = errors[0]
    message = f"{first['path'] or 'body'}: {first['message']}"
    return InvalidRequest(message, code=first["code"], detail={"errors": errors})


class StrictModel(BaseModel):
    """Base of canonical models: unknown fields rejected, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _request_id(value: str) -> str:
    if not _REQUEST_ID_RE.fullmatch(value):  # fullmatch: "$" alone lets a final "\n" in
        raise PydanticCustomError(
            "INVALID_REQUEST_ID",
            "request_id must be 8-64 characters of letters, digits and . _ : - (a ULID or UUID)",
        )
    return value


def _code(value: str) -> str:
    if not _CODE_RE.fullmatch(value):
        raise PydanticCustomError(
            "INVALID_CODE", "codes are 1-64 letters, digits and . _ / - characters"
        )
    return value


def _officer(value: str) -> str:
    if not _OFFICER_RE.fullmatch(value):
        raise PydanticCustomError(
            "INVALID_OFFICER_ID", "officer_id must be the officer's 12-digit personal ID"
        )
    return value


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _plain_text(value: str) -> str:
    # Free text still travels on: into C06's XML (where most control characters are not
    # allowed at all), MOJ query strings and the audit trail. ``isprintable`` (in C) is
    # False for every category refused here, so a printable string needs no per-character
    # look-up (issue 14: 5.2 → 0.2 µs per field); only the rest are checked one by one.
    if not value.isprintable() and any(unicodedata.category(ch) in _INVISIBLE for ch in value):
        raise PydanticCustomError(
            "INVALID_TEXT", "control, invisible or line-separator characters are not allowed"
        )
    return value


# The patterns go into the OpenAPI document only (json_schema_extra): validation stays with
# the functions above, so a caller gets their precise codes, not pydantic's generic one.
RequestId = Annotated[
    str, AfterValidator(_request_id), Field(json_schema_extra={"pattern": _REQUEST_ID_RE.pattern})
]
Code = Annotated[str, AfterValidator(_code), Field(json_schema_extra={"pattern": _CODE_RE.pattern})]
OfficerId = Annotated[
    str, AfterValidator(_officer), Field(json_schema_extra={"pattern": _OFFICER_RE.pattern})
]


class LegalBasis(StrEnum):
    """Why personal data may be processed."""

    LEGAL_DUTY = "LEGAL_DUTY"
    CONSENT = "CONSENT"


class Caller(StrictModel):
    """The calling system and the officer on whose behalf it asks (X-Road's userId)."""

    system_id: Code | None = None
    unit_code: Code | None = None
    officer_id: OfficerId | None = None
    officer_account: Annotated[str, Field(max_length=64), AfterValidator(_plain_text)] | None = None


class Purpose(StrictModel):
    """The procedure and dossier a request serves, and its legal basis."""

    procedure_code: Code | None = None
    dossier_id: (
        Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain_text)] | None
    ) = None
    legal_basis: LegalBasis | None = None
    consent_ref: (
        Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_plain_text)] | None
    ) = None

    @model_validator(mode="after")
    def _consent(self) -> Purpose:
        # Consent must be verifiable (PDP law): a CONSENT basis without its reference is void.
        if self.legal_basis is LegalBasis.CONSENT and self.consent_ref is None:
            raise PydanticCustomError(
                "CONSENT_REF_REQUIRED", "legal_basis CONSENT needs purpose.consent_ref"
            )
        return self


class CanonicalRequest(StrictModel):
    """Fields every request carries; services extend it with their own."""

    request_id: RequestId
    requested_at: Annotated[str, Field(max_length=40), AfterValidator(_plain_text)] | None = None
    caller: Caller = Caller()
    purpose: Purpose = Purpose()

    def subject_id(self) -> str | None:
        """The ID number of the citizen this request is about (audit key), if it names one.

        A kind whose requests name their subject elsewhere (e.g. civil status's
        ``by_person``) overrides this: the gateway asks, it knows no field names."""
        subject = getattr(self, "subject", None)
        value = getattr(subject, "id_number", None)
        return value if isinstance(value, str) and value else None

    def subject_birth_date(self) -> str | None:
        """The birth date (ISO, maybe partial) the request gives for its subject, if any: the
        gateway's match policy (``match.birth_date``) checks its precision."""
        value = getattr(getattr(self, "subject", None), "birth_date", None)
        return value if isinstance(value, str) and value else None
