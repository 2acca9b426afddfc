"""publisher handlers, one per consumed topic. render.completed puts the video in the review queue (a
render whose file is missing, whose bytes are not the announced ones, or that failed the platform spec
ends the job with job.failed instead: nothing to review, nothing uploaded). consent.changed stops the
subject's open jobs when the consent is withdrawn and turns the registry's takedown list into the
operators' takedown queue. Each writes its rows and announcements in one unit of work."""

from __future__ import annotations

import asyncio
from typing import Any

from reelfab.bus import Event, Handler
from reelfab.contracts.records import ConsentChanged, RenderCompleted
from reelfab.contracts.topics import JOB_FAILED
from reelfab.logging import get_logger
from reelfab.service import job_failed
from reelfab.storage import sha256_file

from .bootstrap import Publisher
from .desk import WAITING
from .review import stop_open_jobs

log = get_logger("reelfab.publisher")
WITHDRAWN = {"REVOKED": "consent.revoked", "ERASED": "consent.erased", "EXPIRED": "consent.expired"}


def on_render_completed(p: Publisher) -> Handler:
    async def handle(event: Event[RenderCompleted]) -> None:
        r = event.record
        if await p.uow.processed(event.event_id):
            return
        problem = await asyncio.to_thread(_unusable, p, r)
        async with p.uow.begin(event, "render.completed") as tx:
            if not tx.fresh:
                return
            if problem is not None:
                await tx.publish(JOB_FAILED, job_failed(p.spec, event, problem[0], problem[1]))
                log.warning("render refused", job_id=r.job_id, reason=problem[0], detail=problem[1])
                return
            added = await p.repo.add_review(tx.conn, {
                "job_id": r.job_id, "status": WAITING, "subject_id": r.subject_id, "consent_version": r.consent_version,
                "template_id": r.template_id, "template_tags": list(r.template_tags), "arm_id": r.arm_id,
                "platform": r.platform, "commercial": r.commercial, "final_uri": r.final_uri,
                "final_sha256": r.final_sha256, "duration_s": r.spec_check.duration_s,
                "c2pa_label": r.c2pa_manifest_label, "title": r.title, "hashtags": list(r.hashtags),
                "trace_id": r.trace_id, "render_event_id": r.event_id,
            })
        if added:
            log.info("waiting for review", job_id=r.job_id, subject=r.subject_id)
        else:
            log.info("already in the review queue", job_id=r.job_id)

    return handle


def _unusable(p: Publisher, r: RenderCompleted) -> tuple[str, str] | None:
    if not r.spec_check.passed:
        return "spec_check_failed", f"the render missed the platform spec: {'; '.join(r.spec_check.problems)}"
    try:
        path = p.store.local_path(r.final_uri)
    except Exception as exc:  # noqa: BLE001 - a URI this store does not serve
        return "render_missing", f"the rendered file {r.final_uri} cannot be read here: {exc}"
    if not path.is_file():
        return "render_missing", f"the rendered file {r.final_uri} is missing; nothing to review or upload"
    actual = sha256_file(path)
    if actual != r.final_sha256:
        return "render_sha256_mismatch", (f"the rendered file {r.final_uri} has sha256 {actual}, not the announced "
                                          f"{r.final_sha256}; nothing to review or upload")
    return None


def on_consent_changed(p: Publisher) -> Handler:
    async def handle(event: Event[ConsentChanged]) -> None:
        c = event.record
        change = str(getattr(c.change, "value", c.change))
        code = WITHDRAWN.get(change)
        takedown = list(getattr(c, "takedown_post_ids", []) or [])
        if code is None and not takedown:
            return  # a grant or an amendment: the view (its own consumer) has it
        async with p.uow.begin(event, "consent.changed") as tx:
            if not tx.fresh:
                return
            stopped: list[str] = []
            if code is not None:
                stopped = await stop_open_jobs(p, tx.conn, c.subject_id, code,
                                               f"consent of {c.subject_id} is {change.lower()}")
            known = {row["post_id"]: row for row in await p.repo.posts_of_subject(tx.conn, c.subject_id)}
            added = await p.repo.add_takedowns(tx.conn, [{
                "post_id": post_id, "job_id": known[post_id]["job_id"] if post_id in known else None,
                "subject_id": c.subject_id, "account": known[post_id]["account"] if post_id in known else None,
                "platform": known[post_id]["platform"] if post_id in known else "tiktok",
                "reason": f"consent {change.lower()}" + (f": {c.reason}" if c.reason else ""),
            } for post_id in takedown])
        removed = await _take_down_dry_runs(p, [known[post_id] for post_id in takedown if post_id in known])
        if stopped or added:
            log.warning("consent withdrawn", subject=c.subject_id, change=change, stopped_jobs=stopped,
                        takedowns_added=added, dry_run_posts_removed=removed)

    return handle


async def _take_down_dry_runs(p: Publisher, posts: list[Any]) -> int:
    """The dry-run platform is a folder of ours: its posts of a withdrawn subject are removed at once and
    their takedowns marked done by the publisher (a real platform's need an operator)."""
    removed = 0
    for post in posts:
        if not post["dry_run"]:
            continue
        found = await asyncio.to_thread(p.dryrun.find, post["job_id"])
        if found is not None:
            for path in (found.sidecar, found.video):  # the sidecar first: a half-removed post is no post
                path.unlink(missing_ok=True)
        await p.repo.takedown_done(post["post_id"], "publisher", "dry-run post removed from the dry-run folder")
        removed += 1
    return removed
