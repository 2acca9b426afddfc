"""The topic catalogue of DESIGN.md: every topic, the Avro record it carries, how it is keyed,
how many partitions it gets and whether it is compacted. One source of truth for the bus, the
topic creator, the AsyncAPI document and the tests."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_NAMESPACE = "reelfab.events"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    record: str  # Avro full name of the value schema
    key_field: str  # field of the record whose value is the Kafka key
    partitions: int
    compacted: bool = False
    description: str = ""

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX

    @property
    def short_record(self) -> str:
        return self.record.rsplit(".", 1)[-1]


def _t(name: str, record: str, key: str, partitions: int, compacted: bool = False, doc: str = "") -> Topic:
    return Topic(name, f"{SCHEMA_NAMESPACE}.{record}", key, partitions, compacted, doc)


TOPICS: tuple[Topic, ...] = (
    _t("reelfab.consent.changed.v1", "ConsentChanged", "face_id", 3, True,
       "Consent granted, amended, revoked or expired; carries the registry's signed lease."),
    _t("reelfab.trend.detected.v1", "TrendDetected", "trend_id", 3, False,
       "A trend detector asks for production: tags, urgency, deadline."),
    _t("reelfab.swap.requested.v1", "SwapRequested", "job_id", 6, False,
       "A planned swap job: face, template, model, priority, lineage."),
    _t("reelfab.swap.completed.v1", "SwapCompleted", "job_id", 6, False,
       "Swapped mezzanine and face track ready for post-production."),
    _t("reelfab.render.completed.v1", "RenderCompleted", "job_id", 6, False,
       "Platform-spec, labelled, signed video ready to publish."),
    _t("reelfab.publish.completed.v1", "PublishCompleted", "job_id", 3, False,
       "A post went out on a platform."),
    _t("reelfab.engagement.observed.v1", "EngagementObserved", "post_id", 3, False,
       "Engagement read back from a platform for one post."),
    _t("reelfab.policy.updated.v1", "PolicyUpdated", "arm_space", 1, True,
       "Per-arm posterior parameters for the planner."),
    _t("reelfab.subject.flagged.v1", "SubjectFlagged", "subject_id", 3, False,
       "A face or template disabled or proposed for elimination, with the reason."),
    _t("reelfab.job.failed.v1", "JobFailed", "job_id", 3, False,
       "A stage gave up on a job: stage, reason, retryable."),
    # keyed by event id, so compaction never lets a replayed older checkpoint erase a newer one
    _t("reelfab.audit.checkpoint.v1", "AuditCheckpoint", "event_id", 1, True,
       "The consent registry's signed audit checkpoints (entry count, head hash, time), every one kept."),
)

BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}
BY_RECORD: dict[str, Topic] = {t.record: t for t in TOPICS}


def topic(name: str) -> Topic:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None


def all_topic_names(with_dlq: bool = True) -> list[str]:
    names = [t.name for t in TOPICS]
    if with_dlq:
        names += [t.dlq for t in TOPICS]
    return names
