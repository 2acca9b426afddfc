"""Scoring a face swap of a hard clip (``synthetic.hard``) against the clip's ground truth.

A swap can fail in ways a glance at a few frames misses: the output keeps the performer's identity, the
swap lands on a drawing on the shirt or on the hand in front of the mouth, the performer's own face
shows through where the tracker let go, the landmarks shiver on a still head, the face flickers, or its
brightness stops following the scene's light. ``score_clip`` measures each of these from the input
frames, the outputs and the truth, with nothing but the engine's own detector and embedder:

- identity: on sampled frames (face well visible, sharp, found in the input), the output's face is
  embedded and compared with the source and with the performer (a frontal, evenly lit render of them);
- edits: per pixel, output vs input (max over channels of the absolute difference above 16 levels);
  an edit outside the performer's face (its polygon dilated by a quarter of the face size), or on the
  occluder where it covers the face, is an edit where no swap belongs;
- the performer showing: a well visible, sharp face left as it was (mean difference over the face core
  under 2 levels);
- jitter and flicker on still frames, and how the output's face brightness follows the input's.

``ClipScore.row`` prints the result on one line; tests and the robustness report assert on the fields."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import Embedding, Face, FaceEngine, SourceFace, best_face

from .synthetic.hard import FrameTruth, HardClip
from .synthetic.person import virtual_person

CHANGED = 16  # levels: a pixel whose channels all moved less than this is untouched
OFF_FACE_PIXELS = 40  # changed pixels outside the face that make a frame an off-face edit
FACE_MARGIN = 0.25  # the face polygon is dilated by this share of the face size (its box's long side)
OCCLUDER_ERODE = 3  # pixels: the occluder's edge (blended, anti-aliased) is not counted
OCCLUDER_SHARE = 0.03  # share of the covered face's area changed that makes an edit on the occluder
SHOWING_SHARE = 0.7  # a face at least this visible ...
SHOWING_DIFF = 2.0  # ... whose core changed less than this (mean levels) shows the performer
CORE_ERODE = 0.15  # the face core: the polygon shrunk by this share of the face size (half on each side)
SAMPLE_SHARE = 0.8  # identity is sampled on frames with at least this share of the face visible
SAME_BOX_IOU = 0.3


@dataclass
class ClipScore:
    """How a swap of one hard clip went; counts are frames."""

    name: str
    frames: int
    sampled: int  # frames measured for identity
    closer_to_source: float  # share of sampled frames whose output face is nearer the source (0 if none)
    off_face: int  # frames with an edit outside the performer's face (dilated polygon) or on the occluder
    on_occluder: int  # of which: edits on the occluder where it covers the face
    performer_showing: int  # frames with the performer's face well visible and sharp but left unswapped
    jitter_px: float | None  # still frames: RMS deviation of the tracked points from their per-point mean
    flicker: float | None  # still frames: output's mean |dL| of the face core, less the input's (>= 0)
    light_follow: float | None  # swapped frames: mean |dL_out - dL_in| of the face core, frame to frame

    def row(self) -> str:
        def opt(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        return (
            f"{self.name:<12} frames {self.frames:4d}  identity {self.closer_to_source:4.0%} of {self.sampled:3d}  "
            f"off-face {self.off_face:3d} (occluder {self.on_occluder:3d})  performer showing "
            f"{self.performer_showing:3d}  jitter {opt(self.jitter_px, '.2f')} px  flicker "
            f"{opt(self.flicker, '.2f')}  light {opt(self.light_follow, '.2f')}"
        )


_REFERENCES: dict[tuple[str, int], Embedding] = {}


def performer_reference(engine: FaceEngine, performer_seed: int) -> Embedding:
    """The performer's embedding from a frontal, evenly lit render of them (kept per embedder)."""
    key = (engine.embedder, performer_seed)
    if key not in _REFERENCES:
        portrait = virtual_person(performer_seed, size=512)
        face = best_face(engine.detect(portrait))
        if face is None:
            raise ValueError(f"no face found in the reference portrait of person {performer_seed}")
        _REFERENCES[key] = engine.embed(portrait, face)
    return _REFERENCES[key]


def score_clip(
    engine: FaceEngine,
    source: SourceFace,
    clip: HardClip,
    outputs: Sequence[NDArray[Any]],
    track: Sequence[Face | None] | None = None,
    *,
    sample_every: int = 3,
) -> ClipScore:
    """Score ``outputs`` (a swap of ``clip.frames`` onto ``source``, frame for frame) against the clip's
    truth; ``track`` (the face the swap used in each frame) gives the jitter."""
    if len(outputs) != len(clip.frames):
        raise ValueError(f"{len(outputs)} output frames for a clip of {len(clip.frames)}")
    if track is not None and len(track) != len(clip.frames):
        raise ValueError(f"a track of {len(track)} faces for a clip of {len(clip.frames)} frames")
    if sample_every < 1:
        raise ValueError(f"sample_every must be at least 1, not {sample_every}")
    performer = performer_reference(engine, clip.performer_seed)
    off_face = on_occluder = showing = sampled = closer = 0
    candidates = 0
    core_in: list[float | None] = []
    core_out: list[float | None] = []
    swapped: list[bool] = []
    for frame, out, truth in zip(clip.frames, outputs, clip.truth, strict=True):
        if out.shape != frame.shape:
            raise ValueError(f"an output frame of shape {out.shape} for an input of {frame.shape}")
        masks = _Masks(truth, frame.shape[1], frame.shape[0])
        b, g, r = cv2.split(cv2.absdiff(out, frame))
        changed = cv2.max(cv2.max(b, g), r) > CHANGED
        outside = int(np.count_nonzero(changed & ~masks.dilated)) > OFF_FACE_PIXELS
        covered = masks.covered_face
        on_occ = False
        if covered is not None:
            area = int(np.count_nonzero(covered))
            on_occ = area > 0 and int(np.count_nonzero(changed & covered)) > OCCLUDER_SHARE * area
        off_face += outside or on_occ
        on_occluder += on_occ
        diff = _core_diff(frame, out, masks.core)
        done = diff is not None and diff >= SHOWING_DIFF
        swapped.append(done)
        if diff is not None and truth.visible_share >= SHOWING_SHARE and truth.blur_px == 0 and not done:
            showing += 1
        core_in.append(_core_lightness(frame, masks.core))
        core_out.append(_core_lightness(out, masks.core))
        if truth.face_polygon is not None and truth.visible_share >= SAMPLE_SHARE and truth.blur_px == 0:
            candidates += 1
            if (candidates - 1) % sample_every == 0:
                verdict = _closer_to_source(engine, source, performer, frame, out, truth.face_polygon)
                if verdict is not None:
                    sampled += 1
                    closer += verdict
    still = [i for i, t in enumerate(clip.truth) if t.static]
    return ClipScore(
        name=clip.name,
        frames=len(clip.frames),
        sampled=sampled,
        closer_to_source=closer / sampled if sampled else 0.0,
        off_face=off_face,
        on_occluder=on_occluder,
        performer_showing=showing,
        jitter_px=None if track is None else _jitter([track[i] for i in still]),
        flicker=_flicker(still, core_in, core_out),
        light_follow=_light_follow(swapped, core_in, core_out),
    )


class _Masks:
    """The truth's regions as frame-sized boolean masks."""

    def __init__(self, truth: FrameTruth, w: int, h: int) -> None:
        poly = truth.face_polygon
        self.occluder: NDArray[Any] = np.zeros((h, w), bool)
        if truth.occluder_polygon is not None and len(truth.occluder_polygon) >= 3:
            occ = np.zeros((h, w), np.uint8)
            cv2.fillPoly(occ, [_fixed(truth.occluder_polygon)], 1, cv2.LINE_8, shift=4)
            self.occluder = occ.astype(bool)
        self.face: NDArray[Any] = np.zeros((h, w), bool)
        self.dilated: NDArray[Any] = np.zeros((h, w), bool)
        self.core: NDArray[Any] | None = None
        self.covered_face: NDArray[Any] | None = None
        if poly is None:
            return
        size = float(max(np.ptp(poly[:, 0]), np.ptp(poly[:, 1])))
        # distances from the polygon (outside) and from its edge (inside), in pixels, on a canvas around
        # it (the polygon may reach past the frame), then cut to the frame
        margin = math.ceil(FACE_MARGIN * size) + 2
        x0, y0 = math.floor(float(poly[:, 0].min())) - margin, math.floor(float(poly[:, 1].min())) - margin
        x1, y1 = math.ceil(float(poly[:, 0].max())) + margin, math.ceil(float(poly[:, 1].max())) + margin
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(local, [_fixed(poly - np.array([x0, y0]))], 1, cv2.LINE_8, shift=4)
        near = cv2.distanceTransform(1 - local, cv2.DIST_L2, 5) <= FACE_MARGIN * size
        depth = cv2.distanceTransform(local, cv2.DIST_L2, 5)
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        inside = np.zeros((h, w), np.float32)
        if fx1 > fx0 and fy1 > fy0:
            cut = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
            self.face[fy0:fy1, fx0:fx1] = local[cut].astype(bool)
            self.dilated[fy0:fy1, fx0:fx1] = near[cut]
            inside[fy0:fy1, fx0:fx1] = depth[cut]
        core = (inside > CORE_ERODE / 2 * size) & ~self.occluder
        self.core = core if core.any() else None
        if self.occluder.any():
            eroded = cv2.erode(self.occluder.astype(np.uint8), np.ones((2 * OCCLUDER_ERODE + 1,) * 2, np.uint8))
            self.covered_face = eroded.astype(bool) & self.face


def _fixed(poly: NDArray[Any]) -> NDArray[Any]:
    return np.round(np.asarray(poly, np.float64) * 16).astype(np.int32)


def _core_diff(frame: NDArray[Any], out: NDArray[Any], core: NDArray[Any] | None) -> float | None:
    if core is None:
        return None
    return float(np.abs(out[core].astype(np.int16) - frame[core].astype(np.int16)).mean())


def _core_lightness(img: NDArray[Any], core: NDArray[Any] | None) -> float | None:
    """Mean LAB L (OpenCV's 8-bit scale) over the face core."""
    if core is None:
        return None
    x, y, w, h = cv2.boundingRect(core.astype(np.uint8))
    lab = cv2.cvtColor(img[y : y + h, x : x + w], cv2.COLOR_BGR2LAB)
    return float(lab[..., 0][core[y : y + h, x : x + w]].mean())


def _box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matching(faces: Sequence[Face], box: tuple[float, float, float, float]) -> Face | None:
    """The detection overlapping ``box`` most, if by at least SAME_BOX_IOU."""
    best = max(faces, key=lambda f: _box_iou(f.box, box), default=None)
    return best if best is not None and _box_iou(best.box, box) >= SAME_BOX_IOU else None


def _closer_to_source(
    engine: FaceEngine,
    source: SourceFace,
    performer: Embedding,
    frame: NDArray[Any],
    out: NDArray[Any],
    poly: NDArray[Any],
) -> bool | None:
    """Whether the output's face is nearer the source than the performer; None when the input's face is
    not found where the truth puts it (the frame is not sampled)."""
    box = (float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max()))
    found = _matching(engine.detect(frame), box)
    if found is None:
        return None
    face = _matching(engine.detect(out), box) or engine.refine(out, found)
    embedding = engine.embed(out, face)
    return embedding.distance(source.embedding) < embedding.distance(performer)


def _jitter(faces: Sequence[Face | None]) -> float | None:
    """RMS distance of the tracked points from their per-point mean over the still frames."""
    present = [f for f in faces if f is not None]
    if len(present) < 2:
        return None
    if all(f.landmarks68 is not None for f in present):
        points = np.stack([np.asarray(f.landmarks68, np.float64) for f in present])
    else:
        points = np.stack([np.asarray(f.kps5, np.float64) for f in present])
    deviation = points - points.mean(axis=0, keepdims=True)
    return float(np.sqrt((deviation**2).sum(axis=2).mean()))


def _flicker(still: Sequence[int], core_in: Sequence[float | None], core_out: Sequence[float | None]) -> float | None:
    """Mean |dL| of the output's face core between consecutive still frames, less the input's (>= 0)."""
    steps_in, steps_out = [], []
    for i, j in zip(still, still[1:], strict=False):
        a_in, b_in, a_out, b_out = core_in[i], core_in[j], core_out[i], core_out[j]
        if j != i + 1 or a_in is None or b_in is None or a_out is None or b_out is None:
            continue
        steps_in.append(abs(b_in - a_in))
        steps_out.append(abs(b_out - a_out))
    if not steps_in:
        return None
    return max(0.0, float(np.mean(steps_out) - np.mean(steps_in)))


def _light_follow(
    swapped: Sequence[bool], core_in: Sequence[float | None], core_out: Sequence[float | None]
) -> float | None:
    """Mean |dL_out - dL_in| of the face core between consecutive swapped frames."""
    steps = []
    for i in range(len(swapped) - 1):
        a_in, b_in, a_out, b_out = core_in[i], core_in[i + 1], core_out[i], core_out[i + 1]
        if not (swapped[i] and swapped[i + 1]) or a_in is None or b_in is None or a_out is None or b_out is None:
            continue
        steps.append(abs((b_out - a_out) - (b_in - a_in)))
    return float(np.mean(steps)) if steps else None
