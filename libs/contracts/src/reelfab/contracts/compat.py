"""Backward-compatibility check of the Avro contracts (docs/architecture.md: "schemas evolve
backward-compatibly; CI checks every schema against its previous version").

Backward compatible: a consumer holding the *new* schema can read every message written with an
*old* one. Checked twice: by Avro's resolution rules (field added without a default, type changed to
one that is not a promotion, enum symbol removed without a default, named type renamed without an
alias, ...) and empirically, by writing generated records with the old schema and reading them with
the new one.

    python -m reelfab.contracts.compat [--repo PATH] [--require-git]

checks every ``schemas/*.avsc`` against each of its committed versions in git and against
``schemas/history/<Name>.<n>.avsc``, plus the house rules (every topic's record has a schema, the
key field is a top-level string, the common header, a doc on every record and field, enum defaults).
Exit status 1 when there are problems, each printed on its own line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from reelfab.contracts.topics import TOPICS, Topic

SAMPLES = 50
SEED = 20240611

# writer type -> reader types that can read it (Avro specification, "Schema Resolution")
_PROMOTIONS: dict[str, set[str]] = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_NAMED = ("record", "error", "enum", "fixed")
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
# the header every event starts with: (name, type, must have default null)
HEADER_FIELDS: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("occurred_at", _TIMESTAMP),
    ("producer", "string"),
    ("trace_id", ["null", "string"]),
)


# -- schema against schema ------------------------------------------------------------------


def check_backward(
    old: dict[str, Any], new: dict[str, Any], *, samples: int = SAMPLES, seed: int = SEED
) -> list[str]:
    """Problems that stop a reader with ``new`` from reading data written with ``old``; empty when
    ``new`` is backward compatible with ``old``."""
    old_named: dict[str, Any] = {}
    new_named: dict[str, Any] = {}
    try:
        old_parsed = parse_schema(old, old_named)
    except Exception as exc:
        return [f"the old schema does not parse: {exc}"]
    try:
        new_parsed = parse_schema(new, new_named)
    except Exception as exc:
        return [f"the new schema does not parse: {exc}"]
    problems: list[str] = []
    _Resolver(old_named, new_named, problems).resolve(old_parsed, new_parsed, "")
    problems += _empirical(old, old_parsed, new_parsed, samples, seed)
    return problems


class _Resolver:
    """Walks writer (old) and reader (new) schemas side by side, per Avro's resolution rules."""

    def __init__(
        self, writer_named: dict[str, Any], reader_named: dict[str, Any], problems: list[str]
    ) -> None:
        self.wn = writer_named
        self.rn = reader_named
        self.problems = problems
        self.seen: set[tuple[str, str]] = set()

    def resolve(self, w: Any, r: Any, path: str) -> None:
        w = self.wn.get(w, w) if isinstance(w, str) else w
        r = self.rn.get(r, r) if isinstance(r, str) else r
        where = path or "record"
        if isinstance(w, list):
            for branch in w:  # every branch the writer may have chosen must be readable
                if isinstance(r, list):
                    if not any(self._fits(branch, rb, path) for rb in r):
                        self.problems.append(
                            f"{where}: writer's union branch {_desc(branch)} matches nothing in the reader's {_desc(r)}"
                        )
                elif not self._fits(branch, r, path):
                    self.problems.append(
                        f"{where}: writer's union branch {_desc(branch)} cannot be read as {_desc(r)}"
                    )
            return
        if isinstance(r, list):
            if not any(self._fits(w, rb, path) for rb in r):
                self.problems.append(
                    f"{where}: {_desc(w)} cannot be read as {_desc(r)} (no union branch matches)"
                )
            return
        wt, rt = _type(w), _type(r)
        if wt != rt:
            if rt in _PROMOTIONS.get(wt, ()):
                return
            self.problems.append(
                f"{where}: type changed from {_desc(w)} to {_desc(r)}, which Avro cannot promote"
            )
            return
        if wt in _NAMED and not self._same_name(w, r, where):
            return
        if wt in ("record", "error"):
            key = (w["name"], r["name"])
            if key in self.seen:
                return
            self.seen.add(key)
            self._record(w, r, path)
        elif wt == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self.problems.append(
                    f"{where}: enum {_short(r['name'])} lost symbol(s) {', '.join(missing)} and has no default to read them as"
                )
        elif wt == "fixed" and w["size"] != r["size"]:
            self.problems.append(
                f"{where}: fixed {_short(r['name'])} size changed from {w['size']} to {r['size']}"
            )
        elif wt == "array":
            self.resolve(w["items"], r["items"], f"{path}[]")
        elif wt == "map":
            self.resolve(w["values"], r["values"], f"{path}{{}}")

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> None:
        w_fields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            sub = f"{path}.{rf['name']}" if path else rf["name"]
            wf = w_fields.get(rf["name"]) or next(
                (w_fields[a] for a in rf.get("aliases", ()) if a in w_fields), None
            )
            if wf is not None:
                self.resolve(wf["type"], rf["type"], sub)
            elif "default" not in rf:
                self.problems.append(
                    f"field '{sub}' was added without a default: data written with the old schema has no value for it"
                )

    def _same_name(self, w: dict[str, Any], r: dict[str, Any], where: str) -> bool:
        # Avro (and fastavro) match named types by unqualified name or by one of the reader's aliases
        aliases = set(r.get("aliases", ()))
        if _short(w["name"]) == _short(r["name"]) or w["name"] in aliases or _short(w["name"]) in aliases:
            return True
        self.problems.append(
            f"{where}: {_type(r)} renamed from {w['name']} to {r['name']} without an alias for the old name"
        )
        return False

    def _fits(self, w: Any, r: Any, path: str) -> bool:
        probe = _Resolver(self.wn, self.rn, [])
        probe.seen = set(self.seen)
        probe.resolve(w, r, path)
        return not probe.problems


def _type(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return kind if isinstance(kind, str) else _type(kind)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _desc(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_desc(s) for s in schema) + "]"
    if isinstance(schema, str):
        return _short(schema)
    kind = _type(schema)
    if kind in _NAMED:
        return f"{kind} {_short(schema['name'])}"
    if kind == "array":
        return f"array of {_desc(schema['items'])}"
    if kind == "map":
        return f"map of {_desc(schema['values'])}"
    return kind


def _empirical(old: dict[str, Any], old_parsed: Any, new_parsed: Any, samples: int, seed: int) -> list[str]:
    """Write generated records with the old schema, read them with the new one."""
    if samples <= 0:
        return []
    state = random.getstate()  # fastavro's generator uses the global random module
    random.seed(seed)
    try:
        records = list(generate_many(old, samples))
    except Exception as exc:
        return [
            f"empirical check: cannot generate sample records from the old schema: {type(exc).__name__}: {exc}"
        ]
    finally:
        random.setstate(state)
    for i, record in enumerate(records):
        buf = BytesIO()
        try:
            schemaless_writer(buf, old_parsed, record)
        except Exception as exc:
            return [f"empirical check: sample {i} cannot be written with the old schema: {_clip(exc)}"]
        buf.seek(0)
        try:
            schemaless_reader(buf, old_parsed, new_parsed)
        except Exception as exc:
            return [
                f"empirical check: sample {i} written with the old schema cannot be read with the new one: {_clip(exc)}"
            ]
    return []


def _clip(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- house rules --------------------------------------------------------------------------


def check_conventions(schema: dict[str, Any], source: str) -> list[str]:
    """Reelfab's rules for an event schema: the common header, a doc on every record and field,
    a default on every enum (so symbols can be added)."""
    problems: list[str] = []
    fields = schema.get("fields", [])
    for i, (name, type_) in enumerate(HEADER_FIELDS):
        f = fields[i] if i < len(fields) else None
        if f is None or f.get("name") != name:
            problems.append(
                f"{source}: field {i + 1} must be the header field '{name}' (event_id, occurred_at, producer, trace_id)"
            )
        elif f.get("type") != type_:
            problems.append(f"{source}: header field '{name}' must have type {json.dumps(type_)}")
        elif isinstance(type_, list) and f.get("default", "missing") is not None:
            problems.append(f"{source}: header field '{name}' must default to null")
    _docs(schema, source, problems)
    return problems


def _docs(schema: Any, where: str, problems: list[str]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _docs(s, where, problems)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if isinstance(kind, dict | list):
        _docs(kind, where, problems)
        return
    if kind in _NAMED:
        if not _has_doc(schema):
            problems.append(f"{where}: {kind} {schema.get('name')} has no doc")
        if kind == "enum" and "default" not in schema:
            problems.append(
                f"{where}: enum {schema.get('name')} has no default symbol (needed to add symbols later)"
            )
    if kind in ("record", "error"):
        for f in schema.get("fields", []):
            if not _has_doc(f):
                problems.append(f"{where}: field '{schema.get('name')}.{f.get('name')}' has no doc")
            _docs(f.get("type"), where, problems)
    elif kind == "array":
        _docs(schema.get("items"), where, problems)
    elif kind == "map":
        _docs(schema.get("values"), where, problems)


def _has_doc(d: dict[str, Any]) -> bool:
    return isinstance(d.get("doc"), str) and bool(d["doc"].strip())


def check_topics(schemas: dict[str, dict[str, Any]], topics: Iterable[Topic]) -> list[str]:
    """Every topic's record has a schema file (``<RecordName>.avsc``), and its key field is a
    top-level string field."""
    problems: list[str] = []
    for t in topics:
        file = f"schemas/{t.short_record}.avsc"
        schema = schemas.get(t.short_record)
        if schema is None:
            problems.append(f"{file}: missing, but topic {t.name} carries {t.record}")
            continue
        name = schema.get("name", "")
        ns = schema.get("namespace")
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full != t.record:
            problems.append(f"{file}: holds {full}, but topic {t.name} carries {t.record}")
        key = next((f for f in schema.get("fields", []) if f.get("name") == t.key_field), None)
        if key is None:
            problems.append(f"{file}: no top-level field '{t.key_field}', the key of topic {t.name}")
        elif key.get("type") != "string":
            problems.append(
                f"{file}: key field '{t.key_field}' of topic {t.name} must be a string, not {json.dumps(key.get('type'))}"
            )
    return problems


# -- the repository -----------------------------------------------------------------------


class _GitUnavailable(Exception):
    pass


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise _GitUnavailable("git is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise _GitUnavailable(f"git {' '.join(args)} timed out") from exc


def _git_problem(repo: Path) -> str | None:
    """Why git history cannot be used for ``repo``, or None when it can."""
    try:
        proc = _git(repo, "rev-parse", "--is-inside-work-tree")
    except _GitUnavailable as exc:
        return f"{exc}: previous versions of the schemas were not checked"
    if proc.returncode != 0 or proc.stdout.strip() != "true":
        return f"{repo} is not a git repository ({proc.stderr.strip() or proc.stdout.strip()}): previous versions of the schemas were not checked"
    return None


def _committed_versions(repo: Path, rel: str) -> list[tuple[str, str]]:
    """(commit, text) of every committed version of ``rel``, newest first."""
    log = _git(repo, "log", "--format=%H", "--", rel)
    if log.returncode != 0:
        return []
    versions = []
    for sha in log.stdout.split():
        show = _git(repo, "show", f"{sha}:./{rel}")
        if show.returncode == 0:  # not in a commit that deleted or renamed it
            versions.append((sha, show.stdout))
    return versions


_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.(?P<version>\d+)\.avsc$")


def check_repository(
    repo_path: str | Path,
    *,
    require_git: bool = False,
    topics: Iterable[Topic] = TOPICS,
    notes: list[str] | None = None,
) -> list[str]:
    """Every problem with the schemas of the repository at ``repo_path``: house rules, topics
    without schemas, and backward incompatibility with previous versions (git history and
    schemas/history/). Things that could not be checked go to ``notes`` (or, with
    ``require_git``, a missing git history is a problem)."""
    repo = Path(repo_path)
    notes = notes if notes is not None else []
    schema_dir = repo / "schemas"
    problems: list[str] = []
    if not schema_dir.is_dir():
        return [f"{schema_dir}: no schemas folder"]

    current: dict[str, dict[str, Any]] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        rel = f"schemas/{path.name}"
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            parse_schema(schema)
        except Exception as exc:
            problems.append(f"{rel}: not a valid Avro schema: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(schema, dict) or schema.get("type") != "record":
            problems.append(f"{rel}: must hold one record schema")
            continue
        if schema.get("name") != path.stem:
            problems.append(
                f"{rel}: holds record {schema.get('name')}; the file must be named after its record"
            )
        problems += check_conventions(schema, rel)
        current[path.stem] = schema

    problems += check_topics(current, topics)

    # schemas/history/<Name>.<n>.avsc
    history_dir = schema_dir / "history"
    if history_dir.is_dir():
        for path in sorted(history_dir.glob("*.avsc")):
            rel = f"schemas/history/{path.name}"
            m = _HISTORY_FILE.match(path.name)
            if not m:
                problems.append(f"{rel}: history files are named <RecordName>.<n>.avsc")
                continue
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                problems.append(f"{rel}: not valid JSON: {exc}")
                continue
            new = current.get(m["name"])
            if new is None:
                problems.append(f"{rel}: no current schemas/{m['name']}.avsc to compare with")
                continue
            problems += [
                f"schemas/{m['name']}.avsc cannot read data written with {rel}: {p}"
                for p in check_backward(old, new)
            ]

    # every committed version in git
    why_not = _git_problem(repo)
    if why_not is not None:
        (problems if require_git else notes).append(why_not)
        return problems
    for stem, new in current.items():
        rel = f"schemas/{stem}.avsc"
        seen = {_normal(new)}
        for sha, text in _committed_versions(repo, rel):
            try:
                old = json.loads(text)
            except ValueError:
                notes.append(f"{rel} at commit {sha[:10]} is not valid JSON; skipped")
                continue
            if _normal(old) in seen:
                continue
            seen.add(_normal(old))
            problems += [
                f"{rel} cannot read data written with its version at commit {sha[:10]}: {p}"
                for p in check_backward(old, new)
            ]
    return problems


def _normal(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reelfab.contracts.compat", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repo", default=".", help="repository root (default: the current directory)")
    parser.add_argument("--require-git", action="store_true", help="fail when git history cannot be read")
    args = parser.parse_args(argv)
    notes: list[str] = []
    problems = check_repository(args.repo, require_git=args.require_git, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} schema problem(s)", file=sys.stderr)
        return 1
    count = len(list((Path(args.repo) / "schemas").glob("*.avsc")))
    print(f"schemas OK: {count} checked for backward compatibility and house rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
