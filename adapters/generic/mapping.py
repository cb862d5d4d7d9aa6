"""Declarative mapping between canonical JSON and an upstream's fields (pure, no I/O).

Shared by the generic ``soap`` and ``rest`` kinds. A *rule set* maps **target: source**::

    EnterpriseCode: enterprise_code                  # short form: a path
    Caller.UnitCode: {from: caller.unit_code, default: LGSP}
    Channel: {const: LGSP}
    BirthDate: {from: subject.birth_date, transform: "format_date:dd/MM/yyyy"}
    status: {from: Status, map: {DANG_HOAT_DONG: ACTIVE, GIAI_THE: DISSOLVED}}
    owners: {from: Owners.Owner, each: {name: Name, share: {from: SharePercent}}}

Paths are dotted names with list indices (``data[0].hoTen``) or JSON pointers
(``/data/0/hoTen``). Targets are dotted names (nested objects are created); sources may
also be the context values ``$now``, ``$today`` and ``$correlation_id``. Transforms are a
fixed set of safe functions (:mod:`adapters.generic.transforms`); nothing in the config is
evaluated. An absent source (or ``None``) leaves the target out, unless the rule has a
``default`` (used as-is) or is ``required`` (then it is a :class:`MappingError`).

The request side's declared fields and their strict model are :mod:`adapters.generic.reqschema`
(re-exported here: :class:`FieldSpec`, :func:`request_model`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from adapters.generic.reqschema import FieldSpec, canonical_paths, request_model, required_paths
from adapters.generic.transforms import (
    TRANSFORMS,
    MappingError,
    jsonable,
    run_transform,
    scalar_text,
)

__all__ = [
    "CONTEXT_SOURCES",
    "MISSING",
    "RESERVED_TARGETS",
    "FieldSpec",
    "MappingError",
    "Rule",
    "Rules",
    "apply_rules",
    "canonical_paths",
    "get_path",
    "jsonable",
    "parse_path",
    "request_model",
    "required_paths",
    "source_problems",
    "steps_of",
    "target_problems",
]

Step = str | int
CONTEXT_SOURCES = frozenset({"$now", "$today", "$correlation_id"})
"""Sources that are not in the request: the call's time (Vietnam) and correlation id."""
RESERVED_TARGETS = frozenset({"status", "source", "request_id", "correlation_id"})
"""Answer keys the bus sets itself; response mappings may not write them."""
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_DOTTED = re.compile(rf"{_NAME}(?:\[[0-9]+\])*(?:\.{_NAME}(?:\[[0-9]+\])*)*")
_TARGET = re.compile(rf"{_NAME}(?:\.{_NAME})*")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A source that is absent (or ``None``)."""


def parse_path(text: str) -> tuple[Step, ...]:
    """``a.b[0].c`` or ``/a/b/0/c`` as steps; raises ``ValueError`` for anything else."""
    if text.startswith("/"):
        steps: list[Step] = []
        for raw in text[1:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            steps.append(int(part) if part.isdigit() else part)
        return tuple(steps)
    if not _DOTTED.fullmatch(text):
        raise ValueError(f"{text!r} is not a path (a.b[0].c, or a JSON pointer /a/b/0/c)")
    out: list[Step] = []
    for part in text.split("."):
        name, *indices = part.split("[")
        out.append(name)
        out.extend(int(i.rstrip("]")) for i in indices)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def steps_of(text: str) -> tuple[Step, ...]:
    """:func:`parse_path`, remembered: rules look their paths up on every call."""
    return parse_path(text)


def get_path(data: Any, steps: tuple[Step, ...]) -> Any:
    """The value at ``steps``, or :data:`MISSING` (a list met where a name is asked: missing)."""
    node = data
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return MISSING
            node = node[step]
        elif isinstance(node, Mapping) and step in node:
            node = node[step]
        else:
            return MISSING
        if node is None:
            return MISSING
    return node


def _set_path(target: dict[str, Any], steps: tuple[str, ...], value: Any) -> None:
    node = target
    for step in steps[:-1]:
        child = node.setdefault(step, {})
        if not isinstance(child, dict):
            raise MappingError(f"{'.'.join(steps)}: its parent is already a value")
        node = child
    node[steps[-1]] = value


def _short_forms(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: {"from": v} if isinstance(v, str) else v for k, v in raw.items()}
    return raw


class Rule(BaseModel):
    """How one target gets its value."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str | None = Field(None, alias="from", description="source path, or $now/$today/…")
    const: Any = Field(None, description="a fixed value instead of a source")
    default: Any = Field(None, description="used as-is when the source is absent")
    transform: list[str] = Field(default_factory=list, description="applied in order")
    map: dict[str, Any] | None = Field(None, description="value translation table")
    each: Rules | None = Field(None, description="map every item of a list source")
    required: bool = Field(False, description="an absent source is an error")

    @model_validator(mode="before")
    @classmethod
    def _transform_list(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("transform"), str):
            return {**data, "transform": [data["transform"]]}
        return data

    @model_validator(mode="after")
    def _valid(self) -> Rule:
        has_const = "const" in self.model_fields_set
        if (self.from_ is None) == (not has_const):
            raise ValueError("give exactly one of 'from' (a path) or 'const'")
        if self.from_ is not None and self.from_ not in CONTEXT_SOURCES:
            if self.from_.startswith("$"):
                raise ValueError(f"unknown context value {self.from_} (known: $now, $today, …)")
            steps_of(self.from_)  # refuses a malformed path now
        for spec in self.transform:
            name = spec.partition(":")[0]
            if name not in TRANSFORMS:
                raise ValueError(f"unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")
            run_transform(spec, None)  # checks the argument (e.g. a date style) now
        if self.each is not None and (has_const or self.transform or self.map is not None):
            raise ValueError("'each' maps list items: it takes no const, transform or map")
        return self

    def value(self, source: Any, context: Mapping[str, Any], target: str) -> Any:
        """This rule's value for ``source`` (:data:`MISSING` to leave the target out)."""
        if self.from_ is None:
            value = self.const
        elif self.from_ in CONTEXT_SOURCES:
            value = context.get(self.from_, MISSING)
        else:
            value = get_path(source, steps_of(self.from_))
        if self.each is not None:
            items = [] if value is MISSING else value if isinstance(value, list) else [value]
            return [apply_rules(self.each, item, context, where=f"{target}[]") for item in items]
        if value is MISSING:
            if self.default is not None:
                return self.default
            if self.required:
                raise MappingError(f"{target}: no value")
            return MISSING
        for spec in self.transform:
            value = run_transform(spec, value, where=target)
        if self.map is not None:
            key = scalar_text(value)
            if key in self.map:
                return self.map[key]
            if self.default is not None:
                return self.default
            raise MappingError(f"{target}: a value the mapping does not list")
        return value


Rules = Annotated[dict[str, Rule], BeforeValidator(_short_forms)]
"""A rule set: target path → :class:`Rule` (a bare string is ``{from: …}``)."""
Rule.model_rebuild()


def apply_rules(
    rules: Mapping[str, Rule],
    source: Any,
    context: Mapping[str, Any],
    *,
    flat: bool = False,
    where: str = "",
) -> dict[str, Any]:
    """The target document ``rules`` make of ``source`` (``flat``: keys are not paths)."""
    out: dict[str, Any] = {}
    for target, rule in rules.items():
        value = rule.value(source, context, where + target)
        if value is MISSING:
            continue
        if flat:
            out[target] = value
        else:
            _set_path(out, tuple(target.split(".")), value)
    return out


def source_problems(
    rules: Mapping[str, Rule], known: set[str], where: str, prefix: str = ""
) -> list[str]:
    """Rules whose source is not a field of the canonical request (``known`` paths)."""
    problems = []
    for target, rule in rules.items():
        if rule.from_ is None or rule.from_ in CONTEXT_SOURCES:
            continue
        names = prefix + ".".join(s for s in parse_path(rule.from_) if isinstance(s, str))
        if names not in known:
            problems.append(
                f"{where}.{target}: {rule.from_!r} is not a request field "
                f"(declare it under fields, or use request_id, caller.*, purpose.*)"
            )
        elif rule.each is not None:
            problems += source_problems(rule.each, known, f"{where}.{target}", names + ".")
    return problems


def target_problems(rules: Mapping[str, Rule], where: str, *, reserved: bool) -> list[str]:
    """Targets that are not dotted names, clash with each other, or (answers) are reserved."""
    problems = []
    for target in rules:
        if not _TARGET.fullmatch(target):
            problems.append(f"{where}.{target}: a target is a dotted name (a.b.c)")
        elif reserved and target.split(".")[0] in RESERVED_TARGETS:
            problems.append(f"{where}.{target}: the bus sets {target.split('.')[0]!r} itself")
        elif any(other.startswith(target + ".") for other in rules):
            problems.append(f"{where}.{target}: both a value and the parent of other targets")
    return problems
