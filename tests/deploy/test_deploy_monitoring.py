"""deploy/prometheus and deploy/grafana: promtool accepts the config and the rules (and the
rules' own unit tests pass), every alert has a runbook line, and every metric and label a
dashboard or an alert uses is one a running gateway and worker really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from adapters.civil_status.data import sample_registration
from adapters.civil_status.models import RecordType
from adapters.civil_status.simulator import build_app as build_sim
from bus.observe.health import WorkerStatus, build_worker_app
from bus.observe.metrics import LATENCY_BUCKETS, Metrics
from tests.e2e.test_e2e_civil_status import lookup as civil_lookup
from tests.support.deploy import DEPLOY, debian_tool
from tests.support.stack import new_secret, running_bus, serve_app, stack_config
from tests.unit.observe.test_metrics import ALLOWED_LABELS

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "lgsp-bus.json"
PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself, which alerts may use."""
TARGET_LABELS = {"job", "instance"}
_METRIC_RE = re.compile(r"\b(lgsp_[a-z0-9_]+)\b")
_SELECTOR_RE = re.compile(r"\b(lgsp_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


# -- promtool -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_tool("promtool", "prometheus")


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    # Beside the config, as compose mounts it: the metrics token file its scrapes send.
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    (tmp_path / "metrics_token").write_text("a-token\n", encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_bus_scrape_sends_the_metrics_token() -> None:
    """observe.metrics_token is set in the shipped routing files, so every scrape of the
    bus must send it: prometheus.yml (compose mounts the secret), kubernetes.yml, the
    ServiceMonitors (the Secret's metrics-token key), and the pods get it as env."""
    for routing in (DEPLOY / "compose" / "routing.yaml", DEPLOY / "k8s" / "routing.yaml"):
        doc = yaml.safe_load(routing.read_text(encoding="utf-8"))
        assert doc["observe"]["metrics_token"] == "env:LGSP_METRICS_TOKEN"
    for name in ("prometheus.yml", "kubernetes.yml"):
        doc = yaml.safe_load((PROMETHEUS / name).read_text(encoding="utf-8"))
        for job in doc["scrape_configs"]:
            if job["job_name"].startswith("lgsp-"):
                assert job["authorization"]["credentials_file"], (name, job["job_name"])
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    mounted = {s["target"] for s in compose["services"]["prometheus"]["secrets"]}
    assert "/etc/prometheus/metrics_token" in mounted
    assert compose["secrets"]["lgsp_metrics_token"] == {"environment": "LGSP_METRICS_TOKEN"}
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text("utf-8"))
    monitors = (DEPLOY / "k8s" / "monitoring" / "servicemonitor.yaml").read_text("utf-8")
    for monitor in yaml.safe_load_all(monitors):
        for endpoint in monitor["spec"]["endpoints"]:
            ref = endpoint["authorization"]["credentials"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
    for manifest in ("gateway.yaml", "worker.yaml"):
        text = (DEPLOY / "k8s" / manifest).read_text(encoding="utf-8")
        assert "LGSP_METRICS_TOKEN" in text
        assert "key: metrics-token" in text


def test_promtool_rule_unit_tests(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out


# -- rules and dashboard, statically ---------------------------------------------------------


def test_every_alert_has_severity_summary_and_a_runbook_line() -> None:
    alerts = [r for r in alert_rules() if "alert" in r]
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"], rule["alert"]
        assert notes["description"], rule["alert"]
        assert len(notes["runbook"]) > 40, rule["alert"]
        assert "\n" not in notes["runbook"].strip(), "one line"
    names = {r["alert"] for r in alerts}
    required = {
        "LgspUpstreamErrorRatioHigh",
        "LgspLatencySLOBurnFast",
        "LgspLatencySLOBurnSlow",
        "LgspCircuitBreakerOpen",
        "LgspDeadLetterQueueGrowing",
        "LgspBrokerDisconnected",
        "LgspAuditBacklog",
        "LgspConfigReloadFailed",
    }
    assert required <= names


def test_slo_threshold_is_a_real_histogram_bucket() -> None:
    les = {
        float(m) for r in alert_rules() for m in re.findall(r'le="([0-9.]+)"', r.get("expr", ""))
    }
    assert les
    assert les <= set(LATENCY_BUCKETS)


def test_dashboard_has_the_bus_and_a_row_per_national_db() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert any(r.get("repeat") == "service" for r in rows), "one row per national DB"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "lgsp_service_info" in variables["service"]["definition"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("latency", "error", "breaker", "retries", "queue", "dead-letter", "audit"):
        assert topic in titles, topic
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


# -- against a running gateway and worker ---------------------------------------------------


def exported_names(text: str) -> set[str]:
    """Every series name an exposition offers (families without samples included)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(s.name for s in family.samples)
    return names


@pytest.fixture
async def scraped(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """Both expositions of a bus (gateway and worker, separate registries) after traffic."""
    token, key = new_secret(), new_secret()
    monkeypatch.setenv("T_MOJ_TOKEN", token)
    monkeypatch.setenv("T_PORTAL_KEY", key)
    monkeypatch.setenv("T_PORTAL_KEY_OUTSIDER", new_secret())
    async with serve_app(build_sim(token=token)) as sim_url:
        config = stack_config(civil_url=sim_url, token_env="T_MOJ_TOKEN", key_env="T_PORTAL_KEY")
        gateway = Metrics(CollectorRegistry(), role="gateway")
        worker = Metrics(CollectorRegistry(), role="worker")
        async with running_bus(
            config, None, key, gateway_metrics=gateway, worker_metrics=worker
        ) as stack:
            body = civil_lookup(by_registration=sample_registration(0, RecordType.BIRTH, 1))
            status, reply = await stack.post("/v1/civil-status/lookup", body)
            assert status == 200, reply
            status_app = build_worker_app(WorkerStatus(config, stack.worker_broker, []), worker)
            async with serve_app(status_app) as worker_url:
                texts = []
                for url in (stack.url, worker_url):
                    async with stack.session.get(url + "metrics") as r:
                        assert r.status == 200
                        texts.append(await r.text())
                yield "\n".join(texts)


def used_in_rules_and_dashboard() -> list[tuple[str, str]]:
    """(where, expression) of every PromQL expression in alerts.yml and the dashboard."""
    exprs = [(f"alerts.yml {r.get('alert') or r.get('record')}", r["expr"]) for r in alert_rules()]
    exprs += [("lgsp-bus.json", e) for e in dashboard_exprs()]
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs += [("lgsp-bus.json variable", v["definition"]) for v in board["templating"]["list"]
              if "definition" in v]  # fmt: skip
    return exprs


async def test_every_metric_used_is_exported(scraped: str) -> None:
    exported = exported_names(scraped) | PROMETHEUS_OWN
    used = used_in_rules_and_dashboard()
    assert len(used) > 30
    missing = {
        (where, name) for where, expr in used for name in _METRIC_RE.findall(expr)
        if name not in exported
    }  # fmt: skip
    assert not missing, sorted(missing)


async def test_every_label_used_exists_on_its_metric(scraped: str) -> None:
    exported = exported_names(scraped)
    families = sorted(ALLOWED_LABELS, key=len, reverse=True)
    for where, expr in used_in_rules_and_dashboard():
        for name, matchers in _SELECTOR_RE.findall(expr):
            assert name in exported, (where, name)
            family = next((f for f in families if name.startswith(f)), "")
            allowed = ALLOWED_LABELS.get(family, set()) | TARGET_LABELS | {"le"}
            for label in _MATCHER_RE.findall(matchers):
                assert label in allowed, f"{where}: {name} has no label {label}"


def test_dashboard_file_is_what_grafana_provisioning_points_at() -> None:
    assert Path(DASHBOARD).is_file()
    assert json.loads(DASHBOARD.read_text(encoding="utf-8"))["uid"] == "lgsp-bus"
