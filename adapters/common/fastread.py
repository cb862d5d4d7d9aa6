"""Schema-compiled reader of SOAP replies: the dict zeep would give, by a direct lxml walk.

Why: zeep's schema-driven read of a reply costs ≈400 µs per reply on the bench machine
for the generic kind's enterprise lookup (``bench/generic_cost.py``), nearly all of the
``soap`` kind's own CPU per call. :func:`compile_reader` turns the operation's output type
(zeep's parsed XSD) into a plan once, when the codec is built; :meth:`Reader.read` walks an
already safely parsed envelope with it.

The plan covers plain shapes only: complex types that are one ``xs:sequence`` of elements
(no choice, group, any, simple content or substitution), attributes of simple type, and
simple leaves whose values zeep converts with the type's own ``pythonvalue``. A type outside
that makes :func:`compile_reader` return ``None`` and zeep reads every reply as before.
At run time the walk gives up (:meth:`Reader.read` returns ``None``, the caller uses zeep,
which decides as it always did, including every schema error) on anything it is not sure
zeep would read the same way: an unknown, repeated or out-of-order element, a missing
required one, an undeclared attribute (``xsi:nil``, ``xsi:type``), mixed or stray text,
a leaf with children, a value its type cannot convert. Faults never come here.
``tests/unit/adapters/test_soap_fastread.py`` proves the output equal to zeep's over
generated replies.
"""

# zeep ships py.typed but leaves most functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree

__all__ = ["Reader", "compile_reader"]

_MAX_DEPTH = 16


class _Unexpected(Exception):
    """The reply is not in a shape this reader is sure about: let zeep read it."""


class _Unsupported(Exception):
    """The schema has a construct the plan does not cover."""


@dataclass(frozen=True, slots=True)
class _Child:
    position: int
    name: str
    plan: _Complex | Callable[[str], Any]
    """A complex plan, or the simple type's ``pythonvalue``."""
    repeated: bool
    max_occurs: int | None


@dataclass(frozen=True, slots=True)
class _Complex:
    children: dict[str, _Child]
    """By element tag (Clark notation)."""
    order: tuple[_Child, ...]
    required: frozenset[int]
    attributes: tuple[tuple[str, str, Callable[[str], Any]], ...]
    """(result key, attribute key, pythonvalue)."""
    empty: bool
    """No elements nor attributes declared: zeep reads it as ``None``."""


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _text(value: str) -> str:
    return value


def _simple(xsd_type: Any) -> Callable[[str], Any] | None:
    from zeep.xsd.types.builtins import String
    from zeep.xsd.types.simple import AnySimpleType

    if not isinstance(xsd_type, AnySimpleType):
        return None
    if type(xsd_type).pythonvalue is String.pythonvalue:
        return _text  # zeep keeps an xs:string (and its restrictions) as it is
    return xsd_type.pythonvalue


def _compile(xsd_type: Any, depth: int) -> _Complex:
    from zeep.xsd.elements.element import Element
    from zeep.xsd.types.complex import ComplexType

    if not isinstance(xsd_type, ComplexType) or depth > _MAX_DEPTH:
        raise _Unsupported
    if type(xsd_type).parse_xmlelement is not ComplexType.parse_xmlelement:
        raise _Unsupported  # zeep's per-schema classes must not change how it reads
    nested = xsd_type.elements_nested
    if getattr(xsd_type, "_array_type", None) or len(nested) > 1:
        raise _Unsupported
    if isinstance(getattr(xsd_type, "_element", None), Element):
        raise _Unsupported  # simple content
    children: list[_Child] = []
    tags: dict[str, _Child] = {}
    required: set[int] = set()
    for position, element in enumerate(_sequence(nested)):
        if type(element) is not Element or element.nillable:
            raise _Unsupported
        max_occurs = element.max_occurs
        if max_occurs != "unbounded" and not isinstance(max_occurs, int):
            raise _Unsupported
        leaf = _simple(element.type)
        plan = leaf if leaf is not None else _compile(element.type, depth + 1)
        limit = None if max_occurs == "unbounded" else int(max_occurs)
        child = _Child(position, element.attr_name, plan, limit is None or limit > 1, limit)
        children.append(child)
        tags[element.qname.text] = child
        if isinstance(element.min_occurs, int) and element.min_occurs >= 1:
            required.add(position)
    if len(tags) != len(children) or len({c.name for c in children}) != len(children):
        raise _Unsupported
    attributes = []
    for name, attribute in xsd_type.attributes:
        convert = _simple(getattr(attribute, "type", None))
        if not getattr(attribute, "name", None) or convert is None:
            raise _Unsupported  # anyAttribute or an odd attribute type
        attributes.append((name, attribute.qname.text, convert))
    return _Complex(
        tags,
        tuple(children),
        frozenset(required),
        tuple(attributes),
        not children and not attributes,
    )


def _sequence(nested: list[tuple[str, Any]]) -> list[Any]:
    from zeep.xsd.elements.indicators import Sequence

    if not nested:
        return []
    (_, sequence) = nested[0]
    if type(sequence) is not Sequence or sequence.max_occurs != 1 or sequence.min_occurs != 1:
        raise _Unsupported
    return list(sequence)


def _leaf(el: etree._Element, convert: Callable[[str], Any]) -> Any:
    if len(el) or el.attrib:
        raise _Unexpected
    text = el.text
    if text is None:
        return None
    if convert is _text:
        return text
    try:
        return convert(text)
    except (TypeError, ValueError, ArithmeticError):
        raise _Unexpected from None  # zeep logs and drops it: keep that path as it is


def _value(el: etree._Element, plan: _Complex | Callable[[str], Any]) -> Any:
    return _read(el, plan) if isinstance(plan, _Complex) else _leaf(el, plan)


def _read(el: etree._Element, plan: _Complex) -> dict[str, Any] | None:
    if not _blank(el.text):
        raise _Unexpected
    attrib = el.attrib
    if plan.empty or (not len(el) and not attrib):
        if plan.empty and (len(el) or attrib):
            raise _Unexpected
        return None  # zeep reads an empty nested complex element as None
    found = _children(el, plan)
    out: dict[str, Any] = {}
    for c in plan.order:
        out[c.name] = found.get(c.position, [] if c.repeated else None)
    _attributes(attrib, plan, out)
    return out


def _children(el: etree._Element, plan: _Complex) -> dict[int, Any]:
    """The values of ``el``'s child elements by position in the sequence."""
    found: dict[int, Any] = {}
    last = -1
    for child in el:
        tail = child.tail
        if tail is not None and not tail.isspace():
            raise _Unexpected
        hit = plan.children.get(child.tag)  # type: ignore[arg-type]
        if hit is None:
            raise _Unexpected
        position = hit.position
        if hit.repeated and position == last:
            items = found[position]
            if hit.max_occurs is not None and len(items) >= hit.max_occurs:
                raise _Unexpected
            items.append(_value(child, hit.plan))
            continue
        if position <= last:
            raise _Unexpected  # repeated or out of order (comments are stripped)
        last = position
        value = _value(child, hit.plan)
        found[position] = [value] if hit.repeated else value
    if not plan.required.issubset(found):
        raise _Unexpected  # zeep's answer for a missing required element: let it decide
    return found


def _attributes(attrib: Any, plan: _Complex, out: dict[str, Any]) -> None:
    seen = 0
    for name, key, convert in plan.attributes:
        raw = attrib.get(key)
        if raw is None:
            out[name] = None
            continue
        seen += 1
        try:
            out[name] = convert(raw)
        except (TypeError, ValueError, ArithmeticError):
            raise _Unexpected from None
    if seen != len(attrib):
        raise _Unexpected  # an attribute the type does not declare (xsi:nil, xsi:type, …)


@dataclass(frozen=True, slots=True)
class Reader:
    """The compiled reader of one operation's reply body element."""

    tag: str
    plan: _Complex

    def read(self, body: etree._Element) -> dict[str, Any] | None:
        """The reply dict from a fault-free ``soap:Body``, or ``None`` (then use zeep)."""
        if len(body) != 1 or body.attrib or not _blank(body.text):
            return None
        element = body[0]
        if element.tag != self.tag or not _blank(element.tail):
            return None
        if not len(element) and not element.attrib:
            return None  # zeep reads an empty top element as all-None, not as None
        try:
            data = _read(element, self.plan)
        except _Unexpected:
            return None
        return data


def compile_reader(output: Any) -> Reader | None:
    """The reader for a zeep operation's ``output`` message, or ``None`` if its shape is not
    covered (zeep then reads every reply of that operation)."""
    from zeep.xsd.elements.element import Element

    body = getattr(output, "body", None)
    if type(body) is not Element or getattr(output, "_is_body_wrapped", True):
        return None  # only document/literal with one part element: the common case
    try:
        return Reader(body.qname.text, _compile(body.type, 0))
    except (_Unsupported, AttributeError, TypeError):
        return None
