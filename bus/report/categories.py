"""Personal-data categories of reply fields, and the reports' bilingual labels (pure).

An audit record lists the leaf paths a consumer got (``citizen.name.full``,
``persons.ethnicity``), never values. :func:`categories_of` names the categories of data
(PDP law: basic — name, birth date, ID number, address … — and sensitive) a path carries,
from its key names:

* the service's ``sensitive_fields`` first (``ethnicity_code`` → sensitive ``ethnicity``);
* the leaf key (``personal_id`` → ID number, ``full_name`` → name …);
* an enclosing key (``permanent_address.detail`` → address; ``father.full_name`` → name
  and family relations; ``death.cause`` → death);
* keys describing the answer itself (``status``, ``match_count`` …) carry none;
  anything else is ``other`` (a generic adapter's own keys), so nothing returned goes
  uncounted.
"""

from __future__ import annotations

from collections.abc import Iterable

from bus.config import ServiceConfig

__all__ = [
    "CATEGORY_LABELS",
    "LEGAL_BASIS_LABELS",
    "OTHER",
    "categories_of",
    "category_label",
    "field_categories",
    "legal_basis_label",
    "sensitive_categories",
]

OTHER = "other"

CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    "id_number": ("Số định danh cá nhân / CMND", "personal ID number"),
    "name": ("Họ và tên", "name"),
    "birth_date": ("Ngày, tháng, năm sinh", "date of birth"),
    "sex": ("Giới tính", "sex"),
    "nationality": ("Quốc tịch", "nationality"),
    "address": ("Nơi cư trú, quê quán", "address, place of origin"),
    "family": ("Quan hệ gia đình", "family relations"),
    "marital_status": ("Tình trạng hôn nhân", "marital status"),
    "death": ("Thông tin khai tử", "death"),
    "civil_registration": ("Thông tin đăng ký hộ tịch", "civil-status registration"),
    "verification": ("Kết quả xác thực thông tin", "identity verification result"),
    "ethnicity": ("Dân tộc (nhạy cảm)", "ethnic origin (sensitive)"),
    "religion": ("Tôn giáo (nhạy cảm)", "religion (sensitive)"),
    OTHER: ("Thông tin khác", "other"),
}
"""Category → (Vietnamese, English)."""

LEGAL_BASIS_LABELS: dict[str, tuple[str, str]] = {
    "LEGAL_DUTY": ("Thực hiện nhiệm vụ theo quy định của pháp luật", "legal duty"),
    "CONSENT": ("Sự đồng ý của chủ thể dữ liệu", "the data subject's consent"),
    "-": ("Không ghi nhận", "none recorded"),
}

_LEAF: dict[str, str] = {
    "personal_id": "id_number",
    "old_id": "id_number",
    "id_number": "id_number",
    "full_name": "name",
    "full": "name",
    "family": "name",
    "middle": "name",
    "given": "name",
    "name": "name",
    "signer_name": "name",
    "birth_date": "birth_date",
    "sex": "sex",
    "gender": "sex",
    "nationality": "nationality",
    "residence": "address",
    "address": "address",
    "verified": "verification",
    "role": "family",
}
_ENCLOSING: dict[str, str] = {
    "permanent_address": "address",
    "current_address": "address",
    "hometown": "address",
    "address": "address",
    "father": "family",
    "mother": "family",
    "spouse": "family",
    "guardian": "family",
    "death": "death",
    "marriage": "marital_status",
    "registration": "civil_registration",
    "foreign_registration": "civil_registration",
}
_ABOUT_THE_ANSWER = frozenset(
    {"status", "record_type", "match_count", "data_source", "source", "data_as_of"}
)


def categories_of(path: str, sensitive: Iterable[str] = ()) -> frozenset[str]:
    """The categories a returned leaf path carries (see the module docstring)."""
    keys = path.split(".")
    found: set[str] = set()
    names = tuple(sensitive)
    for key in keys:
        for name in names:
            if key == name or key.startswith(name + "_"):
                found.add(name)
    leaf = keys[-1]
    if leaf in _LEAF:
        found.add(_LEAF[leaf])
    for key in keys[:-1]:
        if key in _ENCLOSING:
            found.add(_ENCLOSING[key])
    if len(keys) == 1 and leaf in _ABOUT_THE_ANSWER:
        return frozenset(found)
    if not found and leaf not in _ABOUT_THE_ANSWER:
        found.add(OTHER)
    return frozenset(found)


def field_categories(paths: Iterable[str], sensitive: Iterable[str] = ()) -> set[str]:
    """Every category of ``paths``."""
    names = tuple(sensitive)
    out: set[str] = set()
    for path in paths:
        out |= categories_of(path, names)
    return out


def sensitive_categories(categories: Iterable[str], service: ServiceConfig | None) -> set[str]:
    """Those of ``categories`` that are the service's sensitive fields (default names if
    the service is gone from the config)."""
    names = set(service.sensitive_fields) if service is not None else {"ethnicity", "religion"}
    return {c for c in categories if c in names}


def category_label(category: str) -> str:
    """``Vietnamese (English)`` of a category; an unknown one (a configured sensitive
    field of a generic service) is shown by its own name."""
    vi, en = CATEGORY_LABELS.get(category, (category, category))
    return f"{vi} ({en})" if vi != en else vi


def legal_basis_label(basis: str) -> str:
    """``Vietnamese (English)`` of a legal basis code."""
    vi, en = LEGAL_BASIS_LABELS.get(basis, (basis, basis))
    return f"{vi} ({en})" if vi != en else vi
