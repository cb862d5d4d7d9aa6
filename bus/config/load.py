"""Load and validate ``routing.yaml``: schema, cross-field rules, adapter kinds, all at once.

Every issue comes back in one :class:`~bus.config.source.ConfigError`, each with its YAML
path and line:column. Adapter kinds are checked through the :class:`KindCatalog` the caller
hands in (the adapter registry; ``adapters.base.load_routing`` passes it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bus.config.kinds import KindCatalog
from bus.config.models import RoutingConfig
from bus.config.rules import config_errors, config_warnings, secret_errors, with_reference_errors
from bus.config.source import ConfigError, ConfigIssue, YamlDocument, issues_from_validation

__all__ = [
    "CONFIG_ENV",
    "Validation",
    "default_config_path",
    "load_config",
    "parse_config",
    "validate_text",
]

CONFIG_ENV = "LGSP_CONFIG"


def parse_config(
    data: Mapping[str, Any], doc: YamlDocument | None = None, *, kinds: KindCatalog
) -> RoutingConfig:
    """Validate a routing mapping; raise :class:`ConfigError` listing every issue."""
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation(exc, doc, RoutingConfig)
        raise ConfigError(with_reference_errors(data, doc, issues, kinds)) from None
    extra = _kind_issues(config, doc, kinds) + config_errors(config, doc)
    if extra:
        raise ConfigError(extra)
    return config


def _kind_issues(
    config: RoutingConfig, doc: YamlDocument | None, kinds: KindCatalog
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for name, svc in config.services.items():
        path: tuple[str | int, ...] = ("services", name, "adapter")
        kind = kinds.get(svc.adapter)
        if kind is None:
            known = ", ".join(sorted(kinds.kinds()))
            issues.append(
                ConfigIssue.at(doc, path, f"unknown adapter kind {svc.adapter!r} (known: {known})")
            )
            continue
        for message in kind.check(name, svc):
            issues.append(ConfigIssue.at(doc, ("services", name), message))
    return issues


def load_config(path: str | os.PathLike[str], *, kinds: KindCatalog) -> RoutingConfig:
    """Read and validate a ``routing.yaml`` file."""
    doc = YamlDocument.from_file(Path(path))
    return parse_config(doc.data, doc, kinds=kinds)


def default_config_path() -> Path:
    """``$LGSP_CONFIG``, else ``./routing.yaml``, else the copy shipped in the package."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path("routing.yaml")
    if local.exists():
        return local
    shipped = resources.files("bus") / "default_routing.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    # Running from a source checkout without installing: the repository's own file.
    return Path(__file__).resolve().parents[2] / "routing.yaml"


@dataclass(frozen=True)
class Validation:
    """What ``config validate`` finds in one file: the config if valid, errors, warnings."""

    config: RoutingConfig | None
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)


def validate_text(
    text: str, source: str, *, kinds: KindCatalog, secrets: bool = False
) -> Validation:
    """Validate routing.yaml text as ``lgsp-bus config validate`` does (and the console's
    config page): every error located; warnings when valid; with ``secrets``, references
    that do not resolve on this host are errors too."""
    try:
        doc = YamlDocument.from_text(text, source)
        config = parse_config(doc.data, doc, kinds=kinds)
    except ConfigError as exc:
        return Validation(None, exc.issues)
    errors = secret_errors(config, doc) if secrets else []
    return Validation(config, errors, config_warnings(config, doc))
