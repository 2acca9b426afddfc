"""The model manifest: every ONNX model the onnx backend knows, where to get it, how to check it, what its
licence allows, and how FaceFusion feeds it (crop template, normalisation, source embedding). The data
lives in ``manifest.json`` beside this module; tests pass their own entries instead."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reelfab.faces.errors import ModelError

KINDS = ("detector", "landmarker", "embedder", "swapper", "converter", "enhancer")
MANIFEST_PATH = Path(__file__).with_name("manifest.json")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    file: str
    input_size: tuple[int, ...]
    licence: str
    commercial_use: bool
    urls: tuple[str, ...]
    hash_urls: tuple[str, ...] = ()
    crc32: str | None = None  # FaceFusion's check: 8 lowercase hex digits of zlib.crc32
    sha256: str | None = None
    size_bytes: int | None = None
    hash_source: str = ""
    vendor: str = ""
    licence_note: str = ""
    inputs: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict)
    outputs: tuple[tuple[int | str, ...], ...] = ()
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    source_embedding: Mapping[str, Any] = field(default_factory=dict)  # swappers: what "source" wants
    requires: tuple[str, ...] = ()  # other models this one cannot run without
    notes: str = ""

    @property
    def stem(self) -> str:
        return self.file.removesuffix(".onnx")

    @property
    def template(self) -> str:
        return str(self.preprocess.get("template", ""))

    @property
    def mean(self) -> tuple[float, float, float]:
        r, g, b = self.preprocess.get("mean", (0.0, 0.0, 0.0))
        return float(r), float(g), float(b)

    @property
    def std(self) -> tuple[float, float, float]:
        r, g, b = self.preprocess.get("std", (1.0, 1.0, 1.0))
        return float(r), float(g), float(b)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ModelError(f"manifest entry {data.get('name')!r}: unknown fields {sorted(extra)}")
        values = dict(data)
        values["input_size"] = tuple(values["input_size"])
        values["urls"] = tuple(values.get("urls", ()))
        values["hash_urls"] = tuple(values.get("hash_urls", ()))
        values["inputs"] = {k: tuple(v) for k, v in values.get("inputs", {}).items()}
        values["outputs"] = tuple(tuple(v) for v in values.get("outputs", ()))
        values["requires"] = tuple(values.get("requires", ()))
        spec = cls(**values)
        if spec.kind not in KINDS:
            raise ModelError(
                f"manifest entry {spec.name!r}: kind {spec.kind!r} is not one of {', '.join(KINDS)}"
            )
        return spec


class Manifest:
    """The models by name; ``get`` names the known ones when asked for another."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs = {s.name: s for s in specs}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelError(
                f"unknown model {name!r}: the manifest knows {', '.join(sorted(self._specs))}"
            ) from None

    def closure(self, names: Iterable[str]) -> list[ModelSpec]:
        """The named models and everything they require, each once, requirements first."""
        out: dict[str, ModelSpec] = {}

        def visit(name: str) -> None:
            spec = self.get(name)
            for dep in spec.requires:
                visit(dep)
            out.setdefault(name, spec)

        for name in names:
            visit(name)
        return list(out.values())


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc}") from exc
    return Manifest(ModelSpec.from_dict(entry) for entry in doc["models"])


@cache
def default_manifest() -> Manifest:
    return load_manifest()
