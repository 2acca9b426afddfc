"""Fault injection on the real stack (docs/architecture.md "Delivery rules", "Consent"): services killed with
SIGKILL mid-job, Kafka restarted, PostgreSQL and the registry's API down, consent revoked while jobs
run, poison messages and hostile identifiers. Every scenario counts from the topics and prints one row;
none may lose a job, finish one twice, announce a video after its subject's revocation, or dead-letter a
good job.

Runs on a stack of its own (tests/chaos/harness.py), never on the shared one. Quick variant in
`make test`, full variant with `make chaos`."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelfab.bus.policy import H_EVENT_ID
from tests.chaos.conftest import ROWS, Variant, World
from tests.chaos.harness import Proc, ffmpeg_children, mtime, tree_snapshot
from tests.chaos.ledger import REQUESTED, SWAPPED, JobOutcome, Ledger, Row, Submitted, describe

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(900)]


# --- helpers -------------------------------------------------------------------------------------------


def ledger_for(world: World) -> Ledger:
    return Ledger(world.bus, datetime.now(UTC) - timedelta(seconds=2))


async def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s")
        await asyncio.sleep(interval)


def ffmpeg_running(world: World, service: str) -> Callable[[], list[Proc]]:
    """The service's ffmpeg at work (not ffprobe): a swap or a render in progress."""
    svc = world.stack.service(service)
    return lambda: [p for p in ffmpeg_children(svc.pid or 0, exclude=svc.pid) if p.comm == "ffmpeg"]


def service_deaths(world: World) -> str:
    dead = [f"{n} exited rc={s.proc.returncode}" for n, s in world.stack.services.items()
            if s.proc is not None and s.proc.poll() is not None]
    return "; ".join(dead)


async def record(world: World, ledger: Ledger, title: str, variant: Variant, seen: dict[str, JobOutcome],
                 started: float, notes: str = "") -> Row:
    notes = "; ".join(n for n in (notes, service_deaths(world)) if n)
    row = await ledger.row(f"{title} [{variant.name}]", seen, time.monotonic() - started, notes)
    ROWS.append(row)
    print("\n" + row.line())
    return row


def common_problems(row: Row, seen: dict[str, JobOutcome], *, must_complete: bool) -> list[str]:
    problems = []
    if row.lost:
        problems.append(f"{row.lost} job(s) lost (no terminal event)")
    if row.duplicated:
        problems.append(f"{row.duplicated} job(s) duplicated")
    if row.after_revocation:
        problems.append(f"{row.after_revocation} render.completed after the subject's revocation")
    dead_good = [o.job.job_id for o in seen.values() if o.job.good and o.dead]
    if dead_good:
        problems.append(f"good job(s) dead-lettered: {dead_good}")
    if must_complete:
        undone = [f"{o.job.job_id}: {o.failure_reasons or [f['reason_code'] for f in o.failed] or 'no render'}"
                  for o in seen.values() if o.job.good and not o.rendered]
        if undone:
            problems.append(f"good job(s) not completed: {undone}")
    return problems


def check(problems: list[str], seen: dict[str, JobOutcome], world: World, *services: str) -> None:
    if not problems:
        return
    logs = "\n".join(f"--- {s} log tail:\n{world.stack.logs(s, 25)}" for s in services)
    pytest.fail("\n".join(problems) + "\n" + describe(seen) + "\n" + logs, pytrace=False)


# --- 1, 2: SIGKILL mid-job -----------------------------------------------------------------------------------


async def test_1_swapper_killed_mid_job(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    for _ in range(variant.jobs):
        await w.submit(ledger, label="s1")
    swapper = w.stack.service("swapper-gpu")
    await wait_for("the swapper's ffmpeg (a swap in progress)", ffmpeg_running(w, "swapper-gpu"), 90)
    old = swapper.kill9()
    await asyncio.sleep(1.0)
    orphans = ffmpeg_children(old)
    swapper.reap_leftovers()
    await w.stack.restart("swapper-gpu")
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, "1. swapper kill -9 mid-job, restart", variant, seen, started,
                       f"orphaned ffmpeg after the kill: {len(orphans)}")
    check(common_problems(row, seen, must_complete=True), seen, w, "swapper-gpu", "post-producer")


async def test_2_post_producer_killed_mid_render(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    for _ in range(variant.jobs):
        await w.submit(ledger, label="s2")
    post = w.stack.service("post-producer")
    await wait_for("the post-producer's ffmpeg (a render in progress)", ffmpeg_running(w, "post-producer"), 120)
    old = post.kill9()
    await asyncio.sleep(1.0)  # a child that dies with its parent is gone by now
    orphans = ffmpeg_children(old)
    post.reap_leftovers()
    await w.stack.restart("post-producer")
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, "2. post-producer kill -9 mid-render, restart", variant, seen, started,
                       f"orphaned ffmpeg after the kill: {len(orphans)}")
    problems = common_problems(row, seen, must_complete=True)
    if orphans:
        problems.append("ffmpeg outlived the killed post-producer: "
                        + ", ".join(f"pid {p.pid} (parent now {p.ppid}): {p.cmdline[:100]}" for p in orphans))
    check(problems, seen, w, "post-producer")


# --- 3, 4, 5: a dependency goes away while jobs run ------------------------------------------------------------


async def test_3_kafka_restarted(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    for _ in range(variant.jobs):
        await w.submit(ledger, label="s3")
    await wait_for("a swap in progress", ffmpeg_running(w, "swapper-gpu"), 90)
    t0 = time.monotonic()
    await asyncio.to_thread(w.stack.stop_kafka)  # SIGTERM, the broker's clean shutdown
    await asyncio.sleep(1.0)
    await asyncio.to_thread(w.stack.start_kafka)
    down = time.monotonic() - t0
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, "3. Kafka stopped and started", variant, seen, started, f"broker down {down:.0f} s")
    check(common_problems(row, seen, must_complete=True), seen, w, "swapper-gpu", "post-producer")


async def test_4_postgres_down(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    for _ in range(variant.jobs):
        await w.submit(ledger, label="s4")
    await wait_for("a swap in progress", ffmpeg_running(w, "swapper-gpu"), 90)
    t0 = time.monotonic()
    await asyncio.to_thread(w.stack.stop_postgres)
    await asyncio.sleep(max(0.0, variant.outage_s - (time.monotonic() - t0)))
    await asyncio.to_thread(w.stack.start_postgres)
    down = time.monotonic() - t0
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, f"4. PostgreSQL down {variant.outage_s:.0f} s", variant, seen, started,
                       f"down {down:.0f} s")
    check(common_problems(row, seen, must_complete=True), seen, w, "swapper-gpu", "post-producer")


async def test_5_registry_api_down(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    for _ in range(variant.jobs):
        await w.submit(ledger, label="s5")
    await wait_for("a swap in progress", ffmpeg_running(w, "swapper-gpu"), 90)
    registry = w.stack.service("consent-registry")
    t0 = time.monotonic()
    registry.stop()
    await asyncio.sleep(max(0.0, variant.outage_s - (time.monotonic() - t0)))
    await w.stack.restart("consent-registry")
    down = time.monotonic() - t0
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, f"5. registry API down {variant.outage_s:.0f} s", variant, seen, started,
                       f"down {down:.0f} s")
    check(common_problems(row, seen, must_complete=True), seen, w, "swapper-gpu", "consent-registry")


# --- 6: revocation while jobs run -------------------------------------------------------------------------------


WORK_ROOTS = {"swapper-gpu": "swapper-work", "post-producer": "post-work"}  # under REELFAB_STATE_DIR


def in_stage(world: World, service: str, job_id: str) -> Callable[[], bool]:
    """The job has a work folder in the service's work root: being swapped, or being rendered."""
    root = world.root / "state" / WORK_ROOTS[service]
    return lambda: root.is_dir() and any(True for _ in root.rglob(f"{job_id}.*"))


async def test_6_revocation_at_random_moments(scene: World, variant: Variant) -> None:
    w = scene
    seed = int(os.environ.get("REELFAB_CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    subjects = [await w.enrol(f"rev{i}", 41 + i) for i in range(variant.revoke_subjects)]
    started, ledger = time.monotonic(), ledger_for(w)
    jobs: dict[str, list[Submitted]] = {s: [] for s in subjects}
    for i in range(variant.revoke_jobs):
        subject = subjects[i % len(subjects)]
        jobs[subject].append(await w.submit(ledger, label="s6", subject=subject))
    # a job takes ~5-15 s here and they run one after another; each subject is revoked at a random
    # moment: while a random one of its jobs is being swapped, or rendered, or at a random time
    window = 5.0 * variant.revoke_jobs
    plans: list[str] = []

    async def revoke_at_random(subject: str) -> None:
        job, phase = rng.choice(jobs[subject]), rng.choice(("swap", "render", "time"))
        delay = rng.uniform(0.0, 1.5)
        if phase == "time":
            await asyncio.sleep(rng.uniform(0.5, window))
        else:
            service = "swapper-gpu" if phase == "swap" else "post-producer"
            try:
                await wait_for(f"{job.job_id} in {service}", in_stage(w, service, job.job_id), 3 * window)
            except AssertionError:
                phase += " (missed)"
            await asyncio.sleep(delay)
        await w.revoke(subject)
        plans.append(f"{subject.split('-')[0]} at {time.monotonic() - started:.0f}s "
                     + (f"{delay:.1f}s into the {phase} of {job.job_id[-4:]}" if phase != "time" else "(random time)"))

    await asyncio.gather(*(revoke_at_random(s) for s in subjects))
    seen = await ledger.settle(variant.settle_s)
    revoked = await ledger.revocations()
    problems = []
    left_over = []
    stopped_after_swap = 0
    for o in seen.values():
        at = revoked.get(o.job.subject_id)
        if at is None:
            problems.append(f"no REVOKED event for {o.job.subject_id} on the consent topic")
            continue
        before = [r for r in o.rendered if r["occurred_at"] <= at]
        stopped_after_swap += bool(not before and any(s["occurred_at"] <= at for s in o.swapped))
        finals = list((w.root / "objects").rglob(f"{o.job.job_id}/final*"))  # jobs/<job_id>/final.mp4
        if not before and finals:
            left_over.append(o.job.job_id)
        wrong = [f["reason_code"] for f in o.failed if not f["reason_code"].startswith("consent.")]
        if not o.rendered and wrong:
            problems.append(f"{o.job.job_id} failed for another reason than consent: {wrong}")
    if left_over:
        problems.append(f"final video left in the store for job(s) not completed before revocation: {left_over}")
    row = await record(w, ledger, "6. revocation at random moments", variant, seen, started,
                       f"seed {seed}; revoked: {'; '.join(plans)}; swapped but not rendered before revocation: "
                       f"{stopped_after_swap}; outputs left {len(left_over)}")
    check(problems + common_problems(row, seen, must_complete=False), seen, w, "swapper-gpu", "post-producer")


# --- 7: poison ------------------------------------------------------------------------------------------------------


async def test_7_poison_then_a_good_job(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    codec = w.bus.codec

    async def raw(label: str, value: bytes) -> None:
        job_id, event_id = f"chaos-s7-{label}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await w.bus.publish_raw(REQUESTED, value, key=job_id.encode(), headers=[(H_EVENT_ID, event_id.encode())])
        ledger.add(Submitted(job_id, event_id, w.subject, good=False, label=label))

    await raw("undecodable", b"\x00\x01 not avro at all \xff\xfe" * 8)
    wrong = w.job_record(label="wrong-schema")
    await raw("wrong-schema", codec.encode("JobFailed", {
        "event_id": wrong["event_id"], "occurred_at": datetime.now(UTC), "producer": "chaos", "job_id": wrong["job_id"],
        "stage": "chaos", "reason_code": "x", "reason": "a JobFailed record on the swap.requested topic",
        "retryable": False, "attempts": 1}))
    big = w.job_record(label="oversized", caption_text="x" * (w.settings.max_message_bytes + 10_000))
    await raw("oversized", codec.encode("SwapRequested", big, topic=REQUESTED))
    await w.submit(ledger, good=False, label="missing-template",
                   template_uri=w.store.root_uri + "/inputs/no-such-template.mp4", template_sha256="0" * 64)
    outside = w.root / "assets" / "outside-template.mp4"  # the real template's bytes, outside the store
    outside.write_bytes(w.template_file.read_bytes())
    await w.submit(ledger, good=False, label="outside-store", template_uri=outside.as_uri(),
                   template_sha256=w.template.sha256)
    await w.submit(ledger, label="faceless", template_uri=w.faceless.uri, template_sha256=w.faceless.sha256)
    await w.submit(ledger, label="unknown-subject", subject_id=f"nobody-{uuid.uuid4().hex[:6]}",
                   source_image_uri=w.faces[w.subject].uri, source_image_sha256=w.faces[w.subject].sha256)
    await w.submit(ledger, label="good")
    seen = await ledger.settle(variant.settle_s)

    def fate(o: JobOutcome) -> str:
        if o.rendered:
            return "completed"
        if o.dead:
            return f"DLQ ({o.dead[0].error.split(':')[0]}, attempts {o.dead[0].attempts})"
        if o.failed:
            return f"{o.failed[0]['reason_code']} (attempts {o.failed[0]['attempts']})"
        return "nothing"

    row = await record(w, ledger, "7. poison set, then a good job", variant, seen, started,
                       "; ".join(f"{o.job.label}: {fate(o)}" for o in seen.values()))
    problems = common_problems(row, seen, must_complete=False)
    for o in seen.values():
        label = o.job.label
        attempts = [d.attempts for d in o.dead] + [f["attempts"] for f in o.failed]
        if label == "good":
            if not o.rendered:
                problems.append("the good job after the poison set did not complete")
            continue
        if o.rendered:
            problems.append(f"{label}: rendered ({o.rendered[0]['final_uri']})")
        if label == "faceless":
            if o.failure_reasons != ["template.no_face"]:
                problems.append(f"faceless template: expected job.failed template.no_face, got "
                                f"{[f['reason_code'] for f in o.failed] or 'no job.failed'}")
        elif label == "unknown-subject":
            if not o.failure_reasons or not all(r.startswith("consent.") for r in o.failure_reasons):
                problems.append(f"unknown subject: expected a consent failure, got {[f['reason_code'] for f in o.failed]}")
        elif not (o.dead or o.failed):
            problems.append(f"{label}: neither dead-lettered nor failed")
        if attempts and any(a != 1 for a in attempts):
            problems.append(f"{label}: attempts {attempts}, expected 1 (refused at once, not retried)")
    check(problems, seen, w, "swapper-gpu")


# --- 8: hostile identifiers ---------------------------------------------------------------------------------------


HOSTILE = ("../../x", "/tmp/abs", "a/b", "job\nx")
FIELDS = ("job_id", "template_id", "subject_id")


def _swap_completed(w: World, **overrides: Any) -> dict[str, Any]:
    base = w.job_record(label="hostile")
    record = {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "chaos",
        "job_id": base["job_id"], "subject_id": w.subject, "consent_version": 1,
        "mezzanine_uri": w.template.uri, "mezzanine_sha256": w.template.sha256,
        "face_track_uri": w.template.uri, "face_track_sha256": w.template.sha256, "backend": "classical",
        "swapper_model": "classical", "model_license": "test", "commercial_use_allowed": False, "frames": 25,
        "fps": 25.0, "duration_s": 1.0, "template_id": "dance-1", "template_tags": ["dance"],
        "source_image_sha256": w.faces[w.subject].sha256, "platform": "tiktok",
    }
    record.update(overrides)
    return record


async def test_8_hostile_identifiers(scene: World, variant: Variant) -> None:
    w, started, ledger = scene, time.monotonic(), ledger_for(scene)
    tmp = Path("/tmp")
    watched = [tmp / "abs", tmp / "x", tmp / "a"] + sorted(tmp.glob("abs.*")) + sorted(tmp.glob("x.*"))
    # where "../../x" lands from the stores' jobs/ folder and from the services' work folders
    canaries = [w.root / "x", w.root / "state" / "x"]
    for canary in canaries:
        canary.mkdir(exist_ok=True)
        (canary / "sentinel").write_text("must survive\n")
    services_folders = tuple((w.root / p).resolve() for p in (
        "state/kafka", "state/postgres", *(f"state/{d}" for d in WORK_ROOTS.values()), "objects", "logs"))
    before = tree_snapshot(w.root, services_folders)
    watched_before = {p: mtime(p) for p in watched}
    tmp_before = {p.name for p in tmp.iterdir() if p.name.startswith(("abs", "x"))}

    for topic in (REQUESTED, SWAPPED):
        for f in FIELDS:
            for bad in HOSTILE:
                if topic == REQUESTED:
                    msg = w.job_record(label="hostile", **{f: bad})
                else:
                    msg = _swap_completed(w, **{f: bad})
                await w.bus.publish(topic, msg)
                ledger.add(Submitted(msg["job_id"], msg["event_id"], msg["subject_id"], good=False,
                                     label=f"{'.'.join(topic.split('.')[1:3])}:{f}={bad!r}", topic=topic))
    seen = await ledger.settle(variant.settle_s)
    row = await record(w, ledger, "8. hostile identifiers", variant, seen, started)
    problems = common_problems(row, seen, must_complete=False)
    for o in seen.values():
        field = o.job.label.split(":")[1].split("=")[0]
        if not o.dead:
            problems.append(f"{o.job.label}: not dead-lettered ({describe({'x': o}).strip()})")
        elif not any(field in d.error for d in o.dead):
            problems.append(f"{o.job.label}: the dead letter does not name {field}: {o.dead[0].error[:160]}")
        if o.rendered or o.swapped:
            problems.append(f"{o.job.label}: went through the media path")
        hostile_failed = [f for f in o.failed if f["job_id"] in HOSTILE]
        if hostile_failed:
            problems.append(f"{o.job.label}: job.failed announced with the hostile job_id {hostile_failed[0]['job_id']!r}")
    after = tree_snapshot(w.root, services_folders)
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    if created or deleted or changed:
        problems.append(f"outside the services' folders: created {created}, deleted {deleted}, changed {changed}")
    problems += [f"the canary {c}/sentinel was deleted" for c in canaries if not (c / "sentinel").is_file()]
    moved = [str(p) for p in watched if mtime(p) != watched_before[p]]
    new_tmp = {p.name for p in tmp.iterdir() if p.name.startswith(("abs", "x"))} - tmp_before
    if moved or new_tmp:
        problems.append(f"/tmp touched: changed {moved}, created {sorted(new_tmp)}")
    check(problems, seen, w, "swapper-gpu", "post-producer")
