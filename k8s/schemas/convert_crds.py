"""Turn CustomResourceDefinitions into strict JSON schemas for kubeconform, and make the Kubernetes
schemas shipped in the kubernetes_validate package usable offline by kubeconform.

CRDs (KEDA, Prometheus Operator; see SOURCES.md): every served version's ``openAPIV3Schema`` becomes
``k8s/schemas/<group>/<kind lowercased>_<version>.json``, the layout of the kubeconform template
``k8s/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json``. The conversion:

- objects that list ``properties`` get ``additionalProperties: false`` (strict: an unknown or
  misspelt field is an error), unless they say ``x-kubernetes-preserve-unknown-fields: true`` or
  already say something about ``additionalProperties``;
- ``x-kubernetes-int-or-string: true`` becomes ``anyOf: [integer, string]`` (the CRD's own ``anyOf`` is
  kept when it has one) and its ``type`` is dropped;
- ``nullable: true`` adds ``"null"`` to the ``type``;
- nothing else changes (descriptions, formats, enums and the other ``x-kubernetes-*`` annotations stay;
  kubeconform ignores keywords it does not know).

Kubernetes' own kinds (``--k8s-builtins DEST``): the package's ``v<version>-local-strict`` schemas
``$ref`` ``/api/_definitions.json``, which, against their ``$id`` ``https://kubernetes.io/api/...``,
resolves to a URL on kubernetes.io: kubeconform (v0.7.0) would fetch it over the network, and offline
it fails to compile the schema and reports "could not find schema". The copy written to DEST has
those references rewritten to the sibling file (``_definitions.json#/$defs/...``) and the ``$id``
removed, so they resolve on disk; use it with
``-schema-location 'DEST/{{ .ResourceKind }}{{ .KindSuffix }}.json'``.

    python k8s/schemas/convert_crds.py                  # rewrite the CRD schemas from the mirrors
    python k8s/schemas/convert_crds.py --check          # fail when a committed schema differs
    python k8s/schemas/convert_crds.py --k8s-builtins /tmp/k8s-schemas
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
MIRRORS = Path("/work/.mirror")
K8S_VERSION = "v1.33.0"

# (repository, commit, path inside it): the CRDs converted here
SOURCES: list[tuple[str, str, str]] = [
    ("kedacore/keda", "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a", "config/crd/bases/keda.sh_scaledobjects.yaml"),
    ("kedacore/keda", "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a",
     "config/crd/bases/keda.sh_triggerauthentications.yaml"),
    ("prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7",
     "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"),
    ("prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7",
     "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"),
    ("prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7",
     "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"),
]

SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def strict_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 schema node (and everything under it) as a strict JSON schema."""
    out = dict(node)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: strict_schema(sub) for name, sub in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = strict_schema(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    for key in SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [strict_schema(sub) for sub in out[key]]
    if isinstance(out.get("not"), dict):
        out["not"] = strict_schema(out["not"])
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.pop("nullable", False) and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"<group>/<kind>_<version>.json": schema}`` for every served version of one CRD."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: {crd.get('kind')!r}")
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    found: dict[str, dict[str, Any]] = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", False):
            continue
        schema = strict_schema(version["schema"]["openAPIV3Schema"])
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version["name"]}]
        found[f"{group}/{kind.lower()}_{version['name']}.json"] = schema
    return found


def read_source(repo: str, commit: str, path: str, mirrors: Path) -> str:
    """A file of a mirrored repository (a git directory without work tree) at ``commit``."""
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    return subprocess.run(
        ["git", "-C", str(git_dir), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, ensure_ascii=False) + "\n"


def convert_all(mirrors: Path) -> dict[str, str]:
    rendered: dict[str, str] = {}
    for repo, commit, path in SOURCES:
        for doc in yaml.safe_load_all(read_source(repo, commit, path, mirrors)):
            if doc:
                rendered.update({name: render(schema) for name, schema in crd_schemas(doc).items()})
    return rendered


def localize_k8s_schemas(source: Path, dest: Path) -> Path:
    """Copy kubernetes_validate's schemas for one Kubernetes version to ``dest``, references made local."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in source.glob("*.json"):
        text = file.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        schema.pop("$id", None)
        (dest / file.name).write_text(json.dumps(schema))
    if not (dest / "_definitions.json").is_file():
        raise FileNotFoundError(f"no _definitions.json under {source}")
    return dest


def k8s_builtin_source(version: str = K8S_VERSION) -> Path:
    """The kubernetes_validate package's strict schemas for ``version``."""
    import kubernetes_validate

    found = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"{version}-local-strict"
    if not found.is_dir():
        raise FileNotFoundError(f"kubernetes_validate has no schemas for {version} ({found})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirrors", type=Path, default=MIRRORS, help="Folder of <owner>+<name>/repo git dirs.")
    parser.add_argument("--out", type=Path, default=HERE, help="Where the CRD schemas go.")
    parser.add_argument("--check", action="store_true", help="Only compare with what --out holds.")
    parser.add_argument("--k8s-builtins", type=Path, metavar="DEST",
                        help="Instead: write kubeconform-ready Kubernetes schemas to DEST.")
    args = parser.parse_args(argv)
    if args.k8s_builtins:
        print(localize_k8s_schemas(k8s_builtin_source(), args.k8s_builtins))
        return 0
    rendered = convert_all(args.mirrors)
    stale = [n for n, text in rendered.items() if not (args.out / n).is_file() or (args.out / n).read_text() != text]
    if args.check:
        for name in stale:
            print(f"out of date: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in rendered.items():
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
