"""The routing-file watcher: the routing file and the files it references, nothing else.

A log file or a SQLite WAL beside ``routing.yaml`` must not wake it (a log written beside
the file once fed back into "change detected" lines forever); a rotated ``file:`` secret
does, and the reload puts the new key in force. Its own chatter stays out of info, and
every line names its logger.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import load_routing
from bus import logs
from bus.reload.watch import Watched, referenced_files, watch
from tests.support.reloadstack import (
    Sims,
    civil_config,
    consumer_keys,
    reloading_bus,
    simulators,
    write_config,
)
from tests.support.stack import new_secret
from tests.unit.reload.test_reload import EFFECT_BOUND_S, lookup, within


@pytest.fixture
async def sims(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sims]:
    async with simulators(monkeypatch) as running:
        yield running


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure("json", "info", stream=buf, cache=False)
    yield buf
    logs.reset()


def _with_key_file(sims: Sims, key_file: Path) -> dict[str, Any]:
    data = civil_config(sims)
    data["consumers"]["portal"]["api_keys"] = [{"key": f"file:{key_file}"}]
    return data


async def test_only_the_routing_file_and_its_references_wake_the_watcher(
    sims: Sims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    consumer_keys(monkeypatch)
    key_file = tmp_path / "secrets" / "portal.key"
    key_file.parent.mkdir()
    key_file.write_text(new_secret())
    path = tmp_path / "routing.yaml"
    write_config(path, _with_key_file(sims, key_file))
    config = load_routing(path)
    assert key_file in referenced_files(config)
    watched = Watched(path, config)
    woken: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(watch(watched, lambda: woken.append(time.monotonic()), stop))
    try:
        await asyncio.sleep(0.3)  # the watch is up
        # Noise beside both files: a log, a SQLite WAL, an editor's swap file.
        for _ in range(5):
            for noise in ("bus.log", "lgsp-bus.sqlite3-wal", ".routing.yaml.swp"):
                with (tmp_path / noise).open("a") as f:
                    f.write("x\n")
            (key_file.parent / "other.key").write_text(new_secret())
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # past the debounce: noise would have woken it by now
        assert woken == []
        key_file.write_text(new_secret())  # a watched file
        await within(EFFECT_BOUND_S, lambda: len(woken) == 1)
        write_config(path, _with_key_file(sims, key_file))  # the routing file, renamed in
        await within(EFFECT_BOUND_S, lambda: len(woken) == 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    lines = [orjson.loads(line) for line in log_output.getvalue().splitlines()]
    assert not [line for line in lines if "change" in str(line.get("event"))]
    assert all(line.get("logger") for line in lines), lines


async def test_a_rotated_file_secret_is_put_in_force(
    sims: Sims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = consumer_keys(monkeypatch)
    key_file = tmp_path / "portal.key"
    key_file.write_text(keys["portal"])
    path = tmp_path / "routing.yaml"
    write_config(path, _with_key_file(sims, key_file))
    async with reloading_bus(path, None, keys) as bus:
        status, reply = await bus.call("portal", lookup())
        assert status == 200, reply
        old, bus.keys["portal"] = bus.keys["portal"], new_secret()
        key_file.write_text(bus.keys["portal"])  # routing.yaml itself is unchanged
        await within(EFFECT_BOUND_S, lambda: bus.reloader.counts["applied"] == 1)
        status, reply = await bus.call("portal", lookup())
        assert status == 200, reply
        bus.keys["portal"] = old
        status, reply = await bus.call("portal", lookup())
        assert (status, reply["error"]["code"]) == (401, "UNAUTHENTICATED")


def test_stdlib_and_structlog_lines_name_their_logger(log_output: io.StringIO) -> None:
    import logging

    import structlog

    structlog.get_logger("bus.test").info("test.one")
    logging.getLogger("aiohttp.server").warning("test.two")
    logging.getLogger("watchfiles.main").info("1 change detected")
    lines = [orjson.loads(line) for line in log_output.getvalue().splitlines()]
    assert [(line["event"], line["logger"]) for line in lines] == [
        ("test.one", "bus.test"),
        ("test.two", "aiohttp.server"),
    ]
