"""What the routing-file watcher watches: the file itself and the files it references.

A change of ``routing.yaml`` — or of a file it names: a ``file:`` secret (an API key, the
audit key), a TLS certificate or key, an upstream's CA or client certificate, a SOAP
service's WSDL — asks for a reload. Only those paths are watched: their directories are
watched (so an editor's write-and-rename and a Kubernetes ConfigMap's symlink swap,
``..data``, are seen) with a filter that passes events on those names alone, so a log
file, a SQLite WAL or anything else beside them never triggers anything.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import structlog
from watchfiles import Change, awatch

from bus.config import RoutingConfig

__all__ = ["WATCH_DEBOUNCE_MS", "Watched", "referenced_files", "watch"]

log = structlog.get_logger("bus.reload.watch")

WATCH_DEBOUNCE_MS = 400
"""Changes closer together than this are one change (editors write in several steps)."""
_PATH_KEYS = ("_file", "client_cert", "wsdl")
"""Config keys (by suffix) whose values are paths of files the config reads."""
CONFIGMAP_SWAP = "..data"
"""The symlink a Kubernetes ConfigMap volume swaps to publish new content."""


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v, key)
    elif isinstance(value, str):
        yield key, value


def referenced_files(config: RoutingConfig) -> set[Path]:
    """The files ``config`` reads: ``file:`` secrets and every path-valued setting."""
    found: set[Path] = set()
    for key, value in _strings(config.model_dump(mode="json")):
        if value.startswith("file:"):
            found.add(Path(value[5:]))
        elif key.endswith(_PATH_KEYS) and value:
            found.add(Path(value))
    return found


class Watched:
    """The routing file and its references: their digest, and the watch filter."""

    def __init__(self, routing: Path, config: RoutingConfig) -> None:
        self.routing = routing
        self.files = {routing, *referenced_files(config)}

    def follow(self, config: RoutingConfig) -> None:
        """After a reload: watch what the config in force references."""
        self.files = {self.routing, *referenced_files(config)}

    def references_digest(self) -> str:
        """SHA-256 over the referenced files' contents (a missing file counts as empty)."""
        digest = hashlib.sha256()
        for path in sorted(self.files - {self.routing}):
            digest.update(str(path).encode() + b"\0")
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(b"-")
        return digest.hexdigest()

    def directories(self) -> set[Path]:
        """The directories to watch: each file's own, and its symlink target's."""
        return {d for path in self.files for d in _places(path)}

    def accepts(self, _change: Change, path: str) -> bool:
        """The watch filter: an event on a watched file (by its name or its symlink target),
        or a ConfigMap swap (``..data``) beside one."""
        changed = Path(path)
        if changed.name == CONFIGMAP_SWAP:
            return changed.parent in {file.absolute().parent for file in self.files}
        return any(changed in _names(file) for file in self.files)


def _places(path: Path) -> set[Path]:
    return {name.parent for name in _names(path)}


def _names(path: Path) -> set[Path]:
    """The file as named (absolute) and, if it is a symlink, the file it points at."""
    named = path.absolute()
    try:
        return {named, path.resolve()}
    except OSError:
        return {named}


class _Round:
    """The stop event of one watch round: the caller's ``stop``, or the watched directories
    changed (watchfiles polls ``is_set()``; it calls ``set()`` when cancelled)."""

    def __init__(self, stop: asyncio.Event, watched: Watched, directories: set[Path]) -> None:
        self._stop, self._watched, self._directories = stop, watched, directories
        self._set = False

    def is_set(self) -> bool:
        return self._set or self._stop.is_set() or self._watched.directories() != self._directories

    def set(self) -> None:
        self._set = True


async def watch(watched: Watched, changed: Callable[[], None], stop: asyncio.Event) -> None:
    """Call ``changed()`` after each (debounced) change of a watched file, until ``stop``.
    When the config in force references files elsewhere, the watch moves with it."""
    while not stop.is_set():
        directories = watched.directories()
        try:
            async for _changes in awatch(
                *sorted(directories),
                # watchfiles only calls is_set() and set(): _Round is such an event.
                stop_event=cast(asyncio.Event, _Round(stop, watched, directories)),
                watch_filter=watched.accepts,
                debounce=WATCH_DEBOUNCE_MS,
                step=50,
                recursive=False,
            ):
                changed()
        except (OSError, RuntimeError) as exc:
            shown = sorted(map(str, directories))
            log.error("config.watch_failed", directories=shown, error=str(exc))
            return
