"""Offline checks of the deployment files: schemas (compose-spec, Kubernetes), the dashboard's
shape and provisioning, and the names they share with the service (metrics, settings, uid)."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from model.rungs import PRECISIONS
from service.catalog.registry import ModelKey, ServedRung
from service.settings import Settings
from service.upscaling.prometheus import Metrics
from tests.deploy.conftest import DOCKER_DIR, REPO
from tests.deploy.promql import adapter_queries, alert_rules, all_panels, dashboard_targets

K8S_DIR = DOCKER_DIR / "k8s"
GRAFANA_DIR = DOCKER_DIR / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "csd-sr.json"
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())  # oldest and newest schemas it carries
RUNTIME_UID = 10001  # the Dockerfile's USER


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def k8s_resources() -> list[dict]:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S_DIR / name).read_text())]


def by_kind(kind: str) -> dict:
    (resource,) = [r for r in k8s_resources() if r["kind"] == kind]
    return resource


def test_compose_file_matches_the_compose_spec() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = load_yaml(DOCKER_DIR / "compose.yaml")
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    for service in compose["services"].values():  # every bind mount and the build context exist
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(".") or (DOCKER_DIR / source).exists(), source
    build = compose["services"]["csd-sr"]["build"]
    assert (DOCKER_DIR / build["context"] / build["dockerfile"]).is_file()
    replicas = load_yaml(DOCKER_DIR / "compose.replicas.yaml")  # the override for two replicas on one queue
    jsonschema.validators.validator_for(schema)(schema).validate(replicas)
    volumes = set(compose["volumes"]) | set(replicas["volumes"])
    for service in replicas["services"].values():
        assert {v.split(":")[0] for v in service.get("volumes", [])} <= volumes
        assert not set(service.get("depends_on", [])) - set(compose["services"]) - set(replicas["services"])


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load_yaml(K8S_DIR / "kustomization.yaml")["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_k8s_manifest_validates(version: str) -> None:
    resources = k8s_resources()
    assert {r["kind"] for r in resources} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_deployment_probes_resources_and_security() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUNTIME_UID
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])


def test_service_pdb_and_hpa_point_at_the_deployment() -> None:
    deployment = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert by_kind("Service")["spec"]["selector"].items() <= labels.items()
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    served = [name for name, _ in adapter_queries(K8S_DIR / "prometheus-adapter" / "values.yaml", "csd-sr")]
    assert metric["pods"]["metric"]["name"] in served


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def service_metric_names() -> set[str]:
    """Every sample name the service can expose (labelled series included before their first use)."""
    rungs = tuple(ServedRung(ModelKey(), w, p) for w in (0.25, 0.5, 1.0) for p in PRECISIONS)
    families = Metrics(rungs, latency_target_s=2.0).registry.collect()
    return {f.name + suffix for f in families for suffix in SAMPLE_SUFFIXES.get(f.type, ("",))}


def used_metric_names() -> set[str]:
    exprs = [expr for _, expr in dashboard_targets(DASHBOARD)]
    exprs += [rule["expr"] for rule in alert_rules(DOCKER_DIR / "prometheus" / "alerts.yml")]
    exprs += [expr for _, expr in adapter_queries(K8S_DIR / "prometheus-adapter" / "values.yaml", "csd-sr")]
    return {name for expr in exprs for name in re.findall(r"\b(?:csd_sr|process)_[a-z_]+\b", expr)}


def test_queries_use_the_service_metric_names() -> None:
    unknown = used_metric_names() - service_metric_names()
    assert not unknown, f"not exposed by service/upscaling/prometheus.py: {sorted(unknown)}"


def test_dashboard_panels_have_queries_on_the_provisioned_datasource() -> None:
    (datasource,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = all_panels(dashboard)
    assert dashboard["uid"] and len(panels) >= 15
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    compose = load_yaml(DOCKER_DIR / "compose.yaml")
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "csd-sr.yaml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    (datasource,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (job,) = load_yaml(DOCKER_DIR / "prometheus" / "prometheus.yml")["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["csd-sr:8000"] and "csd-sr" in compose["services"]


def configured_env_names() -> set[str]:
    names = set(re.findall(r"\b(CSD_SR_[A-Z_]+)=", (REPO / "Dockerfile").read_text()))
    names |= set(load_yaml(DOCKER_DIR / "compose.yaml")["services"]["csd-sr"]["environment"])
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return names | {env["name"] for env in container["env"]}


def test_environment_variables_are_real_settings() -> None:
    known = {"CSD_SR_" + name.upper() for name in Settings.model_fields}
    unknown = configured_env_names() - known
    assert not unknown, f"not fields of service.settings.Settings: {sorted(unknown)}"


def test_dockerfile_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(rf"^USER {RUNTIME_UID}:{RUNTIME_UID}$", text, re.M)
    assert "/healthz" in text and re.search(r"^HEALTHCHECK ", text, re.M)
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert re.search(r'^CMD \["csd-sr", "serve"\]$', text, re.M)
    assert re.search(r"^COPY weights/ ", text, re.M)


SHARED = K8S_DIR / "shared-jobs"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_shared_jobs_overlay_validates_and_patches_what_the_base_has(version: str) -> None:
    overlay = load_yaml(SHARED / "kustomization.yaml")
    assert overlay["resources"][0] == "../"
    for name in overlay["resources"][1:]:  # Redis and the shared volume
        for doc in yaml.safe_load_all((SHARED / name).read_text()):
            kubernetes_validate.validate(doc, version, strict=True)
    base = {(r["kind"], r["metadata"]["name"]): r for r in k8s_resources()}
    for patch in overlay["patches"]:
        doc = load_yaml(SHARED / patch["path"])
        assert (doc["kind"], doc["metadata"]["name"]) in base, patch  # a patch of nothing would apply silently
    patch = load_yaml(SHARED / "deployment-patch.yaml")["spec"]["template"]["spec"]
    deployment = by_kind("Deployment")["spec"]["template"]["spec"]
    assert {c["name"] for c in patch["containers"]} <= {c["name"] for c in deployment["containers"]}
    assert {v["name"] for v in patch["volumes"]} <= {v["name"] for v in deployment["volumes"]}
    settings = {f"CSD_SR_{name.upper()}" for name in Settings.model_fields}
    assert {e["name"] for c in patch["containers"] for e in c["env"]} <= settings
    claims = {d["metadata"]["name"] for d in yaml.safe_load_all((SHARED / "jobs-pvc.yaml").read_text())}
    assert {v["persistentVolumeClaim"]["claimName"] for v in patch["volumes"]} <= claims
