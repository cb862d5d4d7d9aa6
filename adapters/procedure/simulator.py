"""A small simulator of the provincial procedure system (một cửa điện tử): dossier status.

``GET /procedure-sim/dossiers/{dossier_id}`` with ``Authorization: Bearer <token>`` answers
``{"maHoSo", "tenThuTuc", "trangThai", "ngayCapNhat"}`` for any well-formed dossier id
(status derived from the id, so answers are stable); ids ending in ``-9999`` are 404,
a bad token 401. ``app[CALLS]`` counts the requests it received (tests assert that refused
X-Road calls forward nothing). ``lgsp-bus run`` starts it for a ``rest`` service whose
loopback upstream URL path is ``/procedure-sim/``.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from aiohttp import web

__all__ = ["BASE_PATH", "CALLS", "build_app"]

BASE_PATH = "/procedure-sim/"
CALLS = web.AppKey("calls", list)
"""One entry (the dossier id) per request received, valid or not."""
_TOKEN = web.AppKey("token", str)
_ID_RE = re.compile(r"^[A-Za-z0-9.]{1,30}-[0-9]{6}-[0-9]{4}\Z")
_STATUSES = ("DANG_XU_LY", "CHO_BO_SUNG", "DA_CO_KET_QUA", "DA_TRA_KET_QUA")


async def _dossier(request: web.Request) -> web.Response:
    dossier_id = request.match_info["dossier_id"]
    request.app[CALLS].append(dossier_id)
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth, f"Bearer {request.app[_TOKEN]}"):
        return web.json_response({"error": "unauthorized"}, status=401)
    if not _ID_RE.fullmatch(dossier_id):
        return web.json_response({"error": "bad dossier id"}, status=400)
    if dossier_id.endswith("-9999"):
        return web.json_response({"error": "not found"}, status=404)
    pick = hashlib.sha256(dossier_id.encode()).digest()[0]
    day = dossier_id.split("-")[1]
    return web.json_response(
        {
            "maHoSo": dossier_id,
            "tenThuTuc": "Cấp giấy phép xây dựng",
            "trangThai": _STATUSES[pick % len(_STATUSES)],
            "ngayCapNhat": f"20{day[:2]}-{day[2:4]}-{day[4:6]}",
        }
    )


def build_app(*, token: str) -> web.Application:
    """The simulator's application."""
    app = web.Application()
    app[_TOKEN] = token
    app[CALLS] = []
    app.router.add_get(BASE_PATH + "dossiers/{dossier_id}", _dossier)
    return app
