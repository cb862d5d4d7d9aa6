"""Upstream URLs: a path resolved against the base URL, remembered, the memory bounded."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp
import pytest

from adapters.common.auth import auth_provider
from adapters.common.http import URL_MEMO, UpstreamHttp
from bus.config import UpstreamConfig


@pytest.mark.parametrize("base", ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/"])
async def test_paths_resolve_as_urljoin_and_the_memo_stays_bounded(base: str) -> None:
    upstream = UpstreamConfig.model_validate({"url": base, "allow_plain_http": True})
    async with aiohttp.ClientSession() as session:
        http = UpstreamHttp(upstream, session, auth_provider(upstream, session))
        assert http.url("") == base
        expected = urljoin(base.rstrip("/") + "/", "v1/birth")
        assert http.url("/v1/birth") == expected
        assert http.url("/v1/birth") == expected  # from the memo, the same answer
        for n in range(3 * URL_MEMO):
            path = f"records/{n}"
            assert http.url(path) == urljoin(base.rstrip("/") + "/", path)
        assert len(http._urls) <= URL_MEMO
