"""One image per service, checked without a container engine: the planner's environment is built alone,
exactly as its Dockerfile target builds it (bench/sizes.py's `uv sync --frozen --no-dev --package
reelfab-planner --no-editable`, from uv's cache), and must hold neither the face stack nor the dev tools,
yet serve: `reelfab serve planner` from it reaches /readyz on the real stack and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.sizes import build_env, site_packages

REPO = Path(__file__).resolve().parents[2]
NOT_INSTALLED_MODULES = ("onnxruntime", "dlib", "cv2", "c2pa")
NOT_INSTALLED_PACKAGES = ("reelfab_swapper_gpu", "reelfab.faces", "reelfab.devtools", "reelfab.media")
NOT_INSTALLED_DISTRIBUTIONS = (
    "reelfab-devtools", "reelfab-faces", "reelfab-media", "reelfab-swapper-gpu", "reelfab-consent-registry",
    "onnxruntime", "dlib-bin", "opencv-python-headless", "c2pa-python",
    "pytest", "ruff", "mypy",  # the dev group
)


@pytest.fixture(scope="module")
def planner_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    environment = tmp_path_factory.mktemp("images") / "planner"
    build_env(environment, "reelfab-planner")
    return environment


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment for a process of the built env: nothing pointing back at the workspace."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _run_python(environment: Path, code: str) -> Any:
    proc = subprocess.run([str(environment / "bin" / "python"), "-c", code], cwd=environment,
                          env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_planner_env_has_no_devtools_distribution(planner_env: Path) -> None:
    found = _run_python(planner_env, """
import json
from importlib.metadata import PackageNotFoundError, distribution, distributions
names = sorted({d.metadata["Name"].lower() for d in distributions()})
try:
    distribution("reelfab-devtools")
    devtools = True
except PackageNotFoundError:
    devtools = False
planner = distribution("reelfab-planner")
print(json.dumps({"names": names, "devtools": devtools, "direct_url": planner.read_text("direct_url.json")}))
""")
    assert found["devtools"] is False
    assert not set(NOT_INSTALLED_DISTRIBUTIONS) & set(found["names"]), found["names"]
    assert {"reelfab-planner", "reelfab-runtime", "reelfab-core", "reelfab-bus", "reelfab-contracts"} <= set(found["names"])
    # installed as a wheel, not as an editable link back into services/planner
    direct_url = json.loads(found["direct_url"] or "{}")
    assert direct_url.get("dir_info", {}).get("editable") is not True, direct_url


def test_planner_env_lacks_the_face_stack_and_other_services(planner_env: Path) -> None:
    found = _run_python(planner_env, f"""
import importlib, importlib.util, json
imports = {{}}
for name in {list(NOT_INSTALLED_MODULES)!r}:
    try:
        importlib.import_module(name)
        imports[name] = "imported"
    except ModuleNotFoundError:
        imports[name] = "ModuleNotFoundError"
    except Exception as exc:
        imports[name] = type(exc).__name__
packages = {{name: importlib.util.find_spec(name) is not None for name in {list(NOT_INSTALLED_PACKAGES)!r}}}
import reelfab.service, reelfab_planner
print(json.dumps({{"imports": imports, "packages": packages,
                  "files": [reelfab.service.__file__, reelfab_planner.__file__]}}))
""")
    assert found["imports"] == {name: "ModuleNotFoundError" for name in NOT_INSTALLED_MODULES}
    assert found["packages"] == {name: False for name in NOT_INSTALLED_PACKAGES}
    # the code that runs is the installed copy, not the workspace's sources
    where = site_packages(planner_env).resolve()
    for file in found["files"]:
        assert Path(file).resolve().is_relative_to(where), file


def test_planner_env_holds_the_sources_of_this_checkout(planner_env: Path) -> None:
    """The environment must carry this checkout's code, not a wheel uv cached for the same version
    (each member's [tool.uv] cache-keys names its src/ files, so a source change rebuilds it)."""
    site = site_packages(planner_env)
    pairs = [(src, site / src.relative_to(folder / "src"))
             for folder in (REPO / "services" / "planner", REPO / "libs" / "runtime", REPO / "libs" / "contracts")
             for src in sorted((folder / "src").rglob("*.py"))]
    assert len(pairs) > 10
    stale = [str(src.relative_to(REPO)) for src, installed in pairs
             if not installed.is_file() or installed.read_bytes() != src.read_bytes()]
    assert not stale, f"the planner's environment does not hold this checkout's code: {stale}"


def _commands(help_text: str) -> set[str]:
    """The command names of typer's rich --help (the first word of each row of the Commands panel)."""
    panel = help_text.split("Commands", 1)[1] if "Commands" in help_text else ""
    return {m.group(1) for m in re.finditer(r"^[│|]\s([a-z][a-z-]*)\s", panel, re.MULTILINE)}


def test_reelfab_help_lists_serve_but_not_the_dev_tools(planner_env: Path) -> None:
    proc = subprocess.run([str(planner_env / "bin" / "reelfab"), "--help"], cwd=planner_env,
                          env=_clean_env(COLUMNS="120", NO_COLOR="1", TERM="dumb"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    assert "serve" in commands, proc.stdout
    for dev_only in ("up", "down", "demo", "setup", "codegen", "faces", "models", "consent", "storage"):
        assert dev_only not in commands, f"{dev_only!r} in the planner's CLI:\n{proc.stdout}"


def test_the_catalogue_qc_says_what_the_planner_image_lacks(planner_env: Path, tmp_path: Path) -> None:
    """`templates add` needs the face engine the planner's image leaves out: a clear refusal, exit 2."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a video")
    proc = subprocess.run([str(planner_env / "bin" / "reelfab"), "templates", "add", str(clip), "--tag", "dance"],
                          cwd=planner_env, env=_clean_env(COLUMNS="200", NO_COLOR="1", TERM="dumb"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "reelfab-planner[qc]" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "plan" in _commands(subprocess.run([str(planner_env / "bin" / "reelfab"), "--help"], cwd=planner_env,
                                              env=_clean_env(COLUMNS="120", NO_COLOR="1", TERM="dumb"),
                                              capture_output=True, text=True, timeout=60).stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_database(stack: Any) -> Iterator[str]:
    """A database of its own on the shared PostgreSQL: the planner migrates it from nothing (so the
    migrations must be in the installed wheels) and leaves the shared `planner` schema alone."""
    import asyncio

    import asyncpg

    name = f"reelfab_pkg_{uuid.uuid4().hex[:10]}"
    admin_dsn = stack.postgres_dsn

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.kafka
@pytest.mark.postgres
def test_planner_serves_from_its_own_env_and_stops_on_sigterm(
    planner_env: Path, private_database: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = _clean_env(
        REELFAB_HTTP_PORT=str(port),
        REELFAB_POSTGRES_DB=private_database,
        REELFAB_STATE_DIR=str(tmp_path / "state"),
        REELFAB_LOG_FORMAT="json",
        REELFAB_CONSUMER_SESSION_TIMEOUT_MS="6000",
        REELFAB_CONSUMER_HEARTBEAT_INTERVAL_MS="300",
    )
    log = tmp_path / "planner.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(planner_env / "bin" / "reelfab"), "serve", "planner"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"planner exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.HTTPError:
                ready = None
            if ready is not None and ready.status_code == 200:
                break
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, (
            f"/readyz: {ready.status_code if ready is not None else 'no answer'} after 60 s:\n{log.read_text()[-3000:]}"
        )
        assert ready.json()["service"] == "planner"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        output = log.read_text()
        assert code == 0, f"planner exited with {code}:\n{output[-3000:]}"
        assert '"event": "stopped"' in output, output[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
