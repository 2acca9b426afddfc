"""What each service's image installs: one environment per service, as its Dockerfile target builds it,
beside the all-in-one environment every service shared before (every distribution, no dev tools).

For each service in services/*/pyproject.toml this builds, with the pinned uv and uv.lock as it is
(`--frozen`: nothing is resolved; wheels come from uv's cache when it has them),

    uv sync --frozen --no-dev --package reelfab-<name> --no-editable     -> .reelfab/envs/<service>
    uv sync --frozen --no-dev --all-packages --no-editable               -> .reelfab/envs/all

then prints a markdown table: the installed size of each environment's site-packages (MB, each file
counted once, hard links included; __pycache__ left out, so a run that imported something measures the
same), its ratio to the all-in-one environment, and whether onnxruntime, dlib, cv2 and c2pa import there.

It exits 1 when a service that does no face work carries the face stack: the planner, publisher,
analytics and post-producer must not import onnxruntime, dlib or cv2 (the post-producer signs with C2PA,
so c2pa is expected there). The consent registry (face embeddings at enrolment) and the swapper do face work.

    python bench/sizes.py [--only planner,publisher]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / ".reelfab" / "envs"
UV = Path(os.environ.get("REELFAB_UV", ROOT / ".tools" / "bin" / "uv"))

# the modules of the face stack (and the C2PA signer), by import name
PROBED = ("onnxruntime", "dlib", "cv2", "c2pa")
FACE_STACK = ("onnxruntime", "dlib", "cv2")
# services that do face work; every other one must not carry FACE_STACK
FACE_SERVICES = frozenset({"consent-registry", "swapper-gpu"})


@dataclass(frozen=True)
class Service:
    name: str  # as `reelfab serve` knows it (the reelfab.services entry point): planner, swapper-gpu, ...
    distribution: str  # reelfab-planner, reelfab-swapper-gpu, ...
    package: str  # its import package: reelfab_planner, ...
    folder: Path


def services() -> list[Service]:
    """Every service of the workspace, from services/*/pyproject.toml."""
    found = []
    for pyproject in sorted((ROOT / "services").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        (name, module), = project["entry-points"]["reelfab.services"].items()
        found.append(Service(name, project["name"], module.split(".")[0], pyproject.parent))
    return found


def uv_env(environment: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_PYTHON", "python3.11")
    env["UV_PROJECT_ENVIRONMENT"] = str(environment)
    return env


def sync_command(distribution: str | None) -> list[str]:
    """The uv command that builds one service's environment (the Dockerfile's), or the all-in-one one."""
    which = ["--package", distribution] if distribution else ["--all-packages"]
    return [str(UV), "sync", "--frozen", "--no-dev", *which, "--no-editable", "--quiet"]


def build_env(environment: Path, distribution: str | None) -> float:
    """Build (or bring up to date) an environment with exactly what uv.lock gives ``distribution``
    (None: every distribution of the workspace); returns the seconds it took."""
    if not UV.exists():
        raise SystemExit(f"{UV} is missing: run `make venv` first (it installs the pinned uv)")
    started = time.monotonic()
    proc = subprocess.run(sync_command(distribution), cwd=ROOT, env=uv_env(environment),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"uv sync for {distribution or 'all'} failed:\n{proc.stdout}{proc.stderr}")
    return time.monotonic() - started


def site_packages(environment: Path) -> Path:
    found = sorted(environment.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"{environment}: no lib/python3*/site-packages")
    return found[0]


def installed_bytes(folder: Path) -> int:
    """Disk usage of the files under ``folder`` (allocated blocks), each inode counted once;
    __pycache__ folders are left out."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


_PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        found[name] = False
    except Exception as exc:  # present but broken: say so rather than pass it as absent
        found[name] = f"{type(exc).__name__}: {exc}"
    else:
        found[name] = True
print(json.dumps(found))
"""


def importable(environment: Path, modules: tuple[str, ...] = PROBED) -> dict[str, bool | str]:
    """Which of ``modules`` import in the environment's own interpreter (run outside the source tree,
    so only what is installed there counts)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([str(environment / "bin" / "python"), "-c", _PROBE, *modules],
                          cwd=environment, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"probing {environment} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def _cell(found: bool | str) -> str:
    if found is True:
        return "yes"
    return "no" if found is False else f"broken ({found})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated service names (default: all)")
    args = parser.parse_args(argv)

    wanted = {s for s in args.only.split(",") if s}
    chosen = [s for s in services() if not wanted or s.name in wanted]
    if wanted - {s.name for s in chosen}:
        parser.error(f"unknown service(s): {', '.join(sorted(wanted - {s.name for s in chosen}))}")

    rows: list[tuple[str, int, dict[str, bool | str]]] = []
    for name, distribution in [("all", None), *((s.name, s.distribution) for s in chosen)]:
        environment = ENVS / name
        seconds = build_env(environment, distribution)
        size = installed_bytes(site_packages(environment))
        rows.append((name, size, importable(environment)))
        print(f"built {environment.relative_to(ROOT)} in {seconds:.1f} s", file=sys.stderr)

    all_size = rows[0][1]
    print("| service | installed MB | vs all-in-one | " + " | ".join(PROBED) + " |")
    print("|---|---:|---:|" + "---|" * len(PROBED))
    for name, size, found in rows:
        label = "all-in-one (every distribution, no dev)" if name == "all" else name
        cells = [_cell(found[m]) for m in PROBED]
        print(f"| {label} | {size / 1e6:.1f} | {size / all_size:.2f} | " + " | ".join(cells) + " |")

    failures = [
        f"{name} carries {', '.join(m for m in FACE_STACK if found[m] is not False)}"
        for name, _, found in rows[1:]
        if name not in FACE_SERVICES and any(found[m] is not False for m in FACE_STACK)
    ]
    for line in failures:
        print(f"FAIL: {line} (it does no face work)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
