"""Upstream auth kinds against tiny real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from adapters.common.auth import (
    C06Auth,
    OAuth2Auth,
    SoapSecurity,
    WsseAuth,
    auth_provider,
    c06_signature,
)
from adapters.common.http import UpstreamHttp
from adapters.common.xmlsafe import parse_xml
from adapters.population_db import KIND
from adapters.population_db.codec import C06Codec
from bus.config import UpstreamConfig
from bus.errors import UpstreamAuthFailed, UpstreamUnavailable
from tests.support.population import ctx, request, serve, service_config

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"


def upstream(url: str, auth: dict[str, Any]) -> UpstreamConfig:
    return UpstreamConfig.model_validate({"url": url, "allow_plain_http": True, "auth": auth})


# --- c06 ---------------------------------------------------------------------------------


async def test_c06_signature_is_sha256_of_url_user_timestamp_secret() -> None:
    auth = C06Auth("user1", "k3y", clock=lambda: 1_700_000_000.123)
    headers = await auth.headers("POST", "https://c06.example/ws")
    assert headers["Timestamp"] == "1700000000123"
    user, _, digest = (
        base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    )
    expected = hashlib.sha256(b"https://c06.example/wsuser11700000000123k3y").hexdigest()
    assert (user, digest) == ("user1", expected)


async def test_c06_headers_accepted_by_a_checking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handler(request: web.Request) -> web.Response:
        ts = request.headers["Timestamp"]
        raw = base64.b64decode(request.headers["Authorization"][6:]).decode()
        ok = raw == "user1:" + c06_signature(str(request.url), "user1", ts, "right")
        return web.Response(status=200 if ok else 401)

    app = web.Application()
    app.router.add_post("/ws", handler)
    async with serve(app) as url:
        for secret, status in (("right", 200), ("wrong", 401)):
            monkeypatch.setenv("C06_SECRET", secret)
            cfg = upstream(
                url + "ws", {"kind": "c06", "username": "user1", "secret": "env:C06_SECRET"}
            )
            http = await UpstreamHttp.open(cfg)
            try:
                result = await http.request("POST", http.url(""), timeout=5, data=b"<x/>")
            finally:
                await http.aclose()
            assert result.status == status


# --- oauth2 ------------------------------------------------------------------------------


class TokenServer:
    """Issues tokens for one client; the API accepts only tokens not revoked."""

    def __init__(self, *, expires_in: Any = 3600, delay: float = 0.05) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.token_headers: list[dict[str, str]] = []
        self.api_headers: list[dict[str, str]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_headers.append(dict(request.headers))
        basic = "Basic " + base64.b64encode(b"client-1:secret-1").decode()
        if (
            request.headers.get("Authorization") != basic
            or form.get("grant_type") != "client_credentials"
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        await asyncio.sleep(self.delay)  # a slow token endpoint makes a stampede visible
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)

    async def api(self, request: web.Request) -> web.Response:
        self.api_headers.append(dict(request.headers))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        ok = token in self.issued and token not in self.revoked
        return web.Response(status=200 if ok else 401, text=token)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_get("/api", self.api)
        return app


@pytest.fixture
async def token_server() -> AsyncIterator[tuple[TokenServer, str]]:
    server = TokenServer()
    async with serve(server.app()) as url:
        yield server, url


def oauth2_config(url: str, env_var: str = "OAUTH_SECRET", **extra: Any) -> UpstreamConfig:
    auth = {
        "kind": "oauth2",
        "token_url": url + "token",
        "client_id": "client-1",
        "client_secret": f"env:{env_var}",
        **extra,
    }
    return upstream(url, auth)


@pytest.fixture
async def lgsp_http(
    token_server: tuple[TokenServer, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[UpstreamHttp]:
    monkeypatch.setenv("OAUTH_SECRET", "secret-1")
    monkeypatch.setenv("LGSP_TOKEN", "eyJBY2Nlc3NLZXkiOiJrIn0=")
    http = await UpstreamHttp.open(
        oauth2_config(token_server[1], lgsp_access_token="env:LGSP_TOKEN")
    )
    yield http
    await http.aclose()


async def test_oauth2_token_is_cached(
    lgsp_http: UpstreamHttp, token_server: tuple[TokenServer, str]
) -> None:
    server, _ = token_server
    for _ in range(3):
        result = await lgsp_http.request("GET", lgsp_http.url("api"), timeout=5)
        assert result.status == 200
    assert server.issued == ["tok-1"]
    # lgspaccesstoken rides on the token request and on every call.
    assert server.token_headers[0]["lgspaccesstoken"] == "eyJBY2Nlc3NLZXkiOiJrIn0="
    assert all(h["lgspaccesstoken"] == "eyJBY2Nlc3NLZXkiOiJrIn0=" for h in server.api_headers)


async def test_oauth2_single_flight(
    lgsp_http: UpstreamHttp, token_server: tuple[TokenServer, str]
) -> None:
    server, _ = token_server
    results = await asyncio.gather(
        *(lgsp_http.request("GET", lgsp_http.url("api"), timeout=5) for _ in range(25))
    )
    assert {r.status for r in results} == {200}
    assert server.issued == ["tok-1"]  # 25 concurrent calls, one token fetch


async def test_oauth2_invalidated_on_401(
    lgsp_http: UpstreamHttp, token_server: tuple[TokenServer, str]
) -> None:
    server, _ = token_server
    assert (await lgsp_http.request("GET", lgsp_http.url("api"), timeout=5)).status == 200
    server.revoked.add("tok-1")  # the gateway forgot our token (restart, key rotation)
    assert (await lgsp_http.request("GET", lgsp_http.url("api"), timeout=5)).status == 401
    again = await lgsp_http.request("GET", lgsp_http.url("api"), timeout=5)
    assert again.status == 200
    assert again.body == b"tok-2"


async def test_oauth2_refreshes_before_expiry(token_server: tuple[TokenServer, str]) -> None:
    server, url = token_server
    server.expires_in = 60
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        auth = OAuth2Auth(
            session,
            token_url=url + "token",
            client_id="client-1",
            client_secret="secret-1",
            refresh_margin_s=30,
            clock=lambda: now[0],
        )
        assert (await auth.headers("GET", url))["Authorization"] == "Bearer tok-1"
        now[0] += 29  # 31 s before expiry: still cached
        assert (await auth.headers("GET", url))["Authorization"] == "Bearer tok-1"
        now[0] += 2  # inside the margin: refreshed ahead of expiry
        assert (await auth.headers("GET", url))["Authorization"] == "Bearer tok-2"
        assert auth.fetches == 2


async def test_oauth2_margin_longer_than_lifetime_is_capped(
    token_server: tuple[TokenServer, str],
) -> None:
    server, url = token_server
    server.expires_in = "10"  # a string, as some gateways send it
    now = [0.0]
    async with aiohttp.ClientSession() as session:
        auth = OAuth2Auth(
            session,
            token_url=url + "token",
            client_id="client-1",
            client_secret="secret-1",
            refresh_margin_s=300,
            clock=lambda: now[0],
        )
        await auth.headers("GET", url)
        now[0] = 4.9
        await auth.headers("GET", url)
        assert auth.fetches == 1  # refreshed at half-life, not on every call


async def test_oauth2_wrong_secret_is_auth_failure(
    token_server: tuple[TokenServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTH_SECRET", "wrong")
    http = await UpstreamHttp.open(oauth2_config(token_server[1]))
    try:
        with pytest.raises(UpstreamAuthFailed, match="refused the client credentials") as info:
            await http.request("GET", http.url("api"), timeout=5)
        assert "wrong" not in info.value.message
    finally:
        await http.aclose()


async def test_oauth2_token_endpoint_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_SECRET", "secret-1")
    http = await UpstreamHttp.open(oauth2_config("http://127.0.0.1:9/"))
    try:
        with pytest.raises(UpstreamUnavailable, match="token endpoint"):
            await http.request("GET", http.url("api"), timeout=5)
    finally:
        await http.aclose()


async def test_oauth2_token_url_must_be_https(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_SECRET", "secret-1")
    cfg = UpstreamConfig.model_validate(
        {
            "url": "https://lgsp.example/",
            "auth": {
                "kind": "oauth2",
                "token_url": "http://lgsp.example/token",
                "client_id": "c",
                "client_secret": "env:OAUTH_SECRET",
            },
        }
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="https"):
            auth_provider(cfg, session)


# --- wsse --------------------------------------------------------------------------------


def _token_ok(envelope: etree._Element, username: str, password: str) -> bool:
    token = envelope.find(f".//{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if token is None or token.findtext(f"{{{WSSE}}}Username") != username:
        return False
    pw = token.find(f"{{{WSSE}}}Password")
    assert pw is not None
    if pw.get("Type", "").endswith("#PasswordText"):
        return pw.text == password
    nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
    created = (token.findtext(f"{{{WSU}}}Created") or "").encode()
    # The UsernameToken profile defines the digest as SHA-1; nothing to choose here.
    digest = base64.b64encode(hashlib.sha1(nonce + created + password.encode()).digest())  # noqa: S324
    return pw.text == digest.decode()


@pytest.mark.parametrize("digest", [False, True])
async def test_wsse_token_in_envelope(digest: bool) -> None:
    codec = await asyncio.to_thread(C06Codec.load)
    auth = WsseAuth("svc-user", "pa55", digest=digest)
    assert isinstance(auth, SoapSecurity)
    assert await auth.headers("POST", "https://x/") == {}
    body = {"MaYeuCau": "r1", "MaDVC": "X", "MaTichHop": "037", "SoDinhDanh": "001090012345"}
    first = parse_xml(codec.build("XacThucThongTinCongDan", body, auth))
    second = parse_xml(codec.build("XacThucThongTinCongDan", body, auth))
    assert _token_ok(first, "svc-user", "pa55")
    assert not _token_ok(first, "svc-user", "other")
    if digest:  # a fresh nonce per message: a captured digest cannot be replayed as new
        nonce = f".//{{{WSSE}}}Nonce"
        assert first.findtext(nonce) != second.findtext(nonce)
        assert b"pa55" not in etree.tostring(first)


async def test_wsse_through_the_population_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    async def handler(request: web.Request) -> web.Response:
        ok = _token_ok(parse_xml(await request.read()), "svc-user", "pa55")
        seen.append(ok)
        reply = (
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            '<d:KetQuaXacThucResponse xmlns:d="http://www.mic.gov.vn/dancu/1.0">'
            f"<d:TonTai>{'true' if ok else 'false'}</d:TonTai>"
            "</d:KetQuaXacThucResponse></s:Body></s:Envelope>"
        )
        return web.Response(text=reply, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/", handler)
    monkeypatch.setenv("WSSE_PW", "pa55")
    async with serve(app) as url:
        cfg = upstream(
            url, {"kind": "wsse", "username": "svc-user", "password": "env:WSSE_PW", "digest": True}
        )
        adapter = await KIND.create("population", service_config(), cfg)
        try:
            subject = {
                "id_type": "CCCD12",
                "id_number": "001090012345",
                "full_name": "Lê Văn Tám",
                "birth_date": "1990",
            }
            out = await adapter.call("verify", request(subject), ctx("verify"))
        finally:
            await adapter.aclose()
    assert seen == [True]
    assert out["verified"] is True
