"""The post-producer's workflow over its ports: a swapped mezzanine is re-checked against consent (a
revocation since the swap stops it here), rendered to the platform spec in one ffmpeg pass (killed
when the consent view sees a withdrawal), verified, signed with C2PA Content Credentials, checked
against consent again, stored, checked once more against the view, and returned as what to announce.
A video the swapper already rendered (fused mode, ``SwapCompleted.rendered``) skips the render; every
check after it is the same, and its tags must name the job and say it is AI-generated.
A job stopped by consent takes its media with it. The decisions are domain.py's; the handler
(handlers.py) writes the outcome in its unit of work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reelfab import metrics
from reelfab.bus import new_event_id
from reelfab.consent.decision import Decision
from reelfab.consent.lease import LeaseTerms
from reelfab.contracts.generated.records import RenderCompleted
from reelfab.errors import PermanentError
from reelfab.identifiers import make_workdir
from reelfab.logging import get_logger
from reelfab.media.delivery import render_metadata
from reelfab.media.render import RenderJob, RenderStopped
from reelfab.media.spec_check import SpecCheck
from reelfab.storage import sha256_file

from . import domain
from .bootstrap import PostProducer
from .domain import Failure, Outputs, PostText, SwapJob

log = get_logger("reelfab.post")


@dataclass(frozen=True)
class Rendered:
    """Rendered, signed, stored, consent confirmed: announce ``record`` (RenderCompleted)."""

    record: RenderCompleted


@dataclass(frozen=True)
class Stopped:
    """Ended by a decision (consent): announce job.failed with ``failure``."""

    failure: Failure


Outcome = Rendered | Stopped


async def post_produce(post: PostProducer, job: SwapJob) -> Outcome:
    """The whole job. Raises PermanentError for a job no retry can help (a mezzanine that is not the
    bytes announced, a render that misses the platform spec), TransientError for an outage."""
    with _timed(post, "consent"):
        decision = await _consent(post, job)
    if not decision.allowed:
        return await _stop(post, job, domain.denied(decision))
    with _timed(post, "inputs"):
        inputs = await asyncio.to_thread(_inputs, post, job)
    work = make_workdir(post.workdir, job.job_id)
    try:
        try:
            made = await asyncio.to_thread(_make, post, job, inputs, work)
        except RenderStopped as stop:
            return await _stop(post, job, domain.stopped_while_rendering(stop.reason, str(stop)))
        # rendered and signed: consent again, before anything is stored or announced. The event's time
        # is this moment: the video was complete and its consent verified as of then
        finished_at = post.clock()
        with _timed(post, "consent"):
            decision = await _consent(post, job)
        if not decision.allowed:
            made.path.unlink(missing_ok=True)  # made for a subject who withdrew: it goes, now
            return await _stop(post, job, domain.denied_after_rendering(decision))
        with _timed(post, "store"):
            final = await asyncio.to_thread(post.store.put_file, domain.final_key(job.job_id), made.path, move=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    late = post.view.withdrawn(job.subject_id)  # a withdrawal the view took in while the file was stored
    if late is not None:
        post.store.delete(final.uri)
        return await _stop(post, job, domain.withdrawn_before_announcing(*late))
    outputs = Outputs(final.uri, final.sha256, made.check, made.label, made.text, finished_at)
    return Rendered(domain.render_completed(job, outputs, decision, event_id=new_event_id(), producer=post.spec.name))


async def purge_withdrawn(post: PostProducer, terms: LeaseTerms) -> int:
    """A revocation or an erasure reaches the jobs already rendered for the subject: their media in the
    store (the swapped mezzanine, the track, the final file) and the job's copies of the face go; a
    published post is the registry's takedown list's business. Returns the bytes freed."""
    if not domain.takes_rendered_media(terms.status):
        return 0
    jobs = await post.jobs.of_subject(terms.subject)
    freed = 0
    for job_id in jobs:
        freed += await asyncio.to_thread(post.store.purge_job, job_id)
    if jobs:
        await post.jobs.remove(terms.subject, jobs)
        log.info("media of a withdrawn consent removed", subject=terms.subject, status=terms.status,
                 jobs=len(jobs), freed_bytes=freed)
    return freed


async def _consent(post: PostProducer, job: SwapJob) -> Decision:
    # the local view, then the registry's authoritative answer (no image needed): a revocation the view
    # has not consumed yet still stops the job. The job's id goes along: its own use is inside the
    # daily cap already
    return await post.gate.check(subject=job.subject_id, purpose=domain.PURPOSE, platform=job.platform,
                                 tags=tuple(job.template_tags), commercial=domain.checked_as_commercial(job.commercial),
                                 ask_registry=True, job_id=job.job_id)


async def _stop(post: PostProducer, job: SwapJob, failure: Failure) -> Stopped:
    if failure.purges_media:  # the swapped video and the face's copies go with the job
        await asyncio.to_thread(post.store.purge_job, job.job_id)
    return Stopped(failure)


@dataclass(frozen=True)
class _Inputs:
    mezzanine: Path
    track: dict[str, Any]
    music: Path | None


@dataclass(frozen=True)
class _Made:
    path: Path  # the signed file, in the work folder
    check: SpecCheck
    label: str  # the C2PA manifest's
    text: PostText


def _inputs(post: PostProducer, job: SwapJob) -> _Inputs:
    mezzanine = post.store.local_path(job.mezzanine_uri)
    what = "rendered video" if job.rendered else "mezzanine"
    if not mezzanine.is_file() or sha256_file(mezzanine) != job.mezzanine_sha256:
        raise PermanentError(f"{what} {job.mezzanine_uri} is missing or its sha256 is not {job.mezzanine_sha256}")
    if job.rendered:  # the track and the music went into the swapper's render already
        return _Inputs(mezzanine, {}, None)
    track = json.loads(post.store.get_bytes(job.face_track_uri, expect_sha256=job.face_track_sha256))
    music = post.store.local_path(job.music_uri) if job.music_uri else None
    return _Inputs(mezzanine, track, music)


def _make(post: PostProducer, job: SwapJob, inputs: _Inputs, work: Path) -> _Made:
    """The blocking part, in a worker thread: one ffmpeg pass (killed when the view sees a withdrawal;
    none for a video the swapper rendered), the spec check, the C2PA signature."""
    if job.rendered:
        rendered = inputs.mezzanine
        with _timed(post, "spec_check"):
            check = domain.require_spec(post.spec_check.verify(rendered, job.duration_s))
            check = domain.require_swapper_render(check, job, post.spec_check.label(rendered, job.duration_s))
    else:
        render = RenderJob(input=inputs.mezzanine, output=work / "render.mp4", duration_s=job.duration_s,
                           music=inputs.music, caption_text=job.caption_text, face_track=inputs.track,
                           metadata=render_metadata(job.job_id, job.consent_version))
        with _timed(post, "render"):
            post.renderer.render(render, should_stop=lambda: post.view.withdrawn(job.subject_id))
        rendered = render.output
        with _timed(post, "spec_check"):
            check = domain.require_spec(post.spec_check.verify(rendered, job.duration_s))
    text = domain.post_text(job)
    signed = work / "final.mp4"
    with _timed(post, "sign"):
        label = post.signer.sign(rendered, signed, title=text.title, ingredients=domain.ingredients(job))
    return _Made(signed, check, label, text)


@contextlib.contextmanager
def _timed(post: PostProducer, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    metrics.STAGE_SECONDS.labels(post.spec.name, stage).observe(time.perf_counter() - started)
