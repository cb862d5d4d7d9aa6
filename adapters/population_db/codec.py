"""zeep over the vendored C06 WSDL: build request envelopes, read replies and faults. No I/O.

The machinery is :mod:`adapters.common.soap`, shared with the generic ``soap`` kind (why zeep
only builds and parses, and how replies are read safely, is explained there). This module
adds what is C06's own: the vendored WSDL, its service/port, and what its ``MaLoi`` fault
codes mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lxml import etree

from adapters.common.auth import SoapSecurity
from adapters.common.soap import FaultPolicy, SoapCodec, SoapFault
from adapters.population_db.fastbuild import build_request
from adapters.population_db.fastread import read_reply
from bus.errors import UpstreamError

__all__ = ["AUTH_CODES", "TRANSIENT_CODES", "WSDL_DIR", "C06Codec", "fault_error"]

WSDL_DIR = Path(__file__).parent / "wsdl"
WSDL_FILE = "dancu.wsdl"

TRANSIENT_CODES = frozenset({"TamThoiKhongKhaDung", "HeThongQuaTai"})
"""``MaLoi`` values meaning "temporarily unavailable, retry" (→ ``UPSTREAM_UNAVAILABLE``)."""
AUTH_CODES = frozenset({"XacThucThatBai"})
"""``MaLoi`` values meaning "your credentials were refused" (→ ``UPSTREAM_AUTH_FAILED``)."""

FAULTS = FaultPolicy("C06", detail_code="MaLoi", transient=TRANSIENT_CODES, auth=AUTH_CODES)
"""How C06 faults map into the error tree."""


def fault_error(faultcode: str | None, ma_loi: str | None, namespace: str | None) -> UpstreamError:
    """The bus error for a SOAP 1.1 fault (faultstring is never copied: it may hold PII)."""
    return FAULTS.error(SoapFault.of(faultcode, ma_loi, namespace))


class C06Codec(SoapCodec):
    """Builds and reads C06 SOAP 1.1 messages for the vendored WSDL."""

    @classmethod
    def load(cls) -> C06Codec:
        """Parse the vendored WSDL (blocking, ~20 ms: call it through ``asyncio.to_thread``)."""
        return cls.from_wsdl(
            WSDL_DIR / WSDL_FILE, FAULTS, service="DanCuQuocGiaService", port="CongDanSoapPort"
        )

    def build(
        self, operation: str, body: Mapping[str, Any], security: SoapSecurity | None = None
    ) -> bytes:
        """The request envelope: zeep's exact bytes, built directly when the body is plain
        and no WS-Security header is wanted; otherwise by zeep (which validates)."""
        if security is None:
            fast = build_request(operation, body)
            if fast is not None:
                return fast
        return super().build(operation, body, security)

    def _body(self, operation: str, root: etree._Element) -> dict[str, Any]:
        # A reply in the plain shape of the vendored XSD is read by a direct walk (about a
        # sixth of zeep's cost, same dict); anything else goes to zeep, which decides.
        fast = read_reply(operation, root)
        return fast if fast is not None else super()._body(operation, root)
