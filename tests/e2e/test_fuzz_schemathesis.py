"""schemathesis against the gateway's own ``/openapi.json``, with a valid API key.

Every documented operation is called with generated valid and invalid bodies and headers;
each answer must conform to the document: no server error, a documented status, the JSON
content type, and the error schema (so every error code the gateway can give is in
``ERROR_CODES``). Bounded: :data:`EXAMPLES` examples per operation, no deadline per
example, in-memory broker (the broker plays no part in what is checked here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import requests.adapters
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.livebus import LiveBus

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def live() -> Iterator[LiveBus]:
    with LiveBus(None) as running:
        yield running


class _RunningAdapter(requests.adapters.HTTPAdapter):
    """Lets the bus's loop run while a request is on the wire (see :class:`LiveBus`)."""

    def __init__(self, live: LiveBus) -> None:
        super().__init__()
        self._live = live

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        with self._live.running():
            return super().send(request, *args, **kwargs)


@pytest.fixture(scope="module")
def session(live: LiveBus) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.mount("http://", _RunningAdapter(live))
        yield http


@pytest.fixture(scope="module")
def api_schema(live: LiveBus, session: requests.Session) -> Any:
    with live.running():
        return schemathesis.openapi.from_url(live.url + "openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


SEEN: Counter[str] = Counter()
"""Error codes (or ``OK``) the run got, for the sanity check after it."""


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_document(case: Any, live: LiveBus, session: requests.Session) -> None:
    response = case.call_and_validate(
        session=session,
        headers={"Authorization": f"Bearer {live.key()}"},
        checks=CHECKS,
        timeout=10,
    )
    body = response.json() if response.status_code >= 400 else {}
    SEEN[body.get("error", {}).get("code", "") if body else "OK"] += 1


def test_the_run_got_past_the_edge(live: LiveBus) -> None:
    """The run above got past authentication and the headers to body validation
    (runs after it: pytest keeps the order of a module)."""
    assert SEEN, "schemathesis made no calls"
    body_codes = {code for code in SEEN if code.startswith(("INVALID_", "MISSING_", "UNKNOWN_F"))}
    assert body_codes, dict(SEEN)
