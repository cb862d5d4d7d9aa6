"""What config validation needs to know of adapter kinds, without importing ``adapters``.

The adapter registry (``adapters.base.registry``) satisfies :class:`KindCatalog`; the
composition root hands it to :func:`bus.config.load.parse_config`, so ``bus.config`` stays
below the adapters in the layers (``adapters`` import ``bus.config``, never the reverse).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bus.config.models import ServiceConfig

__all__ = ["KindCatalog", "KindCheck"]


class KindCheck(Protocol):
    """One adapter kind, as far as config validation is concerned."""

    def check(self, service_name: str, service: ServiceConfig) -> list[str]:
        """Problems with this service's config, in words for an operator (empty if fine)."""
        ...


class KindCatalog(Protocol):
    """Adapter kinds by name."""

    def get(self, name: str) -> KindCheck | None:
        """The kind called ``name``, if any."""
        ...

    def kinds(self) -> Iterable[str]:
        """Names of every known kind."""
        ...
