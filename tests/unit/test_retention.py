"""The retention policy with plain values, the store's listing/deletion helpers on a temp folder,
and the job-state scan over the in-memory bus."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reelfab.errors import ObjectRefused
from reelfab.retention import (
    JobState,
    RetentionPolicy,
    RetentionSettings,
    StoreObject,
    TerminalEvent,
    classify,
    fold_terminal_events,
    measure,
    plan_retention,
)
from reelfab.retention.adapters import apply_plan, scan_job_states, store_usage
from reelfab.retention.policy import Deletion
from reelfab.storage import FileStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
POLICY = RetentionPolicy(
    intermediate_grace=6 * H, orphan_age=7 * D, input_max_age=10 * D, final_max_age=30 * D, partial_max_age=D
)


def obj(key: str, age: timedelta, size: int = 100) -> StoreObject:
    return StoreObject(key, size, NOW - age)


def doomed(objects: list[StoreObject], jobs: dict[str, JobState], policy: RetentionPolicy = POLICY) -> dict[str, str]:
    return {d.key: d.reason for d in plan_retention(objects, jobs, NOW, policy).deletions}


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind", "job"),
    [
        ("jobs/job-1/mezzanine.mkv", "intermediate", "job-1"),
        ("jobs/job-1/rendered.mp4", "intermediate", "job-1"),  # fused mode's unsigned render
        ("jobs/job-1/track.json", "intermediate", "job-1"),
        ("jobs/job-1/final.mp4", "final", "job-1"),
        ("inputs/job-1/source.png", "input", "job-1"),
        ("inputs/job-1/deeper/t.mp4", "input", "job-1"),
        ("consent/subj-1/abc.sealed", "consent", None),
        ("consent/subj-1/.part-xyz", "consent", None),  # the registry's, even half-written
        ("jobs/job-1/.part-k2j3", "partial", None),
        ("jobs/job-1/notes.txt", "other", None),
        ("jobs/job-1/x/mezzanine.mkv", "other", None),
        ("jobs/job-1", "other", None),
        ("jobs/.hidden/final.mp4", "other", None),  # not a valid job id
        ("models/x.onnx", "other", None),
        ("final.mp4", "other", None),
    ],
)
def test_classify_by_key(key: str, kind: str, job: str | None) -> None:
    c = classify(key)
    assert (c.kind, c.job_id) == (kind, job)


# -- the policy ------------------------------------------------------------------------------------


def test_finished_jobs_lose_intermediates_and_inputs_after_the_grace_period_only() -> None:
    jobs = fold_terminal_events([
        TerminalEvent("old", "published", NOW - 7 * H),
        TerminalEvent("fresh", "published", NOW - 5 * H),
        TerminalEvent("failed", "failed", NOW - 10 * H),
    ])
    objects = [
        obj("jobs/old/mezzanine.mkv", 8 * H), obj("jobs/old/track.json", 8 * H), obj("inputs/old/source.png", 9 * H),
        obj("jobs/old/final.mp4", 7 * H),
        obj("jobs/fresh/mezzanine.mkv", 6 * H), obj("inputs/fresh/t.mp4", 6 * H),
        obj("jobs/failed/track.json", 11 * H), obj("inputs/failed/bed.m4a", 11 * H),
    ]
    gone = doomed(objects, jobs)
    assert set(gone) == {
        "jobs/old/mezzanine.mkv", "jobs/old/track.json", "inputs/old/source.png",
        "jobs/failed/track.json", "inputs/failed/bed.m4a",
    }
    assert "published 7.0h ago" in gone["jobs/old/mezzanine.mkv"]
    assert "failed" in gone["jobs/failed/track.json"]


def test_the_grace_period_counts_from_the_later_of_the_end_and_the_objects_own_write() -> None:
    jobs = {"j": JobState("j", failed_at=NOW - 10 * H)}
    # rewritten 2 h ago (a redelivered swap after the failure): it stays for now
    assert doomed([obj("jobs/j/mezzanine.mkv", 2 * H)], jobs) == {}
    assert set(doomed([obj("jobs/j/mezzanine.mkv", 7 * H)], jobs)) == {"jobs/j/mezzanine.mkv"}


def test_rendered_counts_as_finished_only_while_the_setting_says_so() -> None:
    jobs = {"r": JobState("r", rendered_at=NOW - 8 * H)}
    objects = [obj("jobs/r/mezzanine.mkv", 9 * H)]
    assert set(doomed(objects, jobs)) == {"jobs/r/mezzanine.mkv"}
    strict = RetentionPolicy(**{**POLICY.__dict__, "rendered_is_finished": False})
    assert doomed(objects, jobs, strict) == {}  # waits for publish.completed (or the orphan age)
    assert RetentionSettings().rendered_is_finished is True  # until the publisher lands


def test_the_latest_end_counts_when_a_job_has_several() -> None:
    state = fold_terminal_events([
        TerminalEvent("j", "rendered", NOW - 20 * H),
        TerminalEvent("j", "published", NOW - 2 * H),
        TerminalEvent("j", "rendered", NOW - 30 * H),  # an older duplicate changes nothing
    ])["j"]
    assert state.rendered_at == NOW - 20 * H
    assert state.finished(True) == (NOW - 2 * H, "published")
    assert doomed([obj("jobs/j/track.json", 21 * H)], {"j": state}) == {}


def test_jobs_without_an_end_keep_intermediates_until_the_orphan_age_and_inputs_until_their_max_age() -> None:
    objects = [
        obj("jobs/running/mezzanine.mkv", 6 * D), obj("inputs/running/source.png", 6 * D),
        obj("jobs/lost/mezzanine.mkv", 8 * D), obj("jobs/lost/track.json", 7 * D),
        obj("inputs/lost/source.png", 8 * D), obj("inputs/ancient/source.png", 11 * D),
    ]
    gone = doomed(objects, {})
    assert set(gone) == {"jobs/lost/mezzanine.mkv", "jobs/lost/track.json", "inputs/ancient/source.png"}
    assert "orphan age" in gone["jobs/lost/mezzanine.mkv"]
    assert "input" in gone["inputs/ancient/source.png"]


def test_finals_go_by_age_whatever_the_job_did() -> None:
    jobs = {"a": JobState("a", published_at=NOW - 40 * D)}
    objects = [obj("jobs/a/final.mp4", 31 * D), obj("jobs/b/final.mp4", 30 * D), obj("jobs/c/final.mp4", 29 * D),
               obj("jobs/d/final.mp4", 29 * D)]
    jobs["d"] = JobState("d", failed_at=NOW - 28 * D)
    assert set(doomed(objects, jobs)) == {"jobs/a/final.mp4", "jobs/b/final.mp4"}


def test_consent_and_unknown_objects_are_never_deleted_however_old() -> None:
    ancient = 10_000 * D
    objects = [obj("consent/s/abc.sealed", ancient), obj("consent/s/.part-1", ancient),
               obj("models/m.onnx", ancient), obj("jobs/j/notes.txt", ancient)]
    jobs = {"j": JobState("j", published_at=NOW - ancient)}
    zero = RetentionPolicy(timedelta(0), timedelta(0), timedelta(0), timedelta(0), timedelta(0))
    assert doomed(objects, jobs) == {} and doomed(objects, jobs, zero) == {}


def test_partial_writes_go_after_their_max_age() -> None:
    assert set(doomed([obj("jobs/j/.part-a", 25 * H), obj("inputs/j/.part-b", 23 * H)], {})) == {"jobs/j/.part-a"}


def test_usage_and_plan_totals_by_kind() -> None:
    objects = [obj("jobs/j/mezzanine.mkv", 8 * H, 1000), obj("jobs/j/final.mp4", 8 * H, 300),
               obj("consent/s/a.sealed", D, 7), obj("jobs/k/track.json", H, 5)]
    usage = measure(objects)
    assert usage.by_kind["intermediate"].bytes == 1005 and usage.by_kind["intermediate"].objects == 2
    assert usage.total.bytes == 1312 and usage.total.objects == 4
    plan = plan_retention(objects, {"j": JobState("j", failed_at=NOW - 7 * H)}, NOW, POLICY)
    assert plan.freed.by_kind["intermediate"].bytes == 1000
    assert plan.remaining.by_kind["intermediate"].bytes == 5 and plan.remaining.total.bytes == 312
    assert plan.usage.as_dict()["total"] == {"objects": 4, "bytes": 1312}


def test_policy_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(intermediate_grace=-H)
    with pytest.raises(ValueError):
        RetentionPolicy(intermediate_grace=2 * D, orphan_age=D)


def test_settings_read_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFAB_RETENTION_INTERMEDIATE_GRACE", "PT2H")
    monkeypatch.setenv("REELFAB_RETENTION_FINAL_MAX_AGE", "86400")
    monkeypatch.setenv("REELFAB_RETENTION_RENDERED_IS_FINISHED", "false")
    s = RetentionSettings()
    assert s.intermediate_grace == 2 * H and s.final_max_age == D and s.redelivery_horizon == 7 * D
    assert s.policy().rendered_is_finished is False


# -- the store adapter -----------------------------------------------------------------------------


def _put(store: FileStore, key: str, data: bytes, age: timedelta) -> None:
    store.put_bytes(key, data)
    t = (datetime.now(UTC) - age).timestamp()
    os.utime(store.root / key, (t, t))


def test_store_lists_deletes_by_key_and_cleans_empty_folders(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    _put(store, "jobs/j1/mezzanine.mkv", b"m" * 10, 2 * D)
    _put(store, "jobs/j1/final.mp4", b"f" * 3, 2 * D)
    _put(store, "consent/s/a.sealed", b"c", 2 * D)
    (tmp_path / "outside.bin").write_bytes(b"x" * 99)
    (store.root / "jobs" / "link.bin").symlink_to(tmp_path / "outside.bin")
    (store.root / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    listed = {o.key: o for o in store.list_objects()}
    assert set(listed) == {"consent/s/a.sealed", "jobs/j1/final.mp4", "jobs/j1/mezzanine.mkv"}
    assert listed["jobs/j1/mezzanine.mkv"].size == 10
    assert abs((datetime.now(UTC) - listed["jobs/j1/mezzanine.mkv"].mtime) - 2 * D) < timedelta(seconds=5)
    assert [o.key for o in store.list_objects("jobs")] == ["jobs/j1/final.mp4", "jobs/j1/mezzanine.mkv"]
    assert store.stat_key("jobs/j1/nothing") is None
    assert store.delete_key("jobs/j1/mezzanine.mkv") == 10
    assert store.delete_key("jobs/j1/mezzanine.mkv") == 0
    assert store.delete_key("jobs/j1/final.mp4") == 3
    assert not (store.root / "jobs" / "j1").exists() and (store.root / "jobs").is_dir()  # link.bin is still there
    with pytest.raises(ObjectRefused):
        store.delete_key("../outside.bin")
    assert (tmp_path / "outside.bin").exists()


def test_apply_plan_deletes_only_unchanged_objects_and_refuses_consent(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    _put(store, "jobs/a/mezzanine.mkv", b"a" * 4, 2 * D)
    _put(store, "jobs/b/mezzanine.mkv", b"b" * 4, 2 * D)
    _put(store, "consent/s/x.sealed", b"c", 2 * D)
    now = datetime.now(UTC)
    jobs = {"a": JobState("a", failed_at=now - D), "b": JobState("b", failed_at=now - D)}
    plan = plan_retention(store.list_objects(), jobs, now, POLICY)
    assert {d.key for d in plan.deletions} == {"jobs/a/mezzanine.mkv", "jobs/b/mezzanine.mkv"}
    store.put_bytes("jobs/b/mezzanine.mkv", b"rewritten")  # a redelivery rewrote it meanwhile
    done = apply_plan(store, plan.deletions)
    assert [d.key for d in done.deleted] == ["jobs/a/mezzanine.mkv"] and done.freed_bytes == 4
    assert [(d.key, why) for d, why in done.skipped] == [("jobs/b/mezzanine.mkv", "changed since it was listed")]
    assert store.stat_key("jobs/b/mezzanine.mkv") is not None
    bad = Deletion("consent/s/x.sealed", "intermediate", 1, now, None, "a bug")
    with pytest.raises(ObjectRefused):
        apply_plan(store, [bad])
    assert store.stat_key("consent/s/x.sealed") is not None


def test_store_usage_sets_the_gauges(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    store = FileStore(tmp_path / "store")
    _put(store, "jobs/a/mezzanine.mkv", b"a" * 40, H)
    _put(store, "consent/s/x.sealed", b"c" * 2, H)
    usage = store_usage(store)
    assert usage.by_kind["intermediate"].bytes == 40
    assert REGISTRY.get_sample_value("reelfab_storage_bytes", {"kind": "intermediate"}) == 40
    assert REGISTRY.get_sample_value("reelfab_storage_bytes", {"kind": "consent"}) == 2
    assert REGISTRY.get_sample_value("reelfab_storage_objects", {"kind": "final"}) == 0


# -- the job-state scan ----------------------------------------------------------------------------


async def test_scan_reads_terminal_events_and_skips_unreadable_ones() -> None:
    from reelfab.bus.memory import InMemoryBus
    from reelfab.contracts.codec import default_codec
    from tests.conftest import make_settings

    settings = make_settings()
    bus = InMemoryBus(settings, "test", default_codec(settings))
    failed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await bus.publish("reelfab.job.failed.v1", {
        "event_id": "e1", "occurred_at": failed_at, "producer": "t", "job_id": "job-f", "stage": "swapper-gpu",
        "reason_code": "x", "reason": "y", "retryable": False, "attempts": 1,
    })
    await bus.publish_raw("reelfab.render.completed.v1", b"not avro", key=b"job-r", headers=[])
    scan = await scan_job_states(bus, datetime.now(UTC) - H)
    assert scan.unreadable == 1 and scan.events == 1
    assert scan.jobs["job-f"].failed_at == failed_at and "job-r" not in scan.jobs
