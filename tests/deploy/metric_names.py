"""The metric names the services can export, as Prometheus sees them, so dashboards and alerts can be
checked against the code instead of against a list kept by hand.

``registered_metric_names()`` imports every module of libs/ and services/ that uses prometheus_client
(found by scanning the sources, so a new metrics module is picked up without editing this file), reads
the default registry, and adds the GPU gauges of the swapper's ``NvmlCollector`` by collecting it once
against a fake NVML with one GPU (the real one only registers where a GPU answers). Names are the
exposed series names: a counter ``x`` is ``x_total`` (and ``x_created``), a histogram ``x`` is
``x_bucket``, ``x_sum``, ``x_count`` (and ``x_created``), a gauge is its name.

``registered_series()`` says more of each exposed series: the type of its family, whether it only grows (a
counter's ``_total``, a histogram's or a summary's ``_bucket``/``_sum``/``_count``: what rate() and
increase() are for) and its label names (``le`` on a ``_bucket``, ``quantile`` on a summary's quantiles).
Label names come from the metric objects (a labelled metric with no child yet exposes no sample to read
them from) and, for the collectors, from their ``describe()`` families (the consumer lag, the leaderboard)
or from one ``collect()`` (the GPU gauges against the fake NVML; the default process and GC collectors).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
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


# ---------------------------------------------------------------------------------------------------
# each series' type and labels


@dataclass(frozen=True)
class Series:
    """One exposed series name: its family's type, whether it only grows, its label names."""

    family: str
    type: str  # counter, gauge, histogram, summary, ... (the family's)
    monotonic: bool  # a counter: rate(), irate() and increase() apply
    labels: frozenset[str]


# the series each family type exposes: suffix -> (monotonic, extra label)
_SERIES: dict[str, dict[str, tuple[bool, str | None]]] = {
    "counter": {"_total": (True, None), "_created": (False, None)},
    "gauge": {"": (False, None)},
    "histogram": {"_bucket": (True, "le"), "_sum": (True, None), "_count": (True, None), "_created": (False, None)},
    "gaugehistogram": {"_bucket": (False, "le"), "_gsum": (False, None), "_gcount": (False, None)},
    "summary": {"": (False, "quantile"), "_sum": (True, None), "_count": (True, None), "_created": (False, None)},
    "info": {"_info": (False, None)},
    "stateset": {"": (False, None)},
    "unknown": {"": (False, None)},
}


def _series_of(name: str, kind: str, labels: Iterable[str]) -> dict[str, Series]:
    found: dict[str, Series] = {}
    for suffix, (monotonic, extra) in _SERIES.get(kind, {"": (False, None)}).items():
        names = frozenset(labels) | ({extra} if extra else set())
        found[name + suffix] = Series(name, kind, monotonic, names)
    return found


def _family_labels(family: Metric) -> set[str]:
    declared = getattr(family, "_labelnames", None)  # the *MetricFamily classes keep their label names
    names = set(declared or ())
    for sample in family.samples:
        names.update(k for k in sample.labels if k not in {"le", "quantile"})
    return names


def _collector_families(collector: Any) -> Iterator[tuple[str, str, set[str]]]:
    """(family name, type, label names) of one registered collector."""
    if isinstance(collector, MetricWrapperBase):  # Counter(...), Gauge(...), ...: labels even without children
        kind = collector._type
        labels = set(collector._labelnames)
        if kind == "enum":  # an Enum is a stateset whose state is a label named like the metric
            kind, labels = "stateset", labels | {collector._name}
        yield collector._name, kind, labels
        return
    describe = getattr(collector, "describe", None)
    families = list(describe()) if callable(describe) else []
    for family in families or collector.collect():
        yield family.name, family.type, _family_labels(family)


@cache
def _registered_series() -> dict[str, Series]:
    _registered()  # every metrics module imported
    found: dict[str, Series] = {}
    collectors = list(REGISTRY._collector_to_names)  # the registry keeps no public list of its collectors
    for collector in collectors:
        for name, kind, labels in _collector_families(collector):
            found.update(_series_of(name, kind, labels))
    for family in gpu_families():
        found.update(_series_of(family.name, family.type, _family_labels(family)))
    return found


def registered_series() -> dict[str, Series]:
    """Every series name the code can export, with its type and label names (see the module's docstring)."""
    return dict(_registered_series())
