"""Declared request fields of a generic operation, as a strict pydantic model (pure).

``fields:`` in an operation's options declares what its request carries besides the parts
every request has (``request_id``, ``caller``, ``purpose``). :func:`request_model` builds
the model the gateway validates with: ``extra="forbid"``, strict types, NFC text without
control characters, and the shared validators of :mod:`bus.validation` by type name
(``personal_id``, ``old_id``, ``full_name``, ``partial_date``, ``sex``, ``id_type``, ``code``).
Each rejection's error type is its stable code (``INVALID_ID_NUMBER``, ``INVALID_DATE`` …).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bus.canonical import CanonicalRequest, Code, StrictModel
from bus.validation import FullName, IdType, OldId, PartialDate, PersonalId, Sex

__all__ = [
    "ACCOUNTABLE_PATHS",
    "FIELD_TYPES",
    "STRING_MAX",
    "AccountableRequest",
    "FieldSpec",
    "canonical_paths",
    "request_model",
    "required_paths",
]

STRING_MAX = 256
"""Longest ``string`` field when the config gives no ``max_length``."""
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

FieldType = Literal[
    "string",
    "integer",
    "number",
    "boolean",
    "date",
    "partial_date",
    "personal_id",
    "old_id",
    "full_name",
    "sex",
    "id_type",
    "code",
    "object",
    "list",
]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
"""Every ``type`` a declared field may have."""
_NAMED: dict[str, Any] = {
    "partial_date": PartialDate,
    "personal_id": PersonalId,
    "old_id": OldId,
    "full_name": FullName,
    "sex": Sex,
    "id_type": IdType,
    "code": Code,
}


def _nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _visible(value: str) -> str:
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise PydanticCustomError(
            "INVALID_FIELD", "text may not contain control or invisible characters"
        )
    return value


def _full_date(value: str) -> str:
    try:
        if _ISO_DATE.fullmatch(value):
            date.fromisoformat(value)
            return value
    except ValueError:
        pass
    raise PydanticCustomError("INVALID_DATE", "dates are YYYY-MM-DD (a real day)")


class FieldSpec(BaseModel):
    """One declared request field (``fields.<name>`` of an operation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType = "string"
    required: bool = False
    description: str = ""
    pattern: str | None = Field(None, description="string: a regular expression (linear-time)")
    min_length: int | None = Field(None, ge=0, le=10_000)
    max_length: int | None = Field(None, ge=1, le=10_000, description=f"default {STRING_MAX}")
    enum: list[str] | None = Field(None, min_length=1, description="string: allowed values")
    minimum: float | None = None
    maximum: float | None = None
    fields: dict[str, FieldSpec] | None = Field(None, description="object: its fields")
    items: FieldSpec | None = Field(None, description="list: what each item is")
    max_items: int = Field(100, ge=1, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        given = self.model_fields_set
        text_only = given & {"pattern", "min_length", "max_length", "enum"}
        if text_only and self.type != "string":
            raise ValueError(f"{', '.join(sorted(text_only))} only apply to type string")
        if given & {"minimum", "maximum"} and self.type not in ("integer", "number"):
            raise ValueError("minimum/maximum only apply to integer and number")
        if (self.type == "object") != bool(self.fields):
            raise ValueError("type object needs fields (and only an object has fields)")
        if (self.type == "list") != (self.items is not None):
            raise ValueError("type list needs items (and only a list has items)")
        for name in self.fields or {}:
            _check_name(name)
        return self


def _check_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name) or name.startswith("model_") or hasattr(BaseModel, name):
        raise ValueError(
            f"field name {name!r}: use lower-case letters, digits and _ "
            "(not a pydantic name such as json, copy, model_*)"
        )


class AccountableRequest(CanonicalRequest):
    """A request about people: the officer and the procedure/dossier must be named."""

    @model_validator(mode="after")
    def _accountable(self) -> AccountableRequest:
        # The access log needs a legal basis for every personal-data call (PDP law).
        if self.caller.officer_id is None:
            raise PydanticCustomError(
                "OFFICER_REQUIRED", "caller.officer_id (the officer's 12-digit ID) is required"
            )
        if self.purpose.procedure_code is None or self.purpose.dossier_id is None:
            raise PydanticCustomError(
                "PURPOSE_REQUIRED", "purpose.procedure_code and purpose.dossier_id are required"
            )
        return self


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)


def _annotation(spec: FieldSpec, model_name: str) -> Any:
    kind = spec.type
    if kind in _NAMED:
        return _NAMED[kind]
    if kind == "string" and spec.enum:
        return Literal[tuple(spec.enum)]
    if kind == "string":
        limits = Field(
            strict=True,
            pattern=spec.pattern,
            min_length=spec.min_length,
            max_length=spec.max_length or STRING_MAX,
        )
        # Field first: the limits then sit on the str schema itself, so the JSON Schema
        # (OpenAPI) shows them; the before-validator still runs first (NFC, then checks).
        return Annotated[str, limits, BeforeValidator(_nfc), AfterValidator(_visible)]
    if kind in ("integer", "number"):
        base = int if kind == "integer" else float
        return Annotated[base, Field(strict=True, ge=spec.minimum, le=spec.maximum)]
    if kind == "boolean":
        return Annotated[bool, Field(strict=True)]
    if kind == "date":
        return Annotated[str, Field(strict=True), AfterValidator(_full_date)]
    if kind == "object":
        return _model(model_name, spec.fields or {}, StrictModel)
    assert spec.items is not None
    return Annotated[list[_annotation(spec.items, model_name)], Field(max_length=spec.max_items)]  # type: ignore[misc]


def _model(name: str, fields: Mapping[str, FieldSpec], base: type[BaseModel]) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for field_name, spec in fields.items():
        annotation = _annotation(spec, name + _camel(field_name))
        if spec.required:
            definitions[field_name] = (annotation, Field(description=spec.description or None))
        else:
            definitions[field_name] = (
                annotation | None,
                Field(None, description=spec.description or None),
            )
    return create_model(name, __base__=base, **definitions)


def request_model(
    name_hint: str, fields: Mapping[str, FieldSpec], *, accountable: bool
) -> type[CanonicalRequest]:
    """The strict request model (``extra="forbid"``) of a generic operation.

    Its name (the OpenAPI schema's) is ``name_hint`` in CamelCase plus a digest of the
    fields: an adapter kind is not told the service's name, and two services declaring
    different fields must not share a schema name.
    """
    for name in fields:
        _check_name(name)
        if name in CanonicalRequest.model_fields:
            raise ValueError(f"field name {name!r} is part of every request already")
    base = AccountableRequest if accountable else CanonicalRequest
    spec = orjson.dumps(
        {k: v.model_dump(mode="json") for k, v in fields.items()}, option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.sha256(spec).hexdigest()[:6]
    model = _model(f"{_camel(name_hint)}Request{digest}", fields, base)
    assert issubclass(model, CanonicalRequest)
    return model


def _paths(model: type[BaseModel], prefix: str) -> set[str]:
    out: set[str] = set()
    for name, info in model.model_fields.items():
        out.add(prefix + name)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= _paths(sub, f"{prefix}{name}.")
    return out


def _declared(fields: Mapping[str, FieldSpec], prefix: str, only_required: bool) -> set[str]:
    out: set[str] = set()
    for name, spec in fields.items():
        if only_required and not spec.required:
            continue
        out.add(prefix + name)
        inner = spec.fields if spec.type == "object" else None
        if spec.type == "list" and spec.items is not None and not only_required:
            inner = spec.items.fields
        if inner:
            out |= _declared(inner, f"{prefix}{name}.", only_required)
    return out


def canonical_paths(fields: Mapping[str, FieldSpec]) -> set[str]:
    """Every path a request of these fields can have (list items without their index)."""
    return _paths(CanonicalRequest, "") | _declared(fields, "", only_required=False)


ACCOUNTABLE_PATHS = frozenset({"caller.officer_id", "purpose.procedure_code", "purpose.dossier_id"})
"""What an :class:`AccountableRequest` always carries."""


def required_paths(fields: Mapping[str, FieldSpec], *, accountable: bool) -> set[str]:
    """Paths present in every valid request (``request_id`` and required declared fields)."""
    out = {"request_id"} | _declared(fields, "", only_required=True)
    return out | ACCOUNTABLE_PATHS if accountable else out
