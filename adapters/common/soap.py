"""zeep over a local WSDL: build SOAP 1.1 requests, read replies and faults. No I/O on the wire.

Shared by the C06 adapter (:mod:`adapters.population_db.codec`) and the generic ``soap``
kind (:mod:`adapters.soap.kind`). Why zeep only builds and parses: the bytes travel through
:class:`adapters.http.UpstreamHttp` like every other upstream call, so timeouts, the
response-size limit, TLS, auth headers and error mapping have one implementation. zeep
still earns its place: it validates both directions against the XSD (strict mode) and
knows the WSDL's shape, which lets ``lgsp-bus config validate`` check a mapping against it.

The WSDL and everything it imports are read from files under the WSDL's own directory,
never from the network (:class:`LocalTransport`). Replies are parsed first by
:mod:`adapters.common.xmlsafe` (DOCTYPE/entities refused before lxml sees them), and only then
handed to zeep as an element tree. Fault texts are never copied into errors: they may
hold personal data; only fault codes that look like codes are kept.
"""

# zeep ships py.typed but leaves most functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from lxml import etree

from adapters.common.auth import SoapSecurity
from adapters.common.fastread import Reader, compile_reader
from adapters.common.http import SAFE_CODE, error_for_status
from adapters.common.xmlsafe import parse_upstream, zeep_settings
from bus.errors import (
    InternalError,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)

__all__ = [
    "SOAP11_ENV",
    "WSSE_NS",
    "FaultPolicy",
    "LocalTransport",
    "SchemaNode",
    "SoapCodec",
    "SoapFault",
    "WsdlError",
]

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_MAX_SCHEMA_DEPTH = 16


class WsdlError(ValueError):
    """The WSDL cannot be used; the message is for an operator (no stack, no document text)."""


class LocalTransport:
    """Lets zeep read files under one directory and nothing else (no network, no ``..``)."""

    binding_classes = None

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def load(self, url: str) -> bytes:
        """The bytes of a WSDL/XSD file the WSDL refers to."""
        if "://" in url or url.startswith("file:"):
            raise WsdlError(self.remote(url))
        path = Path(url).resolve()
        if not path.is_relative_to(self._root):
            raise WsdlError("it refers to a file outside the WSDL's directory")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise WsdlError(f"cannot read {path.name}: {exc.strerror}") from None

    @staticmethod
    def remote(url: str) -> str:
        """What to tell an operator whose WSDL imports a remote document."""
        return (
            f"it refers to a remote document ({url[:120]}); download it and place it "
            "beside the WSDL, with a relative schemaLocation"
        )

    def post_xml(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: requests go through :class:`~adapters.http.UpstreamHttp`."""
        raise RuntimeError("zeep must not send: requests go through UpstreamHttp")


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.1 fault, reduced to what is safe to keep (codes only, never the text)."""

    code: str
    """Local part of ``faultcode`` (``Client``, ``Server.Busy``), or ``?`` if odd."""
    upstream_code: str | None = None
    """The upstream's own error code from ``<detail>`` (e.g. C06 ``MaLoi``), if code-like."""
    namespace: str | None = None
    """Namespace of the ``faultcode`` prefix (WS-Security faults use ``WSSE_NS``)."""

    @classmethod
    def of(
        cls, faultcode: str | None, upstream_code: str | None, namespace: str | None
    ) -> SoapFault:
        """Build from raw values, dropping anything that does not look like a code."""
        local = (faultcode or "").strip().rpartition(":")[2]
        code = upstream_code.strip() if upstream_code else None
        return cls(
            local if SAFE_CODE.fullmatch(local) else "?",
            code if code and SAFE_CODE.fullmatch(code) else None,
            namespace,
        )

    def matches(self, codes: Iterable[str]) -> bool:
        """True if the fault code or the upstream's code is one of ``codes``."""
        wanted = set(codes)
        return self.code in wanted or (
            self.upstream_code is not None and self.upstream_code in wanted
        )


@dataclass(frozen=True)
class FaultPolicy:
    """How one upstream's SOAP faults map into :mod:`bus.errors`.

    Order: ``auth`` codes (or a WS-Security fault) → ``UPSTREAM_AUTH_FAILED``; ``transient``
    → ``UPSTREAM_UNAVAILABLE`` (retried); ``rejected`` or a ``Client…`` fault code →
    ``UPSTREAM_REJECTED``; anything else → ``UPSTREAM_ERROR`` (not retried).
    """

    what: str
    """How errors name the upstream (``C06``, a service name)."""
    detail_code: str | None = None
    """Local name of the element under ``<detail>`` that carries the upstream's code."""
    transient: frozenset[str] = field(default_factory=frozenset)
    auth: frozenset[str] = field(default_factory=frozenset)
    rejected: frozenset[str] = field(default_factory=frozenset)

    def error(self, fault: SoapFault) -> UpstreamError:
        """The bus error for ``fault``."""
        detail = {"fault_code": fault.code}
        if fault.upstream_code:
            detail["upstream_code"] = fault.upstream_code
        suffix = f" ({fault.upstream_code})" if fault.upstream_code else ""
        what = self.what
        if fault.matches(self.auth) or fault.namespace == WSSE_NS:
            return UpstreamAuthFailed(
                f"{what} refused the bus's credentials{suffix}", detail=detail
            )
        if fault.matches(self.transient):
            return UpstreamUnavailable(f"{what} is temporarily unavailable{suffix}", detail=detail)
        if fault.matches(self.rejected) or fault.code.startswith("Client"):
            return UpstreamRejected(f"{what} rejected the request{suffix}", detail=detail)
        return UpstreamError(f"{what} failed with a server fault{suffix}", detail=detail)

    def read(self, fault: etree._Element) -> SoapFault:
        """Reduce a ``soap:Fault`` element to a :class:`SoapFault`."""
        code_el = fault.find("faultcode")
        faultcode = code_el.text if code_el is not None else None
        namespace = None
        if faultcode and ":" in faultcode and code_el is not None:
            namespace = code_el.nsmap.get(faultcode.partition(":")[0])
        upstream_code = None
        if self.detail_code:
            for el in fault.iter(f"{{*}}{self.detail_code}"):
                upstream_code = el.text or ""
                break
        return SoapFault.of(faultcode, upstream_code, namespace)


@dataclass(frozen=True, slots=True)
class SchemaNode:
    """One element (or attribute) of a message, as the XSD declares it."""

    required: bool = False
    repeated: bool = False
    attribute: bool = False
    children: Mapping[str, SchemaNode] | None = None
    """Child elements and attributes by local name; ``None`` for a simple value."""


def _schema_children(xsd_type: Any, depth: int, seen: tuple[str, ...]) -> dict[str, SchemaNode]:
    out: dict[str, SchemaNode] = {}
    for name, element in getattr(xsd_type, "elements", ()):
        out[name] = _schema_node(element, depth + 1, seen)
    for name, _attribute in getattr(xsd_type, "attributes", ()):
        out.setdefault(name, SchemaNode(attribute=True))
    return out


def _schema_node(element: Any, depth: int, seen: tuple[str, ...]) -> SchemaNode:
    xsd_type = element.type
    max_occurs = element.max_occurs
    repeated = max_occurs == "unbounded" or (isinstance(max_occurs, int) and max_occurs > 1)
    required = isinstance(element.min_occurs, int) and element.min_occurs >= 1
    type_key = str(getattr(xsd_type, "qname", None) or id(xsd_type))
    children = None
    if hasattr(xsd_type, "elements") and depth < _MAX_SCHEMA_DEPTH and type_key not in seen:
        children = _schema_children(xsd_type, depth, (*seen, type_key))
    elif hasattr(xsd_type, "elements"):
        children = {}  # a recursive type: its content is not described further
    return SchemaNode(required=required, repeated=repeated, children=children)


def _choose(kind: str, names: list[str], wanted: str | None, option: str) -> str:
    if wanted is None:
        if len(names) == 1:
            return names[0]
        listed = ", ".join(names) or "none"
        raise WsdlError(f"the WSDL has no single {kind} (it has: {listed}): set {option}")
    if wanted not in names:
        raise WsdlError(f"the WSDL has no {kind} {wanted!r} (it has: {', '.join(names)})")
    return wanted


class SoapCodec:
    """Builds and reads SOAP 1.1 messages of one port of a parsed WSDL."""

    def __init__(self, client: Any, service: str, port: str, faults: FaultPolicy) -> None:
        self._client = client
        self._service = client.bind(service, port)
        self._binding = self._service._binding
        self.service_name = service
        self.port_name = port
        self.faults = faults
        self._readers: dict[str, Reader | None] = {
            name: compile_reader(self._binding.get(name).output) for name in self.operations()
        }
        """Compiled reply readers by operation (``None``: zeep reads that operation)."""

    @classmethod
    def from_wsdl(
        cls,
        wsdl: Path,
        faults: FaultPolicy,
        *,
        service: str | None = None,
        port: str | None = None,
    ) -> Self:
        """Parse a local WSDL (blocking, tens of ms: call through ``asyncio.to_thread``).

        ``service``/``port`` may be omitted when the WSDL has one service with one SOAP 1.1
        port. Raises :class:`WsdlError` with a message for an operator.
        """
        from zeep import Client
        from zeep.exceptions import Error as ZeepError
        from zeep.exceptions import ExternalReferenceForbidden
        from zeep.wsdl.bindings.soap import Soap11Binding

        if not wsdl.is_file():
            raise WsdlError(f"WSDL file {wsdl} does not exist (or is not a file)")
        try:
            client = Client(
                str(wsdl), transport=LocalTransport(wsdl.parent), settings=zeep_settings()
            )
        except WsdlError:
            raise
        except ExternalReferenceForbidden as exc:
            raise WsdlError(LocalTransport.remote(str(exc.url or "?"))) from None
        except (ZeepError, etree.XMLSyntaxError, ValueError, KeyError, AttributeError) as exc:
            # zeep's messages name elements and files of the WSDL (operator data, no PII).
            text = " ".join(str(exc).split())[:200]
            raise WsdlError(f"cannot read the WSDL: {type(exc).__name__}: {text}") from None
        services = client.wsdl.services
        service = _choose("service", list(services), service, "options.service")
        ports = services[service].ports
        soap11 = [n for n, p in ports.items() if isinstance(p.binding, Soap11Binding)]
        if port is None:
            port = _choose("SOAP 1.1 port", soap11, None, "options.port")
        port = _choose("port", list(ports), port, "options.port")
        if port not in soap11:
            raise WsdlError(f"port {port!r} is not a SOAP 1.1 port (only SOAP 1.1 is supported)")
        return cls(client, service, port, faults)

    def operations(self) -> list[str]:
        """The operations of the bound port."""
        return sorted(self._binding._operations)

    def soap_action(self, operation: str) -> str:
        """The operation's ``soapAction`` from the WSDL (may be empty)."""
        return str(self._binding.get(operation).soapaction or "")

    def input_schema(self, operation: str) -> dict[str, SchemaNode]:
        """What the request element may hold: the mapping's targets are checked against it."""
        body = self._binding.get(operation).input.body
        return _schema_children(body.type, 0, ()) if body is not None else {}

    def output_schema(self, operation: str) -> dict[str, SchemaNode]:
        """What the reply (as :meth:`parse` returns it) may hold."""
        body = self._binding.get(operation).output.body
        return _schema_children(body.type, 0, ()) if body is not None else {}

    def build(
        self, operation: str, body: Mapping[str, Any], security: SoapSecurity | None = None
    ) -> bytes:
        """The request envelope for ``operation`` as UTF-8 bytes (validated against the XSD)."""
        from zeep.exceptions import Error as ZeepError

        try:
            envelope = self._client.create_message(self._service, operation, **body)
        except (ZeepError, TypeError, ValueError) as exc:
            # The mapping was checked against the WSDL at start, so this is a bug of ours.
            raise InternalError(
                f"cannot build the {self.faults.what} request ({type(exc).__name__})"
            ) from exc
        if security is not None:
            security.secure_envelope(envelope)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))

    def read(self, operation: str, status: int, payload: bytes) -> dict[str, Any] | SoapFault:
        """The reply as a plain dict, or the fault the upstream sent; other failures raise."""
        what = self.faults.what
        if status in (401, 403):
            raise error_for_status(status, what)
        try:
            root = parse_upstream(payload)
        except UpstreamBadResponse:
            if status != 200:  # e.g. an HTML 503 page from a proxy in front of the upstream
                raise error_for_status(status, what) from None
            raise
        if root.tag != f"{{{SOAP11_ENV}}}Envelope":
            if status != 200:
                raise error_for_status(status, what)
            raise UpstreamBadResponse(f"{what} reply is not a SOAP 1.1 envelope")
        fault = root.find(f"{{{SOAP11_ENV}}}Body/{{{SOAP11_ENV}}}Fault")
        if fault is not None:
            return self.faults.read(fault)
        if status != 200:
            raise error_for_status(status, what)
        return self._body(operation, root)

    def parse(self, operation: str, status: int, payload: bytes) -> dict[str, Any]:
        """The reply of ``operation`` as a plain dict, or the bus error it amounts to."""
        reply = self.read(operation, status, payload)
        if isinstance(reply, SoapFault):
            raise self.faults.error(reply)
        return reply

    def _body(self, operation: str, root: etree._Element) -> dict[str, Any]:
        return self.read_body(operation, root, fast=True)

    def read_body(self, operation: str, root: etree._Element, *, fast: bool) -> dict[str, Any]:
        """The reply body of a fault-free envelope as a dict; ``fast=False`` skips the
        compiled reader (zeep alone: the oracle of the fast reader's tests)."""
        from zeep.exceptions import Error as ZeepError
        from zeep.helpers import serialize_object

        what = self.faults.what
        body = root.find(f"{{{SOAP11_ENV}}}Body")
        output = self._binding.get(operation).output
        if body is None or not len(body) or output.body is None:
            return {}
        reader = self._readers.get(operation) if fast else None
        if reader is not None and (data := reader.read(body)) is not None:
            return data
        expected = getattr(output.body, "qname", None)
        wrapped = getattr(output, "_is_body_wrapped", True)
        # zeep parses a document/literal reply by its type and would accept any element.
        if not wrapped and expected is not None and body[0].tag != expected.text:
            raise UpstreamBadResponse(f"{what} reply does not match its schema (element)")
        try:
            # The body element itself, not zeep's process_reply: that one unwraps a reply
            # with a single child (<R><Active/></R> → bool), which would make the shape a
            # mapping sees depend on how many children the reply type happens to have.
            result = output._deserialize_body(body)["body"]
        except (ZeepError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # zeep names the unexpected element; we keep only the exception's kind.
            # ArithmeticError: an xs:decimal zeep cannot convert (decimal.InvalidOperation
            # escapes zeep's own ValueError guard).
            raise UpstreamBadResponse(
                f"{what} reply does not match its schema ({type(exc).__name__})"
            ) from exc
        if result is None:
            return {}
        plain = serialize_object(result, dict)
        if not isinstance(plain, dict):
            raise UpstreamBadResponse(f"{what} reply has an unexpected shape")
        return plain
