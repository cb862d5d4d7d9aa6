"""A sandbox MOJ civil-status DB: a real aiohttp server speaking MOJ-style JSON.

URL scheme (every API call needs ``Authorization: Bearer <token>``)::

    GET /api/hotich/khaisinh   birth registrations
    GET /api/hotich/kethon     marriage registrations
    GET /api/hotich/khaitu     death registrations
        ?noiDangKy=<authority>&so=<number>[&quyenSo=<book>][&ngayDangKy=<date>]
        ?soDinhDanh=<12 or 9 digits>[&hoTen=<name>][&ngaySinh=<date>]
    GET /_sim/stats            request counters (no auth, no personal data)

Dates in queries are ``dd/MM/yyyy``, ``MM/yyyy`` or ``yyyy`` (also ``.``-separated or
``yyyyMMdd``); a shorter date matches every record within it. Replies::

    200 {"status": "1", "errorDescription": "", "data": [record, ...]}   (empty: not found)
    400 {"status": "0", "errorDescription": "..."}                         malformed query
    401 {"status": "0", "errorDescription": "..."}                         bad/missing token

The records are :mod:`adapters.civil_status.data` (see there for how they are derived and
:func:`~adapters.civil_status.data.sample_registration` for one that exists).

Faults, so tests can be exact: a registration number (``so``) of ``HANG`` waits
``hang_s`` (default 300 s, beyond any operation timeout) before a 504; ``FAIL500`` and
``FAIL503`` answer those statuses; ``BADJSON`` answers 200 with a truncated JSON body;
``REJECT`` answers 200 with ``status: "0"``. The knobs ``error_rate`` (503) and
``timeout_rate`` (hang) draw from the app's own ``random.Random(seed)``, one draw per
authenticated API request, so a run with the same request order fails the same way;
``latency_ms`` delays every API answer. The simulator never logs queries: they hold IDs.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from adapters.civil_status.data import (
    DEFAULT_PER_AUTHORITY,
    MAX_PER_AUTHORITY,
    Dataset,
    build_dataset,
)
from adapters.civil_status.models import RecordType
from adapters.common.dates import MojDateError, from_moj

__all__ = [
    "FAULT_NUMBERS",
    "PATHS",
    "STATS",
    "PathOnlyAccessLogger",
    "SimStats",
    "build_app",
    "serve",
    "serving",
]

PATHS: Mapping[str, RecordType] = {
    "/api/hotich/khaisinh": RecordType.BIRTH,
    "/api/hotich/kethon": RecordType.MARRIAGE,
    "/api/hotich/khaitu": RecordType.DEATH,
}
FAULT_NUMBERS = frozenset({"HANG", "FAIL500", "FAIL503", "BADJSON", "REJECT"})
"""Registration numbers that trigger a fault instead of a lookup."""

_REG_PARAMS = frozenset({"noiDangKy", "so", "quyenSo", "ngayDangKy"})
_PERSON_PARAMS = frozenset({"soDinhDanh", "hoTen", "ngaySinh"})
_PERSON_FIELDS: Mapping[RecordType, tuple[str, ...]] = {
    RecordType.BIRTH: ("nks",),
    RecordType.MARRIAGE: ("chong", "vo"),
    RecordType.DEATH: ("nkt",),
}


@dataclass(slots=True)
class SimStats:
    """What the simulator's API has served (counts only; ``/_sim/`` is not counted)."""

    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }


@dataclass(slots=True)
class _Settings:
    token: str
    latency_s: float
    error_rate: float
    timeout_rate: float
    hang_s: float
    faults: random.Random
    seed: int
    per_authority: int
    data: Dataset | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


STATS = web.AppKey("civil_status_sim_stats", SimStats)
"""``app[STATS]``: the simulator's request counters."""
_SETTINGS = web.AppKey("civil_status_sim_settings", _Settings)


class _BadQuery(Exception):
    """The query is malformed (message names parameters, never values)."""


def build_app(
    *,
    token: str,
    seed: int = 0,
    latency_ms: float = 0,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    hang_s: float = 300.0,
    per_authority: int = DEFAULT_PER_AUTHORITY,
) -> web.Application:
    """The simulator app: records of ``seed``, callers must present ``token``."""
    if not token:
        raise ValueError("the simulator needs a non-empty bearer token")
    if not (0 <= error_rate <= 1 and 0 <= timeout_rate <= 1 and error_rate + timeout_rate <= 1):
        raise ValueError("error_rate and timeout_rate are fractions summing to at most 1")
    if latency_ms < 0 or hang_s < 0:
        raise ValueError("latency_ms and hang_s cannot be negative")
    if not 1 <= per_authority <= MAX_PER_AUTHORITY:
        raise ValueError(f"per_authority must be 1..{MAX_PER_AUTHORITY}")
    app = web.Application(middlewares=[_count])
    app[STATS] = SimStats()
    app[_SETTINGS] = _Settings(
        token=token,
        latency_s=latency_ms / 1000,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        hang_s=hang_s,
        faults=random.Random(f"civil-status-faults:{seed}"),
        seed=seed,
        per_authority=per_authority,
    )
    for path, record_type in PATHS.items():
        app.router.add_get(path, _lookup_handler(record_type))
    app.router.add_get("/_sim/stats", _stats)
    app.on_startup.append(_load_data)
    app.on_shutdown.append(_release_hangs)
    return app


async def _load_data(app: web.Application) -> None:
    settings = app[_SETTINGS]
    # About 0.2 s of CPU: build off the loop so a co-hosted gateway keeps serving meanwhile.
    settings.data = await asyncio.to_thread(build_dataset, settings.seed, settings.per_authority)


async def _release_hangs(app: web.Application) -> None:
    # Hanging handlers would otherwise hold the runner's shutdown for its whole grace period.
    app[_SETTINGS].stopping.set()


@web.middleware
async def _count(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith("/_sim/"):
        return await handler(request)
    stats = request.app[STATS]
    stats.requests += 1
    stats.by_path[request.path] += 1
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        stats.by_status[exc.status] += 1
        raise
    stats.by_status[response.status] += 1
    return response


def _reply(status: int, payload: Mapping[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", charset="utf-8"
    )


def _failure(status: int, description: str) -> web.Response:
    return _reply(status, {"status": "0", "errorDescription": description})


async def _stats(request: web.Request) -> web.Response:
    return _reply(200, request.app[STATS].as_dict())


async def _hang(settings: _Settings) -> web.Response:
    with suppress(TimeoutError):
        await asyncio.wait_for(settings.stopping.wait(), settings.hang_s)
    return _failure(504, "Hệ thống quá tải, hết thời gian xử lý")


def _lookup_handler(
    record_type: RecordType,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await _lookup(request, record_type)

    return handler


async def _lookup(request: web.Request, record_type: RecordType) -> web.Response:
    settings = request.app[_SETTINGS]
    if settings.latency_s:
        await asyncio.sleep(settings.latency_s)
    offered = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.token}"
    if not hmac.compare_digest(offered.encode(), expected.encode()):
        unauthorized = _failure(401, "Token không hợp lệ hoặc đã hết hạn")
        unauthorized.headers["WWW-Authenticate"] = 'Bearer realm="hotich"'
        return unauthorized
    draw = settings.faults.random()
    if draw < settings.error_rate:
        return _failure(503, "Hệ thống đang bảo trì")
    if draw < settings.error_rate + settings.timeout_rate:
        return await _hang(settings)
    if settings.data is None:
        return _failure(503, "Hệ thống đang khởi động")
    try:
        query = _parse_query(request.query)
    except _BadQuery as exc:
        return _failure(400, str(exc))
    number = query.get("so", "")
    if number in FAULT_NUMBERS:
        return await _fault(number, settings)
    records = _search(settings.data, record_type, query)
    return _reply(200, {"status": "1", "errorDescription": "", "data": records})


async def _fault(number: str, settings: _Settings) -> web.Response:
    if number == "HANG":
        return await _hang(settings)
    if number == "FAIL500":
        return _failure(500, "Lỗi hệ thống")
    if number == "FAIL503":
        return _failure(503, "Hệ thống đang bảo trì")
    if number == "BADJSON":
        return web.Response(
            status=200, body=b'{"status": "1", "data": [{"so": ', content_type="application/json"
        )
    return _failure(200, "Hồ sơ đang bị khóa, không được phép tra cứu")


def _parse_query(params: Mapping[str, str]) -> dict[str, str]:
    keys = set(params)
    if len(keys) != len(params):
        raise _BadQuery("Tham số bị lặp")
    unknown = keys - _REG_PARAMS - _PERSON_PARAMS
    if unknown:
        raise _BadQuery("Tham số không hợp lệ: " + ", ".join(sorted(unknown)))
    by_reg, by_person = bool(keys & _REG_PARAMS), bool(keys & _PERSON_PARAMS)
    if by_reg == by_person:
        raise _BadQuery("Cần tra cứu theo số đăng ký hoặc theo số định danh, không cả hai")
    required = {"noiDangKy", "so"} if by_reg else {"soDinhDanh"}
    if missing := required - keys:
        raise _BadQuery("Thiếu tham số: " + ", ".join(sorted(missing)))
    query: dict[str, str] = {}
    for key, value in params.items():
        if not value.strip():
            raise _BadQuery(f"Tham số rỗng: {key}")
        if key in ("ngayDangKy", "ngaySinh"):
            try:
                value = from_moj(value, key) or ""
            except MojDateError:
                raise _BadQuery(f"Ngày không hợp lệ: {key}") from None
        query[key] = value
    if by_person and not (query["soDinhDanh"].isascii() and query["soDinhDanh"].isdigit()):
        raise _BadQuery("Số định danh không hợp lệ")
    return query


def _fold(name: str) -> str:
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def _iso(moj_date: str) -> str:
    return from_moj(moj_date) or ""


def _subject_prefix(record_type: RecordType, rec: Mapping[str, Any], id_number: str) -> str:
    for prefix in _PERSON_FIELDS[record_type]:
        if id_number in (rec.get(prefix + "SoDinhDanh"), rec.get(prefix + "SoGiayToTuyThan")):
            return prefix
    raise LookupError("record indexed under an ID it does not hold")


def _search(data: Dataset, record_type: RecordType, query: Mapping[str, str]) -> list[Any]:
    if "so" in query:
        rec = data.find_registration(record_type, query["noiDangKy"], query["so"])
        if rec is None:
            return []
        if "quyenSo" in query and rec["quyenSo"] != query["quyenSo"]:
            return []
        # A partial ISO date is a prefix of every fuller date inside it.
        if "ngayDangKy" in query and not _iso(rec["ngayDangKy"]).startswith(query["ngayDangKy"]):
            return []
        return [rec]
    found = []
    for rec in data.find_person(record_type, query["soDinhDanh"]):
        prefix = _subject_prefix(record_type, rec, query["soDinhDanh"])
        if "hoTen" in query and _fold(rec[prefix + "HoTen"]) != _fold(query["hoTen"]):
            continue
        if "ngaySinh" in query and not _iso(rec[prefix + "NgaySinh"]).startswith(query["ngaySinh"]):
            continue
        found.append(rec)
    return found


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without the query string (queries carry ID numbers and names)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """One line: method, path, status, seconds."""
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)


@asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run ``app`` on ``host:port`` (0: any free port); yields the base URL, stops on exit."""
    runner = web.AppRunner(
        app, access_log_class=PathOnlyAccessLogger, handler_cancellation=True, shutdown_timeout=5
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{url_host}:{bound_port}/"
    finally:
        await runner.cleanup()


async def serve(host: str, port: int, **knobs: Any) -> None:
    """Serve the simulator until cancelled (``knobs`` are :func:`build_app`'s arguments)."""
    async with serving(build_app(**knobs), host, port):
        await asyncio.Event().wait()
