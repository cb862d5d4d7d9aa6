"""Pydantic models of ``routing.yaml``: frozen, ``extra="forbid"``, validated once at start.

Secrets are never inline: every secret field is a :class:`SecretRef` (``env:NAME`` or
``file:PATH``), resolved only when the secret is used. Loading reports every error at once
with its YAML path and line:column (see :mod:`bus.config.source`).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from bus.config.access import (
    DEFAULT_SENSITIVE_FIELDS,
    XROAD_CLIENT_RE,
    XROAD_SERVICE_RE,
    ClientCert,
    RateLimit,
    parse_expiry,
    security_problems,
)
from bus.config.delivery import (
    EVENT_TYPE_RE,
    DeliverySettings,
    EventType,
    Redelivery,
    SourceConfig,
    Subscription,
    is_loopback,
)
from bus.config.listeners import listener_problems
from bus.config.matching import MatchPolicy
from bus.config.provider import ProviderSettings, provider_problems
from bus.config.secretlike import url_secret_problem
from bus.config.source import ConfigError

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "AdminKey",
    "AdminRole",
    "AdminSettings",
    "ApiKey",
    "AuditPolicy",
    "AuditSettings",
    "AuthBasic",
    "AuthBearer",
    "AuthC06",
    "AuthNone",
    "AuthOAuth2",
    "AuthWsse",
    "BreakerPolicy",
    "BrokerSettings",
    "ClientCert",
    "ConfigError",
    "ConsumerConfig",
    "GatewaySettings",
    "GatewayTls",
    "ObserveSettings",
    "OperationConfig",
    "RateLimit",
    "RateLimitBackend",
    "ReportSettings",
    "RetryPolicy",
    "RoutingConfig",
    "SecretRef",
    "ServiceConfig",
    "StoreKey",
    "StoreSettings",
    "TracingSettings",
    "UpstreamConfig",
    "check_secret_ref",
    "resolve_secret",
]

_SECRET_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
_NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"
_TRANSPARENCY_RE = re.compile(r"^(?:full|excluded|delayed\(([1-9][0-9]{0,3}) days?\))$")


def check_secret_ref(value: str) -> str:
    """``value`` if it is a secret reference (``env:NAME``/``file:PATH``); else ``ValueError``."""
    if not _SECRET_RE.fullmatch(value):
        raise ValueError("inline secrets are not allowed: write a reference, env:NAME or file:PATH")
    return value


SecretRef = Annotated[
    str,
    AfterValidator(check_secret_ref),
    # Editors (yaml-language-server) flag an inline secret from the JSON Schema alone.
    WithJsonSchema(
        {"type": "string", "pattern": _SECRET_RE.pattern, "description": "env:NAME or file:PATH"}
    ),
]
Name = Annotated[str, Field(pattern=_NAME_RE)]
AuditPolicy = Literal["fail_closed", "fail_open"]


def resolve_secret(ref: str) -> str:
    """Read the secret a reference points at; raises ``KeyError``/``OSError`` if it is missing."""
    kind, _, target = ref.partition(":")
    if kind == "env":
        value = os.environ.get(target)
        if value is None:
            raise KeyError(f"environment variable {target} is not set")
        return value
    if kind == "file":
        return _read_secret_file(Path(target))
    raise ValueError(f"not a secret reference: {kind}:…")


MIN_AUDIT_KEY_CHARS = 16
"""Shortest audit subject key ``run`` accepts (``config validate --secrets`` checks it too)."""
MAX_SECRET_BYTES = 64 * 1024
"""Longest secret file read (a key, a token, a PEM password); ``file:/dev/zero`` or a
mistaken large file is refused instead of read without end."""


def _read_secret_file(path: Path) -> str:
    with path.open("rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"secret file {path} is not a regular file")
        data = f.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"secret file {path} is longer than {MAX_SECRET_BYTES} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Model):
    """How an operation retries transient upstream failures."""

    attempts: int = Field(3, ge=1, le=10, description="total attempts, the first included")
    backoff_initial_s: float = Field(0.1, gt=0, le=10)
    backoff_max_s: float = Field(2.0, gt=0, le=60, description="cap on one delay")
    jitter_s: float = Field(0.1, ge=0, le=10)
    budget_s: float | None = Field(
        None,
        gt=0,
        le=120,
        description="cap on the time all attempts and waits may take (default: until the "
        "deadline); the request's deadline always bounds it",
    )
    attempt_timeout_s: float | None = Field(
        None,
        gt=0,
        le=120,
        description="cap on one attempt, so a hanging call leaves time for another "
        "(default: the whole remaining budget)",
    )

    @model_validator(mode="after")
    def _backoff(self) -> RetryPolicy:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class BreakerPolicy(_Model):
    """Circuit breaker of one upstream: opens on a failure ratio over a sliding window."""

    enabled: bool = True
    window_s: int = Field(30, ge=1, le=600, description="sliding window of recent calls")
    min_calls: int = Field(
        10, ge=1, le=100_000, description="calls in the window before the ratio may open it"
    )
    failure_ratio: float = Field(
        0.5, gt=0, le=1, description="failed/total calls in the window that opens it"
    )
    open_s: float = Field(15.0, gt=0, le=600, description="how long it fails fast once open")
    half_open_probes: int = Field(
        1, ge=1, le=100, description="calls let through at once to probe a recovering upstream"
    )


class OperationConfig(_Model):
    """One operation of a service."""

    timeout_s: float = Field(10.0, gt=0, le=120, description="deadline of the whole call")
    retry: RetryPolicy = RetryPolicy()
    idempotent: bool = Field(True, description="safe to retry after the upstream may have acted")
    description: str = ""
    options: dict[str, Any] = Field(
        default_factory=dict, description="adapter-specific settings of this operation"
    )
    mode: Literal["call", "send"] = Field(
        "call",
        description="call: the caller waits for the answer; send: 202 once the message is "
        "durably queued, a worker delivers it (GET /v1/messages/<id> for its state)",
    )
    deliver_within_s: float = Field(
        3 * 86_400.0,
        ge=60,
        le=30 * 86_400,
        description="send: after this it is dead-lettered (at least 60 s: longer than a "
        "dead gateway's accept grace)",
    )
    order_by: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")] | None = Field(
        None, description="send: messages with the same value here are delivered in order"
    )
    redelivery: Redelivery = Field(Redelivery(), description="send: spacing of delivery rounds")
    match: MatchPolicy | None = Field(
        None, description="the subject match policy (bus.config.matching); else the service's"
    )
    citizen_ids: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]] = Field(
        default_factory=list,
        description="answer fields (dotted; lists walked) holding citizens' ID numbers: each "
        "one found is keyed in the audit record (beside those the adapter kind declares)",
    )

    @model_validator(mode="after")
    def _retry_within_timeout(self) -> OperationConfig:
        for name in ("budget_s", "attempt_timeout_s"):
            value = getattr(self.retry, name)
            if value is not None and value > self.timeout_s:
                raise ValueError(f"retry.{name} must not exceed timeout_s (the deadline)")
        return self


class AuthNone(_Model):
    """No upstream authentication."""

    kind: Literal["none"] = "none"


class AuthBearer(_Model):
    """A static bearer token."""

    kind: Literal["bearer"]
    token: SecretRef


class AuthBasic(_Model):
    """HTTP Basic."""

    kind: Literal["basic"]
    username: str
    password: SecretRef


class AuthC06(_Model):
    """C06 scheme: ``Timestamp`` + Basic of sha256(url+user+timestamp+secret)."""

    kind: Literal["c06"]
    username: str
    secret: SecretRef


class AuthOAuth2(_Model):
    """OAuth2 client credentials, token cached and refreshed before expiry."""

    kind: Literal["oauth2"]
    token_url: str
    client_id: str
    client_secret: SecretRef
    scope: str | None = None
    refresh_margin_s: float = Field(30.0, ge=0)
    lgsp_access_token: SecretRef | None = Field(
        None, description="value of the LGSP 'lgspaccesstoken' header, if the gateway wants one"
    )


class AuthWsse(_Model):
    """WS-Security UsernameToken in the SOAP header."""

    kind: Literal["wsse"]
    username: str
    password: SecretRef
    digest: bool = False


UpstreamAuth = Annotated[
    AuthNone | AuthBearer | AuthBasic | AuthC06 | AuthOAuth2 | AuthWsse,
    Field(discriminator="kind"),
]


class UpstreamConfig(_Model):
    """A national database endpoint."""

    url: str = Field(description="base URL (REST) or endpoint URL (SOAP)")
    auth: UpstreamAuth = AuthNone()
    allow_plain_http: bool = Field(
        False, description="permit http:// — only for loopback/test upstreams such as simulators"
    )
    verify_tls: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: SecretRef | None = None
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    max_connections: int = Field(64, ge=1, le=1024)
    max_response_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    breaker: BreakerPolicy = BreakerPolicy()
    xroad: bool = Field(
        False, description="an X-Road/NDXP endpoint: X-Road-Client/-Id/-UserId are forwarded"
    )
    xroad_client: Annotated[str, Field(pattern=XROAD_CLIENT_RE.pattern)] | None = Field(
        None, description="this bus's X-Road client id at that endpoint (else the caller's)"
    )
    xroad_service: Annotated[str, Field(pattern=XROAD_SERVICE_RE.pattern)] | None = Field(
        None, description="X-Road-Service sent to that endpoint"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        problem = url_secret_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _plain_http(self) -> UpstreamConfig:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not (self.allow_plain_http and is_loopback(parts.hostname)):
            raise ValueError(
                "plain http:// upstream: use https://, or set allow_plain_http: true "
                "for a loopback test upstream"
            )
        return self


class ServiceConfig(_Model):
    """A service the bus exposes at ``/v1/<service>/<operation>``."""

    adapter: str = Field(description="adapter kind, e.g. civil_status, population_db, rest, soap")
    upstream: str = Field(description="name of an entry in upstreams")
    description: str = ""
    personal_data: bool = Field(
        True, description="calls need purpose (procedure, dossier, legal basis) and an officer"
    )
    sensitive_fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVE_FIELDS),
        description="reply keys (at any depth) returned only to consumers granted them",
    )
    operations: dict[Name, OperationConfig] = Field(min_length=1)
    options: dict[str, Any] = Field(
        default_factory=dict, description="adapter-specific settings of this service"
    )
    audit: AuditPolicy | None = Field(
        None,
        description="fail_closed: the answer waits until its audit record is durable; "
        "fail_open: answer first, record queued (default: fail_closed if personal_data, "
        "else audit.default_policy)",
    )
    match: MatchPolicy = Field(
        MatchPolicy(), description="subject match policy of its operations (bus.config.matching)"
    )


class ApiKey(_Model):
    """One API key of a consumer: a reference to the key, or its SHA-256."""

    key: SecretRef | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    expires: str | None = Field(
        None, description="ISO date (valid through that day, UTC) or date-time with offset"
    )
    label: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = Field(
        None, description="names the key in logs (e.g. 2026-q1), so a rotation can be followed"
    )

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: str | None) -> str | None:
        if value is not None:
            parse_expiry(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> ApiKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of key (a secret reference) or sha256")
        return self


class ConsumerConfig(_Model):
    """A calling system (the procedure system of a province, …)."""

    description: str = ""
    api_keys: list[ApiKey] = Field(default_factory=list)
    client_certs: list[ClientCert] = Field(
        default_factory=list, description="mutual-TLS certificates that identify this consumer"
    )
    require_client_cert: bool = Field(
        False,
        description="an API key of this consumer works only together with one of its "
        "client_certs (the key alone is refused)",
    )
    allow: dict[str, list[str]] = Field(
        default_factory=dict, description="service → operations this consumer may call"
    )
    fields: dict[str, list[str]] = Field(
        default_factory=dict,
        description="service → reply fields (dotted paths) this consumer gets; unlisted "
        "service: every non-sensitive field",
    )
    sensitive: dict[str, list[str]] = Field(
        default_factory=dict,
        description="service → sensitive fields (ethnicity, religion …) granted explicitly",
    )
    rate_limit: RateLimit | None = Field(
        None,
        description="per gateway process, or for all gateways with "
        "gateway.rate_limit_backend kind redis; none: no limit",
    )
    xroad_client: Annotated[str, Field(pattern=XROAD_CLIENT_RE.pattern)] | None = Field(
        None, description="this consumer's X-Road client id (INSTANCE/CLASS/MEMBER/SUBSYSTEM)"
    )
    publish: list[str] = Field(
        default_factory=list, description="event types this consumer may publish"
    )
    subscriptions: dict[Name, Subscription] = Field(
        default_factory=dict, description="events this consumer receives (webhook or pull)"
    )
    display_name: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None,
        description="the organisation as a citizen reads it in 'report subject' "
        "(e.g. 'UBND phường Bến Nghé'); default: the consumer's name",
    )
    transparency: Annotated[str, Field(pattern=_TRANSPARENCY_RE.pattern)] = Field(
        "full",
        description="what citizens and published statistics see of this consumer's "
        "accesses: full; 'delayed(N days)' (a subject's report shows an access only N days "
        "after it; left out of 'report stats'); excluded (never shown to the subject, left "
        "out of 'report stats'; e.g. police investigations)",
    )

    @property
    def transparency_delay_days(self) -> int | None:
        """Days before a subject may see an access: 0 (full), N (delayed), None (excluded)."""
        if self.transparency == "full":
            return 0
        match = _TRANSPARENCY_RE.fullmatch(self.transparency)
        if match is None or match.group(1) is None:
            return None
        return int(match.group(1))

    @property
    def covert(self) -> bool:
        """Delayed or excluded: left out of published statistics."""
        return self.transparency != "full"


class GatewayTls(_Model):
    """HTTPS at the gateway; ``client_auth`` turns on mutual TLS."""

    cert_file: str = Field(description="PEM certificate chain of the gateway")
    key_file: str = Field(description="PEM private key of the gateway")
    key_password: SecretRef | None = None
    client_ca_file: str | None = Field(None, description="PEM CA(s) client certificates chain to")
    client_auth: Literal["none", "optional", "required"] = Field(
        "none", description="optional: a certificate, if sent, must verify; required: must send"
    )
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    @model_validator(mode="after")
    def _ca(self) -> GatewayTls:
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(f"client_auth {self.client_auth} needs client_ca_file")
        return self


def _check_redis_url(value: str) -> str:
    if _SECRET_RE.fullmatch(value):
        return value  # env:NAME / file:PATH holding the whole URL
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("must be a redis:// or rediss:// URL, or env:NAME / file:PATH")
    if parts.password is not None:
        raise ValueError("inline secrets are not allowed: give the URL as env:NAME or file:PATH")
    return value


class RateLimitBackend(_Model):
    """Where the consumers' token buckets live: this process, or Redis for every gateway."""

    kind: Literal["process", "redis"] = Field(
        "process",
        description="process: one bucket per gateway process (N gateways admit N× the "
        "rate); redis: one bucket per consumer for every gateway sharing the Redis",
    )
    url: Annotated[str, AfterValidator(_check_redis_url)] | None = Field(
        None, description="redis:// URL (without password) or env:NAME / file:PATH holding it"
    )
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] = Field(
        "lgsp:ratelimit:", description="prefix of the bucket keys (one hash per consumer)"
    )
    timeout_s: float = Field(
        0.25,
        gt=0,
        le=5,
        description="bound on one Redis round trip; past it, or when Redis is unreachable, "
        "the gateway falls back to its own bucket for a second",
    )

    @model_validator(mode="after")
    def _url(self) -> RateLimitBackend:
        if self.kind == "redis" and self.url is None:
            raise ValueError("kind redis needs url")
        return self


class GatewaySettings(_Model):
    """HTTP edge settings."""

    rate_limit_backend: RateLimitBackend = Field(
        RateLimitBackend(), description="where consumers' rate-limit buckets live"
    )

    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_in_flight: int = Field(1024, ge=1)
    max_in_flight_per_consumer: int | None = Field(
        None,
        ge=1,
        description="calls (async ones too) one consumer may have in flight; default: "
        "max_in_flight less a quarter, so one consumer's burst cannot take every slot",
    )
    shutdown_grace_s: float = Field(15.0, ge=0, le=300)
    keepalive_timeout_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description="an idle connection (nothing sent yet, or nothing since the last answer) "
        "is closed after this; also the admin listener's",
    )
    request_read_timeout_s: float = Field(
        20.0,
        ge=1,
        le=300,
        description="a request's line, headers and body must arrive within this of its first "
        "byte, else the connection is closed (slow clients); also the admin listener's",
    )
    max_deadline_s: float = Field(
        60.0, gt=0, le=600, description="cap on every operation's timeout_s (the longest deadline)"
    )
    max_clock_skew_s: float = Field(
        300.0, ge=1, le=86_400, description="requested_at further from now → CLOCK_SKEW"
    )
    tls: GatewayTls | None = Field(None, description="serve HTTPS (and mutual TLS)")
    xroad_provider: Annotated[str, Field(pattern=XROAD_CLIENT_RE.pattern)] | None = Field(
        None, description="this bus's X-Road id; X-Road-Service headers must name it"
    )
    idempotency_ttl_s: float = Field(
        3_600.0,
        ge=60,
        le=30 * 86_400,
        description="how long a request_id's answer is kept for repeats and GET /v1/messages",
    )


def _check_amqp_url(value: str) -> str:
    if _SECRET_RE.fullmatch(value):
        return value  # env:NAME / file:PATH holding the whole URL
    parts = urlsplit(value)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("must be an amqp:// or amqps:// URL, or env:NAME / file:PATH")
    if parts.password is not None:
        raise ValueError(
            "inline secrets are not allowed: drop the password from the URL and set "
            "broker.password (env:NAME or file:PATH), or give the URL as env:NAME"
        )
    return value


AmqpUrl = Annotated[str, AfterValidator(_check_amqp_url)]


class BrokerSettings(_Model):
    """Broker topology and consumption settings."""

    urls: list[AmqpUrl] = Field(
        default_factory=list,
        max_length=16,
        description="AMQP URLs of the RabbitMQ cluster's nodes (without password); the bus "
        "connects to the first that answers and fails over to the next when it dies. "
        "LGSP_AMQP_URL, when set, wins (one URL or several separated by commas)",
    )
    password: SecretRef | None = Field(
        None, description="password put into each of urls that names a user"
    )
    quorum_group_size: int | None = Field(
        None,
        ge=1,
        le=16,
        description="replicas of each quorum queue (x-quorum-initial-group-size) when it is "
        "first declared; default: RabbitMQ's (every node of the cluster, up to its limit)",
    )
    prefetch: int = Field(32, ge=1, le=10_000)
    delivery_limit: int = Field(5, ge=1, le=100)
    max_queue_length: int = Field(10_000, ge=1)
    dlq_ttl_s: int = Field(14 * 24 * 3600, ge=60, description="how long the DLQ keeps messages")


AdminRole = Literal["viewer", "operator", "auditor"]
"""What an admin key may do (:mod:`bus.admin.console.roles` enforces it)."""


class AdminKey(ApiKey):
    """An operator's credential for ``/admin/*`` (never a consumer's key)."""

    name: str = Field(
        "admin", pattern=_NAME_RE, description="who holds the key; recorded with each admin action"
    )
    role: AdminRole = Field(
        "operator",
        description="viewer: read only; operator: also DLQ replay/purge and config reload; "
        "auditor: also audit search, reveal of personal data, evidence (default operator: "
        "what a key without a role could do before roles existed)",
    )


class AdminSettings(_Model):
    """The ``/admin/*`` endpoints (config reload, …): who may call them and where."""

    api_keys: list[AdminKey] = Field(
        default_factory=list, description="admin credentials; none: /admin/* is switched off"
    )
    host: str | None = Field(
        None, description="serve /admin/* on this address instead of the gateway's (with port)"
    )
    port: int | None = Field(
        None, ge=0, le=65535, description="serve /admin/* on this port instead of the gateway's"
    )
    tls: GatewayTls | None = Field(
        None,
        description="HTTPS of the admin listener (with port); default: gateway.tls, so the "
        "admin listener is HTTPS whenever the gateway is",
    )
    allow_plain_http: bool = Field(
        False,
        description="permit a plain-HTTP admin listener on a non-loopback host (without any "
        "TLS it is refused: keys and console sessions would cross the network in clear)",
    )
    session_s: float = Field(
        8 * 3600.0, ge=60, le=86_400, description="a console login lasts at most this long"
    )
    session_idle_s: float = Field(
        1800.0, ge=60, le=86_400, description="a console session unused this long ends"
    )


class AuditSettings(_Model):
    """The audit trail: subject-key secret, default durability policy, writer bounds."""

    subject_key: SecretRef | None = Field(
        None,
        description="HMAC key for subject keys (env:NAME or file:PATH, at least 16 "
        "characters); without it records carry no subject key and cannot be queried by "
        "citizen",
    )
    default_policy: AuditPolicy = Field(
        "fail_open",
        description="policy of services without personal data and of requests that never "
        "reached a service (unauthenticated, unknown service)",
    )
    commit_timeout_s: float = Field(
        2.0,
        gt=0,
        le=30,
        description="bound on one group commit; a fail_closed answer waits "
        "at most about twice this",
    )
    max_batch: int = Field(1000, ge=1, le=10_000, description="records per group commit")
    max_backlog: int = Field(
        50_000,
        ge=1,
        description="records waiting to be written; when full, requests get "
        "503 AUDIT_UNAVAILABLE instead of a record being dropped",
    )
    retention_days: int = Field(
        365, ge=1, description="'audit prune' refuses to delete younger records without --force"
    )


class StoreKey(_Model):
    """One at-rest key (bus/sealing.py): its id is kept beside every value it seals."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$", description="e.g. 2026-12")
    key: SecretRef = Field(description="env:NAME or file:PATH, at least 32 characters")


class StoreSettings(_Model):
    """Encryption at rest (AES-256-GCM) of stored answers and dead letters."""

    keys: list[StoreKey] = Field(
        default_factory=list,
        description="the first seals, every one opens (rotate: put the new key first, drop the "
        "old one after 'lgsp-bus store retire-keys'); none: a SQLite store uses the key file "
        "<db>.key beside it, a PostgreSQL store a key of each process",
    )

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[StoreKey]) -> list[StoreKey]:
        if len({k.id for k in keys}) != len(keys):
            raise ValueError("store.keys ids must be unique")
        return keys


class ReportSettings(_Model):
    """The data-protection reports (``lgsp-bus report``, ``/admin/reports/*``)."""

    k_anonymity: int = Field(
        10,
        ge=2,
        le=10_000,
        description="'report stats' suppresses every cell whose calls or distinct "
        "subjects are fewer than this",
    )


class TracingSettings(_Model):
    """OpenTelemetry traces over OTLP/HTTP (bus/observe/tracing.py); off by default."""

    enabled: bool = Field(
        False,
        description="export traces; also on when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set "
        "(OTEL_SDK_DISABLED=true turns it off)",
    )
    endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces "
        "(default: the OTEL_EXPORTER_OTLP_* environment)",
    )
    service_name: str | None = Field(
        None,
        description="service.name of the spans (default: OTEL_SERVICE_NAME, else lgsp-bus-<role>)",
    )
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of new traces kept (a caller's sampled flag wins)"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
            if parts.password is not None:
                raise ValueError("inline secrets are not allowed in the endpoint")
        return value


class ObserveSettings(_Model):
    """Who may read ``/metrics`` and the detail of ``/readyz`` (consumer names, traffic)."""

    metrics_token: SecretRef | None = Field(
        None,
        description="bearer token (env:NAME or file:PATH) Prometheus sends to /metrics; the "
        "detail of /readyz needs it too (without it: status and checks only). Unset: both "
        "are open to whoever reaches the port",
    )


class RoutingConfig(_Model):
    """The whole of ``routing.yaml``."""

    version: Literal[1] = 1
    node: str = Field("lgsp-1", pattern=_NAME_RE)
    gateway: GatewaySettings = GatewaySettings()
    broker: BrokerSettings = BrokerSettings()
    consumers: dict[Name, ConsumerConfig] = Field(default_factory=dict)
    upstreams: dict[Name, UpstreamConfig] = Field(default_factory=dict)
    services: dict[Name, ServiceConfig] = Field(default_factory=dict)
    admin: AdminSettings = AdminSettings()
    audit: AuditSettings = AuditSettings()
    delivery: DeliverySettings = DeliverySettings()
    events: dict[str, EventType] = Field(
        default_factory=dict, description="event types: name (e.g. citizen.record.changed)"
    )
    sources: dict[Name, SourceConfig] = Field(
        default_factory=dict, description="scheduled pulls: an upstream list polled into events"
    )
    reports: ReportSettings = ReportSettings()
    store: StoreSettings = StoreSettings()
    tracing: TracingSettings = TracingSettings()
    observe: ObserveSettings = ObserveSettings()
    provider: ProviderSettings | None = Field(
        None, description="services served to X-Road/NDXP callers (bus/config/provider.py)"
    )

    @model_validator(mode="after")
    def _references(self) -> RoutingConfig:
        problems: list[str] = _event_problems(self)
        for name, svc in self.services.items():
            if svc.upstream not in self.upstreams:
                problems.append(f"services.{name}.upstream names unknown upstream {svc.upstream!r}")
        for cname, consumer in self.consumers.items():
            for sname, ops in consumer.allow.items():
                known = self.services.get(sname)
                if known is None:
                    problems.append(f"consumers.{cname}.allow names unknown service {sname!r}")
                    continue
                for op in ops:
                    if op != "*" and op not in known.operations:
                        problems.append(
                            f"consumers.{cname}.allow.{sname} names unknown operation {op!r}"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _security_references(self) -> RoutingConfig:
        problems = security_problems(self) + provider_problems(self) + listener_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _event_problems(config: RoutingConfig) -> list[str]:
    """Event types named by grants and subscriptions must be declared."""
    problems = [
        f"services.{name}: the name is reserved for /v1/{name}"
        for name in config.services
        if name in ("events", "messages", "services")
    ]
    problems += [
        f"events.{name} is not a valid event type name (e.g. citizen.record.changed)"
        for name in config.events
        if not EVENT_TYPE_RE.fullmatch(name)
    ]
    for name, src in config.sources.items():
        svc = config.services.get(src.service)
        ops = [src.list_operation, *([src.get_operation] if src.get_operation else [])]
        if svc is None:
            problems.append(f"sources.{name}.service names unknown service {src.service!r}")
        else:
            problems += [
                f"sources.{name} names unknown operation {op!r} of {src.service}"
                for op in ops
                if op not in svc.operations
            ]
        if src.event not in config.events:
            problems.append(f"sources.{name}.event names unknown event type {src.event!r}")
        if src.consumer not in config.consumers:
            problems.append(f"sources.{name}.consumer names unknown consumer {src.consumer!r}")
    for cname, consumer in config.consumers.items():
        for event in consumer.publish:
            if event not in config.events:
                problems.append(f"consumers.{cname}.publish names unknown event type {event!r}")
        for sname, sub in consumer.subscriptions.items():
            for event in sub.events:
                if event not in config.events:
                    problems.append(
                        f"consumers.{cname}.subscriptions.{sname} names unknown event "
                        f"type {event!r}"
                    )
    return problems
