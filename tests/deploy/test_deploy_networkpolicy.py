"""deploy/k8s/networkpolicy.yaml, evaluated with Kubernetes' NetworkPolicy semantics (a
pod selected by a policy of a direction allows only what one of those policies' rules
allows): gateways reach RabbitMQ, the store and Redis only; workers reach RabbitMQ, the store and
the national DBs' egress range; both reach DNS; and nothing else, in or out. The peers
come from the deployment's own files (the Secret's URLs, the routing's upstreams)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from adapters.base import load_routing
from tests.support.deploy import DEPLOY, K8S_ROUTING

K8S = DEPLOY / "k8s"
NAMESPACE = "lgsp-bus"
DEFAULT_PORTS = {
    "https": 443,
    "http": 80,
    "amqps": 5671,
    "amqp": 5672,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6380,
}


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace + labels) or an outside address."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.50"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "networkpolicy.yaml" in kustomization["resources"]
    docs = load_all(K8S / "networkpolicy.yaml")
    assert {d["kind"] for d in docs} == {"NetworkPolicy"}
    return docs


def pods() -> dict[str, Peer]:
    """The bus's own pods, by Deployment name."""
    out = {}
    for manifest in ("gateway.yaml", "worker.yaml"):
        for doc in load_all(K8S / manifest):
            if doc["kind"] == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                out[doc["metadata"]["name"]] = Peer(NAMESPACE, dict(labels))
    return out


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is modelled by this test"
    wanted: dict[str, str] = selector.get("matchLabels", {})
    return wanted.items() <= labels.items()


def peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        excluded = any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
        return peer.namespace is None and ip in ipaddress.ip_network(block["cidr"]) and not excluded
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not matches(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return matches(rule_peer.get("podSelector", {}), peer.labels)


def allowed(
    policies: list[dict[str, Any]], pod: Peer, direction: str, other: Peer, port: int, proto: str
) -> bool:
    """Whether ``pod`` may send to (Egress) / receive from (Ingress) ``other`` on ``port``."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p
        for p in policies
        if matches(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            ports = rule.get("ports")
            peer_ok = peers is None or any(peer_matches(p, other) for p in peers)
            port_ok = ports is None or any(
                p["port"] == port and p.get("protocol", "TCP") == proto for p in ports
            )
            if peer_ok and port_ok:
                return True
    return False


def secret_peers(*extra: tuple[str, str]) -> dict[str, tuple[Peer, int]]:
    """RabbitMQ (each node of the cluster) and the store as secret.example.yaml addresses
    them (``[pod.]service.namespace``); ``extra`` (key, pod name) pairs too."""
    (secret,) = load_all(K8S / "secret.example.yaml")
    out = {}
    for key, name in (("amqp-url", "rabbitmq"), ("store-url", "postgresql"), *extra):
        for n, one in enumerate(secret["stringData"][key].split(",")):
            url = urlsplit(one)
            assert url.hostname is not None
            namespace = url.hostname.split(".")[-1]
            port = url.port or DEFAULT_PORTS[url.scheme]
            out[f"{key}[{n}]"] = (Peer(namespace, {"app.kubernetes.io/name": name}), port)
    return out


def upstream_ports() -> set[int]:
    config = load_routing(K8S_ROUTING)
    ports = set()
    for up in config.upstreams.values():
        url = urlsplit(str(up.url))
        ports.add(url.port or DEFAULT_PORTS[url.scheme])
    return ports


def national_db(policies: list[dict[str, Any]]) -> Peer:
    """An address inside the egress range the worker's policy opens."""
    cidrs = [
        p["ipBlock"]["cidr"]
        for pol in policies
        for rule in pol["spec"].get("egress", [])
        for p in rule.get("to", [])
        if "ipBlock" in p
    ]
    (cidr,) = cidrs
    return Peer(None, {}, str(next(ipaddress.ip_network(cidr).hosts())))


def test_every_bus_pod_is_isolated_both_ways(policies: list[dict[str, Any]]) -> None:
    for name, pod in pods().items():
        for direction in ("Ingress", "Egress"):
            assert any(
                matches(p["spec"]["podSelector"], pod.labels)
                and direction in p["spec"]["policyTypes"]
                for p in policies
            ), f"{name}: no {direction} policy"


def test_gateways_reach_rabbitmq_the_store_and_redis_only(policies: list[dict[str, Any]]) -> None:
    gateway = pods()["lgsp-gateway"]
    for peer, port in secret_peers(("redis-url", "redis")).values():
        assert allowed(policies, gateway, "Egress", peer, port, "TCP"), peer
        assert not allowed(policies, gateway, "Egress", peer, port + 1, "TCP")
    for port in upstream_ports():
        assert not allowed(policies, gateway, "Egress", national_db(policies), port, "TCP")
    internet = Peer(None, {}, "203.0.113.7")
    assert not allowed(policies, gateway, "Egress", internet, 443, "TCP")
    worker = pods()["lgsp-worker"]
    assert not allowed(policies, gateway, "Egress", worker, 8081, "TCP")


def test_workers_reach_rabbitmq_the_store_and_the_national_dbs(
    policies: list[dict[str, Any]],
) -> None:
    worker = pods()["lgsp-worker"]
    for peer, port in secret_peers().values():
        assert allowed(policies, worker, "Egress", peer, port, "TCP"), peer
    redis = secret_peers(("redis-url", "redis"))["redis-url[0]"]
    assert not allowed(policies, worker, "Egress", *redis, "TCP")  # only gateways use it
    ports = upstream_ports()
    assert ports
    for port in ports:
        assert allowed(policies, worker, "Egress", national_db(policies), port, "TCP")
    assert not allowed(policies, worker, "Egress", Peer(None, {}, "203.0.113.7"), 443, "TCP")
    other_ns = Peer("default", {"app.kubernetes.io/name": "rabbitmq"})
    assert not allowed(policies, worker, "Egress", other_ns, 5671, "TCP")


def test_both_resolve_names(policies: list[dict[str, Any]]) -> None:
    dns = Peer("kube-system", {"k8s-app": "kube-dns"})
    for pod in pods().values():
        assert allowed(policies, pod, "Egress", dns, 53, "UDP")
        assert allowed(policies, pod, "Egress", dns, 53, "TCP")
        assert not allowed(policies, pod, "Egress", Peer("kube-system", {}), 53, "UDP")


def test_ingress_only_on_each_role_s_own_port(policies: list[dict[str, Any]]) -> None:
    gateway, worker = pods()["lgsp-gateway"], pods()["lgsp-worker"]
    caller = Peer(None, {}, "203.0.113.7")
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert allowed(policies, gateway, "Ingress", caller, 8080, "TCP")
    assert not allowed(policies, gateway, "Ingress", caller, 8081, "TCP")
    assert allowed(policies, worker, "Ingress", prometheus, 8081, "TCP")
    assert not allowed(policies, worker, "Ingress", caller, 8081, "TCP")
    assert not allowed(policies, worker, "Ingress", Peer(NAMESPACE, gateway.labels), 8081, "TCP")
    # The ports the policies open are the ones the pods listen on.
    for manifest, pod in (("gateway.yaml", gateway), ("worker.yaml", worker)):
        (dep,) = [d for d in load_all(K8S / manifest) if d["kind"] == "Deployment"]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        assert allowed(policies, pod, "Ingress", prometheus, port, "TCP"), manifest
