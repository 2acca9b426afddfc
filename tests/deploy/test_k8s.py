"""The Kubernetes deployment (k8s/): both overlays build with kustomize, every rendered manifest is valid
against the Kubernetes and CRD schemas kept in this repository (kubeconform -strict, no network), and the
manifests agree with the code: ports and probes with the services' specs, KEDA's Kafka triggers with the
topic catalogue and the consumer groups, alerts and dashboards with deploy/observability, settings with
reelfab.settings.

Needs .tools/bin/kustomize and .tools/bin/kubeconform (`make deploy-tools`); nothing is skipped without them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from reelfab.contracts.topics import TOPICS, consumed_by
from reelfab.service import service_module
from reelfab.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZE = REPO / ".tools" / "bin" / "kustomize"
KUBECONFORM = REPO / ".tools" / "bin" / "kubeconform"
OBSERVABILITY = REPO / "deploy" / "observability"
OVERLAYS = ("dev", "prod")

SERVICES = ("consent-registry", "planner", "swapper-gpu", "post-producer", "publisher", "analytics")
WORKERS = ("retention",)  # Deployments that are not services (no consumer group, /metrics only)
RETENTION_PORT = 8087
SCALED = {"swapper-gpu", "post-producer", "publisher"}  # KEDA scales these on consumer lag
MEDIA = {"consent-registry", "swapper-gpu", "post-producer", "publisher"}  # read/write the file:// store
STATE_DIR = "/var/lib/reelfab"
USER = 10001
# settings that are secrets: only ever from a Secret, never in a ConfigMap or a literal value
SECRET_SETTINGS = {
    "REELFAB_POSTGRES_PASSWORD", "REELFAB_CONSENT_MASTER_KEY", "REELFAB_CONSENT_TOKEN",
    "REELFAB_PUBLISHER_TOKEN_KEY", "REELFAB_PUBLISHER_REVIEW_SECRET",
    "REELFAB_TIKTOK_CLIENT_KEY", "REELFAB_TIKTOK_CLIENT_SECRET",
}
SETTINGS = {f"REELFAB_{name.upper()}" for name in Settings.model_fields}
PARTITIONS = {t.name: t for t in TOPICS}

Doc = dict[str, Any]


def tool(path: Path) -> str:
    if not (path.is_file() and path.stat().st_mode & 0o111):
        pytest.fail(f"{path.relative_to(REPO)} is missing: run `make deploy-tools` (tests/deploy needs it)")
    return str(path)


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def rendered(overlay: str) -> str:
    result = subprocess.run(
        [tool(KUSTOMIZE), "build", "--load-restrictor", "LoadRestrictionsNone", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"kustomize build k8s/overlays/{overlay} failed:\n{result.stderr}"
    return result.stdout


@cache
def documents(overlay: str) -> tuple[Doc, ...]:
    return tuple(d for d in yaml.safe_load_all(rendered(overlay)) if d)


def of_kind(overlay: str, kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in documents(overlay) if d["kind"] == kind}


def deployments(overlay: str) -> dict[str, Doc]:
    return of_kind(overlay, "Deployment")


def configmap(overlay: str, prefix: str) -> dict[str, str]:
    """A generated ConfigMap's data, found by its name without the hash suffix."""
    found = [d for n, d in of_kind(overlay, "ConfigMap").items() if n.rsplit("-", 1)[0] == prefix]
    assert len(found) == 1, f"{overlay}: expected one ConfigMap {prefix}-<hash>, found {len(found)}"
    return dict(found[0].get("data") or {})


def container(deployment: Doc) -> Doc:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    return containers[0]


def environment(overlay: str, deployment: Doc) -> dict[str, str]:
    """The REELFAB_* values a Deployment's container gets from its ConfigMaps and literal env."""
    env: dict[str, str] = {}
    names = {n: d for n, d in of_kind(overlay, "ConfigMap").items()}
    c = container(deployment)
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"{deployment['metadata']['name']}: envFrom only from ConfigMaps (secrets by key)"
        env.update(names[ref["name"]].get("data") or {})
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def kafka_triggers(scaled: Doc) -> Iterator[dict[str, str]]:
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "kafka", f"{scaled['metadata']['name']}: only Kafka lag triggers expected"
        yield trigger["metadata"]


def min_partitions(overlay: str) -> int:
    """The bootstrap Job's --min-partitions (0 without it)."""
    jobs = [j for j in of_kind(overlay, "Job").values() if "bootstrap" in j["metadata"]["name"]]
    assert len(jobs) == 1, f"{overlay}: one topic bootstrap Job expected"
    args = container_of_job(jobs[0]).get("args", [])
    return int(args[args.index("--min-partitions") + 1]) if "--min-partitions" in args else 0


def container_of_job(job: Doc) -> Doc:
    containers: list[Doc] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def partitions(overlay: str, topic: str) -> int:
    t = PARTITIONS[topic]
    return t.partitions if t.compacted else max(t.partitions, min_partitions(overlay))


def image_repository(image: str) -> str:
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


# -- schema validation -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def schema_locations(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """kubeconform -schema-location values, local only: the Kubernetes schemas of kubernetes_validate
    (references made local by k8s/schemas/convert_crds.py: as shipped they point at kubernetes.io) and
    the CRD schemas in k8s/schemas."""
    convert = load_module(K8S / "schemas" / "convert_crds.py")
    builtins = convert.localize_k8s_schemas(convert.k8s_builtin_source(), tmp_path_factory.mktemp("k8s-schemas"))
    return [
        f"{builtins}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        f"{K8S / 'schemas'}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
    ]


def kubeconform(manifest: Path, locations: list[str]) -> dict[str, Any]:
    command = [tool(KUBECONFORM), "-strict", "-summary", "-output", "json"]
    for location in locations:
        command += ["-schema-location", location]
    result = subprocess.run([*command, str(manifest)], capture_output=True, text=True, timeout=120)
    report: dict[str, Any] = json.loads(result.stdout)
    report["rc"] = result.returncode
    return report


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_valid_against_local_schemas(
        overlay: str, schema_locations: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay))
    report = kubeconform(manifest, schema_locations)
    problems = [f"{r['kind']}/{r['name']}: {r['status']} {r.get('msg', '')}" for r in report["resources"]
                if r["status"] != "statusValid"]
    assert report["rc"] == 0 and not problems, "\n".join(problems)
    assert report["summary"]["valid"] == len(documents(overlay)), report["summary"]
    kinds = {d["kind"] for d in documents(overlay)}
    assert {"Deployment", "Service", "ScaledObject", "ServiceMonitor", "PrometheusRule", "Job",
            "PodDisruptionBudget", "ConfigMap", "PersistentVolumeClaim"} <= kinds


def test_the_local_schemas_are_strict(schema_locations: list[str], tmp_path: Path) -> None:
    """A misspelt field fails, in a Kubernetes kind and in each CRD kind: the checks above can fail."""
    bad = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
         "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
             "metadata": {"labels": {"a": "b"}},
             "spec": {"containers": [{"name": "x", "image": "x", "livenessProbes": {}}]}}}},
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
         "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3, "triggers": [{"type": "kafka", "metadata": {}}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
         "spec": {"selector": {}, "endpoints": [{"port": "http", "paht": "/metrics"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "x"},
         "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "four": "5m"}]}]}},
    ]
    for doc in bad:
        manifest = tmp_path / f"{doc['kind']}.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        report = kubeconform(manifest, schema_locations)
        assert report["rc"] != 0 and report["summary"]["invalid"] == 1, (doc["kind"], report)


def test_crd_schemas_are_strict_where_the_crd_lists_properties() -> None:
    files = sorted((K8S / "schemas").glob("*/*.json"))
    assert {f"{f.parent.name}/{f.name}" for f in files} >= {
        "keda.sh/scaledobject_v1alpha1.json", "monitoring.coreos.com/servicemonitor_v1.json",
        "monitoring.coreos.com/prometheusrule_v1.json",
    }

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                yield where
            if "x-kubernetes-int-or-string" in node:
                yield where + " (int-or-string not converted)"
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}")

    for file in files:
        loose = list(walk(json.loads(file.read_text()), file.name))
        assert not loose, loose[:5]


# -- services ------------------------------------------------------------------------------------------


def service_deployments(overlay: str) -> dict[str, Doc]:
    return {name: dep for name, dep in deployments(overlay).items() if name not in WORKERS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_deployment_and_service_per_service_on_its_port(overlay: str) -> None:
    deps, services = deployments(overlay), of_kind(overlay, "Service")
    assert set(deps) == set(SERVICES) | set(WORKERS) and set(services) == set(SERVICES) | set(WORKERS)
    for name, dep in service_deployments(overlay).items():
        port = service_module(name).SPEC.default_port
        c = container(dep)
        assert c["name"] == name
        # the image's ENTRYPOINT (`reelfab serve <name>`) runs: the consumer group is the service's name
        assert "command" not in c and "args" not in c, name
        assert image_repository(c["image"]) in {name, f"{name}-cuda"}, c["image"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": port}, (name, ports)
        assert environment(overlay, dep).get("REELFAB_HTTP_PORT", str(port)) == str(port)
        svc = services[name]
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", port, "http")]
        pdbs = [p for p in of_kind(overlay, "PodDisruptionBudget").values()
                if p["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pdbs) == 1, f"{overlay}: {name} needs one PodDisruptionBudget"


def resolve_port(c: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named: dict[str, int] = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"probe port {port!r} is not a container port"
    return named[port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_on_healthz_and_readyz(overlay: str) -> None:
    for name, dep in service_deployments(overlay).items():
        c, port = container(dep), service_module(name).SPEC.default_port
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet")
            assert get, f"{overlay}: {name} has no {probe} httpGet"
            assert get["path"] == path and resolve_port(c, get["port"]) == port, (name, probe, get)


def pod_security(overlay: str, kind: str, name: str, pod: Doc) -> None:
    psc = pod.get("securityContext", {})
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", (kind, name)
    assert pod.get("automountServiceAccountToken") is False, (kind, name)
    mounts_by_volume: dict[str, str] = {}
    for c in pod["containers"]:
        csc = c.get("securityContext", {})

        def effective(key: str, c: Doc = c, csc: Doc = csc) -> Any:
            return csc.get(key, psc.get(key))

        where = f"{overlay}: {kind} {name}, container {c['name']}"
        assert effective("runAsNonRoot") is True, where
        assert effective("runAsUser") == USER, where
        assert csc.get("readOnlyRootFilesystem") is True, where
        assert csc.get("allowPrivilegeEscalation") is False, where
        assert csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc["capabilities"].get("add"), where
        assert csc.get("privileged") in (None, False), where
        requests, limits = c.get("resources", {}).get("requests", {}), c.get("resources", {}).get("limits", {})
        assert {"cpu", "memory"} <= set(requests) and "memory" in limits, f"{where}: resources {c.get('resources')}"
        mounts_by_volume.update({m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])})
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for path in ("/tmp", STATE_DIR):  # what a read-only root leaves writable
        assert path in mounts_by_volume, f"{overlay}: {kind} {name} mounts nothing at {path}"
        assert "emptyDir" in volumes[mounts_by_volume[path]], (name, path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_image_user_read_only_with_resources(overlay: str) -> None:
    for name, dep in deployments(overlay).items():
        pod_security(overlay, "Deployment", name, dep["spec"]["template"]["spec"])
    for name, job in of_kind(overlay, "Job").items():
        pod_security(overlay, "Job", name, job["spec"]["template"]["spec"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_and_secrets_come_from_secrets(overlay: str) -> None:
    readme = (K8S / "README.md").read_text()
    assert not of_kind(overlay, "Secret"), "no Secret values are committed: they are created in the cluster"
    for name, cm in of_kind(overlay, "ConfigMap").items():
        if name.startswith("reelfab-grafana-dashboards"):
            continue
        for key in cm.get("data") or {}:
            assert key in SETTINGS, f"{overlay}: ConfigMap {name} sets {key}, which reelfab.settings does not read"
            assert key not in SECRET_SETTINGS, f"{overlay}: ConfigMap {name} holds the secret {key}"
    pods = [(n, d["spec"]["template"]["spec"]) for n, d in deployments(overlay).items()]
    pods += [(n, j["spec"]["template"]["spec"]) for n, j in of_kind(overlay, "Job").items()]
    for name, pod in pods:
        for c in pod["containers"]:
            for item in c.get("env", []):
                assert item["name"] in SETTINGS, f"{name}: {item['name']} is not a setting"
                if item["name"] in SECRET_SETTINGS:
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    assert ref, f"{name}: {item['name']} must come from a Secret"
                    assert f"`{ref['name']}`" in readme and f"`{ref['key']}`" in readme, \
                        f"k8s/README.md does not document Secret {ref['name']} key {ref['key']}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert f"`{volume['secret']['secretName']}`" in readme, volume
    for name in SERVICES:
        env = [e["name"] for e in container(deployments(overlay)[name]).get("env", [])]
        assert "REELFAB_POSTGRES_PASSWORD" in env, f"{name}: every service connects to PostgreSQL"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_media_services_share_one_volume_at_the_storage_root(overlay: str) -> None:
    root = configmap(overlay, "reelfab-common")["REELFAB_STORAGE_ROOT"]
    assert root.startswith("file:///"), "this build's object store is file:// only"
    claims = of_kind(overlay, "PersistentVolumeClaim")
    for name, dep in deployments(overlay).items():
        pod = dep["spec"]["template"]["spec"]
        claimed = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                   if "persistentVolumeClaim" in v}
        mounts = [m for m in container(dep).get("volumeMounts", []) if m["name"] in claimed]
        if name not in MEDIA:
            continue
        covering = [m for m in mounts if root.removeprefix("file://").startswith(m["mountPath"].rstrip("/") + "/")]
        assert covering, f"{overlay}: {name} does not mount a volume holding {root}"
        claim = claims[claimed[covering[0]["name"]]]
        if overlay == "prod":
            assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share it"
    shared = {claimed for dep in deployments(overlay).values()
              for claimed in [v["persistentVolumeClaim"]["claimName"]
                              for v in dep["spec"]["template"]["spec"].get("volumes", []) if "persistentVolumeClaim" in v]}
    assert len(shared) == 1, f"{overlay}: one shared volume expected, found {shared}"


# -- GPU -----------------------------------------------------------------------------------------------


def gpu_requested(dep: Doc) -> bool:
    resources = container(dep).get("resources", {})
    return any("nvidia.com/gpu" in resources.get(k, {}) for k in ("requests", "limits"))


def test_prod_swapper_runs_on_a_gpu_node() -> None:
    dep = deployments("prod")["swapper-gpu"]
    pod, c = dep["spec"]["template"]["spec"], container(dep)
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    assert pod.get("nodeSelector") == {"nvidia.com/gpu.present": "true"}, "GPU nodes, as the GPU Operator labels them"
    rolling = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    assert rolling.get("maxSurge") == 0, "a surge pod would wait for a spare GPU and stall the rollout"
    assert image_repository(c["image"]) == "swapper-gpu-cuda", "the Dockerfile's CUDA build"
    env = environment("prod", dep)
    assert env["REELFAB_FACE_BACKEND"] == "onnx"
    assert env["REELFAB_EXECUTION_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    for name, other in deployments("prod").items():
        if name != "swapper-gpu":
            assert not gpu_requested(other), name


def test_dev_swapper_runs_on_cpu() -> None:
    dep = deployments("dev")["swapper-gpu"]
    pod, c = dep["spec"]["template"]["spec"], container(dep)
    assert not any(gpu_requested(d) for d in deployments("dev").values())
    assert not any("nvidia" in json.dumps(t) for t in pod.get("tolerations", []))
    assert not any("nvidia" in k for k in pod.get("nodeSelector", {}))
    assert image_repository(c["image"]) == "swapper-gpu"
    env = environment("dev", dep)
    assert env["REELFAB_FACE_BACKEND"] == "classical"
    assert "CUDA" not in env.get("REELFAB_EXECUTION_PROVIDERS", "")


def test_dev_is_small_and_prod_is_larger() -> None:
    for name, dep in deployments("dev").items():
        assert dep["spec"].get("replicas", 1) == 1, name
    prod = deployments("prod")
    assert prod["consent-registry"]["spec"]["replicas"] > 1
    for name, scaled in of_kind("prod", "ScaledObject").items():
        assert scaled["spec"]["maxReplicaCount"] > of_kind("dev", "ScaledObject")[name]["spec"]["maxReplicaCount"]
    assert min_partitions("prod") > max(t.partitions for t in TOPICS)


# -- KEDA ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_objects_follow_the_topic_catalogue(overlay: str) -> None:
    scaled, deps = of_kind(overlay, "ScaledObject"), deployments(overlay)
    bootstrap = configmap(overlay, "reelfab-common")["REELFAB_KAFKA_BOOTSTRAP"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == SCALED
    for name, so in scaled.items():
        target = so["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target["name"] in deps, name
        service = target["name"]
        assert "replicas" not in deps[service]["spec"], f"{service}: KEDA owns the replica count"
        consumed = {t.name for t in consumed_by(service)}
        low, high = so["spec"].get("minReplicaCount", 0), so["spec"]["maxReplicaCount"]
        assert 1 <= low <= high, (name, low, high)
        topics = []
        for meta in kafka_triggers(so):
            topic = meta["topic"]
            topics.append(topic)
            assert topic in PARTITIONS, f"{name}: {topic} is not in schemas/topics.toml"
            assert topic in consumed, f"{name}: {service} does not consume {topic}"
            assert meta["consumerGroup"] == service, f"{name}: the group of {service} is {service!r}"
            assert meta["bootstrapServers"] == bootstrap, f"{name}: not the services' Kafka"
            assert int(meta["lagThreshold"]) >= 1
            assert meta.get("allowIdleConsumers", "false") == "false"
            assert high <= partitions(overlay, topic), (
                f"{overlay}: {name} maxReplicaCount {high} > {partitions(overlay, topic)} partitions of {topic}")
        assert topics and len(set(topics)) == len(topics), name
    swap_topics = {m["topic"] for m in kafka_triggers(scaled["swapper-gpu"])}
    assert swap_topics == {"reelfab.swap.requested.v1", "reelfab.swap.expedited.v1"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bootstrap_job_creates_the_topics_from_the_planner_image(overlay: str) -> None:
    (job,) = [j for j in of_kind(overlay, "Job").values() if "bootstrap" in j["metadata"]["name"]]
    c = container_of_job(job)
    assert image_repository(c["image"]) == "planner"
    assert c["command"] == ["reelfab"] and c["args"][:2] == ["topics", "--create"], c
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    env = {e["name"]: e for e in c.get("env", [])}
    assert "REELFAB_KAFKA_BOOTSTRAP" in env


# -- monitoring ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_scraped_by_a_service_monitor(overlay: str) -> None:
    services = of_kind(overlay, "Service")
    monitored = set()
    for name, sm in of_kind(overlay, "ServiceMonitor").items():
        selector = sm["spec"]["selector"]
        assert set(selector) == {"matchLabels"} and selector["matchLabels"], f"{name}: select by labels"
        assert "namespaceSelector" not in sm["spec"], f"{name}: the Services are in its namespace"
        chosen = [s for s in services.values() if selector["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
        assert chosen, f"{overlay}: ServiceMonitor {name} selects no Service"
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint.get("path", "/metrics") == "/metrics"
            assert endpoint.get("honorLabels") is True, f"{name}: the metrics' own `service` label must win"
            for svc in chosen:
                ports = {p.get("name") for p in svc["spec"]["ports"]}
                assert endpoint["port"] in ports, f"{name}: Service {svc['metadata']['name']} has no port {endpoint['port']}"
        monitored |= {s["metadata"]["name"] for s in chosen}
    assert monitored == set(SERVICES) | set(WORKERS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retention_worker_prunes_the_shared_volume_once_at_a_time(overlay: str) -> None:
    dep = deployments(overlay)["retention"]
    c, pod = container(dep), dep["spec"]["template"]["spec"]
    assert image_repository(c["image"]) == "retention", "the Dockerfile's retention target"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", "two would race"
    args = c["args"]
    assert "--apply" in args and float(args[args.index("--every") + 1]) > 0, args
    assert int(args[args.index("--metrics-port") + 1]) == RETENTION_PORT
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": RETENTION_PORT}
    for probe in ("startupProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/metrics" and resolve_port(c, get["port"]) == RETENTION_PORT, probe
    # the store it prunes is the one the media services write: the same claim at the same path
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    media = container(deployments(overlay)["post-producer"])
    media_pod = deployments(overlay)["post-producer"]["spec"]["template"]["spec"]
    media_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                    for v in media_pod["volumes"] if "persistentVolumeClaim" in v}
    mounted = {claims[m["name"]]: m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims}
    media_mounted = {media_claims[m["name"]]: m["mountPath"] for m in media["volumeMounts"] if m["name"] in media_claims}
    assert mounted and mounted == media_mounted, (mounted, media_mounted)


def alert_groups() -> list[Any]:
    path = OBSERVABILITY / "alerts.yml"
    assert path.is_file(), f"{path.relative_to(REPO)} is missing: the PrometheusRule is generated from it"
    groups = yaml.safe_load(path.read_text())["groups"]
    assert groups, "alerts.yml has no groups"
    return list(groups)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_groups_are_the_alerts_file(overlay: str) -> None:
    rules = of_kind(overlay, "PrometheusRule")
    assert len(rules) == 1
    (rule,) = rules.values()
    assert rule["spec"]["groups"] == alert_groups(), (
        "k8s/base/monitoring/prometheusrule.yaml differs from deploy/observability/alerts.yml: "
        "run `python k8s/base/monitoring/sync_observability.py`")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grafana_dashboards_configmap_holds_every_dashboard(overlay: str) -> None:
    files = {p.name: p for p in sorted((OBSERVABILITY / "dashboards").glob("*.json"))}
    assert files, "deploy/observability/dashboards has no dashboards"
    found = [d for n, d in of_kind(overlay, "ConfigMap").items() if n.startswith("reelfab-grafana-dashboards")]
    assert len(found) == 1
    (cm,) = found
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    data = cm.get("data") or {}
    assert set(data) == set(files), "run `python k8s/base/monitoring/sync_observability.py`"
    for name, path in files.items():
        assert json.loads(data[name]) == json.loads(path.read_text()), name
    size = sum(len(v.encode()) for v in data.values())
    assert size < 1024 * 1024, f"the dashboards ConfigMap is {size} bytes: over Kubernetes' 1 MiB"
