"""The admin listener (21.15a): with ``admin.port`` and ``gateway.tls`` (or ``admin.tls``),
``/admin/*`` is served over HTTPS only; a plain-HTTP admin listener on a non-loopback
address is refused by config validation (``ADMIN_PLAIN_HTTP``) unless explicitly allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import load_routing, parse_routing
from bus.cli.reloading import hot_reload
from bus.config import ConfigError
from tests.faults.test_faults import _secrets, fault_config
from tests.unit.gateway.test_security_auth import Pki, _client_ssl, _tls, pki

__all__ = ["_secrets", "pki"]

ADMIN_ENV = "T_ADMIN_LISTENER_KEY"


def _config(admin: dict[str, Any], tls: dict[str, str] | None = None) -> dict[str, Any]:
    data = fault_config("http://127.0.0.1:9/", gateway={"tls": tls} if tls else None)
    data["admin"] = {"api_keys": [{"name": "ops", "key": f"env:{ADMIN_ENV}"}], **admin}
    return data


@pytest.mark.parametrize("own", [False, True])
async def test_the_admin_listener_is_https_when_the_gateway_is(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own: bool
) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-key-for-the-listener-test")
    tls = _tls(pki, "none")
    data = _config({"port": 0, **({"tls": tls} if own else {})}, None if own else tls)
    path = tmp_path / "routing.yaml"
    path.write_text(json.dumps(data))
    config = load_routing(path)
    auth = {"Authorization": "Bearer admin-key-for-the-listener-test"}
    async with (
        hot_reload(path, config, watch=False, admin_listen=("127.0.0.1", 0)) as reloader,
        aiohttp.ClientSession() as session,
    ):
        [url] = reloader.admin_urls
        assert url.startswith("https://127.0.0.1:")
        async with session.get(url + "admin/config", headers=auth, ssl=_client_ssl(pki)) as r:
            assert r.status == 200
        plain = url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(plain + "admin/config", headers=auth) as r:
                pytest.fail(f"plain HTTP answered {r.status}")


def test_a_plain_http_admin_listener_off_loopback_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_routing(_config({"host": "0.0.0.0", "port": 9443}))
    [issue] = info.value.issues
    assert issue.dotted == "admin.host"
    assert "ADMIN_PLAIN_HTTP" in issue.message
    # Allowed: on loopback, behind a proxy when said so.
    parse_routing(_config({"host": "127.0.0.1", "port": 9443}))
    parse_routing(_config({"host": "::1", "port": 9443}))
    parse_routing(_config({"host": "0.0.0.0", "port": 9443, "allow_plain_http": True}))
