"""Is the visible "AI-generated" label burnt into a rendered video, where the render spec puts it?

A container tag says nothing about the picture: any ffmpeg can write ``ai_generated=true``. Before the
post-producer signs a video it did not render itself (the swapper's fused mode), it looks at the
picture: the first frame after the fade-in (cheap to reach: a short decode from the start) is compared
with the label drawn alone by the same ``drawtext`` filter on black (drawn once per spec and kept).
One frame catches a swapper configured without the label, or with it elsewhere, and a file made
without it; one forged to show the label in that frame only would take write access to both the
object store and the swap.completed topic. The glyphs are opaque white, so the pixels inside them
must be near white whatever the video shows, and the box around them (black at 45 %) must be clearly
darker than the glyphs. A video without the label fails both on almost any picture; one that passes
shows the label's text at the label's place, which is the point."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.render import RenderSpec, label_filter
from reelfab.media.tools import tool

GLYPH_LUMA = 170  # a glyph pixel is at least this bright (white, after x264 at the delivery crf)
GLYPH_SHARE = 0.9  # ... in this share of the glyphs' inner pixels
MIN_CONTRAST = 40  # the glyphs' median luma over the surrounding box's, at least


def label_problem(path: Path, spec: RenderSpec, duration_s: float) -> str | None:
    """``None`` when ``path`` shows the spec's label (or the spec has none); else what is missing."""
    if not spec.label_text:
        return None
    (y0, x0), inner, around = _label_masks(spec)
    at = min(spec.fade_in_s + 0.1, max(duration_s / 2, 0.0))  # shown in full, and early: a short decode
    frame = _gray(["-ss", f"{at:.3f}", "-i", str(path)], spec, str(path))
    region = frame[y0 : y0 + inner.shape[0], x0 : x0 + inner.shape[1]]
    lit = float(np.mean(region[inner] >= GLYPH_LUMA))
    contrast = float(np.median(region[inner])) - float(np.median(region[around]))
    if lit >= GLYPH_SHARE and contrast >= MIN_CONTRAST:
        return None
    return (f"the visible label {spec.label_text!r} is not in the picture at the {spec.label_position} corner "
            f"({lit:.0%} of its glyph pixels lit, contrast {contrast:.0f} against its box)")


@functools.lru_cache(maxsize=8)
def _label_masks(spec: RenderSpec) -> tuple[tuple[int, int], NDArray[Any], NDArray[Any]]:
    """Where the label is: the corner of the region around it, the glyphs' inner pixels in that region
    and the ring of box around them (drawn once per spec)."""
    assert spec.label_text
    expected = _gray(["-f", "lavfi", "-i", f"color=c=black:s={spec.width}x{spec.height}:r={spec.fps}:d=1",
                      "-vf", label_filter(spec.label_text, spec)], spec, "the label drawn alone")
    glyphs = expected > 200
    if glyphs.sum() < 20:
        raise MediaError(f"the label {spec.label_text!r} drew no glyphs: check the font ({spec.label_font_file})")
    ys, xs = np.nonzero(glyphs)
    pad = 8
    y0, x0 = max(int(ys.min()) - pad, 0), max(int(xs.min()) - pad, 0)
    crop = glyphs[y0 : int(ys.max()) + pad + 1, x0 : int(xs.max()) + pad + 1]
    return (y0, x0), _shrink(crop, 1), _grow(crop, 4) & ~_grow(crop, 2)


def _gray(args: list[str], spec: RenderSpec, what: str) -> NDArray[Any]:
    command = [tool("ffmpeg"), "-nostdin", "-v", "error", *args, "-frames:v", "1",
               "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    try:
        proc = children.run(command, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{what}: ffmpeg timed out reading a frame") from None
    want = spec.width * spec.height
    if proc.returncode != 0 or len(proc.stdout) != want:
        detail = proc.stderr.decode(errors="replace").strip()[-300:] or f"{len(proc.stdout)} bytes, not {want}"
        raise MediaError(f"{what}: no {spec.width}x{spec.height} frame to look for the label in ({detail})")
    return np.frombuffer(proc.stdout, np.uint8).reshape(spec.height, spec.width)


def _shrink(mask: NDArray[Any], steps: int) -> NDArray[Any]:
    out = mask.copy()
    for _ in range(steps):
        out[1:, :] &= out[:-1, :].copy()
        out[:-1, :] &= out[1:, :].copy()
        out[:, 1:] &= out[:, :-1].copy()
        out[:, :-1] &= out[:, 1:].copy()
    return out


def _grow(mask: NDArray[Any], steps: int) -> NDArray[Any]:
    out = mask.copy()
    for _ in range(steps):
        out[1:, :] |= out[:-1, :].copy()
        out[:-1, :] |= out[1:, :].copy()
        out[:, 1:] |= out[:, :-1].copy()
        out[:, :-1] |= out[:, 1:].copy()
    return out
