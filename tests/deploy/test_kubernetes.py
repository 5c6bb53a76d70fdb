"""deploy/kubernetes/: valid against the Kubernetes schemas, and saying what deploy/README.md says.

Validation uses kubernetes-validate (PyPI; its schemas ship inside the wheel, so it runs offline) in
strict mode, which also refuses a field the schema does not know.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    EXAMPLE_SECRET,
    KUBERNETES,
    kubernetes_object,
    kubernetes_objects,
    pod_spec,
)

# The newest schemas the pinned kubernetes-validate ships, and the oldest Kubernetes these manifests
# need (CronJob timeZone is GA from 1.27; autoscaling/v2 from 1.23).
KUBERNETES_VERSIONS = ["1.37.0", "1.27.0"]
MANIFESTS = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
ALLOWED_EGRESS_PORTS = {53, 5432, 6379, 4318}


def _validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {error.message}", pytrace=False)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS)
def test_manifest_validates_strictly(manifest: str, version: str) -> None:
    objects = kubernetes_objects(manifest)
    assert objects, f"{manifest} holds no object"
    for obj in objects:
        _validate(obj, version)


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validator is not a rubber stamp: a misspelt probe field fails."""
    deployment = kubernetes_object("Deployment", "gateway")
    container = pod_spec(deployment)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    [kustomization] = kubernetes_objects("kustomization.yaml")
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(m for m in MANIFESTS if m != EXAMPLE_SECRET)


def test_kustomize_build_validates() -> None:
    """What `kubectl apply -k` would send, where kubectl is installed (it is on this kind of machine)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize output was not built")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    assert {o["kind"] for o in objects} >= {"Deployment", "Job", "CronJob", "NetworkPolicy"}
    assert all(o["kind"] != "Secret" for o in objects), "no Secret is applied from the repository"
    for obj in objects:
        _validate(obj, KUBERNETES_VERSIONS[0])


def _database_url_secret(obj: dict[str, Any]) -> str:
    """The Secret a workload takes GATEWAY_DATABASE_URL from (through envFrom)."""
    [container] = pod_spec(obj)["containers"]
    assert all(e["name"] != "GATEWAY_DATABASE_URL" for e in container.get("env", []))
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    having = [
        name for name in secrets if "GATEWAY_DATABASE_URL" in kubernetes_object("Secret", name)["stringData"]
    ]
    assert len(having) == 1, secrets
    return having[0]


def _url_user(url: str) -> str:
    return url.split("://", 1)[1].split(":", 1)[0]


def test_server_and_maintenance_use_different_secrets_and_roles() -> None:
    deployment = kubernetes_object("Deployment", "gateway")
    job = kubernetes_object("Job", "gateway-migrate")
    cronjob = kubernetes_object("CronJob", "gateway-retention")
    app, migrator = _database_url_secret(deployment), _database_url_secret(job)
    assert (app, migrator) == ("gateway-env", "gateway-migrator-env")
    assert _database_url_secret(cronjob) == migrator
    app_url = kubernetes_object("Secret", app)["stringData"]["GATEWAY_DATABASE_URL"]
    migrator_url = kubernetes_object("Secret", migrator)["stringData"]["GATEWAY_DATABASE_URL"]
    assert (_url_user(app_url), _url_user(migrator_url)) == ("gateway_app", "gateway_migrator")
    # The Job re-grants the application role after migrating; the server never sees the migrator Secret.
    [job_container] = pod_spec(job)["containers"]
    assert {"name": "GATEWAY_DB_APP_ROLE", "value": "gateway_app"} in job_container["env"]
    assert job_container["args"] == ["db", "upgrade"]


def test_example_secrets_hold_placeholders_only() -> None:
    secrets = kubernetes_objects(EXAMPLE_SECRET)
    assert {s["metadata"]["name"] for s in secrets} == {"gateway-env", "gateway-migrator-env", "gateway-keys"}
    for secret in secrets:
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert "EXAMPLE" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"
    assert "GATEWAY_METRICS_TOKEN" in kubernetes_object("Secret", "gateway-env")["stringData"]
    assert "GATEWAY_METRICS_TOKEN" not in kubernetes_object("Secret", "gateway-migrator-env")["stringData"]


def test_probes_readiness_on_readyz_liveness_on_livez() -> None:
    [container] = pod_spec(kubernetes_object("Deployment", "gateway"))["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert {container[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe", "startupProbe")} == {
        "http"
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_workers_and_redis_configured_for_several_processes() -> None:
    data = kubernetes_object("ConfigMap", "gateway-config")["data"]
    assert int(data["GATEWAY_WORKERS"]) > 1
    assert data["GATEWAY_REDIS_URL"].startswith("redis://")
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
    assert int(data["GATEWAY_LEDGER_RETENTION_MONTHS"]) == 84
    [container] = pod_spec(kubernetes_object("Deployment", "gateway"))["containers"]
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104 (in the pod)
    assert {"configMapRef": {"name": "gateway-config"}} in container["envFrom"]


def test_autoscaler_and_disruption_budget_keep_two_and_one() -> None:
    deployment = kubernetes_object("Deployment", "gateway")
    hpa = kubernetes_object("HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    pdb = kubernetes_object("PodDisruptionBudget", "gateway")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_retention_cronjob_runs_monthly_like_the_job() -> None:
    cronjob = kubernetes_object("CronJob", "gateway-retention")
    job = kubernetes_object("Job", "gateway-migrate")
    _minute, _hour, day, month, weekday = cronjob["spec"]["schedule"].split()
    assert (month, weekday) == ("*", "*") and day.isdigit(), "once a month"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    retention, migrate = pod_spec(cronjob), pod_spec(job)
    assert retention["securityContext"] == migrate["securityContext"]
    assert retention["containers"][0]["securityContext"] == migrate["containers"][0]["securityContext"]
    assert retention["containers"][0]["image"] == migrate["containers"][0]["image"]
    assert retention["containers"][0]["args"] == ["audit", "retention", "--apply"]
    # It signs what it dropped: the keys Secret, and the witness the record goes to.
    volumes = {v["name"]: v for v in retention["volumes"]}
    assert volumes["gateway-keys"]["secret"]["secretName"] == "gateway-keys"
    assert volumes["witness"]["persistentVolumeClaim"]["claimName"] == "gateway-witness"


def test_every_workload_is_hardened_and_runs_the_same_image() -> None:
    workloads = [
        kubernetes_object("Deployment", "gateway"),
        kubernetes_object("Job", "gateway-migrate"),
        kubernetes_object("CronJob", "gateway-retention"),
    ]
    images = set()
    for obj in workloads:
        spec = pod_spec(obj)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "limits" in container["resources"]
            images.add(container["image"])
    assert len(images) == 1
    namespace = kubernetes_object("Namespace", "partner-gateway")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _policies() -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in kubernetes_objects("networkpolicy.yaml")}


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _is_kube_dns(peer: dict[str, Any]) -> bool:
    return peer.get("namespaceSelector", {}).get("matchLabels") == {
        "kubernetes.io/metadata.name": "kube-system"
    } and peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}


def _check_egress(policy: dict[str, Any]) -> set[int]:
    """Every egress rule names ports and a peer; no peer is the whole internet; DNS only to kube-dns."""
    name = policy["metadata"]["name"]
    assert "Egress" in policy["spec"]["policyTypes"], f"{name}: egress not restricted"
    ports: set[int] = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), f"{name}: an egress rule without `to:` opens its ports to anywhere: {rule}"
        assert rule.get("ports"), f"{name}: an egress rule without `ports:` opens every port: {rule}"
        rule_ports = {p["port"] for p in rule["ports"]}
        ports |= rule_ports
        for peer in rule["to"]:
            if "ipBlock" in peer:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert network.prefixlen >= (24 if network.version == 4 else 64), (
                    f"{name}: {network} is too wide"
                )
            else:
                assert "namespaceSelector" in peer or "podSelector" in peer, peer
        if 53 in rule_ports:
            assert rule_ports == {53} and all(_is_kube_dns(peer) for peer in rule["to"]), rule
    assert ports <= ALLOWED_EGRESS_PORTS, f"{name}: egress to {sorted(ports - ALLOWED_EGRESS_PORTS)}"
    return ports


def test_server_egress_only_database_redis_collector_and_dns() -> None:
    policy = _policies()["gateway"]
    assert _selects(
        policy, {"app.kubernetes.io/name": "partner-gateway", "app.kubernetes.io/component": "server"}
    )
    assert _check_egress(policy) == {53, 5432, 6379, 4318}


def test_maintenance_egress_only_database_and_dns() -> None:
    policy = _policies()["gateway-maintenance"]
    for component in ("migrate", "retention"):
        labels = {"app.kubernetes.io/name": "partner-gateway", "app.kubernetes.io/component": component}
        assert _selects(policy, labels)
        assert not _selects(_policies()["gateway"], labels)
    assert _check_egress(policy) == {53, 5432}
    assert "Ingress" in policy["spec"]["policyTypes"] and not policy["spec"].get("ingress")


def test_every_pod_is_selected_by_exactly_one_policy() -> None:
    for kind, name in (
        ("Deployment", "gateway"),
        ("Job", "gateway-migrate"),
        ("CronJob", "gateway-retention"),
    ):
        obj = kubernetes_object(kind, name)
        template = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
        labels = template["template"]["metadata"]["labels"]
        assert sum(_selects(p, labels) for p in _policies().values()) == 1, f"{kind}/{name}"


def test_server_ingress_only_from_ingress_controller_and_monitoring() -> None:
    ingress = _policies()["gateway"]["spec"]["ingress"]
    namespaces = set()
    for rule in ingress:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}
            namespaces.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert namespaces == {"ingress-nginx", "monitoring"}


def test_an_open_database_rule_is_caught() -> None:
    """The operator's complaint, put back: 5432 to anywhere must fail the egress check."""
    policy = _policies()["gateway"]
    database_rule = next(r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 5432)
    del database_rule["to"]
    with pytest.raises(AssertionError, match="without `to:`"):
        _check_egress(policy)
