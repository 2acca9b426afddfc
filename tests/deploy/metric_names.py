"""The metric names the services can export, as Prometheus sees them, so dashboards and alerts can be
checked against the code instead of against a list kept by hand.

``registered_metric_names()`` imports every module of libs/ and services/ that uses prometheus_client
(found by scanning the sources, so a new metrics module is picked up without editing this file), reads
the default registry, and adds the GPU gauges of the swapper's ``NvmlCollector`` by collecting it once
against a fake NVML with one GPU (the real one only registers where a GPU answers). Names are the
exposed series names: a counter ``x`` is ``x_total`` (and ``x_created``), a histogram ``x`` is
``x_bucket``, ``x_sum``, ``x_count`` (and ``x_created``), a gauge is its name.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "libs", REPO / "services")

_USES_PROMETHEUS = re.compile(r"^\s*(from|import)\s+prometheus_client\b", re.MULTILINE)
# a metric constructor with a literal name: Counter("reelfab_x", ...), GaugeMetricFamily("reelfab_x", ...)
METRIC_LITERAL = re.compile(
    r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum|\w*MetricFamily)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")

# the series each metric type exposes, by suffix (the text exposition format of prometheus_client)
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def source_files() -> list[Path]:
    """Every non-test Python file under libs/*/src and services/*/src."""
    return sorted(p for root in SOURCE_ROOTS for p in root.glob("*/src/**/*.py") if "tests" not in p.parts)


def module_name(path: Path) -> str:
    """``libs/core/src/reelfab/metrics.py`` -> ``reelfab.metrics`` (a package's __init__ -> the package)."""
    src = next(parent for parent in path.parents if parent.name == "src")
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def metrics_modules() -> list[str]:
    """The modules that import prometheus_client: every place a metric can be defined."""
    return [module_name(p) for p in source_files() if _USES_PROMETHEUS.search(p.read_text(encoding="utf-8"))]


def metric_literals() -> dict[str, Path]:
    """Metric names written literally in a constructor anywhere in the sources, with a file naming each."""
    found: dict[str, Path] = {}
    for path in source_files():
        for name in METRIC_LITERAL.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, path)
    return found


def exposed_names(families: Iterable[Metric]) -> set[str]:
    """The series names a scrape would show for these metric families."""
    names: set[str] = set()
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


class _FakeNvml:
    """Just enough of pynvml for NvmlCollector.collect(): one GPU."""

    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=42, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=2 * 1024**3, total=16 * 1024**3, free=14 * 1024**3)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 60


def gpu_families() -> Iterator[Metric]:
    from reelfab_swapper_gpu.metrics import NvmlCollector

    yield from NvmlCollector(_FakeNvml()).collect()


@cache
def _registered() -> frozenset[str]:
    for module in metrics_modules():
        importlib.import_module(module)
    return frozenset(exposed_names(REGISTRY.collect()) | exposed_names(gpu_families()))


def registered_metric_names() -> set[str]:
    """Every series name the code can export (see the module's docstring)."""
    return set(_registered())
