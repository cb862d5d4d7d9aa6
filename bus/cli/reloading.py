"""Hot reload wired into a process role: the gateway and worker targets, ``/admin/*`` on the
role's port or its own, SIGHUP and the file watch (composition; the parts live in
:mod:`bus.reload` and :mod:`bus.admin`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from bus.admin.api import mount_admin, serve_admin
from bus.config import RoutingConfig, default_config_path
from bus.gateway.runtime import GATEWAY
from bus.reload.reloader import ConfigReloader, ReloadRecorder
from bus.reload.targets import GatewayTarget, WorkerTarget
from bus.worker.worker import Worker

__all__ = ["add_arguments", "follow_gateway", "follow_worker", "hot_reload", "reloading"]


def follow_gateway(reloader: ConfigReloader, app: web.Application, auditor: Any = None) -> None:
    """Let a gateway app (not started yet) follow reloads: runtime swap, ``/readyz`` detail,
    ``/admin/*`` on its port unless ``admin.port`` moves it, audit of each reload."""
    reloader.attach(GatewayTarget(app[GATEWAY]))
    app[GATEWAY].readiness.append(reloader.readiness)
    if reloader.config.admin.port is None:
        mount_admin(app, reloader)
    if auditor is not None:
        reloader.auditor = auditor


def follow_worker(
    reloader: ConfigReloader,
    worker: Worker,
    services: list[str] | None = None,
    *,
    app: web.Application | None = None,
    status: Any = None,
) -> None:
    """Let a worker follow reloads; with its HTTP ``app`` (not started yet) and ``status``
    (:class:`bus.health.WorkerStatus`), ``/admin/*`` there and the reload in ``/readyz``."""
    reloader.attach(WorkerTarget(worker, services))
    if status is not None:
        status.readiness.append(reloader.readiness)

        def follow(config: RoutingConfig) -> None:
            status.config = config
            status.services = list(worker.adapters)

        reloader.on_applied(follow)
    if app is not None:
        mount_admin(app, reloader)


@asynccontextmanager
async def hot_reload(
    path: str | Path,
    config: RoutingConfig,
    *,
    recorder: ReloadRecorder | None = None,
    watch: bool = True,
    admin_listen: tuple[str, int] | None = None,
    adjust: Callable[[RoutingConfig], RoutingConfig] | None = None,
) -> AsyncIterator[ConfigReloader]:
    """A serving reloader for a process role: SIGHUP, file watch and (``admin_listen``)
    ``/admin/*`` on its own address; stopped when the block ends."""
    async with ConfigReloader(path, config, recorder=recorder, adjust=adjust) as reloader:
        stop = asyncio.Event()
        serving = asyncio.create_task(reloader.serve(stop, watch=watch))
        try:
            async with contextlib.AsyncExitStack() as stack:
                if admin_listen is not None:
                    await stack.enter_async_context(serve_admin(reloader, *admin_listen))
                yield reloader
        finally:
            stop.set()
            await serving


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The reload options of a role's command line (run, gateway, worker)."""
    parser.add_argument(
        "--no-watch",
        action="store_true",
        help="reload routing.yaml only on SIGHUP or POST /admin/reload, not when it changes",
    )


def reloading(
    args: argparse.Namespace,
    config: RoutingConfig,
    recorder: ReloadRecorder | None = None,
    adjust: Callable[[RoutingConfig], RoutingConfig] | None = None,
) -> contextlib.AbstractAsyncContextManager[ConfigReloader]:
    """:func:`hot_reload` for a role started by the CLI (its file, watch and admin address)."""
    path = Path(args.config) if args.config else default_config_path()
    admin = config.admin
    listen = None
    if args.command in ("run", "gateway") and admin.port is not None:
        listen = (admin.host or "127.0.0.1", admin.port)
    watch = not getattr(args, "no_watch", False)
    return hot_reload(
        path, config, recorder=recorder, watch=watch, admin_listen=listen, adjust=adjust
    )
