"""Consumer lag as Prometheus sees it: ``reelfab_consumer_lag_messages{service,group,topic}``, the
messages a consumer group has not settled yet on the partitions this process holds, as each running
Kafka bus last measured them (every REELFAB_CONSUMER_LAG_INTERVAL_S: the partitions' end offsets asked
of the broker, minus the next offset to settle). Summed over a group's partitions; every replica exports its own share, so
``sum by (group, topic)`` is the group's lag. A consent view's per-instance group
(``<service>.consent-view.<id>``) is labelled without its id, so restarts do not make new series.

KEDA scales on the lag it reads from Kafka itself; this gauge is for dashboards and alerts (a lag that
keeps growing, a consent view behind the consent topic)."""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

NAME = "reelfab_consumer_lag_messages"
HELP = "Messages a consumer group has not settled yet, per topic (this process's partitions)."
LABELS = ["service", "group", "topic"]
_INSTANCE_ID = re.compile(r"\.[0-9a-f]{8}$")


class LagSource(Protocol):
    service: str

    def lag(self) -> dict[tuple[str, str], int]: ...  # (group, topic) -> messages behind


def group_label(group: str) -> str:
    """A group id as a label: a per-instance suffix (``.1a2b3c4d``) dropped."""
    return _INSTANCE_ID.sub("", group)


class LagCollector:
    def __init__(self) -> None:
        self.sources: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, source: LagSource) -> None:
        self.sources.add(source)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, HELP, labels=LABELS)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=LABELS)
        totals: dict[tuple[str, str, str], int] = {}
        for source in list(self.sources):
            try:
                found = source.lag()
            except Exception:  # noqa: BLE001 - a bus stopping mid-scrape: its lag is simply not reported
                continue
            for (group, topic), behind in found.items():
                key = (source.service, group_label(group), topic)
                totals[key] = totals.get(key, 0) + behind
        for (service, group, topic), behind in sorted(totals.items()):
            family.add_metric([service, group, topic], float(behind))
        yield family


COLLECTOR = LagCollector()
REGISTRY.register(COLLECTOR)
