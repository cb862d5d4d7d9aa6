"""Canonical request models of the population service, and its routing.yaml options.

``population.lookup`` and ``population.verify`` (DOMAIN.md §5): the caller, the purpose and
the *subject* (ID + name + birth date, optionally sex). Everything is checked here, at the
gateway, with the shared validators of :mod:`bus.validation`; the worker validates again
(the message crossed the broker).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from adapters.generic.reqschema import AccountableRequest
from bus.canonical import StrictModel
from bus.config.secretlike import header_secret_problem
from bus.validation import (
    FullName,
    IdType,
    PartialDate,
    Sex,
    check_id_against_birth,
    check_old_id,
    check_personal_id,
)

__all__ = [
    "DEFAULT_FIELDS",
    "OPERATIONS",
    "SENSITIVE_FIELDS",
    "CitizenField",
    "OperationOptions",
    "PopulationLookup",
    "PopulationVerify",
    "ServiceOptions",
    "Subject",
]

TRA_CUU = "TraCuuThongTinCongDan"
XAC_THUC = "XacThucThongTinCongDan"
OPERATIONS = {"lookup": TRA_CUU, "verify": XAC_THUC}
"""Default C06 operation for each canonical operation name."""


class CitizenField(StrEnum):
    """Parts of a citizen record a lookup may ask for (data minimisation)."""

    PERSONAL_ID = "personal_id"
    OLD_ID = "old_id"
    NAME = "name"
    BIRTH_DATE = "birth_date"
    SEX = "sex"
    ETHNICITY = "ethnicity"
    FATHER = "father"
    MOTHER = "mother"
    PERMANENT_ADDRESS = "permanent_address"
    CURRENT_ADDRESS = "current_address"
    HOMETOWN = "hometown"


SENSITIVE_FIELDS = frozenset({CitizenField.ETHNICITY})
"""Sensitive personal data (PDP law): the ACL must grant these explicitly (DOMAIN §6.10)."""

DEFAULT_FIELDS = (CitizenField.PERSONAL_ID, CitizenField.NAME, CitizenField.BIRTH_DATE)
"""What a lookup returns when ``fields`` is not given."""


class Subject(StrictModel):
    """The person asked about."""

    id_type: IdType
    id_number: str
    full_name: FullName
    birth_date: PartialDate
    sex: Sex | None = None

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("id_type") == IdType.CMND9:
            return check_old_id(value)
        return check_personal_id(value)

    @model_validator(mode="after")
    def _cross_check(self) -> Subject:
        if self.id_type == IdType.CCCD12:
            check_id_against_birth(self.id_number, self.birth_date, self.sex)
        return self


class _PopulationRequest(AccountableRequest):
    # Accountable: C06 refuses a call without the officer (MaCanBo), and the access log
    # needs the procedure and dossier the lookup serves (PDP law: a legal basis per call).
    subject: Subject


class PopulationLookup(_PopulationRequest):
    """``population.lookup``: the citizen's record, limited to ``fields``."""

    fields: list[CitizenField] = Field(default_factory=lambda: list(DEFAULT_FIELDS))

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[CitizenField]) -> list[CitizenField]:
        if not value:
            raise PydanticCustomError("INVALID_FIELDS", "fields must name at least one field")
        return list(dict.fromkeys(value))  # duplicates dropped, order kept


class PopulationVerify(_PopulationRequest):
    """``population.verify``: does a citizen with this ID, name and birth date exist?"""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceOptions(_Options):
    """``services.<name>.options`` of a ``population_db`` service."""

    ma_dvc: str = Field(min_length=1, max_length=64, description="MaDVC: our caller code")
    ma_tich_hop: str = Field("037", min_length=1, max_length=16, description="MaTichHop")
    ma_don_vi: str | None = Field(None, description="MaDonVi when the caller gives no unit_code")
    name_form: Literal["upper", "upper_ascii"] = Field(
        "upper", description="HoVaTen as sent: upper-case, or upper-case without diacritics"
    )
    name_match: Literal["exact", "accent_insensitive"] = Field(
        "exact", description="how a record's name is compared with the one asked (MISMATCH)"
    )
    reveal_mismatch: bool = Field(
        False,
        description="MISMATCH names the disagreeing fields (full_name, birth_date …); off, "
        "since naming them lets a caller confirm a birth date in a few hundred guesses",
    )
    content_type: str = Field("application/xml; charset=utf-8", description="C06 wants this")
    soap_action: str = '""'
    extra_headers: dict[str, str] = Field(
        default_factory=dict,
        description="e.g. X-Road-Client, ESB_SOURCE_TYPE; a credential header (Authorization, "
        "X-Api-Key, Cookie …) only as env:NAME or file:PATH, read when the adapter is built",
    )

    @field_validator("extra_headers")
    @classmethod
    def _no_inline_secret(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            problem = header_secret_problem(name, value)
            if problem is not None:
                raise ValueError(problem)
        return headers


class OperationOptions(_Options):
    """``services.<name>.operations.<op>.options`` of a ``population_db`` service."""

    c06_operation: Literal["TraCuuThongTinCongDan", "XacThucThongTinCongDan"] | None = None
    ma_tich_hop: str | None = Field(None, min_length=1, max_length=16)

    def resolve(self, operation: str) -> str:
        """The C06 operation this canonical operation calls."""
        op = self.c06_operation or OPERATIONS.get(operation)
        if op is None:
            raise ValueError(
                f"operation {operation!r}: set options.c06_operation ({TRA_CUU} or {XAC_THUC})"
            )
        return op


def model_for(c06_operation: str) -> type[PopulationLookup] | type[PopulationVerify]:
    """The canonical request model of a C06 operation."""
    return PopulationLookup if c06_operation == TRA_CUU else PopulationVerify


class PopulationStatus(StrEnum):
    """What a population answer says about the subject asked for."""

    FOUND = "FOUND"
    NOT_FOUND = "NOT_FOUND"
    MISMATCH = "MISMATCH"


class PopulationLookupReply(BaseModel):
    """The answer to :class:`PopulationLookup` (``mapping.lookup_reply``)."""

    citizen_ids: ClassVar[tuple[str, ...]] = (
        "citizen.personal_id",
        "citizen.old_id",
        "citizen.father.personal_id",
        "citizen.mother.personal_id",
    )
    """The answer's fields holding citizens' ID numbers (each keyed in the audit record)."""

    status: PopulationStatus
    source: str
    data_as_of: str | None = None
    citizen: dict[str, Any] | None = Field(
        None, description="the asked-for fields of the record (FOUND only)"
    )
    mismatch: list[str] | None = Field(
        None, description="names of the fields that disagree with the record (MISMATCH only)"
    )


class PopulationVerifyReply(BaseModel):
    """The answer to :class:`PopulationVerify` (``mapping.verify_reply``)."""

    status: Literal["FOUND", "NOT_FOUND"]
    verified: bool
    source: str


def reply_for(c06_operation: str) -> type[PopulationLookupReply] | type[PopulationVerifyReply]:
    """The canonical answer model of a C06 operation."""
    return PopulationLookupReply if c06_operation == TRA_CUU else PopulationVerifyReply
