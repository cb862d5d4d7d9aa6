"""The deploy files describe one RabbitMQ cluster of three nodes that the bus fails over on.

Compose: three RabbitMQ services that name each other (classic peer discovery) and share
one Erlang cookie; LGSP_AMQP_URL lists exactly those three; a Redis for the shared
rate-limit buckets. Kubernetes: a 3-replica StatefulSet with peer discovery through the
Kubernetes API (RBAC to read the headless Service's endpoints), definitions loaded from
the same definitions.json. Every key of the RabbitMQ config files is one the installed
RabbitMQ's schemas know (no container is run here).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from adapters.base import load_routing
from tests.support.deploy import COMPOSE_ROUTING, DEPLOY, K8S_ROUTING

RABBIT = DEPLOY / "rabbitmq"
SCHEMAS = Path("/usr/lib/rabbitmq/lib")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def conf(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_has_three_nodes_that_find_each_other_and_the_bus_knows_them() -> None:
    stack = compose()
    services = stack["services"]
    nodes = sorted(name for name in services if name.startswith("rabbitmq-"))
    assert nodes == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    classic = conf(RABBIT / "cluster.conf")
    assert classic["cluster_formation.peer_discovery_backend"] == "classic_config"
    named = {v for k, v in classic.items() if k.startswith("cluster_formation.classic_config")}
    assert named == {f"rabbit@{n}" for n in nodes}
    cookies = set()
    for node in nodes:
        svc = services[node]
        assert svc["hostname"] == node
        assert any(v.endswith("/etc/rabbitmq/conf.d/30-cluster.conf:ro") for v in svc["volumes"])
        assert any(v.split(":")[0] == f"{node}-data" for v in svc["volumes"])  # its own data
        cookies.add(svc["environment"]["RABBITMQ_ERLANG_COOKIE"])
    assert len(cookies) == 1  # one cookie for the cluster
    urls = stack["x-lgsp-env"]["LGSP_AMQP_URL"].split(",")
    assert sorted(urlsplit(u).hostname or "" for u in urls) == nodes
    for name in ("gateway-1", "gateway-2", "worker-1", "worker-2"):
        assert set(nodes) <= set(services[name]["depends_on"]), name
    assert "redis" in services
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text("utf-8"))
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "rabbitmq"]
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert sorted(t.split(":")[0] for t in targets) == nodes  # each node's own metrics
    assert urlsplit(stack["x-lgsp-env"]["LGSP_REDIS_URL"]).hostname == "redis"
    routing = load_routing(COMPOSE_ROUTING)
    assert routing.gateway.rate_limit_backend.kind == "redis"
    assert routing.broker.quorum_group_size == len(nodes)
    assert load_routing(K8S_ROUTING).broker.quorum_group_size == len(nodes)


def k8s_rabbitmq() -> list[dict[str, Any]]:
    text = (RABBIT / "statefulset.yaml").read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d]


def test_k8s_statefulset_of_three_with_peer_discovery() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_rabbitmq()}
    sts = docs[("StatefulSet", "rabbitmq")]
    assert sts["spec"]["replicas"] == 3
    headless = docs[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    k8s_conf = conf(RABBIT / "k8s.conf")
    assert k8s_conf["cluster_formation.peer_discovery_backend"] == "k8s"
    assert k8s_conf["cluster_formation.k8s.service_name"] == headless["metadata"]["name"]
    assert k8s_conf["load_definitions"] == "/etc/rabbitmq/definitions.json"
    plugins = (RABBIT / "k8s-enabled_plugins").read_text(encoding="utf-8")
    assert "rabbitmq_peer_discovery_k8s" in plugins
    # The pods' service account may read the endpoints peer discovery looks at.
    pod = sts["spec"]["template"]["spec"]
    binding = docs[("RoleBinding", "rabbitmq-peer-discovery")]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    role = docs[("Role", binding["roleRef"]["name"])]
    assert any("endpoints" in r["resources"] and "get" in r["verbs"] for r in role["rules"])
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RABBITMQ_ERLANG_COOKIE"]["valueFrom"]["secretKeyRef"]["name"] == "lgsp-rabbitmq"
    assert env["RABBITMQ_NODENAME"]["value"].endswith(
        k8s_conf["cluster_formation.k8s.hostname_suffix"]
    )
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/rabbitmq/definitions.json", "/etc/rabbitmq/enabled_plugins"} <= mounts
    kustomization = yaml.safe_load((RABBIT / "kustomization.yaml").read_text(encoding="utf-8"))
    files = kustomization["configMapGenerator"][0]["files"]
    assert "definitions.json" in files  # the one file compose loads too
    for entry in files:
        assert (RABBIT / entry.split("=")[-1]).exists(), entry


def _schema_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for schema in SCHEMAS.glob("rabbitmq_server-*/plugins/*/priv/**/*.schema"):
        for key in re.findall(r'\{mapping,\s*"([^"]+)"', schema.read_text(errors="replace")):
            parts = [("[^.]+" if p.startswith("$") else re.escape(p)) for p in key.split(".")]
            patterns.append(re.compile(r"\.".join(parts) + r"\Z"))
    return patterns


def test_every_rabbitmq_config_key_is_known_to_rabbitmq() -> None:
    patterns = _schema_patterns()
    if not patterns:
        message = f"RabbitMQ's config schemas are not installed under {SCHEMAS}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for path in (RABBIT / "rabbitmq.conf", RABBIT / "cluster.conf", RABBIT / "k8s.conf"):
        for key in conf(path):
            assert any(p.match(key) for p in patterns), f"{path.name}: unknown key {key}"
