"""Is the visible "AI-generated" label burnt into a rendered video, where the render spec puts it?

A container tag says nothing about the picture: any ffmpeg can write ``ai_generated=true``. Before the
post-producer signs a video it did not render itself (the swapper's fused mode), it looks at the
picture: one frame from the middle of the clip (clear of the fades) is compared with the label drawn
alone by the same ``drawtext`` filter on black. The glyphs are opaque white, so the pixels inside them
must be near white whatever the video shows, and the box around them (black at 45 %) must be clearly
darker than the glyphs. A video without the label fails both on almost any picture; one that passes
shows the label's text at the label's place, which is the point."""

from __future__ import annotations

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
    size = f"{spec.width}x{spec.height}"
    expected = _gray(["-f", "lavfi", "-i", f"color=c=black:s={size}:r={spec.fps}:d=1",
                      "-vf", label_filter(spec.label_text, spec)], spec, "the label drawn alone")
    glyphs = expected > 200
    if glyphs.sum() < 20:
        raise MediaError(f"the label {spec.label_text!r} drew no glyphs: check the font ({spec.label_font_file})")
    frame = _gray(["-ss", f"{max(duration_s / 2, 0.0):.3f}", "-i", str(path)], spec, str(path))
    inner = _shrink(glyphs, 1)
    around = _grow(glyphs, 4) & ~_grow(glyphs, 2)
    lit = float(np.mean(frame[inner] >= GLYPH_LUMA))
    contrast = float(np.median(frame[inner])) - float(np.median(frame[around]))
    if lit >= GLYPH_SHARE and contrast >= MIN_CONTRAST:
        return None
    return (f"the visible label {spec.label_text!r} is not in the picture at the {spec.label_position} corner "
            f"({lit:.0%} of its glyph pixels lit, contrast {contrast:.0f} against its box)")


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
