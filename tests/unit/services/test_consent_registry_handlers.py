"""The consent registry's event handlers, broker-free: the in-memory bus, unit of work, repository and
object store (``reelfab_consent_registry.memory``). Each handler opens the unit of work for its event,
writes once, and a redelivery (the same event again) changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from reelfab.bus import Event
from reelfab.bus.memory import InMemoryBus
from reelfab.bus.outbox import Outbox
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import model_for
from reelfab.contracts.topics import AUDIT_CHECKPOINT, BY_NAME, JOB_FAILED, PUBLISH_COMPLETED, SUBJECT_FLAGGED
from reelfab.settings import Settings
from reelfab_consent_registry import audit, main
from reelfab_consent_registry.domain import SERVICE
from reelfab_consent_registry.memory import InMemoryRegistry, in_memory
from reelfab_consent_registry.repository import PostgresRepository
from tests.integration.consent_api_support import StandInEngine

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
RECORDS = {PUBLISH_COMPLETED: "PublishCompleted", JOB_FAILED: "JobFailed", SUBJECT_FLAGGED: "SubjectFlagged",
           AUDIT_CHECKPOINT: "AuditCheckpoint"}


@pytest.fixture
def reg() -> InMemoryRegistry:
    bus = InMemoryBus(Settings(), SERVICE, default_codec())
    return in_memory(bus, engine_factory=StandInEngine, clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def event(topic: str, **values: Any) -> Event[Any]:
    record = model_for(f"reelfab.events.{RECORDS[topic]}")(**values)
    return Event(record, topic, str(values[BY_NAME[topic].key_field]), 0, 0, 1)


def base(producer: str = "post-producer") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": NOW, "producer": producer,
            "job_id": f"job-{uuid.uuid4().hex[:8]}", "subject_id": "ada-01"}


def published(**values: Any) -> Event[Any]:
    return event(PUBLISH_COMPLETED, **{**base(), "consent_version": 1, "post_id": "post-1", "platform": "tiktok",
                                       "account": "studio", "published_at": NOW, "privacy_level": "SELF_ONLY",
                                       "dry_run": True, **values})


def failed(reason_code: str) -> Event[Any]:
    return event(JOB_FAILED, **{**base("swapper-gpu"), "stage": "swapper-gpu", "reason_code": reason_code,
                                "reason": "no", "retryable": False})


def flagged() -> Event[Any]:
    return event(SUBJECT_FLAGGED, event_id=str(uuid.uuid4()), occurred_at=NOW, producer="analytics",
                 subject_kind="FACE", subject_id="ada-01", action="DISABLED", reason="engagement collapsed")


def actions(reg: InMemoryRegistry) -> list[str]:
    return [row["action"] for row in reg.repository.state.audit_log]


def test_every_consumed_topic_has_a_handler(reg: InMemoryRegistry) -> None:
    assert set(reg.wired.handlers) == set(main.SPEC.consumes)
    assert set(main.SPEC.produces) == {"reelfab.consent.changed.v1", "reelfab.audit.checkpoint.v1", "reelfab.job.failed.v1"}


async def test_a_published_post_is_recorded_once_and_listed_for_takedown(reg: InMemoryRegistry) -> None:
    ev = published()
    await reg.wired.handlers[PUBLISH_COMPLETED](ev)
    await reg.wired.handlers[PUBLISH_COMPLETED](ev)  # redelivered
    assert list(reg.repository.state.posts) == [("tiktok", "post-1")]
    assert reg.uow.done == {ev.event_id: "publish.completed"} and reg.uow.commits == 1
    # a second event for the same post (another delivery path) changes nothing either
    await reg.wired.handlers[PUBLISH_COMPLETED](published())
    assert len(reg.repository.state.posts) == 1

    registry = reg.wired.registry
    await registry.create_subject("ada-01", "Ada", actor="test")
    assert [p["post_id"] for p in await reg.repository.bound(None).posts("ada-01")] == ["post-1"]


async def test_a_reported_consent_denial_joins_the_audit_chain_once(reg: InMemoryRegistry) -> None:
    before = REGISTRY.get_sample_value("reelfab_consent_denials_total",
                                       {"service": "swapper-gpu", "reason": "revoked"}) or 0
    ev = failed("consent.revoked")
    await reg.wired.handlers[JOB_FAILED](ev)
    await reg.wired.handlers[JOB_FAILED](ev)  # redelivered
    chain = reg.repository.state.audit_log
    assert [r["action"] for r in chain] == ["consent.denied.reported"]
    assert chain[0]["actor"] == "swapper-gpu" and chain[0]["subject_id"] == "ada-01"
    assert chain[0]["details"] == {"reason": "revoked", "stage": "swapper-gpu", "job_id": ev.record.job_id}
    after = REGISTRY.get_sample_value("reelfab_consent_denials_total", {"service": "swapper-gpu", "reason": "revoked"})
    assert after == before + 1


@pytest.mark.parametrize("reason_code", ["swap.no_face", "consent.not_a_reason", "timeout"])
async def test_a_failure_that_is_not_a_consent_decision_is_left_alone(reg: InMemoryRegistry, reason_code: str) -> None:
    await reg.wired.handlers[JOB_FAILED](failed(reason_code))
    assert actions(reg) == [] and reg.uow.commits == 0 and reg.uow.done == {}


async def test_a_flag_joins_the_audit_chain_once(reg: InMemoryRegistry) -> None:
    ev = flagged()
    for _ in range(3):
        await reg.wired.handlers[SUBJECT_FLAGGED](ev)
    [entry] = reg.repository.state.audit_log
    assert (entry["actor"], entry["action"], entry["subject_id"]) == ("analytics", "subject.flagged", "ada-01")
    assert entry["details"] == {"kind": "FACE", "action": "DISABLED", "reason": "engagement collapsed"}


async def test_a_handler_that_fails_leaves_its_event_to_be_redelivered(reg: InMemoryRegistry,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    registry = reg.wired.registry
    real = registry.record_post

    async def dies(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(registry, "record_post", dies)
    ev = published()
    with pytest.raises(RuntimeError):
        await reg.wired.handlers[PUBLISH_COMPLETED](ev)
    assert reg.uow.rollbacks == 1 and not await reg.uow.processed(ev.event_id)
    monkeypatch.setattr(registry, "record_post", real)
    await reg.wired.handlers[PUBLISH_COMPLETED](ev)  # the redelivery does the work
    assert len(reg.repository.state.posts) == 1 and await reg.uow.processed(ev.event_id)


def test_the_postgres_repository_writes_only_on_the_unit_of_works_connection() -> None:
    repo = PostgresRepository(None, "consent_registry", Outbox("consent_registry", InMemoryBus(  # type: ignore[arg-type]
        Settings(), SERVICE, default_codec())))
    with pytest.raises(TypeError, match="unit of work's connection"):
        repo.bound(None)


# -- checkpoints on the topic ------------------------------------------------------------------------


async def checkpoint_event(reg: InMemoryRegistry, count: int, *, log_id: str | None = None,
                           key: Ed25519PrivateKey | None = None, at: datetime = NOW) -> Event[Any]:
    async with reg.repository.connection() as store:
        private = key or await store.signing_key(reg.wired.registry.wrapper)
    cp = audit.sign_checkpoint(private, log_id=log_id or reg.repository.log_id, entry_count=count, head_seq=count,
                               head_hash=f"{count:064x}", issued_at=at)
    return event(AUDIT_CHECKPOINT, **cp.record(str(uuid.uuid4()), SERVICE).model_dump())


def replays(reg: InMemoryRegistry) -> float:
    return REGISTRY.get_sample_value("reelfab_audit_checkpoint_replays_total",
                                     {"log_id": reg.repository.log_id}) or 0.0


async def test_the_newest_genuine_checkpoint_is_remembered_and_a_replay_raises_the_alarm(reg: InMemoryRegistry) -> None:
    trail, handle = reg.wired.registry.trail, reg.wired.handlers[AUDIT_CHECKPOINT]
    await handle(await checkpoint_event(reg, 24))
    assert trail.last is not None and trail.last.entry_count == 24
    await handle(await checkpoint_event(reg, 28, at=NOW + timedelta(minutes=5)))
    newest = trail.last
    assert newest is not None and newest.entry_count == 28
    before = replays(reg)
    await handle(await checkpoint_event(reg, 24, at=NOW + timedelta(minutes=9)))  # an older one, published again
    assert replays(reg) == before + 1 and trail.last is newest
    await handle(await checkpoint_event(reg, 28, at=NOW + timedelta(minutes=5)))  # the same count: nothing new
    assert trail.last is newest and replays(reg) == before + 1
    assert reg.uow.commits == 0  # nothing is written for a checkpoint


async def test_a_forged_or_foreign_checkpoint_is_ignored(reg: InMemoryRegistry) -> None:
    trail, handle = reg.wired.registry.trail, reg.wired.handlers[AUDIT_CHECKPOINT]
    await handle(await checkpoint_event(reg, 5, key=Ed25519PrivateKey.generate()))  # not the registry's key
    await handle(await checkpoint_event(reg, 5, log_id="another_registry"))
    assert trail.last is None
