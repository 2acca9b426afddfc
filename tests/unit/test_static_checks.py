"""The static checks are real checks: mypy (mypy.ini) and the import contracts (.importlinter) pass on the
repository, and each fails on a planted mistake, so `make test` fails when they would.

- mypy rejects a field a typed record does not have, with the repository's own configuration.
- lint-imports breaks each contract of .importlinter on a planted import. Nothing in the repository is
  edited: a temp folder on PYTHONPATH holds either a new portion of the ``reelfab`` namespace package or a
  copy of one distribution's package (a library or a service) with one extra module; the copy shadows the
  installed one, so the repository's own .importlinter judges it.
- The configurations cover every distribution, and the list of modules left out of strict mode only
  shrinks."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MYPY_INI = REPO / "mypy.ini"
IMPORTLINTER = REPO / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Modules allowed to be less than strict (sections of mypy.ini's NOT YET STRICT block). This list only
# shrinks: make a module strict and remove it here and there; never add one.
NOT_YET_STRICT: frozenset[str] = frozenset()

# mypy's --strict flags as mypy.ini keys, with the value strict mode gives each.
STRICT_FLAGS = {
    "disallow_any_generics": True,
    "disallow_subclassing_any": True,
    "disallow_untyped_calls": True,
    "disallow_untyped_defs": True,
    "disallow_incomplete_defs": True,
    "check_untyped_defs": True,
    "disallow_untyped_decorators": True,
    "warn_unused_ignores": True,
    "warn_return_any": True,
    "implicit_reexport": False,
    "strict_equality": True,
    "extra_checks": True,
}
FIRST_PARTY = re.compile(r"^reelfab(_[a-z_]+)?(\.|$)")


def _run(args: list[str], cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return parser


def _lines(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\n]", value) if v.strip()]


def _distribution_src_dirs() -> list[Path]:
    return sorted(p for p in [*REPO.glob("libs/*/src"), *REPO.glob("services/*/src")] if p.is_dir())


def _service_packages() -> list[str]:
    return sorted(p.name for p in REPO.glob("services/*/src/reelfab_*") if (p / "__init__.py").exists())


# --- mypy ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def _mypy_snippet(code: str, folder: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy, configured by the repository's mypy.ini, on one file outside the repository."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snippet.py").write_text(code)
    return _run(
        [sys.executable, "-m", "mypy", "--config-file", str(MYPY_INI), "--cache-dir", str(cache),
         "--no-warn-unused-configs", "snippet.py"],
        cwd=folder,
    )


RECORD_SNIPPET = """\
from reelfab.contracts.generated.records import SwapRequested


def read(record: SwapRequested) -> object:
    return record.{field}
"""

SETTINGS_SNIPPET = """\
from reelfab.settings import Settings


def read(settings: Settings) -> object:
    return settings.{field}
"""


@pytest.mark.parametrize(
    ("snippet", "cls", "real_field"),
    [(RECORD_SNIPPET, "SwapRequested", "job_id"), (SETTINGS_SNIPPET, "Settings", "postgres_dsn")],
    ids=["generated-record", "settings"],
)
def test_mypy_rejects_a_field_the_class_does_not_have(
    snippet: str, cls: str, real_field: str, tmp_path: Path, mypy_cache: Path
) -> None:
    wrong = _mypy_snippet(snippet.format(field="no_such_field"), tmp_path / "wrong", mypy_cache)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert f'snippet.py:5: error: "{cls}" has no attribute "no_such_field"  [attr-defined]' in wrong.stdout, wrong.stdout
    assert "Found 1 error in 1 file" in wrong.stdout, wrong.stdout

    right = _mypy_snippet(snippet.format(field=real_field), tmp_path / "right", mypy_cache)
    assert right.returncode == 0, right.stdout + right.stderr
    assert "Success: no issues found in 1 source file" in right.stdout


def test_mypy_passes_on_every_distribution() -> None:
    """Plain `mypy` from the repository root, as `make lint` runs it (its incremental cache is the
    repository's .mypy_cache, git-ignored, so this is quick after `make lint`)."""
    result = _run([sys.executable, "-m", "mypy"], cwd=REPO, timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    # a section of mypy.ini that matches no module (a renamed module's exception, a dropped dependency)
    assert "unused section" not in result.stdout + result.stderr, result.stdout + result.stderr
    checked = re.search(r"no issues found in (\d+) source files", result.stdout)
    assert checked, result.stdout
    # `files` reaches every distribution: at least one module per src folder
    expected = sum(1 for d in _distribution_src_dirs() for _ in d.rglob("*.py"))
    assert int(checked.group(1)) == expected, result.stdout


def test_mypy_config_covers_every_distribution_with_no_blanket_ignores() -> None:
    ini = _ini(MYPY_INI)
    main = ini["mypy"]
    paths = {Path(p.replace("$MYPY_CONFIG_FILE_DIR", str(REPO))).resolve() for p in _lines(main["mypy_path"])}
    assert paths == {d.resolve() for d in _distribution_src_dirs()}
    assert set(_lines(main["files"])) == {"libs/*/src", "services/*/src"}
    assert main.getboolean("strict") is True
    assert "ignore_missing_imports" not in main and "ignore_errors" not in main
    assert "follow_imports" not in main
    for name in ini.sections():
        if not name.startswith("mypy-"):
            continue
        section = ini[name]
        modules = _lines(name.removeprefix("mypy-"))
        # `strict` in a per-module section would switch strict mode on (or off) for the whole run
        assert "strict" not in section, f"[{name}]: set the individual flags, not strict"
        if "ignore_missing_imports" in section:
            first_party = [m for m in modules if FIRST_PARTY.match(m)]
            assert not first_party, f"[{name}]: first-party imports are always resolved"
        assert not section.getboolean("ignore_errors", fallback=False), f"[{name}]: ignore_errors hides every error"


def _relaxed(section: configparser.SectionProxy) -> set[str]:
    relaxed = set()
    for key in section:
        flag, value = key, section.getboolean(key) if section[key].lower() in ("true", "false") else None
        if flag.startswith("allow_"):
            flag, value = "dis" + flag, None if value is None else not value
        elif flag.startswith("no_"):
            flag, value = flag[3:], None if value is None else not value
        if flag in STRICT_FLAGS and value is not None and value != STRICT_FLAGS[flag]:
            relaxed.add(flag)
        if flag == "disable_error_code":
            relaxed.add(flag)
    return relaxed


def test_modules_left_out_of_strict_mode_only_shrink() -> None:
    ini = _ini(MYPY_INI)
    relaxing = {name for name in ini.sections() if name.startswith("mypy-") and _relaxed(ini[name])}
    not_strict = {module for name in relaxing for module in _lines(name.removeprefix("mypy-"))}
    added = not_strict - NOT_YET_STRICT
    assert not added, f"modules taken out of strict mode: {sorted(added)}; make them strict instead"
    # every exception sits in the marked block, with its one-line reason right under the header
    lines = MYPY_INI.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("# NOT YET STRICT"))
    for i, line in enumerate(lines):
        header = re.match(r"^\[(mypy-.+)\]$", line)
        if header and header.group(1) in relaxing:
            assert i > marker, f"{line}: exceptions to strict mode go in the NOT YET STRICT block"
            assert lines[i + 1].startswith("#"), f"{line}: give the reason on the next line"
        elif header:
            assert i < marker, f"{line}: only exceptions to strict mode below NOT YET STRICT"


# --- import contracts ------------------------------------------------------------------------------------


def _contract_names() -> dict[str, str]:
    ini = _ini(IMPORTLINTER)
    return {
        name.removeprefix("importlinter:contract:"): ini[name]["name"]
        for name in ini.sections()
        if name.startswith("importlinter:contract:")
    }


def _lint_imports(pythonpath: Path | None = None) -> tuple[int, str, set[str]]:
    """lint-imports with the repository's .importlinter; returns its exit status, its output and the
    ids of the broken contracts."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    result = _run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, env=env, timeout=90)
    output = result.stdout + result.stderr
    names = _contract_names()
    status = {}
    for cid, name in names.items():
        m = re.search(rf"^{re.escape(name)} (KEPT|BROKEN)$", output, re.M)
        assert m, f"no verdict for contract {name!r}:\n{output}"
        status[cid] = m.group(1)
    return result.returncode, output, {cid for cid, s in status.items() if s == "BROKEN"}


def test_import_contracts_are_kept() -> None:
    rc, output, broken = _lint_imports()
    assert rc == 0 and not broken, output
    assert f"Contracts: {len(_contract_names())} kept, 0 broken." in output


def _copy_package(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))


def _plant(root: Path, plant: str) -> str:
    """Lay out one planted violation under ``root`` (put first on PYTHONPATH); returns the import line
    lint-imports must name."""
    ns = root / "reelfab"
    if plant == "service-imports-service":
        _copy_package(REPO / "services/planner/src/reelfab_planner", root / "reelfab_planner")
        (root / "reelfab_planner/planted.py").write_text("import reelfab_publisher\n")
        return "reelfab_planner.planted -> reelfab_publisher (l.1)"
    if plant == "library-imports-service":
        _copy_package(REPO / "libs/media/src/reelfab/media", ns / "media")
        (ns / "media/planted.py").write_text("import reelfab_swapper_gpu\n")
        return "reelfab.media.planted -> reelfab_swapper_gpu (l.1)"
    if plant == "service-imports-devtools":
        _copy_package(REPO / "services/analytics/src/reelfab_analytics", root / "reelfab_analytics")
        (root / "reelfab_analytics/planted.py").write_text("\n\nfrom reelfab.devtools import synthetic\n")
        return "reelfab_analytics.planted -> reelfab.devtools.synthetic (l.3)"
    if plant == "media-imports-faces":
        _copy_package(REPO / "libs/media/src/reelfab/media", ns / "media")
        (ns / "media/planted.py").write_text("from reelfab.faces import types\n")
        return "reelfab.media.planted -> reelfab.faces.types (l.1)"
    if plant == "bus-imports-media":
        _copy_package(REPO / "libs/bus/src/reelfab/bus", ns / "bus")
        (ns / "bus/planted.py").write_text("import reelfab.media.probe\n")
        return "reelfab.bus.planted -> reelfab.media.probe (l.1)"
    if plant == "unplaced-library-package":
        (ns / "planted").mkdir(parents=True)
        (ns / "planted/__init__.py").write_text('"""A new library package nobody placed in the layers."""\n')
        return "- reelfab.planted"
    if plant == "cycle-inside-a-package":
        _copy_package(REPO / "libs/faces/src/reelfab/faces", ns / "faces")
        (ns / "faces/onnx/planted.py").write_text("from reelfab.faces.backends import get_engine\n")
        return "- .onnx -> .backends"
    raise AssertionError(plant)


@pytest.mark.parametrize(
    ("plant", "expected_broken"),
    [
        ("service-imports-service", {"services-independent", "libraries-never-import-services"}),
        ("library-imports-service", {"libraries-never-import-services"}),
        ("service-imports-devtools", {"devtools-is-a-leaf"}),
        ("media-imports-faces", {"library-layers", "library-modules-acyclic"}),
        ("bus-imports-media", {"library-layers"}),
        ("unplaced-library-package", {"library-layers"}),
        ("cycle-inside-a-package", {"library-modules-acyclic"}),
    ],
)
def test_import_contracts_break_on_a_planted_violation(plant: str, expected_broken: set[str], tmp_path: Path) -> None:
    line = _plant(tmp_path, plant)
    rc, output, broken = _lint_imports(pythonpath=tmp_path)
    assert rc != 0, output
    assert broken == expected_broken, output
    assert line in output, output


def test_import_contracts_cover_every_service() -> None:
    ini = _ini(IMPORTLINTER)
    services = _service_packages()
    assert len(services) >= 6, services
    roots = _lines(ini["importlinter"]["root_packages"])
    assert roots == ["reelfab", *[r for r in roots if r != "reelfab"]] and sorted(roots[1:]) == services
    assert sorted(_lines(ini["importlinter:contract:services-independent"]["modules"])) == services
    assert sorted(_lines(ini["importlinter:contract:libraries-never-import-services"]["protected_modules"])) == services


def test_no_service_function_takes_an_untyped_event() -> None:
    """A handler declared on ``Event[Any]`` lets ``event.record.misspelt`` through the type check: every
    function in a service that takes an event names the record it carries (``Event[SwapCompleted]``)."""
    import re

    untyped = re.compile(r"def \w+\([^)]*\bEvent\[Any\]")
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in sorted(REPO.glob("services/*/src/*/**/*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if untyped.search(line)]
    assert len(list(REPO.glob("services/*/src/*/handlers.py"))) == 6
    assert not offenders, f"type the event's record: {offenders}"
