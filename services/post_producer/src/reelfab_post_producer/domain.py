"""Pure decisions of the post-producer: which consent question a job asks (its commercial flag), what
a consent outcome turns into (the job.failed reason), what the post says (title, hashtags), what the
video carries (container metadata, C2PA ingredients), and the RenderCompleted that announces it.
No I/O here: the workflow (usecase.py) asks the ports and hands the answers to these functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from reelfab.consent.decision import Decision
from reelfab.contracts.generated.records import RenderCompleted
from reelfab.errors import PermanentError
from reelfab.identifiers import key_segment
from reelfab.media.spec_check import SpecCheck
from reelfab.media.titles import title_and_hashtags

PURPOSE = "render"  # what the post-producer asks consent for
CONSENT = "consent."  # reason codes of jobs stopped by consent start with this
WITHDRAWN_STATUSES = frozenset({"REVOKED", "ERASED"})  # a lease in these takes the subject's rendered media


class SwapJob(Protocol):
    """What the post-producer reads of a SwapCompleted (the generated record, or any object alike)."""

    @property
    def trace_id(self) -> str | None: ...
    @property
    def job_id(self) -> str: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def consent_version(self) -> int: ...
    @property
    def mezzanine_uri(self) -> str: ...
    @property
    def mezzanine_sha256(self) -> str: ...
    @property
    def face_track_uri(self) -> str: ...
    @property
    def face_track_sha256(self) -> str: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def template_id(self) -> str: ...
    @property
    def template_tags(self) -> Sequence[str]: ...
    @property
    def template_sha256(self) -> str | None: ...
    @property
    def trend_tags(self) -> Sequence[str]: ...
    @property
    def source_image_sha256(self) -> str: ...
    @property
    def platform(self) -> str: ...
    @property
    def music_uri(self) -> str | None: ...
    @property
    def caption_text(self) -> str | None: ...
    @property
    def arm_id(self) -> str | None: ...
    @property
    def commercial(self) -> bool | None: ...
    @property
    def rendered(self) -> bool: ...


# ------------------------------------------------------------------------------ the commercial flag


def checked_as_commercial(flag: bool | None) -> bool:
    """The commercial question the consent check asks: the job's own flag; unknown (a swapper older
    than the field) asks the stricter question, as commercial."""
    return True if flag is None else flag


def announced_commercial(flag: bool | None) -> bool | None:
    """What RenderCompleted.commercial carries: the job's flag as it came; null stays null (the
    publisher then asks the stricter question too), never a guess."""
    return flag


# ------------------------------------------------------------------------------ consent outcomes


@dataclass(frozen=True)
class Failure:
    """A decision that ends the job: job.failed's reason code and text."""

    reason_code: str
    detail: str

    @property
    def purges_media(self) -> bool:
        """A job stopped by consent loses its media (the swapped video, the track, the job's copies
        of the face) now, not at retention's pace."""
        return self.reason_code.startswith(CONSENT)


def denied(decision: Decision) -> Failure:
    """Consent denied before rendering (the local view, then the registry)."""
    return Failure(f"{CONSENT}{decision.reason}", decision.detail)


def stopped_while_rendering(reason: str, detail: str) -> Failure:
    """A withdrawal the view took in while ffmpeg ran: the render was killed."""
    return Failure(f"{CONSENT}{reason}", f"{detail}: the render stopped")


def denied_after_rendering(decision: Decision) -> Failure:
    """Consent asked again once the video was rendered and signed, and refused: the output goes."""
    return Failure(f"{CONSENT}{decision.reason}",
                   f"{decision.detail} (checked after rendering: the output was deleted)")


def withdrawn_before_announcing(reason: str, detail: str) -> Failure:
    """A withdrawal the view took in while the final file was stored: it goes, nothing is announced."""
    return Failure(f"{CONSENT}{reason}", f"{detail} (after rendering: the output was deleted)")


def takes_rendered_media(status: str) -> bool:
    """Whether a lease in ``status`` removes what was already rendered from the subject's face."""
    return status in WITHDRAWN_STATUSES


# ------------------------------------------------------------------------------ what the video carries


class SpecCheckFailed(PermanentError):
    """The rendered file misses the platform spec: a failure, not a warning."""


@dataclass(frozen=True)
class PostText:
    title: str
    hashtags: tuple[str, ...]


def post_text(job: SwapJob) -> PostText:
    """Title and hashtags (the AI disclosure tag first); the subject's name never shows here."""
    title, tags = title_and_hashtags(list(job.template_tags), list(job.trend_tags), None, platform=job.platform)
    return PostText(title, tuple(tags))


def ingredients(job: SwapJob) -> list[dict[str, str]]:
    """The C2PA ingredients: the template (when its sha256 is known) and the subject's source face."""
    face = {"title": f"source face of {job.subject_id}", "sha256": job.source_image_sha256, "format": "image/png",
            "relationship": "componentOf"}
    if not job.template_sha256:
        return [face]
    template = {"title": f"template {job.template_id}", "sha256": job.template_sha256, "format": "video/mp4",
                "relationship": "parentOf"}
    return [template, face]


def final_key(job_id: str) -> str:
    return f"jobs/{key_segment(job_id, 'job_id')}/final.mp4"


def require_spec(check: SpecCheck) -> SpecCheck:
    if not check.passed:
        raise SpecCheckFailed(f"rendered file fails the platform spec: {'; '.join(check.problems)}")
    return check


def require_swapper_render(check: SpecCheck, job: SwapJob, label: str | None) -> SpecCheck:
    """A video the swapper rendered (fused mode) must also say whose job it is and that it is
    AI-generated, as the post-producer's own render would have tagged it, and show the visible label
    (``label``: what is wrong with it, from the picture): a file for another job, or one without the
    label in its picture, is never signed."""
    tags = check.metadata
    wrong = [f"{key}={tags.get(key)!r}, not {want!r}" for key, want in
             (("job_id", job.job_id), ("ai_generated", "true")) if tags.get(key) != want]
    if wrong:
        raise SpecCheckFailed(f"the swapper's render of {job.job_id} is not tagged as the job's AI-generated video: {'; '.join(wrong)}")
    if label is not None:
        raise SpecCheckFailed(f"the swapper's render of {job.job_id}: {label}")
    return check


def spec_record(check: SpecCheck) -> dict[str, Any]:
    return {"passed": check.passed, "width": check.width, "height": check.height, "fps": check.fps,
            "video_codec": check.video_codec, "video_profile": check.video_profile, "pix_fmt": check.pix_fmt,
            "audio_codec": check.audio_codec, "sample_rate": check.sample_rate, "duration_s": check.duration_s,
            "problems": list(check.problems)}


# ------------------------------------------------------------------------------ the announcement


@dataclass(frozen=True)
class Outputs:
    """What the workflow made: the stored final file, its spec check, its C2PA manifest, its text,
    and when it was complete with its consent verified (the event's time)."""

    final_uri: str
    final_sha256: str
    check: SpecCheck
    manifest_label: str
    text: PostText
    finished_at: datetime


def render_completed(job: SwapJob, outputs: Outputs, decision: Decision, *, event_id: str,
                     producer: str) -> RenderCompleted:
    """The RenderCompleted record for ``job``: the consent version the last check allowed under (or the
    job's), the job's commercial flag carried as it came."""
    return RenderCompleted.model_validate({
        "event_id": event_id, "occurred_at": outputs.finished_at, "producer": producer, "trace_id": job.trace_id,
        "job_id": job.job_id, "subject_id": job.subject_id,
        "consent_version": decision.consent_version or job.consent_version,
        "final_uri": outputs.final_uri, "final_sha256": outputs.final_sha256, "spec_check": spec_record(outputs.check),
        "c2pa_manifest_label": outputs.manifest_label, "title": outputs.text.title,
        "hashtags": list(outputs.text.hashtags), "platform": job.platform, "is_aigc": True,
        "template_id": job.template_id, "template_tags": list(job.template_tags), "arm_id": job.arm_id, "commercial": announced_commercial(job.commercial),
    })
