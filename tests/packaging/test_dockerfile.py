"""The Dockerfile's shape, checked without a container engine (none runs on these machines): one target per
service in services/*/pyproject.toml, named like the service, that installs only that service's
distribution with the pinned uv, carries no source tree, runs as a non-root user, asks its own /healthz,
and starts `reelfab serve <name>`; docker-compose.yml builds each service from its own target."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.sizes import Service, services

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue  # comments, parser directives, and comment lines inside a continuation
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse_dockerfile((ROOT / "Dockerfile").read_text())
BY_NAME = {s.name: s for s in STAGES if s.name}
SERVICES = services()


def base_chain(stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [stage]
    while chain[0].base in BY_NAME:
        chain.insert(0, BY_NAME[chain[0].base])
    return chain


def copied_from(stage: Stage) -> list[str]:
    return [m.group(1) for kw, rest in stage.instructions if kw == "COPY"
            for m in [re.search(r"--from=(\S+)", rest)] if m]


def closure(target: Stage) -> list[Stage]:
    """Every stage whose instructions end up in the target: its FROM chain and, recursively, what it copies from."""
    seen: list[Stage] = []
    todo = [target]
    while todo:
        for stage in base_chain(todo.pop()):
            if stage not in seen:
                seen.append(stage)
                todo.extend(BY_NAME[f] for f in copied_from(stage) if f in BY_NAME)
    return seen


def env_of(chain: list[Stage]) -> dict[str, str]:
    """The ENV a stage ends up with along its base chain (later stages win)."""
    env: dict[str, str] = {}
    for line in instructions(chain, "ENV"):
        for word in shlex.split(line):
            key, sep, value = word.partition("=")
            if sep:
                env[key] = value
    return env


def instructions(stages: list[Stage], keyword: str) -> list[str]:
    return [rest for s in stages for kw, rest in s.instructions if kw == keyword]


def uv_syncs(stages: list[Stage]) -> list[list[str]]:
    """The `uv sync` commands of the RUN instructions, as argument lists (mount flags dropped)."""
    found = []
    for run in instructions(stages, "RUN"):
        words = [w for w in shlex.split(run) if not w.startswith("--mount=")]
        for command in " ".join(words).split("&&"):
            parts = command.split()
            if parts[:2] == ["uv", "sync"]:
                found.append(parts)
    return found


def default_port(service: Service) -> int:
    from reelfab.service import load_service

    spec, _ = load_service(service.name)
    return int(spec.default_port)


def healthcheck_code(target: Stage) -> str:
    """The python -c code of the target's HEALTHCHECK (the last one in its FROM chain)."""
    checks = instructions(base_chain(target), "HEALTHCHECK")
    assert checks, f"{target.name}: no HEALTHCHECK"
    check = checks[-1]
    assert check.upper() != "NONE", f"{target.name}: HEALTHCHECK NONE"
    command = json.loads(check[check.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"], command
    return str(command[2])


def test_every_service_has_a_target_named_like_it() -> None:
    assert {s.name for s in SERVICES} == {
        "consent-registry", "planner", "swapper-gpu", "post-producer", "publisher", "analytics"
    }
    missing = [s.name for s in SERVICES if s.name not in BY_NAME]
    assert not missing, f"no Dockerfile target for {missing}"


def test_images_start_from_python_311_slim_with_the_pinned_uv() -> None:
    # the one exception: the GPU swapper (swapper-gpu-cuda) and the stages it is built from start from the
    # pinned CUDA image (tests/deploy checks that target further)
    cuda = {id(s) for s in closure(BY_NAME["swapper-gpu-cuda"]) if s.base == ARGS.get("CUDA_IMAGE")}
    assert all(s.base in BY_NAME or s.base == "python:3.11-slim" or id(s) in cuda for s in STAGES), [s.base for s in STAGES]
    pinned = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pinned
    build_args = {k: v for s in STAGES for kw, rest in s.instructions if kw == "ARG" for k, _, v in [rest.partition("=")]}
    installs = " ".join(instructions(STAGES, "RUN"))
    assert '"uv==${UV_VERSION}"' in installs and build_args.get("UV_VERSION") == pinned.group(1)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_target_installs_only_its_service(service: Service) -> None:
    target = BY_NAME[service.name]
    syncs = uv_syncs(closure(target))
    assert len(syncs) == 1, f"{service.name}: expected one uv sync, found {syncs}"
    (sync,) = syncs
    assert "--frozen" in sync and "--no-dev" in sync and "--no-editable" in sync, sync
    assert sync[sync.index("--package") + 1] == service.distribution, sync
    assert "--all-packages" not in sync, sync


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_target_carries_no_source_tree(service: Service) -> None:
    """What reaches the image comes out of the built environment; nothing is copied from the context."""
    for stage in base_chain(BY_NAME[service.name]):
        for copy in instructions([stage], "COPY") + instructions([stage], "ADD"):
            assert "--from=" in copy, f"{service.name}: {stage.name} copies from the build context: {copy}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_target_runs_as_a_non_root_user(service: Service) -> None:
    users = instructions(base_chain(BY_NAME[service.name]), "USER")
    assert users, f"{service.name}: no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{service.name} runs as {users[-1]}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_target_serves_its_service_with_the_runtime_settings(service: Service) -> None:
    chain = base_chain(BY_NAME[service.name])
    entrypoints = instructions(chain, "ENTRYPOINT")
    assert entrypoints and json.loads(entrypoints[-1]) == ["reelfab", "serve", service.name]
    env = env_of(chain)
    assert env.get("REELFAB_HTTP_HOST") == "0.0.0.0"
    assert env.get("REELFAB_LOG_FORMAT") == "json"


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # http.server's name for it
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_healthcheck_asks_healthz_on_the_configured_or_default_port(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = healthcheck_code(BY_NAME[service.name])
    asked: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: asked.append(url))
    for configured, port in ((None, default_port(service)), ("0", default_port(service)), ("9999", 9999)):
        if configured is None:
            monkeypatch.delenv("REELFAB_HTTP_PORT", raising=False)
        else:
            monkeypatch.setenv("REELFAB_HTTP_PORT", configured)
        exec(code, {})  # the Dockerfile's own one-liner, with urlopen recorded instead of called
        assert asked.pop() == f"http://127.0.0.1:{port}/healthz", (service.name, configured)


@pytest.mark.parametrize("status", [200, 503])
def test_the_healthcheck_fails_unless_healthz_answers_ok(
    status: int, healthz_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Probe, "status", status)
    code = healthcheck_code(BY_NAME["planner"])
    port = healthz_server.server_address[1]
    proc = subprocess.run([sys.executable, "-c", code], env={"REELFAB_HTTP_PORT": str(port)},
                          capture_output=True, timeout=30)
    assert (proc.returncode == 0) is (status == 200), proc.stderr


def test_dockerignore_keeps_environments_caches_and_tests_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in (".venv", ".tools", ".reelfab", "tests", "**/__pycache__", ".git"):
        assert entry in ignored, f".dockerignore lacks {entry}"


def test_compose_builds_each_service_from_its_own_target() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in SERVICES:
        assert compose[service.name]["build"] == {"context": ".", "target": service.name}, service.name
        assert compose[service.name]["environment"]["REELFAB_HTTP_PORT"] == str(default_port(service))
    for name, spec in compose.items():
        if "build" in spec:
            assert spec["build"].get("target") in BY_NAME, f"{name} builds a target the Dockerfile lacks"
