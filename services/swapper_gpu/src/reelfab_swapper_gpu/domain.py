"""Pure decisions of the swapper: which backend and model a job runs with (and whether its licence
allows the job), how many jobs fit the memory budget, what a consent decision, a template's quality
verdict or a stop mid-clip makes of the job, and the swap.completed record a finished job announces.

Nothing here reads a file, the clock or the network: the workflow (workflow.py) feeds these functions
what it found out through its ports, and the handler announces what they return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from reelfab.contracts.records import SwapCompleted, SwapRequested
from reelfab.errors import PermanentError

if TYPE_CHECKING:
    from reelfab.consent.decision import Decision
    from reelfab.faces.qc import QCResult

# What the classical backend is, licence-wise: dlib's code is Boost-licensed, but its 68-point
# predictor was trained on iBUG 300-W, whose terms exclude commercial use.
CLASSICAL_MODEL = "classical"
CLASSICAL_LICENCE = "dlib models (68-point predictor trained on iBUG 300-W: non-commercial)"


# ------------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class Failure:
    """The job fails (job.failed, not retryable) with ``code`` (``deadline_passed``, ``consent.<reason>``,
    ``model_refused``, ``template.<reason>``, ``source_unavailable``, ``swap_quality``) and a detail for
    people."""

    code: str
    detail: str

    @property
    def purges_media(self) -> bool:
        """Every decided failure ends the job (job.failed, not retryable), so nothing made from or for the
        face outlives it (purge_job_media: the job's outputs and its copy of the face); a consent decision
        above all, but a refused model or template too — a later revocation has nothing left to find."""
        return True

    @property
    def outcome(self) -> str:
        """The jobs-by-outcome metric's label: the code's family."""
        return self.code.split(".")[0]


@dataclass(frozen=True)
class Completed:
    """The job swapped: ``record`` is what it announces on swap.completed."""

    record: SwapCompleted

    @property
    def outcome(self) -> str:
        return "completed"


Outcome = Completed | Failure


def past_deadline(job: SwapRequested, now: datetime) -> Failure | None:
    """A job whose deadline (a trend's) passed before it could start is not worth starting: it fails
    (``deadline_passed``, not retryable) instead of spending a run slot on a video nobody wants now."""
    if job.deadline is None or now <= job.deadline:
        return None
    late = (now - job.deadline).total_seconds()
    return Failure("deadline_passed", f"the job's deadline {job.deadline.isoformat()} had passed {late:.1f} s "
                                      "before the job could start; it was not started")


def consent_failure(decision: Decision) -> Failure | None:
    """A consent denial fails the job as ``consent.<reason>``; an allowed decision is no failure."""
    return None if decision.allowed else Failure(f"consent.{decision.reason}", decision.detail)


def stopped_mid_clip(withdrawn: tuple[str, str] | None) -> tuple[str, str] | None:
    """What the consent view's ``withdrawn(subject)`` means for a swap in progress: None goes on;
    (reason, detail) stops it between batches."""
    return None if withdrawn is None else (withdrawn[0], f"{withdrawn[1]}: the swap stopped mid-clip")


def stopped(reason: str, detail: str) -> Failure:
    """The swap was stopped between batches because consent was withdrawn."""
    return Failure(f"consent.{reason}", detail)


def source_unavailable(detail: str) -> Failure:
    """The source image is gone or is not the bytes its sha256 says: the job fails (a URI outside the
    store is no decision but a poison message, dead-lettered)."""
    return Failure("source_unavailable", detail)


def foreign_source(job: SwapRequested, subject: str, sha256: str) -> Failure | None:
    """A registry reference (``registry://subjects/<subject>/images/<sha256>``) must name the job's own
    subject and the job's source sha256: another subject's face never goes into a job, whatever the
    planner wrote. None when it does."""
    uri = job.source_image_uri
    if subject != job.subject_id:
        return Failure("source_other_subject", f"source image {uri} names subject {subject}, not the job's subject "
                                               f"{job.subject_id}: a job only ever takes its own subject's face")
    if sha256 != job.source_image_sha256:
        return source_unavailable(f"source image {uri} names sha256 {sha256}, not the job's source_image_sha256 "
                                  f"{job.source_image_sha256}")
    return None


def no_registry(job: SwapRequested) -> Failure:
    """A registry reference on a worker with no registry to fetch it from (no reader token)."""
    return source_unavailable(
        f"source image {job.source_image_uri} is held by the consent registry, and this swapper has no registry "
        "client to fetch it with: set REELFAB_CONSENT_TOKEN (a reader token: `reelfab consent tokens create NAME`) "
        "and REELFAB_CONSENT_REGISTRY_URL"
    )


def fetch_refused(job: SwapRequested, status: int, reason: str | None, detail: str) -> Failure:
    """The registry would not hand over the job's enrolled image (``ImageFetchRefused``): 403, the
    subject's consent is not active, and 410, the subject was erased, are consent decisions
    (``consent.<reason>``: ``consent.revoked``, ``consent.erased``, ...); 404 (no such image) and 409
    (the stored image failed its integrity check) leave the job without a face (``source_unavailable``)."""
    why = f"the consent registry did not hand over source image {job.source_image_uri}: {detail}"
    if status in (403, 410):
        return Failure(f"consent.{reason or ('erased' if status == 410 else 'not_active')}", why)
    return source_unavailable(why)


def swap_quality(detail: str) -> Failure:
    """The swap put the face into too few frames (the performer would show, or a half-swapped clip
    would ship): the job fails, its outputs are not kept."""
    return Failure("swap_quality", f"swap quality gate: {detail}")


# the reason a job fails with when the template fails several rules: the one that matters most
TEMPLATE_REASONS = ("no_face", "face_hidden", "resolution", "duration")


def main_template_reason(codes: Sequence[str]) -> str:
    return next((c for c in TEMPLATE_REASONS if c in codes), codes[0] if codes else "rejected")


def template_failure(result: QCResult) -> Failure | None:
    """The template's quality verdict (reelfab.faces.qc.check_template) as the job's fate."""
    if result.passed:
        return None
    text = "; ".join(f"{r.code}: {r.message}" for r in result.reasons)  # reelfab.faces.qc.reasons_text
    return Failure(f"template.{main_template_reason(result.codes())}", f"template QC: {text}")


def unreadable_template(name: str, error: str) -> Failure:
    return Failure("template.unreadable", f"template {name}: {error}")


# ------------------------------------------------------------------------------------ models


class ModelRefused(PermanentError):
    """The job names a model this worker lacks, or one whose licence does not allow the job."""


@dataclass(frozen=True)
class ModelChoice:
    backend: str
    model: str
    licence: str
    commercial_use: bool


CLASSICAL = ModelChoice("classical", CLASSICAL_MODEL, CLASSICAL_LICENCE, False)


@dataclass(frozen=True)
class ModelPolicy:
    """What this worker can run and may run: the default backend, commercial mode, the manifest's
    licences (model name -> (licence, commercial use allowed)) and the model files installed here."""

    default_backend: str
    commercial_mode: bool = False
    manifest: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    installed: frozenset[str] = frozenset()


def choose_model(
    *,
    backend: str | None,
    model: str,
    default_backend: str,
    commercial_job: bool,
    commercial_mode: bool,
    manifest: Mapping[str, tuple[str, bool]],
    installed: set[str] | frozenset[str],
) -> ModelChoice:
    """``manifest``: model name -> (licence, commercial use allowed); ``installed``: model files here."""
    chosen_backend = backend or ("classical" if model == CLASSICAL_MODEL else default_backend)
    if chosen_backend == "classical":
        choice = CLASSICAL
    elif chosen_backend == "onnx":
        if model not in manifest:
            raise ModelRefused(f"swapper model {model!r} is not in the model manifest")
        if model not in installed:
            raise ModelRefused(f"swapper model {model!r} is not installed on this worker (reelfab models pull {model})")
        licence, commercial = manifest[model]
        choice = ModelChoice("onnx", model, licence, commercial)
    else:
        raise ModelRefused(f"backend {chosen_backend!r} cannot serve swap jobs (classical or onnx)")
    if (commercial_job or commercial_mode) and not choice.commercial_use:
        why = "the job is commercial" if commercial_job else "this worker runs in commercial mode"
        raise ModelRefused(f"{choice.model} ({choice.licence}) may not be used: {why}")
    return choice


def choose_for(job: SwapRequested, policy: ModelPolicy) -> ModelChoice | Failure:
    """The job's model under this worker's policy, or the job's ``model_refused`` failure."""
    try:
        return choose_model(backend=job.backend, model=job.swapper_model, default_backend=policy.default_backend,
                            commercial_job=job.commercial, commercial_mode=policy.commercial_mode,
                            manifest=policy.manifest, installed=policy.installed)
    except ModelRefused as exc:
        return Failure("model_refused", str(exc))


# ------------------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class SwapProducts:
    """What a finished swap left in the object store, and how it went."""

    mezzanine_uri: str
    mezzanine_sha256: str
    track_uri: str
    track_sha256: str
    frames: int
    fps: float
    duration_s: float
    frames_swapped: int | None = None  # by status (reelfab.faces.report.SwapReport); None: not counted
    frames_held: int | None = None
    frames_lost: int | None = None
    frames_rejected: int | None = None
    rendered: bool = False  # fused mode: mezzanine_uri names the platform-spec render


def swap_completed(
    job: SwapRequested,
    products: SwapProducts,
    choice: ModelChoice,
    *,
    consent_version: int | None,
    producer: str,
    event_id: str,
    occurred_at: datetime,
) -> SwapCompleted:
    """The swap.completed record: the job's lineage and delivery fields carried over (the commercial
    flag included, so the post-producer checks consent for the same use), what the swap made, the model
    and its licence, and the consent version the consuming check allowed (else the job's)."""
    return SwapCompleted(
        event_id=event_id, occurred_at=occurred_at, producer=producer, trace_id=job.trace_id, job_id=job.job_id,
        subject_id=job.subject_id, consent_version=consent_version or job.consent_version,
        mezzanine_uri=products.mezzanine_uri, mezzanine_sha256=products.mezzanine_sha256,
        face_track_uri=products.track_uri, face_track_sha256=products.track_sha256,
        backend=choice.backend, swapper_model=choice.model, model_license=choice.licence,
        commercial_use_allowed=choice.commercial_use, frames=products.frames, fps=products.fps,
        duration_s=products.duration_s, template_id=job.template_id, template_tags=list(job.template_tags),
        source_image_sha256=job.source_image_sha256, platform=job.platform, music_uri=job.music_uri,
        caption_text=job.caption_text, caption_style=job.caption_style, trend_id=job.trend_id, arm_id=job.arm_id,
        template_uri=job.template_uri, template_sha256=job.template_sha256, commercial=job.commercial,
        frames_swapped=products.frames_swapped, frames_held=products.frames_held, frames_lost=products.frames_lost,
        frames_rejected=products.frames_rejected, rendered=products.rendered,
    )


# ------------------------------------------------------------------------------------ capacity


def jobs_that_fit(budget_bytes: int, per_job_bytes: int, hard_max: int = 8) -> int:
    """Concurrent jobs within the memory budget (GPU memory on GPU, RAM on CPU); at least one."""
    return max(1, min(hard_max, budget_bytes // max(per_job_bytes, 1)))


def per_job_bytes(width: int, height: int, batch_size: int, overhead_bytes: int = 300 * 2**20) -> int:
    """A job holds about three copies of a batch (decoded, swapped, queued for the encoder) plus the
    engine's working set."""
    return 3 * batch_size * width * height * 3 + overhead_bytes
