"""zeep over the vendored C06 WSDL: build request envelopes, read replies and faults. No I/O.

The machinery is :mod:`adapters.soapcodec`, shared with the generic ``soap`` kind (why zeep
only builds and parses, and how replies are read safely, is explained there). This module
adds what is C06's own: the vendored WSDL, its service/port, and what its ``MaLoi`` fault
codes mean.
"""

from __future__ import annotations

from pathlib import Path

from adapters.soapcodec import FaultPolicy, SoapCodec, SoapFault
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
