"""Where alerts go and who is scraped: Alertmanager (amtool accepts its config, every alert
reaches the receiver of its severity, the compose stack runs it and Prometheus sends to it),
the Kubernetes scrape paths (the annotation job of deploy/prometheus/kubernetes.yml, the
ServiceMonitors of deploy/k8s/monitoring) name their jobs so the instance-down alert
matches them, and the PrometheusRule is alerts.yml, kept in sync by its generator."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import DEPLOY, ROOT, debian_tool

PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
MONITORING = DEPLOY / "k8s" / "monitoring"
GENERATOR = ROOT / "scripts" / "k8s_monitoring.py"
RECEIVERS = {"critical": "lgsp-on-call", "warning": "lgsp-operators"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def alerts() -> list[dict[str, Any]]:
    return [
        r for g in load(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"] if "alert" in r
    ]


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# -- Alertmanager -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amtool() -> str:
    return debian_tool("amtool", "prometheus-alertmanager")


def test_amtool_accepts_the_config(amtool: str) -> None:
    result = run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_reaches_the_receiver_of_its_severity(amtool: str) -> None:
    receivers = {r["name"] for r in load(ALERTMANAGER)["receivers"]}
    assert set(RECEIVERS.values()) <= receivers
    for rule in alerts():
        labels = [f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}"]
        argv = [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels]
        result = run(argv)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.split() == [RECEIVERS[rule["labels"]["severity"]]], rule["alert"]


def test_inhibitions_name_real_alerts() -> None:
    names = {r["alert"] for r in alerts()}
    for rule in load(ALERTMANAGER)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            if m and "=~" not in matcher:
                assert m.group(1) in names, matcher


def test_prometheus_sends_alerts_to_the_alertmanager_compose_runs() -> None:
    compose = load(DEPLOY / "compose.yaml")["services"]
    (manager,) = load(PROMETHEUS / "prometheus.yml")["alerting"]["alertmanagers"]
    (target,) = [t for c in manager["static_configs"] for t in c["targets"]]
    host, port = target.split(":")
    service = compose[host]
    assert service["image"].startswith("prom/alertmanager:")
    config = next(a for a in service["command"] if a.startswith("--config.file="))
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in service["volumes"] if v[0] == ".")
    assert mounts["./alertmanager/alertmanager.yml"] == config.split("=", 1)[1]
    assert (DEPLOY / "alertmanager" / "alertmanager.yml").is_file()
    assert port == "9093"  # Alertmanager's listen port; the stack publishes it on loopback
    assert "127.0.0.1:9093:9093" in service["ports"]
    assert host in compose["prometheus"]["depends_on"]


# -- job names and the instance-down alert -----------------------------------------------


def instance_down_jobs() -> re.Pattern[str]:
    """The job pattern of LgspInstanceDown (anchored, as PromQL's =~ is)."""
    (rule,) = [r for r in alerts() if r["alert"] == "LgspInstanceDown"]
    (pattern,) = re.findall(r'up\{job=~"([^"]+)"\}', rule["expr"])
    return re.compile(pattern)


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling (the keep/replace actions used here); None when dropped."""
    out = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(out.get(s, "") for s in rule["source_labels"])
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep":
            if m is None:
                return None
        elif action == "replace":
            if m is not None:
                replacement = re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))
                out[rule["target_label"]] = m.expand(replacement)
        else:
            raise AssertionError(f"relabel action {action} is not modelled by this test")
    return out


def pod_targets() -> dict[str, dict[str, str]]:
    """What Kubernetes pod discovery offers for each Deployment's pod (one container port)."""
    targets = {}
    for manifest in ("gateway.yaml", "worker.yaml"):
        for doc in load_all(DEPLOY / "k8s" / manifest):
            if doc["kind"] != "Deployment":
                continue
            meta = doc["spec"]["template"]["metadata"]
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            labels = {"__address__": f"10.0.0.1:{container['ports'][0]['containerPort']}"}
            labels["__meta_kubernetes_namespace"] = "lgsp-bus"
            labels["__meta_kubernetes_pod_name"] = f"{doc['metadata']['name']}-abc12"
            for key, value in meta["labels"].items():
                labels["__meta_kubernetes_pod_label_" + re.sub(r"[^a-z0-9]", "_", key)] = value
            for key, value in meta["annotations"].items():
                name = re.sub(r"[^a-z0-9]", "_", key)
                labels["__meta_kubernetes_pod_annotation_" + name] = value
            targets[doc["metadata"]["name"]] = labels
    return targets


def test_the_annotation_job_names_jobs_the_alert_matches() -> None:
    (job,) = load(PROMETHEUS / "kubernetes.yml")["scrape_configs"]
    jobs = instance_down_jobs()
    found = {}
    for name, meta in pod_targets().items():
        target = relabel(job["relabel_configs"], meta)
        assert target is not None, f"{name} is not scraped"
        port = meta["__meta_kubernetes_pod_annotation_prometheus_io_port"]
        assert target["__address__"] == f"10.0.0.1:{port}"
        assert target["__metrics_path__"] == "/metrics"
        assert jobs.fullmatch(target["job"]), target["job"]
        found[name] = target["job"]
    assert found == {"lgsp-gateway": "lgsp-gateway", "lgsp-worker": "lgsp-worker"}
    other = {
        "__address__": "10.0.0.9:80",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "x",
    }
    assert relabel(job["relabel_configs"], other) is None, "only lgsp-bus pods"


def test_compose_and_servicemonitor_jobs_match_the_alert() -> None:
    jobs = instance_down_jobs()
    compose_jobs = [j["job_name"] for j in load(PROMETHEUS / "prometheus.yml")["scrape_configs"]]
    bus_jobs = [j for j in compose_jobs if j.startswith("lgsp-")]
    assert sorted(bus_jobs) == ["lgsp-gateway", "lgsp-worker"]
    assert all(jobs.fullmatch(j) for j in bus_jobs)
    assert not any(jobs.fullmatch(j) for j in compose_jobs if j not in bus_jobs)
    # The Prometheus Operator names a ServiceMonitor's job after the Service it scrapes.
    services = {
        d["metadata"]["name"]: d
        for m in ("gateway.yaml", "worker.yaml")
        for d in load_all(DEPLOY / "k8s" / m)
        if d["kind"] == "Service"
    }
    monitors = load_all(MONITORING / "servicemonitor.yaml")
    assert len(monitors) == len(services)
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        (service,) = [s for s in services.values() if selector <= s["metadata"]["labels"].items()]
        assert jobs.fullmatch(service["metadata"]["name"])
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def test_promtool_accepts_the_kubernetes_job(tmp_path: Path) -> None:
    """Debian's promtool lacks Kubernetes discovery: the job is checked with a static target
    in its place (relabel rules, regexes and the rule file are what is checked)."""
    promtool = debian_tool("promtool", "prometheus")
    doc = load(PROMETHEUS / "kubernetes.yml")
    for job in doc["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
        # The metrics token Prometheus sends (the Secret mounted there), here a file beside.
        assert job["authorization"]["credentials_file"].endswith("/metrics-token")
        job["authorization"]["credentials_file"] = "metrics-token"
    (tmp_path / "metrics-token").write_text("a-token\n", encoding="utf-8")
    (tmp_path / "kubernetes.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = run([promtool, "check", "config", "kubernetes.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- PrometheusRule, generated from alerts.yml ----------------------------------------------


def test_the_prometheus_rule_is_alerts_yml() -> None:
    (rule,) = load_all(MONITORING / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load(PROMETHEUS / "alerts.yml")["groups"]
    result = run([sys.executable, str(GENERATOR), "--check"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generator_notices_a_changed_alert_and_rewrites(tmp_path: Path) -> None:
    for path in ("deploy/prometheus", "deploy/k8s"):
        shutil.copytree(ROOT / path, tmp_path / path)
    alerts_yml = tmp_path / "deploy/prometheus/alerts.yml"
    text = alerts_yml.read_text(encoding="utf-8").replace("for: 10m", "for: 11m", 1)
    alerts_yml.write_text(text, encoding="utf-8")
    check = [sys.executable, str(GENERATOR), "--root", str(tmp_path), "--check"]
    stale = run(check)
    assert stale.returncode == 1
    assert "prometheusrule.yaml" in stale.stdout
    assert "servicemonitor.yaml" not in stale.stdout
    assert run([sys.executable, str(GENERATOR), "--root", str(tmp_path)]).returncode == 0
    assert run(check).returncode == 0
    (rule,) = load_all(tmp_path / "deploy/k8s/monitoring/prometheusrule.yaml")
    assert rule["spec"]["groups"] == load(alerts_yml)["groups"]


def test_promtool_accepts_the_prometheus_rule_groups(tmp_path: Path) -> None:
    promtool = debian_tool("promtool", "prometheus")
    (rule,) = load_all(MONITORING / "prometheusrule.yaml")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    result = run([promtool, "check", "rules", "rules.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_renders_the_monitoring_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the objects are still checked above)")
    result = run([kubectl, "kustomize", str(MONITORING)])
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    assert all(
        d["metadata"]["namespace"] == "lgsp-bus" for d in yaml.safe_load_all(result.stdout) if d
    )
