"""What every delivered video is rendered with and tagged with, decided once for whichever service
encodes it: the post-producer, or the swapper in fused mode (reelfab_swapper_gpu.swap.RenderOrder)."""

from __future__ import annotations

from reelfab.media.render import RenderSpec
from reelfab.settings import Settings

AI_COMMENT = "AI-generated: face swapped with consent (Reelfab)"


def render_spec(settings: Settings) -> RenderSpec:
    """The platform render as this deployment configures it."""
    return RenderSpec(reframe=settings.render_reframe, label_position=settings.render_label_position,  # type: ignore[arg-type]
                      loudness_lufs=settings.render_loudness_lufs)


def render_metadata(job_id: str, consent_version: int) -> dict[str, str]:
    """Container tags of the rendered file: whose job, under which consent, and that it is AI-generated."""
    return {"job_id": job_id, "consent_version": str(consent_version), "ai_generated": "true", "comment": AI_COMMENT}
