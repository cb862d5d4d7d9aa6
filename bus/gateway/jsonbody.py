"""Strict JSON request bodies: one object, each key at most once per object.

orjson keeps the last of two equal keys (``{"id": "A", "id": "B"}`` is ``{"id": "B"}``),
and so do most parsers — but not all: a front proxy or WAF that keeps the first would
check another citizen than the one the bus asks about. A body that names a key twice is
refused (``400 DUPLICATE_KEY``).

The check costs little: one walk of the parsed (small) body counts its object members and
the colons inside its strings; every key in the raw bytes is followed by exactly one colon
outside any string, so raw colons minus string colons is the number of keys sent — equal to
the members unless a key was repeated. Only a body that writes a colon as ``\\u003a`` is
tokenised instead (one regular expression over its string tokens). Measured: see
``bench/json_duplicates.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from aiohttp import web

from bus.canonical import exchange_id
from bus.errors import InvalidRequest

__all__ = ["MAX_JSON_DEPTH", "body_request_id", "duplicate_key", "json_object", "too_deep"]

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?', re.DOTALL)
"""A JSON string token, and whether it is a key (followed by a colon). In valid JSON no
quote stands outside a string, so scanning from the start keeps tokens aligned."""
_SHOWN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _census(value: Any) -> tuple[int, int]:
    """Members of every object in ``value``, and the colons inside its strings (keys too)."""
    members = colons = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            colons += item.count(":")
        elif kind is dict:
            members += len(item)
            colons += sum(k.count(":") for k in item)
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return members, colons


def _raw_keys(raw: bytes, string_colons: int) -> int:
    """How many keys ``raw`` has: each key is followed by one colon outside any string, so
    it is the raw colons minus those inside strings — exact unless an escape (``\\u003a``)
    wrote a colon, then the string tokens are counted instead."""
    if b"\\u003a" in raw or b"\\u003A" in raw:
        return sum(1 for m in _STRING.finditer(raw) if m.group(1) is not None)
    return raw.count(b":") - string_colons


def _first_repeated(raw: bytes) -> str:
    """The first key named twice in one object (the slow, exact parse: error path only)."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return found[0] if found else ""


def duplicate_key(raw: bytes, body: Any) -> str | None:
    """``None`` if no object in ``raw`` (already parsed as ``body``) repeats a key; else the
    repeated key (``"…"`` when it is not a plain name that may be shown)."""
    members, string_colons = _census(body)
    if _raw_keys(raw, string_colons) == members:
        return None
    key = _first_repeated(raw)
    return key if _SHOWN_KEY.fullmatch(key) else "…"


async def body_request_id(request: web.Request) -> str | None:
    """The ``request_id`` of a JSON body the pipeline refused before reading it (``429``), so
    the caller can match the refusal; only a well-formed id is echoed."""
    if request.content_type != "application/json" or not request.can_read_body:
        return None
    try:
        body = orjson.loads(await request.read())
    except (orjson.JSONDecodeError, web.HTTPException, ConnectionError):
        return None
    value = body.get("request_id") if isinstance(body, dict) else None
    return exchange_id(value) if isinstance(value, str) else None


MAX_JSON_DEPTH = 32
"""Deepest nesting of objects/arrays a request body may have (the request models need 4)."""


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts/lists more than ``limit`` levels (iterative: no
    recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` as one JSON object, strictly: ``MALFORMED_JSON`` (not JSON, not an object),
    ``JSON_TOO_DEEP`` (nested deeper than :data:`MAX_JSON_DEPTH`), ``DUPLICATE_KEY`` (a key
    twice in one object). ``what`` names it in the message ("request body", "the event").
    Every JSON entry of the gateway reads its body through this: the call pipeline, the
    X-Road REST ingress, events."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{what} is not valid JSON", code="MALFORMED_JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"{what} must be a JSON object", code="MALFORMED_JSON")
    if too_deep(body, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"{what} nests objects or arrays deeper than {MAX_JSON_DEPTH} levels",
            code="JSON_TOO_DEEP",
        )
    repeated = duplicate_key(raw, body)
    if repeated is not None:
        raise InvalidRequest(
            f"{what} names the key {repeated!r} twice in one object", code="DUPLICATE_KEY"
        )
    return body
