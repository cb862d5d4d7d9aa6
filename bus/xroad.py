"""X-Road / NDXP identity bridge (pure): the X-Road REST headers at the edge and beyond.

So the bus can sit beside an X-Road/NDXP security server, the gateway accepts

=================  =========================================  ==========================
header             form                                       must agree with
=================  =========================================  ==========================
``X-Road-Client``  ``INSTANCE/CLASS/MEMBER[/SUBSYSTEM]``      ``consumers.<c>.xroad_client``
``X-Road-Service`` ``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE``  the URL's service (and
                   ``[/VERSION]``                               ``gateway.xroad_provider``)
``X-Road-Id``      8-64 of ``[A-Za-z0-9._:-]`` (a UUID fits)  the body's ``request_id``
``X-Road-UserId``  the officer's 12-digit ID, ``VN`` prefix    ``caller.officer_id``, and
                   allowed                                     fills it in when absent
=================  =========================================  ==========================

A malformed header is ``400 INVALID_XROAD_HEADER``; one that disagrees is
``403 XROAD_IDENTITY_MISMATCH`` (nothing is forwarded). Every reply of an operation call
carries ``X-Road-Request-Hash`` — base64 of the SHA-512 of the request body as received —
so the caller can bind the reply to its request, and echoes the X-Road headers it got.
For upstreams with ``xroad: true`` the worker sends ``X-Road-Client`` (the upstream's
``xroad_client``, else the consumer's), ``X-Road-Service`` (the upstream's
``xroad_service``, if set), ``X-Road-Id`` (the request id) and ``X-Road-UserId`` (the
officer).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bus.config import RoutingConfig
from bus.config.access import XROAD_CLIENT_RE, XROAD_SERVICE_RE
from bus.errors import Forbidden, InvalidRequest

__all__ = [
    "CLIENT",
    "ID",
    "REQUEST_HASH",
    "SERVICE",
    "USER_ID",
    "XROAD_ID_RE",
    "XROAD_USER_RE",
    "XRoadIdentity",
    "outbound_headers",
    "request_hash",
]

CLIENT = "X-Road-Client"
SERVICE = "X-Road-Service"
ID = "X-Road-Id"
USER_ID = "X-Road-UserId"
REQUEST_HASH = "X-Road-Request-Hash"

XROAD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}\Z")
"""``X-Road-Id``: the form of a request id (it must equal one)."""
XROAD_USER_RE = re.compile(r"^(?:VN)?([0-9]{12})\Z")
"""``X-Road-UserId``: the officer's 12-digit ID, optionally with the country prefix."""


def _mismatch(what: str) -> Forbidden:
    return Forbidden(f"{what} does not match this call", code="XROAD_IDENTITY_MISMATCH")


def _malformed(header: str, form: str) -> InvalidRequest:
    return InvalidRequest(f"{header} must be {form}", code="INVALID_XROAD_HEADER")


@dataclass(frozen=True, slots=True)
class XRoadIdentity:
    """The X-Road headers of one request, checked for form."""

    client: str | None = None
    service: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    """The officer's 12-digit ID (any ``VN`` prefix removed)."""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> XRoadIdentity:
        """Parse the headers (absent ones stay ``None``); ``INVALID_XROAD_HEADER`` if bad."""
        client = headers.get(CLIENT)
        if client is not None and not XROAD_CLIENT_RE.fullmatch(client):
            raise _malformed(CLIENT, "INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
        service = headers.get(SERVICE)
        if service is not None and not XROAD_SERVICE_RE.fullmatch(service):
            raise _malformed(SERVICE, "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]")
        message_id = headers.get(ID)
        if message_id is not None and not XROAD_ID_RE.fullmatch(message_id):
            raise _malformed(ID, "8-64 characters of letters, digits and . _ : -")
        user = headers.get(USER_ID)
        user_id = None
        if user is not None:
            m = XROAD_USER_RE.fullmatch(user)
            if m is None:
                raise _malformed(USER_ID, "the officer's 12-digit personal ID (VN prefix allowed)")
            user_id = m.group(1)
        return cls(client, service, message_id, user_id)

    @property
    def present(self) -> bool:
        """True when any X-Road header was sent."""
        return any((self.client, self.service, self.message_id, self.user_id))

    def check_caller(self, config: RoutingConfig, consumer: str, service: str) -> None:
        """Client and service must be the authenticated consumer's and the URL's."""
        if self.client is not None:
            spec = config.consumers.get(consumer)
            expected = spec.xroad_client if spec else None
            if expected is None or self.client != expected:
                raise _mismatch(CLIENT)
        if self.service is not None:
            parts = self.service.split("/")
            provider = config.gateway.xroad_provider
            if parts[4] != service or (provider is not None and "/".join(parts[:4]) != provider):
                raise _mismatch(SERVICE)

    def check_request(self, request_id: str, officer: str | None) -> str | None:
        """Id and user must agree with the body; returns the officer (header fills a gap)."""
        if self.message_id is not None and self.message_id != request_id:
            raise _mismatch(ID)
        if self.user_id is not None:
            if officer is not None and officer != self.user_id:
                raise _mismatch(USER_ID)
            return self.user_id
        return officer

    def echo(self) -> dict[str, str]:
        """The X-Road headers to return on the reply (those that were sent)."""
        out: dict[str, str] = {}
        for name, value in ((CLIENT, self.client), (SERVICE, self.service), (ID, self.message_id)):
            if value is not None:
                out[name] = value
        return out


def request_hash(body: bytes) -> str:
    """``X-Road-Request-Hash``: base64 of the SHA-512 of the request body."""
    return base64.b64encode(hashlib.sha512(body).digest()).decode("ascii")


def outbound_headers(
    config: RoutingConfig, service: str, consumer: str, request_id: str, officer: str | None
) -> dict[str, str]:
    """X-Road headers for the service's upstream, or none if it is not an X-Road endpoint."""
    svc = config.services.get(service)
    upstream = config.upstreams.get(svc.upstream) if svc else None
    if upstream is None or not upstream.xroad:
        return {}
    spec = config.consumers.get(consumer)
    headers = {ID: request_id}
    client = upstream.xroad_client or (spec.xroad_client if spec else None)
    if client:
        headers[CLIENT] = client
    if upstream.xroad_service:
        headers[SERVICE] = upstream.xroad_service
    if officer:
        headers[USER_ID] = officer
    return headers
