"""YAML with positions: every node's line:column by path, duplicate keys reported, errors located.

Pydantic reports a location as a tuple path; this module turns it into
``services.civil-status.operations.lookup.timeout_s (line 12:18)`` so an operator can find it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "ConfigIssue", "YamlDocument", "issues_from_validation"]

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, at a YAML path and (when known) a line:column."""

    path: PathKey
    message: str
    line: int | None = None
    column: int | None = None

    @property
    def dotted(self) -> str:
        """The path as ``a.b[0].c`` (``<root>`` for the document itself)."""
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += f".{part}" if out else str(part)
        return out or "<root>"

    def __str__(self) -> str:
        where = f" (line {self.line}:{self.column})" if self.line is not None else ""
        return f"{self.dotted}{where}: {self.message}"

    @classmethod
    def at(cls, doc: YamlDocument | None, path: PathKey, message: str) -> ConfigIssue:
        """An issue located through ``doc`` (the nearest known ancestor of ``path``)."""
        line, column = doc.position(path) if doc else (None, None)
        return cls(path, message, line, column)


class ConfigError(Exception):
    """The config is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings/sequences a config may have (routing.yaml needs about 8)."""
MAX_YAML_NODES = 200_000
"""Most nodes a config may expand to, aliases counted each time they are used: a
"billion laughs" alias bomb of a few KB is refused instead of expanded (25 s and 3 GiB
before)."""


def _too_deep() -> ConfigIssue:
    return ConfigIssue((), f"YAML nests deeper than {MAX_YAML_DEPTH} levels")


def _check_shape(root: yaml.Node) -> None:
    """Depth and expanded size within bounds, walked iteratively (no recursion)."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise ConfigError(
                [
                    ConfigIssue(
                        (),
                        f"YAML expands to more than {MAX_YAML_NODES} nodes (aliases counted "
                        "each time they are used)",
                    )
                ]
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError([_too_deep()])
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


@dataclass
class YamlDocument:
    """Parsed YAML data plus the position of every mapping key and sequence item."""

    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[ConfigIssue] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> YamlDocument:
        """Parse YAML text; raises :class:`ConfigError` on syntax errors and duplicate keys."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except RecursionError:
            raise ConfigError([_too_deep()]) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            col = mark.column + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            # Where the broken construct began (e.g. an unclosed [ … ]) helps more than
            # where the parser gave up.
            context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and start is not None and start.line + 1 != line:
                problem += f" ({context} that began at line {start.line + 1}:{start.column + 1})"
            raise ConfigError([ConfigIssue((), f"YAML syntax: {problem}", line, col)]) from None
        doc = cls(data=None)
        if node is None:
            doc.data = {}
            return doc
        _check_shape(node)
        doc._walk(node, ())
        if doc.duplicates:
            raise ConfigError(doc.duplicates)
        doc.data = yaml.safe_load(text)
        return doc

    @classmethod
    def from_file(cls, path: Path) -> YamlDocument:
        """Read and parse a YAML file."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([ConfigIssue((), f"cannot read {path}: {exc.strerror}")]) from None
        return cls.from_text(text, str(path))

    def _walk(self, node: yaml.Node, path: PathKey) -> None:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append(
                        ConfigIssue(
                            child,
                            "duplicate key: it is defined more than once here",
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                        )
                    )
                seen.add(key)
                self._walk(value_node, child)
                # Point errors about a key at the key itself, not at its value.
                self.positions[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def position(self, path: PathKey) -> tuple[int | None, int | None]:
        """Line:column of ``path``, or of its nearest ancestor that exists in the file."""
        probe = tuple(path)
        while True:
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return None, None
            probe = probe[:-1]


NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""The pattern of every name in routing.yaml (services, upstreams, consumers, operations)."""


def _readable(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (not part of routing.yaml's schema; check the spelling)"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return (
            "not a valid name: lower-case letters, digits, '-' and '_', starting with a "
            "letter, at most 63 characters"
        )
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        expected = err.get("ctx", {}).get("expected_tags")
        return f"unknown kind {tag!r}; expected one of {expected}"
    if kind == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    message = str(err["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be ", "must be ", 1)


def _clean_loc(loc: Sequence[Any], data: Any) -> PathKey:
    """Drop the steps pydantic adds that are not in the file (union tags, branch names)."""
    out: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif (not last and data is not None) or (
            isinstance(part, str) and (part[:1].isupper() or "[" in part)
        ):
            continue  # e.g. 'bearer' for a discriminated union, 'function-after[…]'
        out.append(part)
    return tuple(out)


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """The models an annotation may hold (through Optional, unions, Annotated, list, dict),
    and whether they sit under a mapping (so the next path step is a key, not a field)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is dict and len(args) == 2:
        return _models_in(args[1])[0], True
    if origin in (list, tuple, typing.Union, types.UnionType):
        found = [_models_in(arg) for arg in args]
        return [m for models, _ in found for m in models], any(keyed for _, keyed in found)
    return [], False


def _fields_at(model: type[BaseModel], path: PathKey) -> set[str]:
    """Field names allowed at ``path`` (the parent of an unknown field), found by walking
    the models, so a field added later is suggested without anyone listing it here."""
    current: list[type[BaseModel]] = [model]
    skip_key = False
    for part in path:
        if isinstance(part, int):
            continue
        if skip_key:
            skip_key = False
            continue
        following: list[type[BaseModel]] = []
        for m in current:
            info = m.model_fields.get(part)
            if info is not None:
                models, keyed = _models_in(info.annotation)
                following += models
                skip_key = skip_key or keyed
        current = following
    return {name for m in current for name in m.model_fields}


def _suggest(model: type[BaseModel] | None, path: PathKey) -> str:
    if model is None or not path or not isinstance(path[-1], str):
        return ""
    close = difflib.get_close_matches(path[-1], sorted(_fields_at(model, path[:-1])), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def issues_from_validation(
    exc: ValidationError, doc: YamlDocument | None, model: type[BaseModel] | None = None
) -> list[ConfigIssue]:
    """Every pydantic error as a located :class:`ConfigIssue` (``model``: the root model,
    for "did you mean" suggestions on unknown fields)."""
    issues: list[ConfigIssue] = []
    for err in exc.errors():
        path = _clean_loc(err["loc"], doc.data if doc else None)
        message = _readable(dict(err))
        suggestion = _suggest(model, path) if err["type"] == "extra_forbidden" else ""
        if suggestion:
            message = f"unknown field: {suggestion}"
        if not path:
            # Cross-reference checks report "a.b.c names …; d.e names …" at the root.
            for part in message.split("; "):
                token = part.split(" ", 1)[0]
                ref_path: PathKey = tuple(token.split(".")) if "." in token else ()
                issues.append(ConfigIssue.at(doc, ref_path, part))
            continue
        issues.append(ConfigIssue.at(doc, path, message))
    return issues
