"""zeep over the vendored C06 WSDL: build request envelopes, read replies and faults. No I/O.

Why zeep only builds and parses: the bytes travel through :class:`adapters.http.UpstreamHttp`
like every other upstream call, so timeouts, the response-size limit, TLS, auth headers and
error mapping have one implementation. zeep's ``AsyncTransport`` would bring httpx, a
second connection pool with its own timeout and size semantics. zeep still earns its place:
it validates both directions against the XSD (strict mode) and knows the WSDL's shape.

Replies are parsed first by :mod:`adapters.xmlsafe` (DOCTYPE/entities refused before lxml
sees them), and only then handed to zeep as an element tree.
"""

# zeep ships py.typed but leaves most functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lxml import etree

from adapters.auth import SoapSecurity
from adapters.http import error_for_status
from adapters.xmlsafe import parse_upstream, zeep_settings
from bus.errors import (
    InternalError,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)

__all__ = ["AUTH_CODES", "TRANSIENT_CODES", "WSDL_DIR", "C06Codec", "fault_error"]

WSDL_DIR = Path(__file__).parent / "wsdl"
WSDL_FILE = "dancu.wsdl"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"

TRANSIENT_CODES = frozenset({"TamThoiKhongKhaDung", "HeThongQuaTai"})
"""``MaLoi`` values meaning "temporarily unavailable, retry" (→ ``UPSTREAM_UNAVAILABLE``)."""
AUTH_CODES = frozenset({"XacThucThatBai"})
"""``MaLoi`` values meaning "your credentials were refused" (→ ``UPSTREAM_AUTH_FAILED``)."""
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_WHAT = "C06"


class _LocalTransport:
    """Lets zeep read the vendored WSDL/XSD files and nothing else (no network, no other path)."""

    binding_classes = None

    def load(self, url: str) -> bytes:
        path = Path(url).resolve()
        if path.parent != WSDL_DIR.resolve():
            raise ValueError("the C06 WSDL may only import its vendored schemas")
        return path.read_bytes()

    def post_xml(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("zeep must not send: requests go through UpstreamHttp")


def _local(qname_text: str | None) -> str:
    # "soap:Server.Busy" → "Server.Busy"; the prefix's namespace does not change the meaning.
    return (qname_text or "").strip().rpartition(":")[2]


def fault_error(faultcode: str | None, ma_loi: str | None, namespace: str | None) -> UpstreamError:
    """The bus error for a SOAP 1.1 fault (faultstring is never copied: it may hold PII)."""
    local = _local(faultcode)
    code = ma_loi if ma_loi and _SAFE_CODE.fullmatch(ma_loi) else None
    detail = {"fault_code": local if _SAFE_CODE.fullmatch(local) else "?"}
    if code:
        detail["upstream_code"] = code
    suffix = f" ({code})" if code else ""
    if code in AUTH_CODES or namespace == WSSE_NS:
        return UpstreamAuthFailed(f"{_WHAT} refused the bus's credentials{suffix}", detail=detail)
    if code in TRANSIENT_CODES:
        return UpstreamUnavailable(f"{_WHAT} is temporarily unavailable{suffix}", detail=detail)
    if local.startswith("Client"):
        return UpstreamRejected(f"{_WHAT} rejected the request{suffix}", detail=detail)
    return UpstreamError(f"{_WHAT} failed with a server fault{suffix}", detail=detail)


def _raise_fault(fault: etree._Element) -> None:
    code_el = fault.find("faultcode")
    faultcode = code_el.text if code_el is not None else None
    namespace = None
    if faultcode and ":" in faultcode and code_el is not None:
        namespace = code_el.nsmap.get(faultcode.partition(":")[0])
    ma_loi = None
    for el in fault.iter("{*}MaLoi"):
        ma_loi = (el.text or "").strip()
        break
    raise fault_error(faultcode, ma_loi, namespace)


class C06Codec:
    """Builds and reads C06 SOAP 1.1 messages for one parsed WSDL."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._service = client.bind("DanCuQuocGiaService", "CongDanSoapPort")
        self._binding = self._service._binding

    @classmethod
    def load(cls) -> C06Codec:
        """Parse the vendored WSDL (blocking, ~20 ms: call it through ``asyncio.to_thread``)."""
        from zeep import Client

        client = Client(
            str(WSDL_DIR / WSDL_FILE), transport=_LocalTransport(), settings=zeep_settings()
        )
        return cls(client)

    def operations(self) -> list[str]:
        """The operations the WSDL defines."""
        return sorted(self._binding._operations)

    def build(
        self, operation: str, body: Mapping[str, Any], security: SoapSecurity | None = None
    ) -> bytes:
        """The request envelope for ``operation`` as UTF-8 bytes (validated against the XSD)."""
        from zeep.exceptions import Error as ZeepError

        try:
            envelope = self._client.create_message(self._service, operation, **body)
        except (ZeepError, TypeError, ValueError) as exc:
            # The mapping fills every required element, so this is a bug of ours.
            raise InternalError(f"cannot build the {_WHAT} request ({type(exc).__name__})") from exc
        if security is not None:
            security.secure_envelope(envelope)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))

    def parse(self, operation: str, status: int, payload: bytes) -> dict[str, Any]:
        """The reply of ``operation`` as a plain dict, or the bus error it amounts to."""
        if status in (401, 403):
            raise error_for_status(status, _WHAT)
        try:
            root = parse_upstream(payload)
        except UpstreamBadResponse:
            if status != 200:  # e.g. an HTML 503 page from a proxy in front of C06
                raise error_for_status(status, _WHAT) from None
            raise
        if root.tag != f"{{{SOAP_ENV}}}Envelope":
            if status != 200:
                raise error_for_status(status, _WHAT)
            raise UpstreamBadResponse(f"{_WHAT} reply is not a SOAP 1.1 envelope")
        fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
        if fault is not None:
            _raise_fault(fault)
        if status != 200:
            raise error_for_status(status, _WHAT)
        return self._read(operation, root)

    def _read(self, operation: str, root: etree._Element) -> dict[str, Any]:
        from zeep.exceptions import Error as ZeepError
        from zeep.helpers import serialize_object

        try:
            result = self._binding.get(operation).process_reply(root)
        except ZeepError as exc:
            # zeep names the unexpected element; we keep only the exception's kind.
            raise UpstreamBadResponse(
                f"{_WHAT} reply does not match its schema ({type(exc).__name__})"
            ) from exc
        if isinstance(result, bool):  # zeep unwraps a single-child reply (TonTai)
            return {"TonTai": result}
        if result is None:
            return {}
        data = serialize_object(result, dict)
        if not isinstance(data, dict):
            raise UpstreamBadResponse(f"{_WHAT} reply has an unexpected shape")
        return data
