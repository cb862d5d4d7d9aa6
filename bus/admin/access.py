"""Who may use ``/admin/*``: the admin keys of the config in force, each naming who holds
it and its role (:class:`Principal`), following reloads (:class:`AdminTarget`); the state
every admin handler works with (:class:`AdminState`, ``app[ADMIN]``). The endpoints are
:mod:`bus.admin.api`, the console :mod:`bus.admin.console`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web

from bus.config import AdminRole, AdminSettings, RoutingConfig, resolve_secret
from bus.config.access import parse_expiry
from bus.config.keys import shared_keys
from bus.errors import NotFoundError, RequestError, Unauthenticated
from bus.gateway.security import bearer_key
from bus.reload.reloader import ConfigReloader

__all__ = [
    "ADMIN",
    "AdminDisabled",
    "AdminKeys",
    "AdminState",
    "AdminTarget",
    "ConfigRejected",
    "Principal",
    "admin_keys",
    "admin_state",
    "authorised",
]

log = structlog.get_logger("bus.admin.api")


class AdminDisabled(NotFoundError):
    """No admin keys are configured, so ``/admin/*`` is off."""

    default_code = "ADMIN_DISABLED"


class ConfigRejected(RequestError):
    """The routing file failed validation; the running config stays."""

    status = 422
    default_code = "CONFIG_REJECTED"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an admin key (or a console session) is: the key's name and role."""

    name: str
    role: AdminRole


@dataclass(frozen=True, slots=True)
class _AdminKey:
    digest: bytes
    principal: Principal
    expires: datetime | None


class AdminKeys:
    """The admin credentials of one config (references resolved once)."""

    def __init__(self, settings: AdminSettings) -> None:
        self._keys: dict[bytes, _AdminKey] = {}
        for index, entry in enumerate(settings.api_keys):
            if entry.key is not None:
                try:
                    secret = resolve_secret(entry.key)
                except (KeyError, OSError) as exc:
                    reason = exc.args[0] if isinstance(exc, KeyError) else exc.strerror
                    raise ValueError(f"admin.api_keys[{index}]: {reason}") from None
                hexdigest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
            else:
                hexdigest = str(entry.sha256)
            digest = bytes.fromhex(hexdigest)
            expires = parse_expiry(entry.expires) if entry.expires else None
            self._keys[digest] = _AdminKey(digest, Principal(entry.name, entry.role), expires)

    @property
    def enabled(self) -> bool:
        """At least one admin key is configured."""
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The admin's name for an ``Authorization`` value; raises ``Unauthenticated``."""
        return self.identify(authorization).name

    def current(self, digest: bytes) -> Principal | None:
        """Who the key with this SHA-256 digest is now (``None``: gone or expired)."""
        found = self._keys.get(digest)
        if found is None or (found.expires is not None and found.expires <= datetime.now(UTC)):
            return None
        return found.principal

    def identify(self, authorization: str | None) -> Principal:
        """The admin (name, role) for an ``Authorization`` value; raises ``Unauthenticated``."""
        required = "an admin key is required: Authorization: Bearer <key>"
        return bearer_key(authorization or "", self._keys, malformed=required).principal


class AdminTarget:
    """Follows the admin keys through reloads (a missing key reference rejects the file)."""

    name = "admin"

    def __init__(self, config: RoutingConfig) -> None:
        self.keys = admin_keys(config)

    async def prepare(self, old: RoutingConfig, new: RoutingConfig) -> _KeysSwap:
        """Resolve the new admin keys."""
        return _KeysSwap(self, admin_keys(new))


def admin_keys(config: RoutingConfig) -> AdminKeys:
    """The config's admin keys; ``ValueError`` if one has a consumer key's value."""
    shared = shared_keys(config)
    if shared:
        raise ValueError(shared[0][1])
    return AdminKeys(config.admin)


@dataclass
class _KeysSwap:
    target: AdminTarget
    keys: AdminKeys

    def commit(self) -> None:
        self.target.keys = self.keys

    async def settle(self, closing: object) -> None:
        """Nothing to release."""

    async def abort(self) -> None:
        """Nothing was opened."""


@dataclass
class AdminState:
    """What /admin/* works with: the reloader (config, handles, auditor) and the keys."""

    reloader: ConfigReloader
    target: AdminTarget


ADMIN = web.AppKey("admin", AdminState)


def admin_state(request: web.Request) -> AdminState:
    """The app's admin state; ``AdminDisabled`` without admin keys."""
    admin = request.app[ADMIN]
    if not admin.target.keys.enabled:
        raise AdminDisabled("/admin/* is off: no admin.api_keys in routing.yaml")
    return admin


def authorised(request: web.Request) -> tuple[AdminState, Principal]:
    """The admin state and the caller of ``request`` by its bearer key."""
    admin = admin_state(request)
    try:
        principal = admin.target.keys.identify(request.headers.get("Authorization"))
    except Unauthenticated:
        log.warning("admin.auth_failed", path=request.path, peer=request.remote)
        raise
    return admin, principal
