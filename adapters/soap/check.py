"""Config checks of a ``soap`` service against its WSDL (pure: the WSDL is already parsed).

Every mapping path is walked through the operation's schema as zeep describes it, so an
operator hears about a misspelt element, a repeated element used without an index or
``each``, or a required element nothing fills — at ``lgsp-bus config validate``, with the
YAML path — rather than as a failed call.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.common.soap import SchemaNode, SoapCodec
from adapters.generic.mapping import (
    Rule,
    canonical_paths,
    parse_path,
    required_paths,
    source_problems,
    target_problems,
)
from adapters.generic.shared import operation_model
from adapters.soap.options import SoapOperationOptions
from bus.config import ServiceConfig

__all__ = ["operation_problems"]


def _walk(schema: Mapping[str, SchemaNode], path: str) -> tuple[SchemaNode | None, str | None]:
    """The node ``path`` names in ``schema``, or why it names none."""
    children: Mapping[str, SchemaNode] | None = schema
    node: SchemaNode | None = None
    shown = ""
    pending_list = False
    for step in parse_path(path):
        if isinstance(step, int):
            if node is None or not node.repeated:
                return None, f"{shown or 'the reply'} does not repeat: [{step}] cannot apply"
            pending_list = False
            continue
        if pending_list:
            return None, f"{shown} repeats: write {shown}[0], or map the list with each"
        if children is None:
            return None, f"{shown} is a simple value: it has no {step!r}"
        node = children.get(step)
        if node is None:
            known = ", ".join(sorted(children)) or "nothing"
            where = f"{shown} has" if shown else "it has"
            return None, f"no element {step!r} here ({where}: {known})"
        shown = f"{shown}.{step}" if shown else step
        pending_list = node.repeated
        children = node.children
    return node, None


def _read_problems(
    rules: Mapping[str, Rule], schema: Mapping[str, SchemaNode], where: str
) -> list[str]:
    problems = []
    for target, rule in rules.items():
        if rule.from_ is None or rule.from_.startswith("$"):
            continue
        node, why = _walk(schema, rule.from_)
        if why is not None:
            problems.append(f"{where}.{target}: {rule.from_!r}: {why}")
        elif rule.each is not None and node is not None:
            problems += _read_problems(rule.each, node.children or {}, f"{where}.{target}")
    return problems


def _write_problems(
    rules: Mapping[str, Rule],
    schema: Mapping[str, SchemaNode],
    where: str,
    required: set[str],
    prefix: str = "",
) -> list[str]:
    problems = []
    for target, rule in rules.items():
        node, why = _walk(schema, target)
        if why is not None:
            problems.append(f"{where}.{target}: {why}")
            continue
        assert node is not None
        if rule.each is not None:
            problems += _write_problems(rule.each, node.children or {}, f"{where}.{target}", set())
        elif node.required and rule.from_ and not rule.from_.startswith("$"):
            names = ".".join(s for s in parse_path(rule.from_) if isinstance(s, str))
            if rule.default is None and prefix + names not in required:
                problems.append(
                    f"{where}.{target}: the WSDL requires it but {rule.from_!r} is optional "
                    "in the request: make that field required, or give a default"
                )
    problems += [
        f"{where}: the WSDL requires {p}, which nothing maps" for p in _unmapped(schema, set(rules))
    ]
    return problems


def _unmapped(schema: Mapping[str, SchemaNode], targets: set[str], prefix: str = "") -> list[str]:
    out = []
    for name, node in schema.items():
        path = prefix + name
        inside = any(t.startswith(path + ".") for t in targets)
        if node.required and not node.attribute and path not in targets and not inside:
            out.append(path)
        elif inside and node.children and not node.repeated:
            out += _unmapped(node.children, targets, path + ".")
    return out


def operation_problems(
    service_name: str,
    service: ServiceConfig,
    name: str,
    opts: SoapOperationOptions,
    codec: SoapCodec,
) -> list[str]:
    """Problems of one operation's options against the WSDL, as ``path: message`` lines."""
    where = f"operations.{name}.options"
    if opts.operation not in codec.operations():
        known = ", ".join(codec.operations())
        return [
            f"{where}.operation: the WSDL has no operation {opts.operation!r} "
            f"on port {codec.port_name} (it has: {known})"
        ]
    problems: list[str] = []
    try:
        operation_model(service, name, opts)
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}.fields: {exc}")
    accountable = service.personal_data if opts.accountable is None else opts.accountable
    problems += source_problems(opts.request, canonical_paths(opts.fields), f"{where}.request")
    problems += target_problems(opts.request, f"{where}.request", reserved=False)
    problems += target_problems(opts.response, f"{where}.response", reserved=True)
    required = required_paths(opts.fields, accountable=accountable)
    problems += _write_problems(
        opts.request, codec.input_schema(opts.operation), f"{where}.request", required
    )
    output = codec.output_schema(opts.operation)
    problems += _read_problems(opts.response, output, f"{where}.response")
    for label, rule in (("not_found", opts.not_found), ("app_status", opts.app_status)):
        path = getattr(rule, "path", None)
        if path is not None and (why := _walk(output, path)[1]) is not None:
            problems.append(f"{where}.{label}.path: {path!r}: {why}")
    if opts.not_found is not None and opts.not_found.status:
        problems.append(f"{where}.not_found.status: HTTP statuses are for rest; use faults")
    return problems
