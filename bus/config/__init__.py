r"""``routing.yaml``: its models, where each value came from, the rules across fields, loading.

| module | job |
|---|---|
| ``models`` | pydantic models (frozen, ``extra="forbid"``), secret references |
| ``access`` | models and cross-checks of access control (certificates, rate limits, grants) |
| ``source`` | YAML with line:column per path, located :class:`ConfigIssue`\ s |
| ``rules`` | every rule across fields (one copy), warnings, secret resolution checks |
| ``kinds`` | the protocol adapter kinds satisfy for validation |
| ``load`` | :func:`parse_config` / :func:`load_config`, the default file |
| ``diff``, ``explain`` | semantic diff of two configs; why a call would pass or fail |
"""

from bus.config.kinds import KindCatalog
from bus.config.load import CONFIG_ENV, default_config_path, load_config, parse_config
from bus.config.models import (
    DEFAULT_SENSITIVE_FIELDS,
    AdminKey,
    AdminRole,
    AdminSettings,
    ApiKey,
    AuditPolicy,
    AuditSettings,
    AuthBasic,
    AuthBearer,
    AuthC06,
    AuthNone,
    AuthOAuth2,
    AuthWsse,
    BreakerPolicy,
    BrokerSettings,
    ClientCert,
    ConfigError,
    ConsumerConfig,
    GatewaySettings,
    GatewayTls,
    OperationConfig,
    RateLimit,
    RateLimitBackend,
    RetryPolicy,
    RoutingConfig,
    SecretRef,
    ServiceConfig,
    UpstreamConfig,
    check_secret_ref,
    resolve_secret,
)

__all__ = [
    "CONFIG_ENV",
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
    "KindCatalog",
    "OperationConfig",
    "RateLimit",
    "RateLimitBackend",
    "RetryPolicy",
    "RoutingConfig",
    "SecretRef",
    "ServiceConfig",
    "UpstreamConfig",
    "check_secret_ref",
    "default_config_path",
    "load_config",
    "parse_config",
    "resolve_secret",
]
