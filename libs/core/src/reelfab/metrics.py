"""Prometheus metrics with the common names of docs/architecture.md ("Observability"). Every service
exports these from the default registry; labels say which service and topic."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "reelfab_events_consumed_total",
    "Events taken from a topic, by outcome (ok, duplicate, retried, dead_lettered).",
    ["service", "topic", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "reelfab_events_published_total",
    "Events written to a topic.",
    ["service", "topic"],
)
DLQ = Counter(
    "reelfab_dlq_total",
    "Messages sent to a dead-letter topic, by the error class that sent them there.",
    ["service", "topic", "reason"],
)
STAGE_SECONDS = Histogram(
    "reelfab_stage_seconds",
    "Time spent in a processing stage.",
    ["service", "stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
CONSENT_DENIALS = Counter(
    "reelfab_consent_denials_total",
    "Consent checks that denied, by reason.",
    ["service", "reason"],
)
OUTBOX_PENDING = Counter(
    "reelfab_outbox_relayed_total",
    "Outbox rows relayed to Kafka (recovered: found already on the topic after a crash).",
    ["service", "outcome"],
)
STORAGE_BYTES = Gauge(
    "reelfab_storage_bytes",
    "Bytes the object store holds, by kind (intermediate, input, final, consent, partial, other).",
    ["kind"],
)
STORAGE_OBJECTS = Gauge(
    "reelfab_storage_objects",
    "Objects the object store holds, by kind.",
    ["kind"],
)
RETENTION_DELETED_BYTES = Counter(
    "reelfab_retention_deleted_bytes_total",
    "Bytes removed from the object store by the retention policy, by kind.",
    ["kind"],
)
RETENTION_ROWS_DELETED = Counter(
    "reelfab_retention_rows_deleted_total",
    "Delivery rows removed past the redelivery horizon (published outbox rows, processed-event marks).",
    ["schema", "table"],
)
