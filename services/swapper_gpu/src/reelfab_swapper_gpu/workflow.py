"""One swap job, start to finish, over ports: the consent gate, the object store, the registry's
image fetcher, the template's quality gate, the engine and the clip swapper. The handler runs it once
the job holds a run slot (priority.py: expedited jobs first); the order is the policy:

0. the deadline: a job whose deadline (a trend's) has passed is not started (``deadline_passed``): judged
   when it arrives (``too_late``: it does not queue for a slot) and again when its run slot comes;
1. consent, on the local view, before any byte of the face is read;
2. the model the job may run with (licence, commercial use);
3. the template: its bytes, then its quality gate, then its face track (made once per template and
   kept: reelfab.faces.template_track) and the swap quality gate on it (``swap_quality`` when the face
   would go into too few frames), all before the face is fetched and the daily cap spent;
4. the face, then the consuming consent check that names the job (a redelivery spends the cap once).
   A ``registry://subjects/<subject>/images/<sha256>`` reference (reelfab.consent.images) is fetched
   from the consent registry with the worker's reader token (``SwapPorts.fetch_image``), after checking
   that it names the job's subject and sha256; an object-store URI is read from the store;
5. the swap, in a worker thread, stopping between batches when consent is withdrawn mid-clip; into a
   lossless mezzanine, or (fused mode, ``SwapPorts.render``) straight into the platform render;
6. the outputs into the store, and the swap.completed record with the frame counts.

Each step's time goes to the ``reelfab_stage_seconds`` histogram (consent, template, track, source,
decode, swap, encode, finish, store), so an operator (and bench/job.py) sees where a job's time goes.

A decision (a passed deadline, a denial, a refused model or template, a missing source, an image the
registry will not hand over: ``consent.<reason>`` when the subject's consent is not active or the subject
was erased, ``source_unavailable`` otherwise) comes back as a ``Failure``;
a consent failure first purges everything the store holds for the job. A message that can never
succeed (a URI outside the store, a malformed registry reference, a template that is not the bytes its
sha256 says, a source that is no image) raises a ``PermanentError``: the bus dead-letters it; a registry
that does not answer raises ``DependencyUnavailable`` (retried, never the job's fault). The handler
announces the outcome."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.consent.decision import Decision
from reelfab.consent.images import ImageFetchRefused, ImageFetchRejected, parse_image_ref
from reelfab.contracts.records import SwapRequested
from reelfab.errors import ObjectMissing, PermanentError
from reelfab.faces.errors import SwapQualityError
from reelfab.faces.report import QualityGate
from reelfab.faces.template_track import TemplateTrack
from reelfab.faces.types import FaceEngine
from reelfab.identifiers import key_segment, make_workdir
from reelfab.logging import get_logger
from reelfab.media.delivery import render_metadata
from reelfab.media.render import RenderSpec
from reelfab.metrics import STAGE_SECONDS
from reelfab.storage import StoredObject, sha256_file

from . import metrics, progress
from .domain import (
    Completed,
    Failure,
    ModelChoice,
    ModelPolicy,
    Outcome,
    SwapProducts,
    choose_for,
    consent_failure,
    fetch_refused,
    foreign_source,
    no_registry,
    past_deadline,
    source_unavailable,
    stopped,
    stopped_mid_clip,
    swap_completed,
    swap_quality,
)
from .swap import RenderOrder, StageClock, Stopped, SwapOutput

log = get_logger("reelfab.swapper")


class Gate(Protocol):
    """The point-of-use consent check (reelfab.consent.gate.ConsentGate)."""

    async def check(
        self,
        *,
        subject: str,
        purpose: str,
        platform: str,
        tags: tuple[str, ...] = (),
        commercial: bool = True,
        image_sha256: str | None = None,
        image_bytes: bytes | None = None,
        consume: bool = False,
        job_id: str | None = None,
    ) -> Decision: ...


class Store(Protocol):
    """The object store, as far as a swap job uses it (reelfab.storage.FileStore)."""

    def local_path(self, uri: str) -> Path: ...

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes: ...

    def put_file(self, key: str, path: Path, *, move: bool = False) -> StoredObject: ...


ImageFetcher = Callable[[str, str], bytes]  # (subject, sha256) -> bytes: RegistryClient.fetch_image; blocking


class SwapClip(Protocol):
    """Swaps the source face into the template where its track says, streamed
    (reelfab_swapper_gpu.swap.run_swap). Blocking."""

    def __call__(
        self,
        engine: FaceEngine,
        source_image: NDArray[Any],
        template: Path,
        workdir: Path,
        *,
        track: TemplateTrack | None = ...,
        batch_size: int = ...,
        should_stop: Callable[[], tuple[str, str] | None] = ...,
        on_frames: Callable[[int], None] = ...,
        gate: QualityGate = ...,
        render: RenderOrder | None = ...,
        clock: StageClock | None = ...,
    ) -> SwapOutput: ...


@dataclass
class SwapPorts:
    """What one job runs against. The blocking ones (``engine``, ``judge_template``, ``swap_clip``,
    ``purge``, ``fetch_image``) are called in worker threads. How many jobs run at once is the
    handler's admission (priority.Admission), not the workflow's."""

    gate: Gate
    store: Store
    engine: Callable[[ModelChoice], FaceEngine]  # loaded once per backend and model, then reused
    judge_template: Callable[[ModelChoice, Path, str], Failure | None]  # (choice, template, its sha256)
    track: Callable[[ModelChoice, Path, str], TemplateTrack]  # the template's face track (adapters.TrackCache)
    swap_clip: SwapClip
    withdrawn: Callable[[str], tuple[str, str] | None]  # the consent view's verdict on a subject, now
    purge: Callable[[str], int]  # everything the store holds for a job id (reelfab.storage.purge_job_media)
    clock: Callable[[], datetime]
    new_id: Callable[[], str]
    models: ModelPolicy
    workdir: Path  # this process's work root (claimed at start: reelfab.media.workroot)
    producer: str = "swapper-gpu"
    batch_size: int = 8
    quality: QualityGate = QualityGate()
    render: RenderSpec | None = None  # fused mode: render to this spec as the frames are swapped
    fetch_image: ImageFetcher | None = None  # enrolled images by reference; None: no registry token here


async def too_late(job: SwapRequested, ports: SwapPorts) -> Failure | None:
    """``deadline_passed`` (the job's media purged) when ``job``'s deadline has passed: judged before
    the job waits for a run slot, and again by ``swap_job`` when the slot comes. None: still in time."""
    late = past_deadline(job, ports.clock())
    if late is not None:
        await _ended(job, ports, late)
    return late


async def swap_job(job: SwapRequested, ports: SwapPorts) -> Outcome:
    """Run ``job`` (it holds a run slot now); a failure purges the job's media (its copy of the face
    included) before it is returned."""
    late = past_deadline(job, ports.clock())  # the deadline may have passed while the job waited for its slot
    outcome = late if late is not None else await _run(job, ports)
    return await _ended(job, ports, outcome)


async def _ended(job: SwapRequested, ports: SwapPorts, outcome: Outcome) -> Outcome:
    if isinstance(outcome, Failure) and outcome.purges_media:  # nothing made for the job outlives its end
        await asyncio.to_thread(ports.purge, job.job_id)
    return outcome


async def _run(job: SwapRequested, p: SwapPorts) -> Outcome:
    metrics.QUEUE_LAG.observe(max(0.0, (p.clock() - job.occurred_at).total_seconds()))
    clock = StageClock()
    try:
        return await _steps(job, p, clock)
    finally:
        for stage, seconds in clock.seconds.items():
            STAGE_SECONDS.labels(p.producer, stage).observe(seconds)


async def _steps(job: SwapRequested, p: SwapPorts, clock: StageClock) -> Outcome:
    tags = tuple(job.template_tags)
    with clock.stage("consent"):
        decision = await p.gate.check(subject=job.subject_id, purpose="swap", platform=job.platform, tags=tags,
                                      commercial=job.commercial)
    if (denied := consent_failure(decision)) is not None:  # before any byte of the face is read
        return denied
    choice = choose_for(job, p.models)
    if isinstance(choice, Failure):
        return choice
    with clock.stage("template"):
        template = await _template(job, p)
        # the template's own quality gate, before the face is fetched and the daily cap spent: a clip
        # without a face (or a 2x2 one) would otherwise "swap" into an unchanged copy, labelled AI-generated
        refused = await asyncio.to_thread(p.judge_template, choice, template, job.template_sha256)
    if refused is not None:
        return refused
    with clock.stage("track"):  # tracked once per template; later jobs on it find it kept
        track = await asyncio.to_thread(p.track, choice, template, job.template_sha256)
    if (reason := p.quality.judge(track.report())) is not None:  # what the swap's report will be
        return swap_quality(reason)
    with clock.stage("source"):
        source_bytes = await _source(job, p)
    if isinstance(source_bytes, Failure):
        return source_bytes
    with clock.stage("consent"):
        decision = await p.gate.check(subject=job.subject_id, purpose="swap", platform=job.platform, tags=tags,
                                      commercial=job.commercial, image_sha256=job.source_image_sha256,
                                      image_bytes=source_bytes, consume=True, job_id=job.job_id)
    if (denied := consent_failure(decision)) is not None:
        return denied
    consent_version = decision.consent_version or job.consent_version
    try:
        products = await _swap(job, p, choice, template, _decode(job, source_bytes), track, consent_version, clock)
    except Stopped as stop:
        return stopped(stop.reason, str(stop))
    except SwapQualityError as exc:
        return swap_quality(str(exc))
    record = swap_completed(job, products, choice, consent_version=decision.consent_version, producer=p.producer,
                            event_id=p.new_id(), occurred_at=p.clock())
    return Completed(record)


async def _source(job: SwapRequested, p: SwapPorts) -> bytes | Failure:
    """The face's bytes: an enrolled image from the registry by reference, else from the object store."""
    ref = parse_image_ref(job.source_image_uri)  # a malformed registry reference raises: dead-lettered
    if ref is None:
        try:
            return p.store.get_bytes(job.source_image_uri, expect_sha256=job.source_image_sha256)
        except ObjectMissing as exc:  # gone, or not those bytes: the job fails (outside the store: ObjectRefused)
            return source_unavailable(str(exc))
    subject, sha256 = ref
    if (foreign := foreign_source(job, subject, sha256)) is not None:
        return foreign
    if p.fetch_image is None:
        return no_registry(job)
    try:  # an outage (DependencyUnavailable, TransientError) propagates: retried, the job is not at fault
        data = await asyncio.to_thread(p.fetch_image, subject, sha256)
    except ImageFetchRefused as exc:  # 403 consent not active, 410 erased: consent.<reason>; 404, 409: no face
        return fetch_refused(job, exc.status, exc.reason, str(exc))
    except ImageFetchRejected as exc:  # over the size limit, or other bytes than the reference names
        return source_unavailable(f"the consent registry's answer for source image {job.source_image_uri} was "
                                  f"refused: {exc}")
    if (actual := hashlib.sha256(data).hexdigest()) != job.source_image_sha256:  # the fetcher is a port: check
        return source_unavailable(f"source image {job.source_image_uri} came back from the registry as bytes whose "
                                  f"sha256 is {actual}, not {job.source_image_sha256}")
    return data


async def _template(job: SwapRequested, p: SwapPorts) -> Path:
    template = p.store.local_path(job.template_uri)
    if job.music_uri:  # the post-producer reads it: a URI outside the store is refused now, not after the swap
        p.store.local_path(job.music_uri)
    if not template.is_file() or await asyncio.to_thread(sha256_file, template) != job.template_sha256:
        raise PermanentError(f"template {job.template_uri} is missing or its sha256 is not {job.template_sha256}")
    return template


def _decode(job: SwapRequested, source_bytes: bytes) -> NDArray[Any]:
    image: NDArray[Any] | None = cv2.imdecode(np.frombuffer(source_bytes, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PermanentError(f"source image {job.source_image_uri} is not a readable image")
    return image


async def _swap(job: SwapRequested, p: SwapPorts, choice: ModelChoice, template: Path, image: NDArray[Any],
                track: TemplateTrack, consent_version: int, clock: StageClock) -> SwapProducts:
    workdir = make_workdir(p.workdir, job.job_id)
    key = key_segment(job.job_id, "job_id")
    order = None
    if p.render is not None:  # fused: the music is read here, the render's tags are the post-producer's
        music = p.store.local_path(job.music_uri) if job.music_uri else None
        order = RenderOrder(p.render, music, job.caption_text, render_metadata(job.job_id, consent_version))

    def should_stop() -> tuple[str, str] | None:
        return stopped_mid_clip(p.withdrawn(job.subject_id))

    def on_frames(n: int) -> None:
        progress.advance(job.job_id, n)

    def run() -> SwapOutput:
        return p.swap_clip(p.engine(choice), image, template, workdir, track=track, batch_size=p.batch_size,
                           should_stop=should_stop, on_frames=on_frames, gate=p.quality, render=order, clock=clock)

    try:
        metrics.BATCH_SIZE.set(p.batch_size)
        progress.started(job.job_id, track.info.frames or 0)
        try:
            out = await asyncio.to_thread(run)
        finally:
            progress.finished(job.job_id)
        with clock.stage("store"):
            name = "rendered.mp4" if out.rendered else "mezzanine.mkv"
            video = await asyncio.to_thread(p.store.put_file, f"jobs/{key}/{name}", out.video, move=True)
            stored_track = p.store.put_file(f"jobs/{key}/track.json", out.track, move=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metrics.FRAMES_PER_SECOND.labels(choice.backend, choice.model).observe(out.fps)
    counts = out.report
    for status in ("swapped", "held", "lost", "rejected"):
        metrics.FRAMES.labels(status).inc(getattr(counts, status))
    log.info("swapped", job_id=job.job_id, frames=out.frames, swapped=counts.swapped, held=counts.held,
             lost=counts.lost, rejected=counts.rejected, refused_faces=counts.refused_detections,
             fps=round(out.fps, 1), rendered=out.rendered,
             stages={k: round(v, 3) for k, v in clock.seconds.items()})
    return SwapProducts(video.uri, video.sha256, stored_track.uri, stored_track.sha256, out.frames, out.fps,
                        out.info.duration_s, counts.swapped, counts.held, counts.lost, counts.rejected,
                        rendered=out.rendered)
