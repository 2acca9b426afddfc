"""What the demo leaves: the posted videos copied to <out>/videos, each checked again here (the platform
spec by ffprobe, the C2PA credentials and their AI disclosure, whose face it shows by identity
embedding), and report.json with lineage, checks and stage timings per video, the leaderboard per
round, the consent timeline and the trend. The stage timings are consecutive intervals between the
job's events, so they add up to the job's total by construction; the check says so anyway."""

from __future__ import annotations

import asyncio
import math
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from reelfab.settings import Settings

from .cast import Cast
from .scenario import Timeline
from .tracker import Job, Tracker


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def stage_timings(job: Job, approved_at: datetime | None) -> dict[str, Any]:
    """queue (waiting for a swap slot), swap (frames / frames per second), render, review, publish."""
    assert job.swapped is not None and job.rendered is not None and job.published is not None
    requested, swapped = job.requested_at, job.swapped["occurred_at"]
    rendered, published = job.rendered["occurred_at"], job.published["occurred_at"]
    approved = min(max(approved_at or rendered, rendered), published)
    swap_total = (swapped - requested).total_seconds()
    active = job.swapped["frames"] / job.swapped["fps"] if job.swapped.get("fps") else swap_total
    active = min(max(active, 0.0), max(swap_total, 0.0))
    stages = [("queue", swap_total - active), ("swap", active), ("render", (rendered - swapped).total_seconds()),
              ("review", (approved - rendered).total_seconds()), ("publish", (published - approved).total_seconds())]
    return {"stages": [{"stage": s, "seconds": round(v, 3)} for s, v in stages],
            "total_s": round((published - requested).total_seconds(), 3)}


def c2pa_status(path: Path) -> dict[str, Any]:
    from reelfab.media.c2pa_sign import AI_SOURCE_TYPE, read_manifest

    info = read_manifest(path)
    ai = any(a.get("digitalSourceType") == AI_SOURCE_TYPE or
             any(isinstance(x, dict) and x.get("digitalSourceType") == AI_SOURCE_TYPE for x in a.get("actions", []))
             for a in info.actions)
    # trust: the demo signs with the test certificate authority it generated (no REELFAB_C2PA_* material),
    # which no trust list knows; "valid" means the signature and hashes check out, not who vouches for them
    return {"valid": info.valid, "label": info.active_label, "ai_generated": ai, "signer": info.signer,
            "trust": "a test certificate (no trust list knows it)" if _test_signer(info.signer) else "not checked",
            "problems": list(info.validation_errors)}


def _test_signer(signer: str | None) -> bool:
    return bool(signer) and "test" in str(signer).lower()


def spec_status(path: Path, settings: Settings, duration: float) -> dict[str, Any]:
    from reelfab.media.delivery import render_spec
    from reelfab.media.spec_check import verify

    check = verify(path, render_spec(settings), duration)
    values = check.__dict__ if hasattr(check, "__dict__") else {}
    keep = ("passed", "width", "height", "fps", "video_codec", "audio_codec", "duration_s", "problems")
    return {k: values.get(k) for k in keep if k in values}


async def build_report(out: Path, cast: Cast, tracker: Tracker, timeline: Timeline, settings: Settings,
                       meta: dict[str, Any], identity: Any) -> dict[str, Any]:
    from reelfab.storage import open_store

    store = open_store(settings.storage_root)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    names = {p.subject_id: p.display_name for p in [*cast.people, cast.stranger]}
    videos: list[dict[str, Any]] = []
    not_published: list[dict[str, Any]] = []
    taken_down: list[dict[str, Any]] = []
    problems: list[str] = []
    for job in sorted(tracker.jobs.values(), key=lambda j: j.requested_at):
        if job.published is None:
            f = job.failed or {}
            not_published.append({"job_id": job.job_id, "subject_id": job.subject, "stage": f.get("stage", job.stage),
                                  "reason_code": f.get("reason_code", "unfinished"), "reason": f.get("reason", ""),
                                  "round": job.round})
            continue
        assert job.rendered is not None and job.swapped is not None
        if timeline.revoked and job.subject == timeline.revoked[0]:
            # posted before the revocation: taken down with it (the publisher deletes a dry-run post, the
            # media services purge the job's files), and not kept here either
            taken_down.append(_taken_down(job, timeline, store, settings))
            not_published.append({"job_id": job.job_id, "subject_id": job.subject, "stage": "publisher",
                                  "reason_code": "taken_down", "round": job.round,
                                  "reason": "posted before the revocation, taken down with it ("
                                            + _takedown_words(taken_down[-1]) + ")"})
            continue
        target = videos_dir / f"{job.job_id}.mp4"
        await asyncio.to_thread(shutil.copyfile, store.local_path(job.rendered["final_uri"]), target)
        spec = await asyncio.to_thread(spec_status, target, settings, float(job.rendered["spec_check"]["duration_s"]))
        c2pa = await asyncio.to_thread(c2pa_status, target)
        who = await asyncio.to_thread(identity.identify, target)
        r, s, p = job.requested, job.swapped, job.published
        videos.append({
            "job_id": job.job_id, "file": f"videos/{target.name}", "thumbnail": f"videos/{job.job_id}.jpg",
            "round": job.round, "trigger": "trend" if r.get("trend_id") else "plan", "priority": r.get("priority") or 0,
            "trend_id": r.get("trend_id"),
            "lineage": {"subject_id": job.subject, "display_name": names.get(job.subject, job.subject),
                        "consent_version": job.rendered["consent_version"], "template_id": r["template_id"],
                        "template_sha256": r["template_sha256"], "music_id": r.get("music_id"),
                        "caption_style": r.get("caption_style"), "caption_text": r.get("caption_text"),
                        "swapper_model": s["swapper_model"], "backend": s["backend"], "model_license": s["model_license"],
                        "source_image_sha256": s["source_image_sha256"], "final_sha256": job.rendered["final_sha256"],
                        "arm_id": r.get("arm_id"), "plan_id": r.get("plan_id")},
            "spec_check": spec, "c2pa": c2pa,
            "identity": {"nearest": who.nearest, "distance": who.distance, "frames_with_face": who.frames_with_face,
                         "shows_subject": identity.contains(who, job.subject),
                         "shows_revoked": bool(timeline.revoked and identity.contains(who, timeline.revoked[0])),
                         "shows_unconsented": identity.contains(who, cast.stranger.subject_id)},
            "post": {"post_id": p["post_id"], "account": p["account"], "privacy_level": p["privacy_level"],
                     "published_at": _iso(p["published_at"]), "dry_run": p["dry_run"],
                     "approved_by": "demo-operator" if job.job_id in timeline.approvals else None,
                     "engagement": _engagement(job.engagement)},
            "timings": stage_timings(job, timeline.approvals.get(job.job_id)),
        })
    checks = _checks(videos, timeline, problems)
    for item in taken_down:
        if item["post_removed"] is False:
            problems.append(f"{item['job_id']}: the post of {item['subject_id']} is still up after the revocation")
    return {
        "demo": meta, "people": [_person(p, "granted") for p in cast.people] + [_person(cast.stranger, "none")],
        "templates": [{"template_id": t.item_id, "tags": list(t.tags), "file": str(t.path.relative_to(out)),
                       "duration_s": t.seconds} for t in cast.templates],
        "music": [{"music_id": m.item_id, "file": str(m.path.relative_to(out))} for m in cast.music],
        "videos": sorted(videos, key=lambda v: str((v.get("post") or {}).get("published_at") or "")),
        "not_published": not_published, "taken_down": taken_down, "leaderboard": timeline.leaderboard,
        "consent_timeline": _consent_timeline(tracker, timeline, cast),
        "trend": _trend(tracker, timeline), "checks": checks,
    }


def _takedown_words(item: dict[str, Any]) -> str:
    post = {True: "post removed", False: "post still up", None: "post in the takedown queue"}[item["post_removed"]]
    return f"{post}, media {'deleted' if item['media_deleted'] else 'kept'}"


def _taken_down(job: Job, timeline: Timeline, store: Any, settings: Settings) -> dict[str, Any]:
    assert job.published is not None and job.rendered is not None and timeline.revoked is not None
    p = job.published
    post_file = Path(settings.publisher_dryrun_dir or "") / p["account"] / f"{p['post_id']}.mp4"
    try:
        media_deleted = not store.local_path(job.rendered["final_uri"]).exists()
    except Exception:  # noqa: BLE001 - a URI the store no longer resolves: nothing of it is kept
        media_deleted = True
    return {"job_id": job.job_id, "subject_id": job.subject, "post_id": p["post_id"],
            "published_at": _iso(p["published_at"]), "revoked_at": timeline.revoked[1].isoformat(),
            "post_removed": (not post_file.exists()) if p["dry_run"] else None,  # None: in the takedown queue
            "media_deleted": media_deleted}


def _person(p: Any, consent: str) -> dict[str, Any]:
    """``true_rate``: the simulator's pinned engagement rate (likes per view); ``expected_completion``:
    the completion rate it makes of it on average, the reward analytics' leaderboard estimates."""
    from reelfab_publisher.simulator import COMPLETION_FLOOR, COMPLETION_SLOPE

    expected = None if p.rate is None else round(min(1.0, COMPLETION_FLOOR + COMPLETION_SLOPE * p.rate), 3)
    return {"subject_id": p.subject_id, "display_name": p.display_name, "image": f"assets/people/{p.image.name}",
            "consent": consent, "true_rate": p.rate, "expected_completion": expected}


def _engagement(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {k: v.get(k) for k in ("views", "likes", "comments", "shares", "completion_rate")}


def _checks(videos: list[dict[str, Any]], timeline: Timeline, problems: list[str]) -> dict[str, Any]:
    revoked_after = 0
    if not videos:
        problems.append("no video was posted (the log file says why)")
    for v in videos:
        name = v["job_id"]
        if not v["spec_check"].get("passed"):
            problems.append(f"{name}: fails the platform spec: {v['spec_check'].get('problems')}")
        if not (v["c2pa"]["valid"] and v["c2pa"]["ai_generated"]):
            problems.append(f"{name}: C2PA credentials not valid or not declaring AI-generated content")
        if v["identity"]["shows_unconsented"]:
            problems.append(f"{name}: shows the face of the person who never consented")
        if timeline.revoked and v["post"]["published_at"] > timeline.revoked[1].isoformat():
            if v["lineage"]["subject_id"] == timeline.revoked[0] or v["identity"]["shows_revoked"]:
                revoked_after += 1
                problems.append(f"{name}: posted after the revocation with the revoked face")
        total = sum(s["seconds"] for s in v["timings"]["stages"])
        if not math.isclose(total, v["timings"]["total_s"], abs_tol=0.01):
            problems.append(f"{name}: stage timings add up to {total:.3f} s, not {v['timings']['total_s']:.3f} s")
    return {"videos": len(videos), "spec_passed": sum(1 for v in videos if v["spec_check"].get("passed")),
            "c2pa_valid": sum(1 for v in videos if v["c2pa"]["valid"] and v["c2pa"]["ai_generated"]),
            "revoked_face_after_revocation": revoked_after,
            "unconsented_face": sum(1 for v in videos if v["identity"]["shows_unconsented"]),
            "timings_add_up": not any("stage timings" in p for p in problems), "problems": problems}


def _consent_timeline(tracker: Tracker, timeline: Timeline, cast: Cast) -> list[dict[str, Any]]:
    ours = {p.subject_id for p in [*cast.people, cast.stranger]}
    events = []
    for v in tracker.consent:
        if v["subject_id"] not in ours:
            continue
        change = str(v["change"]).lower()
        kind = "granted" if change in ("granted", "amended") else "revoked" if change in ("revoked", "expired", "erased") else change
        events.append({"at": _iso(v["occurred_at"]), "kind": kind, "subject_id": v["subject_id"],
                       "detail": f"consent v{v['consent_version']} {change}" + (f": {v['reason']}" if v.get("reason") else "")})
    if timeline.denied_job and timeline.denied_job in tracker.jobs:
        job = tracker.jobs[timeline.denied_job]
        f = job.failed or {}
        events.append({"at": _iso(f.get("occurred_at")), "kind": "denied", "subject_id": job.subject,
                       "detail": f"job {job.job_id} denied at {f.get('stage')}: {f.get('reason_code')}"})
    for job in tracker.jobs.values():
        f = job.failed or {}
        if str(f.get("reason_code", "")).startswith("consent") and job.job_id != timeline.denied_job:
            events.append({"at": _iso(f.get("occurred_at")), "kind": "denied", "subject_id": job.subject,
                           "detail": f"job {job.job_id} stopped at {f.get('stage')}: {f.get('reason_code')}"})
    return sorted(events, key=lambda e: e["at"] or "")


def _trend(tracker: Tracker, timeline: Timeline) -> dict[str, Any] | None:
    if timeline.trend_id is None:
        return None
    t = next((v for v in tracker.trends if v["trend_id"] == timeline.trend_id), None)
    return {"trend_id": timeline.trend_id, "title": t["title"] if t else "", "tags": list(t["tags"]) if t else [],
            "at": _iso(timeline.trend_at),
            "jobs": [j.job_id for j in tracker.jobs.values() if j.requested.get("trend_id") == timeline.trend_id]}
