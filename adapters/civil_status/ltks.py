"""The civil-status simulator's interlinked dossiers (LTKS/LTKT, liên thông khai sinh / khai
tử): what the MOJ offers a province, in the shape DOMAIN §2.3 describes.

* ``GET /api/lienthongdvclt/hosolienthong`` — the dossiers waiting for this province,
  ``{"status": "1", "data": [{"id", "maHoSo", "module"}, …]}`` (newest last);
* ``GET /api/lienthongdvclt/hosolienthong/{id}`` — one dossier: ``module`` (``KS`` birth,
  ``KT`` death), ``maHoSo``, ``maDonVi``, ``fileDinhKem[]``, ``data.hoTich`` (``nks*``
  fields of the child, ``ngayDangKy`` as ``dd/MM/yyyy``);
* ``POST /api/lienthongdvclt/NhanDKHT`` — the receiver of a pushed dossier (``maHoSo``):
  ``{"status": "1"}`` the first time, ``{"status": "1", "errorDescription": "Hồ sơ đã được
  tiếp nhận"}`` ("already received") after, so a push is idempotent;
* ``POST /_sim/ltks/births`` — the test hook: a birth registered at the MOJ becomes a dossier.

Every route wants the simulator's bearer token. Data lives in the app (lost on restart).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["LTKS", "LtksDossiers", "add_routes"]

BASE = "/api/lienthongdvclt"
ALREADY_RECEIVED = "Hồ sơ đã được tiếp nhận"


@dataclass
class LtksDossiers:
    """The dossiers and what was pushed back."""

    token: str
    dossiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    """maHoSo → times pushed."""
    _ids: Any = field(default_factory=lambda: itertools.count(1))


LTKS = web.AppKey("ltks", LtksDossiers)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _authorised(request: web.Request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {request.app[LTKS].token}"


async def _list(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _json({"status": "0", "errorDescription": "unauthorised"}, 401)
    ltks = request.app[LTKS]
    items = [
        {"id": k, "maHoSo": d["maHoSo"], "module": d["module"]} for k, d in ltks.dossiers.items()
    ]
    return _json({"status": "1", "data": items})


async def _get(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _json({"status": "0", "errorDescription": "unauthorised"}, 401)
    dossier = request.app[LTKS].dossiers.get(request.match_info["id"])
    if dossier is None:
        return _json({"status": "0", "errorDescription": "not found"}, 404)
    return _json({"status": "1", "data": dossier})


async def _receive(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _json({"status": "0", "errorDescription": "unauthorised"}, 401)
    body = await request.json()
    code = body.get("maHoSo") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        return _json({"status": "0", "errorDescription": "maHoSo is required"}, 400)
    ltks = request.app[LTKS]
    ltks.received[code] = ltks.received.get(code, 0) + 1
    if ltks.received[code] > 1:
        return _json({"status": "1", "errorDescription": ALREADY_RECEIVED})
    return _json({"status": "1", "errorDescription": ""})


async def _register_birth(request: web.Request) -> web.Response:
    """Test hook: ``{"personal_id", "full_name", "birth_date" (yyyyMMdd), "unit"}``."""
    body = await request.json()
    ltks = request.app[LTKS]
    number = next(ltks._ids)
    key = f"LT{number:06d}"
    ltks.dossiers[key] = {
        "module": "KS",
        "maHoSo": f"HS-KS-{number:06d}",
        "maDonVi": str(body.get("unit", "00001")),
        "fileDinhKem": [],
        "data": {
            "hoTich": {
                "nksHoTen": body.get("full_name", ""),
                "nksSoDinhDanh": body.get("personal_id", ""),
                "nksNgaySinh": body.get("birth_date", ""),
                "ngayDangKy": body.get("registered_on", "01/01/2026"),
            }
        },
    }
    return _json({"id": key, "maHoSo": ltks.dossiers[key]["maHoSo"]}, 201)


def add_routes(app: web.Application, token: str) -> None:
    """Mount the LTKS routes on the simulator app."""
    app[LTKS] = LtksDossiers(token)
    app.router.add_get(f"{BASE}/hosolienthong", _list)
    app.router.add_get(f"{BASE}/hosolienthong/{{id}}", _get)
    app.router.add_post(f"{BASE}/NhanDKHT", _receive)
    app.router.add_post("/_sim/ltks/births", _register_birth)
