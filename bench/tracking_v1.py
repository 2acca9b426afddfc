"""The tracker as it was before identity-aware tracking (commit 143a129), kept unchanged as the
baseline bench/faces.py measures the current one against. Not used by the factory.

Following one face through a clip with any ``FaceEngine``, and swapping a stream of frames.

Detection is the expensive step, so it runs every ``detect_every`` frames on a reduced frame (at
``detect_scale``; once a face is followed, at the scale that makes it about 100 px, enough for the
detector); in between, the engine re-fits the landmarks from the previous frame's (``refine``). The face
is chosen by detector score, and kept while the detector still sees it about as well as anything else.
Landmarks are smoothed with a One-Euro filter (steady when the face is still, little lag when it moves),
so the swapped face does not jitter. A track is dropped when refine's score falls to ``min_score``,
when the face jumps or changes size implausibly between frames, when its region stops looking like the
previous frame's, or when the detector has not seen it for ``max_unseen`` frames; then the detector
runs at once, and on every frame until a face is found again."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import Face, FaceEngine, SourceFace, best_face

MAX_JUMP = 0.5  # a face's centre moves at most this share of its size from one frame to the next
MAX_GROWTH = 1.5  # ... and its size changes at most by this factor
MIN_INSIDE = 0.5  # a face with less than this share of its box inside the frame is lost
SAME_FACE_IOU = 0.3  # a detection overlapping the tracked face this much is the tracked face
KEEP_SHARE = 0.5  # ... and is kept while its score is at least this share of the best detection's
DETECT_FACE_PX = 100  # a followed face is looked for at the scale that makes it this large (HOG: >= 80)
MIN_DETECT_SCALE = 0.25
CHIP = 24  # side of the grey patch compared between frames (aligned on the eyes and mouth)


@dataclass(frozen=True)
class Smoothing:
    """One-Euro filter settings. Cutoffs in Hz; ``beta`` in Hz per (face size per second), so one
    setting works at any resolution. Lower ``min_cutoff``: steadier still faces; higher ``beta``: less
    lag on moving ones."""

    min_cutoff: float = 1.5
    beta: float = 8.0
    d_cutoff: float = 1.0


SMOOTHING = Smoothing()


class FaceTracker:
    """Feed frames in order to ``track``; it returns the face to swap in each (``None``: leave the
    frame as it is). ``max_unseen``: frames a face is followed without the detector seeing it (it
    misses turned heads) before the track is dropped; ``min_appearance``: the correlation under which
    the face region no longer looks like the previous frame's."""

    def __init__(
        self,
        engine: FaceEngine,
        *,
        detect_every: int = 5,
        detect_scale: float = 0.75,
        smoothing: Smoothing | None = SMOOTHING,
        fps: float = 25.0,
        min_score: float = 0.0,
        max_unseen: int = 25,
        min_appearance: float = 0.5,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {detect_every}")
        self.engine = engine
        self.detect_every = detect_every
        self.detect_scale = detect_scale
        self.min_score = min_score
        self.max_unseen = max_unseen
        self.min_appearance = min_appearance
        self._filter = _OneEuro(smoothing, fps) if smoothing else None
        self._face: Face | None = None  # the last measured (unsmoothed) face
        self._chip: NDArray[Any] | None = None  # its appearance
        self._since_detect = 0
        self._since_seen = 0  # frames since the detector last found the face

    def track(self, frame: NDArray[Any]) -> Face | None:
        self._since_detect += 1
        self._since_seen += 1
        if self._face is None or self._since_detect >= self.detect_every:
            face = self._detect(frame)
            if face is None and self._face is not None and self._since_seen <= self.max_unseen:
                face = self._refine(frame)  # the detector misses turned heads: keep following
        else:
            face = self._refine(frame)
            if face is None:  # lost between detections: look again now
                face = self._detect(frame)
        if face is None:
            self._face = self._chip = None
            if self._filter:
                self._filter.reset()
            return None
        self._face = face
        return self._filter(face) if self._filter else face

    def _detect(self, frame: NDArray[Any]) -> Face | None:
        self._since_detect = 0
        previous = self._face
        scale = self.detect_scale
        if previous is not None:  # the face's size is known: no larger than needed to find it again
            scale = min(scale, max(DETECT_FACE_PX / max(previous.size, 1.0), MIN_DETECT_SCALE))
        small = (
            frame
            if scale == 1
            else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        )
        faces = [f.scaled(1 / scale) for f in self.engine.detect(small)]
        chosen = best_face(faces)
        if chosen is None:
            return None
        # keep following the same person while the detector still sees them about as well
        if previous is not None:
            same = [f for f in faces if _iou(f.box, previous.box) >= SAME_FACE_IOU]
            if same and max(f.score for f in same) >= KEEP_SHARE * chosen.score:
                chosen = max(same, key=lambda f: f.score)
            elif self._filter:
                self._filter.reset()  # another face: do not smooth from the old one's landmarks
        if scale != 1:  # landmarks at full resolution, the detector's box and score
            refined = self.engine.refine(frame, chosen)
            if refined.score > self.min_score:
                chosen = replace(refined, box=chosen.box, score=chosen.score)
        self._chip = _chip(frame, chosen)
        self._since_seen = 0
        return chosen

    def _refine(self, frame: NDArray[Any]) -> Face | None:
        previous = self._face
        assert previous is not None
        face = self.engine.refine(frame, previous)
        chip = _chip(frame, face)
        if (
            face.score <= self.min_score
            or not _plausible_move(previous, face, frame.shape[1], frame.shape[0])
            or self._chip is None
            or _correlation(self._chip, chip) < self.min_appearance
        ):
            return None
        self._chip = chip
        return face


def swap_stream(
    engine: FaceEngine,
    source: SourceFace,
    frames: Iterable[NDArray[Any]],
    *,
    detect_every: int = 5,
    batch_size: int = 8,
    detect_scale: float = 0.75,
    smoothing: Smoothing | None = SMOOTHING,
    fps: float = 25.0,
) -> Iterator[tuple[NDArray[Any], Face | None]]:
    """Track the face through ``frames`` and swap ``source`` onto it, ``batch_size`` frames at a
    time; yields each swapped frame, in order, with the face used (``None``: the frame unchanged).
    At most one batch of frames is held at a time."""
    tracker = FaceTracker(
        engine, detect_every=detect_every, detect_scale=detect_scale, smoothing=smoothing, fps=fps
    )
    batch: list[NDArray[Any]] = []
    faces: list[Face | None] = []
    for frame in frames:
        batch.append(frame)
        faces.append(tracker.track(frame))
        if len(batch) == batch_size:
            yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)
            batch, faces = [], []
    if batch:
        yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)


class _OneEuro:
    """A One-Euro filter over all of a face's points at once (box corners, 5 points, 68 landmarks):
    one cutoff for the whole face, from its mean speed, so the points move together and the face
    keeps its shape."""

    def __init__(self, settings: Smoothing, fps: float) -> None:
        self.settings = settings
        self.period = 1.0 / fps
        self.reset()

    def reset(self) -> None:
        self._points: NDArray[Any] | None = None
        self._speed = 0.0

    def __call__(self, face: Face) -> Face:
        points = _stack(face)
        if self._points is None or self._points.shape != points.shape:
            self._points = points
            return face
        s = self.settings
        step = points - self._points
        # speed in face sizes per second, so the filter does not depend on resolution
        speed = float(np.linalg.norm(step, axis=1).mean()) / max(face.size, 1.0) / self.period
        self._speed += self._alpha(s.d_cutoff) * (speed - self._speed)
        self._points = self._points + self._alpha(s.min_cutoff + s.beta * self._speed) * step
        return _unstack(face, self._points)

    def _alpha(self, cutoff: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.period)


def _stack(face: Face) -> NDArray[Any]:
    box = np.array(face.box, np.float32).reshape(2, 2)
    parts = [box, face.kps5.astype(np.float32)]
    if face.landmarks68 is not None:
        parts.append(face.landmarks68.astype(np.float32))
    return np.concatenate(parts)


def _unstack(face: Face, points: NDArray[Any]) -> Face:
    x0, y0, x1, y1 = (float(v) for v in points[:2].reshape(-1))
    landmarks = points[7:].astype(np.float32) if face.landmarks68 is not None else None
    return Face((x0, y0, x1, y1), face.score, points[2:7].astype(np.float32), landmarks)


def _plausible_move(before: Face, after: Face, width: int, height: int) -> bool:
    bc = np.array([(before.box[0] + before.box[2]) / 2, (before.box[1] + before.box[3]) / 2])
    ac = np.array([(after.box[0] + after.box[2]) / 2, (after.box[1] + after.box[3]) / 2])
    growth = after.size / max(before.size, 1e-6)
    inside_w = max(0.0, min(after.box[2], width) - max(after.box[0], 0))
    inside_h = max(0.0, min(after.box[3], height) - max(after.box[1], 0))
    inside = inside_w * inside_h / max(after.width * after.height, 1e-6)
    return bool(
        np.linalg.norm(ac - bc) <= MAX_JUMP * before.size
        and 1 / MAX_GROWTH <= growth <= MAX_GROWTH
        and inside >= MIN_INSIDE
    )


def _chip(frame: NDArray[Any], face: Face) -> NDArray[Any]:
    """A small grey patch of the face, aligned on its eyes and mouth: what the face looks like. The
    face's region is first shrunk by area averaging, so that grain and skin texture do not alias."""
    k = face.kps5.astype(np.float32)
    eyes, mouth = (k[0] + k[1]) / 2, (k[3] + k[4]) / 2
    span = float(max(np.linalg.norm(k[1] - k[0]), np.linalg.norm(mouth - eyes)))
    if span < 1:
        return np.zeros((CHIP, CHIP), np.float32)
    h, w = frame.shape[:2]
    x0, y0 = (max(int(v - span), 0) for v in k.min(axis=0))
    x1, y1 = min(int(k[:, 0].max() + span) + 1, w), min(int(k[:, 1].max() + span) + 1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((CHIP, CHIP), np.float32)
    shrink = min(1.0, CHIP / 2 / span)  # the eyes-to-mouth span becomes about half the chip
    region = frame[y0:y1, x0:x1]
    if shrink < 1:
        size = (max(round((x1 - x0) * shrink), 1), max(round((y1 - y0) * shrink), 1))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    origin = np.array([x0, y0], np.float32)
    src = np.stack([k[0], k[1], mouth]).astype(np.float32)
    src = (src - origin) * np.float32(region.shape[1] / (x1 - x0))
    dst = np.array([[0.25, 0.3], [0.75, 0.3], [0.5, 0.8]], np.float32) * CHIP
    patch = cv2.warpAffine(
        region, cv2.getAffineTransform(src, dst), (CHIP, CHIP), borderMode=cv2.BORDER_REPLICATE
    )
    return cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _correlation(a: NDArray[Any], b: NDArray[Any]) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-6 else 0.0


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
