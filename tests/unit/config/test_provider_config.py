"""``provider:`` in routing.yaml: the shipped commented example validates and is explained,
``lgsp-bus run`` would start its simulator; bad provider entries are located errors."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from adapters.base import parse_routing
from bus.cli.roles import simulators_for
from bus.config import ConfigError
from bus.config.explain import explain, render_table
from tests.support.paths import REPO


def shipped_with_example() -> dict[str, Any]:
    """The shipped routing.yaml with its commented X-Road provider example merged in."""
    text = (REPO / "routing.yaml").read_text()
    start = text.index("# provider:")
    end = text.index("# Operators' endpoints")
    example = "\n".join(
        re.sub(r"^# ?", "", line) for line in text[start:end].splitlines() if line.strip()
    )
    extra = yaml.safe_load(example)
    data = yaml.safe_load(text)
    data["provider"] = extra["provider"]
    for section in ("consumers", "upstreams", "services"):
        data[section].update(extra[section])
    return dict(data)


def test_shipped_example_validates_explains_and_has_a_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LGSP_SIM_PROCEDURE_TOKEN", "t" * 20)
    for name in ("LGSP_SIM_CIVIL_STATUS_TOKEN", "LGSP_SIM_POPULATION_SECRET"):
        monkeypatch.setenv(name, "s" * 20)
    config = parse_routing(shipped_with_example())
    assert config.provider is not None
    result = explain(config, "national-portal", "dossier-status", "status")
    assert result.allowed
    assert result.xroad == [
        {
            "service_code": "getDossierStatus",
            "version": "v1",
            "service_id": "VN/GOV/000.00.00.H31/LGSP/getDossierStatus/v1",
            "client": "VN/GOV/000.00.00.G22/DVCQG",
            "allowed": True,
        }
    ]
    assert "x-road" in render_table(result)
    denied = explain(config, "demo", "dossier-status", "status")
    assert not denied.allowed
    assert denied.xroad[0]["allowed"] is False
    kinds = {sim.kind for sim in simulators_for(config)}
    assert kinds == {"civil-status", "population", "procedure"}


def test_bad_provider_entries_are_errors() -> None:
    data = shipped_with_example()
    bad = copy.deepcopy(data)
    bad["provider"]["services"]["getDossierStatus"]["operation"] = "nope"
    bad["provider"]["services"]["listMethods"] = {
        "service": "dossier-status",
        "operation": "status",
    }
    bad["provider"]["member"] = "VN/GOV/000.00.00.H31"
    bad["provider"]["security_servers"].append({"address": "not-an-ip"})
    bad["consumers"]["demo"]["xroad_client"] = "VN/GOV/000.00.00.G22/DVCQG"
    with pytest.raises(ConfigError) as info:
        parse_routing(bad)
    text = str(info.value)
    assert "subsystem" in text
    assert "metaservice" in text
    assert "not-an-ip" in text or "does not appear to be" in text
    unknown = copy.deepcopy(data)
    unknown["provider"]["services"]["getDossierStatus"]["operation"] = "nope"
    unknown["consumers"]["demo"]["xroad_client"] = "VN/GOV/000.00.00.G22/DVCQG"
    with pytest.raises(ConfigError) as info:
        parse_routing(unknown)
    text = str(info.value)
    assert "unknown operation 'nope'" in text
    assert "an X-Road client is one caller" in text
