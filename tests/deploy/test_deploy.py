"""deploy/: the container image, the compose stack, Kubernetes and systemd, checked without
an engine — every file parses, every command is a real ``lgsp-bus`` command, probes and
limits are there, grace periods outlast the drain, and the pieces refer to each other
consistently (ports, scrape targets, secrets, mounts)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.base import load_routing
from bus.cli.main import build_parser
from bus.config import RoutingConfig
from tests.support.deploy import COMPOSE_ROUTING, DEPLOY, K8S_ROUTING
from tests.support.paths import REPO

K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"


def parses(argv: list[str]) -> Any:
    """``argv`` is a valid ``lgsp-bus`` command line (else the test fails, naming it)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"not an lgsp-bus command: {shlex.join(argv)}")


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def config_secret_envs(config: RoutingConfig) -> tuple[set[str], set[str]]:
    """Environment variables the routing refers to: (the gateway's, the worker's)."""
    keys = {
        k.key[4:]
        for c in config.consumers.values()
        for k in c.api_keys
        if k.key and "env:" in k.key
    }
    audit_key = config.audit.subject_key
    if audit_key and audit_key.startswith("env:"):
        keys.add(audit_key[4:])  # the gateway writes the audit trail
    upstream: set[str] = set()
    for up in config.upstreams.values():
        for value in up.auth.model_dump().values():
            if isinstance(value, str) and value.startswith("env:"):
                upstream.add(value[4:])
    return keys, upstream


def test_every_yaml_and_json_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"}]
    assert len(files) >= 12
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            assert yaml_docs(path), path


def test_routing_files_are_valid() -> None:
    for path in (COMPOSE_ROUTING, K8S_ROUTING):
        load_routing(path)


# -- container image ---------------------------------------------------------------------


def test_containerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    froms = [ln for ln in instructions if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert any(" AS build" in f for f in froms)
    base = next(ln for ln in instructions if ln.startswith("ARG PYTHON_IMAGE="))
    assert re.search(r":\d+\.\d+\.\d+-slim", base), "base image pinned to a patch version"
    user = [ln.split()[1] for ln in instructions if ln.startswith("USER ")][-1]
    assert user.split(":")[0] not in {"0", "root"}
    health = next(ln for ln in instructions if ln.startswith("HEALTHCHECK"))
    entry = json.loads(next(ln for ln in instructions if ln.startswith("ENTRYPOINT "))[11:])
    assert entry == ["lgsp-bus"]
    check = json.loads(health[health.index("CMD") + 3 :])
    assert check[0] == "lgsp-bus"
    parses(check[1:])
    parses(json.loads(next(ln for ln in instructions if ln.startswith("CMD "))[4:]))
    for ln in instructions:
        if ln.startswith("COPY ") and "--from" not in ln:
            for source in ln.split()[1:-1]:
                assert (DEPLOY.parent / source).exists(), source


# -- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def bus_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("lgsp-bus")
    }


def test_compose_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    services = bus_services(compose)
    roles: dict[str, list[str]] = {}
    for name, svc in services.items():
        args = parses(svc["command"])
        role = args.command if args.command != "sim" else f"sim {args.kind}"
        roles.setdefault(role, []).append(name)
        health_url = svc["environment"]["LGSP_HEALTH_URL"]
        parses(["health", "--url", health_url])
        port = {"gateway": "port", "worker": "http_port", "sim": "port"}[args.command]
        assert f":{getattr(args, port)}/" in health_url, f"{name} probes its own port"
    assert len(roles["gateway"]) >= 2
    assert len(roles["worker"]) >= 2
    assert {"sim civil-status", "sim population"} <= set(roles)
    required = {"rabbitmq-1", "rabbitmq-2", "rabbitmq-3", "postgres", "redis", "proxy"}
    required |= {"prometheus", "grafana"}
    assert required <= set(compose["services"])


def test_compose_stack_is_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grace = load_routing(COMPOSE_ROUTING).gateway.shutdown_grace_s
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    for name, svc in bus_services(compose).items():
        assert int(svc["stop_grace_period"].rstrip("s")) > grace, name
        config = svc["environment"]["LGSP_CONFIG"]
        assert any(v.endswith(f":{config}:ro") for v in svc["volumes"])
    for node in ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3"):
        rabbit = services[node]
        assert "management" in rabbit["image"]
        assert any(v.endswith("/etc/rabbitmq/definitions.json:ro") for v in rabbit["volumes"])
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text(encoding="utf-8")
    assert "load_definitions = /etc/rabbitmq/definitions.json" in conf


def test_prometheus_scrapes_every_instance_and_haproxy_balances_every_gateway(
    compose: dict[str, Any],
) -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    haproxy = (DEPLOY / "compose" / "haproxy.cfg").read_text(encoding="utf-8")
    for name, svc in bus_services(compose).items():
        args = parses(svc["command"])
        host = svc.get("network_mode", f"service:{name}").split(":", 1)[1]
        if args.command == "gateway":
            assert f"{host}:{args.port}" in targets, name
            assert f"server {name} {host}:{args.port} check" in haproxy
        elif args.command == "worker":
            assert f"{host}:{args.http_port}" in targets, name
            assert args.http_host == "0.0.0.0", "reachable by Prometheus"
    assert "option httpchk GET /readyz" in haproxy


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v[0] == ".")
    ds = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text(encoding="utf-8")
    )
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    boards = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/lgsp-bus.yaml").read_text(encoding="utf-8")
    )
    path = boards["providers"][0]["options"]["path"]
    assert mounts["./grafana/lgsp-bus.json"] == f"{path}/lgsp-bus.json"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


# -- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += yaml_docs(K8S / resource)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_k8s_deployments_have_probes_limits_and_pinned_images(k8s: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    new_tags = {i["name"]: i["newTag"] for i in kustomization.get("images", [])}
    version = metadata.version("lgsp-bus")
    assert new_tags == {"lgsp-bus": version}, "the image tag is the package version"
    config = load_routing(K8S_ROUTING)
    consumer_keys, upstream_secrets = config_secret_envs(config)
    deployments = of_kind(k8s, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"lgsp-gateway", "lgsp-worker"}
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            name, tag = c["image"].rsplit(":", 1)
            assert tag not in {"", "latest"}, c["image"]
            assert "latest" not in new_tags.get(name, "")
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            args = parses(c["args"])
            port = args.port if args.command == "gateway" else args.http_port
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports[c["readinessProbe"]["httpGet"]["port"]] == port
            assert ports[c["livenessProbe"]["httpGet"]["port"]] == port
            pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            pre_stop_s = int(pre_stop[-1]) if pre_stop else 0
            grace = pod["terminationGracePeriodSeconds"]
            assert grace > config.gateway.shutdown_grace_s + pre_stop_s, dep["metadata"]["name"]
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            config_dir = str(Path(args.config).parent)
            mounted = next(n for n, p in mounts.items() if p == config_dir)
            assert volumes[mounted]["configMap"]["name"] == "lgsp-routing"
            env = {e["name"] for e in c["env"]}
            assert "LGSP_AMQP_URL" in env
            needed = consumer_keys if args.command == "gateway" else upstream_secrets
            assert needed <= env, f"{dep['metadata']['name']} lacks {needed - env}"
            for e in c["env"]:
                if "valueFrom" in e:
                    assert e["valueFrom"]["secretKeyRef"]["name"] == "lgsp-bus-secrets"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_pdb_hpa_and_services_select_real_pods(k8s: list[dict[str, Any]]) -> None:
    pod_labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind(k8s, "Deployment")
    }

    def selects(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in pod_labels.items() if selector.items() <= labels.items()}

    assert {n for p in of_kind(k8s, "PodDisruptionBudget")
            for n in selects(p["spec"]["selector"]["matchLabels"])} == set(pod_labels)  # fmt: skip
    for svc in of_kind(k8s, "Service"):
        assert selects(svc["spec"]["selector"]), svc["metadata"]["name"]
    (hpa,) = of_kind(k8s, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lgsp-worker"
    assert hpa["spec"]["minReplicas"] >= 2


def test_kustomize_renders_the_base() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the manifests are still checked above)")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    images = {c["image"] for d in of_kind(docs, "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {f"registry.example.invalid/lgsp/lgsp-bus:{metadata.version('lgsp-bus')}"}
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["metadata"]["name"].startswith("lgsp-routing-")  # hashed: pods roll on change


# -- systemd ----------------------------------------------------------------------------


def units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def test_systemd_units_run_real_commands_and_outlast_the_drain() -> None:
    assert {u.name for u in units()} == {"lgsp-bus-gateway.service", "lgsp-bus-worker@.service"}
    grace = load_routing(K8S_ROUTING).gateway.shutdown_grace_s
    for unit in units():
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(unit, encoding="utf-8")
        service = parser["Service"]
        argv = shlex.split(service["ExecStart"].replace("%i", "8081"))
        assert argv[0] == "/opt/lgsp-bus/bin/lgsp-bus"
        parses(argv[1:])
        assert int(service["TimeoutStopSec"]) > grace
        assert service["User"] != "root"
        assert service["NoNewPrivileges"] == "yes"
        assert "EnvironmentFile" in service


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    binary = shutil.which("lgsp-bus") or str(REPO / ".venv/bin/lgsp-bus")
    paths = []
    for unit in units():
        text = unit.read_text(encoding="utf-8").replace("/opt/lgsp-bus/bin/lgsp-bus", binary)
        name = unit.name.replace("@.service", "@8081.service")
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / name))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in result.stderr.splitlines() if "lgsp-bus" in ln]
    assert result.returncode == 0, result.stderr
    assert not problems, problems
