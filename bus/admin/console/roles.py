"""Who may do what in the console and the admin API: three roles, separation of duties.

* ``viewer`` — reads: overview, services and access, dead letters (masked), config,
  validation and diff of a proposed config;
* ``operator`` — a viewer who may also replay and purge dead letters and apply (reload) a
  config; never searches the audit trail nor reveals personal data;
* ``auditor`` — a viewer who may also search the audit trail (by citizen, request, …),
  verify its chains, download evidence and reveal the personal data in a dead letter;
  never changes the config nor the queues.

An admin key without ``role`` is an ``operator``: that is what it could do before roles
existed (reload, config, explain), so existing configs keep working unchanged.
"""

from __future__ import annotations

from typing import Final

from bus.admin.access import Principal
from bus.errors import Forbidden

__all__ = ["ACTIONS", "ForbiddenRole", "may", "require"]

ACTIONS: Final[dict[str, frozenset[str]]] = {
    "view": frozenset({"viewer", "operator", "auditor"}),
    "config.check": frozenset({"viewer", "operator", "auditor"}),
    "config.apply": frozenset({"operator"}),
    "dlq.replay": frozenset({"operator"}),
    "dlq.purge": frozenset({"operator"}),
    "dlq.reveal": frozenset({"auditor"}),
    "audit.search": frozenset({"auditor"}),
    "audit.verify": frozenset({"auditor"}),
    "audit.evidence": frozenset({"auditor"}),
}
"""Action → the roles allowed it."""


class ForbiddenRole(Forbidden):
    """The admin key's role does not allow this action."""

    default_code = "FORBIDDEN_ROLE"


def may(principal: Principal, action: str) -> bool:
    """Whether ``principal``'s role allows ``action`` (an unknown action: no one)."""
    return principal.role in ACTIONS.get(action, frozenset())


def require(principal: Principal, action: str) -> None:
    """Raise ``403 FORBIDDEN_ROLE`` unless ``principal`` may do ``action``."""
    if not may(principal, action):
        raise ForbiddenRole(f"the role {principal.role} may not {action}")
