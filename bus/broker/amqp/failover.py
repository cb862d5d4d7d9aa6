"""A robust AMQP connection over the nodes of a RabbitMQ cluster: failover between them.

``broker.urls`` (or a comma-separated ``LGSP_AMQP_URL``) names several nodes of one
cluster. :class:`FailoverConnection` is aio-pika's robust connection with one change:
each connection attempt goes to the next node of the list, round robin. The first
attempt goes to the first node; when the connection drops (the node died, or the network
to it) the next attempt goes straight to the next node, and an attempt that fails moves
on again after aio-pika's ``reconnect_interval``. Everything else — re-opening the
channels, re-declaring the topology — is aio-pika's own recovery, now on the new node,
followed by the consumers registered again (:mod:`bus.broker.amqp.consumers`).

aio-pika has no public hook for "which URL does this attempt use": the override is of
``RobustConnection``'s private connection step (name-mangled
``_RobustConnection__connect_transport``), pinned to aio-pika < 11 in ``pyproject.toml``
and exercised by ``tests/test_amqp_cluster.py`` (SIGKILL of a node under load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
from yarl import URL

__all__ = ["FailoverConnection", "split_urls"]


def split_urls(address: str) -> list[str]:
    """The node URLs of ``address``: one AMQP URL, or several separated by commas (a comma
    inside a password is written ``%2C``)."""
    return [part.strip() for part in address.split(",") if part.strip()]


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection whose every connection attempt goes to the next of ``nodes``."""

    def __init__(
        self,
        url: URL,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        nodes: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.nodes: tuple[URL, ...] = tuple(URL(n) for n in nodes) or (URL(url),)
        self.attempts = 0
        """Connection attempts so far; attempt ``n`` (from 0) goes to ``nodes[n % len]``."""
        super().__init__(url, loop, **kwargs)

    @property
    def node(self) -> URL:
        """The node of the current (or last) connection attempt."""
        return self.url

    async def _RobustConnection__connect_transport(self) -> None:
        # Private in aio-pika (see the module docstring): the step each attempt runs.
        self.url = self.nodes[self.attempts % len(self.nodes)]
        self.attempts += 1
        step = super()._RobustConnection__connect_transport  # type: ignore[misc]
        await step()
