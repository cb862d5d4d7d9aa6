"""Canonical civil-status messages (DOMAIN.md §5): the lookup request and its answer.

The request is validated strictly at the gateway; every failure is a ``PydanticCustomError``
whose type is the stable error code (``INVALID_DATE``, ``INVALID_QUERY``,
``INVALID_RECORD_TYPE``, ``INVALID_ID_NUMBER``, ``INVALID_NAME``, ``INVALID_REGISTRATION``).
The answer describes what the MOJ holds, so its fields are plain (old registers are dirty:
an answer never fails validation because of a partial or odd value).

``IdNumber`` and ``PersonName`` are deliberately simple here; when ``bus.canonical`` grows
the shared validators, swapping them in is a one-line change to each alias below.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from adapters.common.dates import PartialDate, today_vn
from bus.canonical import CanonicalRequest, StrictModel
from bus.validation import FullName, check_old_id, check_personal_id

__all__ = [
    "AdminScheme",
    "ByPerson",
    "ByRegistration",
    "CivilStatusLookup",
    "CivilStatusLookupResult",
    "Death",
    "DeathNotice",
    "ForeignRegistration",
    "IdNumber",
    "LookupStatus",
    "Marriage",
    "PartialIsoDate",
    "Person",
    "PersonName",
    "RecordType",
    "Registration",
    "Role",
    "Sex",
]

MIN_YEAR = 1900
"""Dates before this are rejected in requests (DOMAIN.md §6.4 default)."""

_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,31}\Z")
# Letters (any script is checked by category), combining marks, spaces, apostrophe, hyphen, dot.


class RecordType(StrEnum):
    """Kind of civil-status registration."""

    BIRTH = "BIRTH"
    MARRIAGE = "MARRIAGE"
    DEATH = "DEATH"


class Role(StrEnum):
    """A person's part in a registration."""

    SUBJECT = "SUBJECT"
    MOTHER = "MOTHER"
    FATHER = "FATHER"
    HUSBAND = "HUSBAND"
    WIFE = "WIFE"
    DECEASED = "DECEASED"
    REQUESTER = "REQUESTER"


class Sex(StrEnum):
    """Sex as registered."""

    M = "M"
    F = "F"


class LookupStatus(StrEnum):
    """Outcome of a lookup that the MOJ answered."""

    FOUND = "FOUND"
    NOT_FOUND = "NOT_FOUND"


class AdminScheme(StrEnum):
    """Which generation of GSO administrative codes an authority code belongs to."""

    GSO_PRE2025 = "GSO_PRE2025"
    """Province / district / commune codes in force until 30 Jun 2025."""
    GSO_2025 = "GSO_2025"
    """Two-level province / ward-commune codes from 1 Jul 2025."""


def _partial_date(value: str) -> str:
    try:
        parsed = PartialDate.parse_iso(value)
    except ValueError:
        raise PydanticCustomError(
            "INVALID_DATE", "dates are YYYY, YYYY-MM or YYYY-MM-DD and must exist"
        ) from None
    if parsed.year < MIN_YEAR:
        raise PydanticCustomError("INVALID_DATE", "dates before 1900 are not accepted")
    if parsed.earliest() > today_vn():
        raise PydanticCustomError("INVALID_DATE", "the date is in the future")
    return value


def _id_number(value: str) -> str:
    # The shared checks: a 12-digit CCCD by its structure and prefix, else a 9-digit CMND.
    return check_personal_id(value) if len(value) == 12 else check_old_id(value)


def _registration_ref(value: str) -> str:
    if not _REF_RE.fullmatch(value):
        raise PydanticCustomError(
            "INVALID_REGISTRATION",
            "registration codes are 1-32 ASCII letters, digits and . _ / - characters",
        )
    return value


def _record_type(value: Any) -> Any:
    if not isinstance(value, str) or value not in RecordType.__members__:
        raise PydanticCustomError(
            "INVALID_RECORD_TYPE", "record_type is one of BIRTH, MARRIAGE, DEATH"
        )
    return value


PartialIsoDate = Annotated[str, AfterValidator(_partial_date)]
"""``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; a real date, not in the future, from 1900."""
IdNumber = Annotated[str, AfterValidator(_id_number)]
"""12-digit CCCD (structure and province/country prefix) or 9-digit CMND (``bus.validation``)."""
PersonName = FullName
"""A person's full name: the shared check of ``bus.validation`` (NFC, no digits, no mojibake)."""
RegistrationRef = Annotated[str, AfterValidator(_registration_ref)]


class ByRegistration(StrictModel):
    """Find the registration by where and under which number it was registered."""

    authority_code: RegistrationRef
    number: RegistrationRef
    book: RegistrationRef | None = None
    registration_date: PartialIsoDate | None = None


class ByPerson(StrictModel):
    """Find the registration of a person (subject, spouse or deceased) by their ID."""

    id_number: IdNumber
    full_name: PersonName | None = None
    birth_date: PartialIsoDate | None = None


class CivilStatusLookup(CanonicalRequest):
    """``civil_status.lookup``: one birth, marriage or death registration."""

    record_type: Annotated[RecordType, BeforeValidator(_record_type)]
    by_registration: ByRegistration | None = None
    by_person: ByPerson | None = None

    @model_validator(mode="after")
    def _one_query(self) -> CivilStatusLookup:
        if (self.by_registration is None) == (self.by_person is None):
            raise PydanticCustomError(
                "INVALID_QUERY", "give exactly one of by_registration or by_person"
            )
        return self

    def subject_id(self) -> str | None:
        """The person looked up by ID (a lookup by registration names nobody up front)."""
        return self.by_person.id_number if self.by_person is not None else None

    def subject_birth_date(self) -> str | None:
        """The birth date given with ``by_person`` (the match policy checks it)."""
        return self.by_person.birth_date if self.by_person is not None else None


class Registration(StrictModel):
    """Where, when and under which number a registration was made (← so, quyenSo …)."""

    number: str | None = None
    book: str | None = None
    page: str | None = None
    date: str | None = Field(None, description="partial ISO date")
    type_code: int | None = Field(None, description="MOJ loaiDangKy, passed through")
    authority_code: str | None = None
    admin_scheme: AdminScheme | None = None
    signer_name: str | None = None
    signer_title: str | None = None


class Person(StrictModel):
    """Someone named in the registration."""

    role: Role
    full_name: str | None = None
    birth_date: str | None = Field(None, description="partial ISO date")
    sex: Sex | None = None
    personal_id: str | None = None
    nationality: str | None = None
    ethnicity: str | None = Field(None, description="ethnic code: sensitive personal data")
    residence: str | None = None


class DeathNotice(StrictModel):
    """The death notice the registration relied on (← gbt*)."""

    type: int | None = None
    number: str | None = None
    date: str | None = None
    issuer: str | None = None


class Death(StrictModel):
    """Facts of a death (← nktNgayChet, nktGioPhutChet, nktNoiChet, nktNguyenNhanChet)."""

    date: str | None = None
    time: str | None = Field(None, description="HH:MM, 24-hour")
    place: str | None = None
    cause: str | None = None
    notice: DeathNotice | None = None


class Marriage(StrictModel):
    """Facts of a marriage (← ngayXacLapQuanHeHonNhan, tinhTrangKetHon, huyKetHon)."""

    established_on: str | None = None
    status: str | None = Field(None, description="MOJ tinhTrangKetHon code, passed through")
    annulled: bool = False


class ForeignRegistration(StrictModel):
    """A registration made abroad and recorded in Vietnam (← *NuocNgoai)."""

    number: str | None = None
    date: str | None = None
    authority: str | None = None
    country: str | None = None


class CivilStatusLookupResult(StrictModel):
    """The answer to :class:`CivilStatusLookup`; ``NOT_FOUND`` is a normal answer."""

    citizen_ids: ClassVar[tuple[str, ...]] = ("persons.personal_id",)
    """Every person's ID (registrant, parents, spouses, deceased, requester): each keyed in
    the audit record."""

    record_type: RecordType
    status: LookupStatus
    registration: Registration | None = None
    persons: list[Person] = Field(default_factory=list)
    death: Death | None = None
    marriage: Marriage | None = None
    foreign_registration: ForeignRegistration | None = None
    match_count: int = Field(0, description="registrations matched; the latest is returned")
    data_source: str = "MOJ_CIVIL_STATUS"
