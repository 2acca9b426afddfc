"""What covers the performer's face (a hand, a microphone, a cup), so that it stays in front of the
swapped face.

The tracker keeps a model of how the performer's face looks: a small chip aligned on the eyes (a
similarity transform, so it follows roll, scale and position), its lightness normalised by the face's
own median and spread (so a light swing is not an occluder), with a per-pixel mean and variance learnt
over the frames. A region of the face that departs from the model by more than ``threshold`` standard
deviations, is large enough, and reaches the face's outline (things in front come in from outside the
face; a shadow of the nose moving with a turn does not) is covered. The model learns only from what is
not covered; the inner mouth is never judged (teeth and tongue come and go)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import Face, Occlusion

CHIP = 48
EYES = np.array([[0.36, 0.32], [0.64, 0.32]], np.float32) * CHIP  # where the eye centres go in the chip
FLOOR = 0.35  # standard deviation never assumed below this (normalised lightness units)
SUSPECT = 0.6  # pixels this far (share of the threshold) from the model are learnt at a tenth of the rate
CORE_RATE = 0.1  # how fast the face's region in the chip follows the landmarks (uncovered frames)
CEILING = 0.8  # ... nor above this: where the face moves most (the mouth talking), a hand still shows
UPPER = np.zeros((CHIP, CHIP), bool)
UPPER[: int(CHIP * 0.55)] = True  # down to about the nose tip


class OcclusionModel:
    """``threshold``: standard deviations from the model that count as covered; ``rate``: how fast
    the model learns (per frame); ``warmup``: frames learnt before anything is judged; ``min_share``:
    smallest covered share of the face that counts."""

    def __init__(self, *, threshold: float = 3.0, rate: float = 0.25, warmup: int = 4, min_share: float = 0.04) -> None:
        self.threshold = threshold
        self.rate = rate
        self.warmup = warmup
        self.min_share = min_share
        self.reset()

    def reset(self) -> None:
        self._mean: NDArray[Any] | None = None
        self._var: NDArray[Any] | None = None
        self._core: NDArray[Any] | None = None  # the face's region in the chip (share of frames)
        self._seen = 0

    def measure(self, frame: NDArray[Any], face: Face, *, learn: bool = True) -> Occlusion | None:
        """What covers ``face`` in ``frame`` (``None``: nothing, or not judged yet). ``learn``: update
        the model with the uncovered part (not for a face whose place is only predicted)."""
        if face.landmarks68 is None:
            return None
        matrix = _align(face.kps5)
        if matrix is None:
            return None
        chip = cv2.warpAffine(frame, matrix, (CHIP, CHIP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        points = cv2.transform(face.landmarks68.reshape(1, -1, 2).astype(np.float32), matrix)[0]
        core = _core(points)
        if core.sum() < 30:
            return None
        # the face's region in the chip barely moves (the chip follows the eyes), but the landmark fit
        # of a covered lower face goes wherever the occluder takes it: judge on the region learnt while
        # nothing covered the face
        if self._core is not None and self._seen >= self.warmup:
            core = self._core > 0.5
        # the face's own statistics from its upper part (eyes, brows, nose bridge): a hand over the
        # mouth and chin, however large, does not move them
        features = _features(chip, core & UPPER)
        if self._mean is None or self._var is None or self._seen < self.warmup:
            if learn:
                self._learn(features, core)
                if self._core is not None and self._seen > 1:
                    self._core += (core.astype(np.float32) - self._core) / self._seen
            return None
        z = np.sqrt(((features - self._mean) ** 2 / np.clip(self._var, FLOOR**2, CEILING**2)).sum(axis=2))
        covered = self._covered(z, core)
        if covered is not None:  # again, with the face's statistics taken from the uncovered part only
            features = _features(chip, core & ~covered)
            z = np.sqrt(((features - self._mean) ** 2 / np.clip(self._var, FLOOR**2, CEILING**2)).sum(axis=2))
            covered = self._covered(z, core)
        if learn:  # what departs from the model, covered or not yet, is learnt slowly: an occluder
            # coming in is not absorbed before it is large enough to count, and a turn still is
            suspect = z > SUSPECT * self.threshold
            weight = np.where(suspect, 0.1, 1.0).astype(np.float32) * core
            if covered is not None:
                weight[covered] = 0.0
            self._learn(features, weight)
            if covered is None and self._core is not None:
                self._core += CORE_RATE * (_core(points).astype(np.float32) - self._core)
        if covered is None:
            return None
        return _to_frame(covered, matrix, frame.shape[1], frame.shape[0])

    def _covered(self, z: NDArray[Any], core: NDArray[Any]) -> NDArray[Any] | None:
        over = (cv2.GaussianBlur(z.astype(np.float32), (0, 0), 1.0) > self.threshold) & core
        over = cv2.morphologyEx(over.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        if not over.any():
            return None
        edge = core & ~cv2.erode(core.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(over.astype(np.uint8), connectivity=8)
        keep = np.zeros_like(over)
        minimum = self.min_share * float(core.sum())
        for label in range(1, count):
            blob = labels == label
            if stats[label, cv2.CC_STAT_AREA] >= minimum and (blob & edge).any():
                keep |= blob
        return keep if keep.any() else None

    def _learn(self, features: NDArray[Any], where: NDArray[Any]) -> None:
        """Update the model, each pixel weighted by ``where`` (bool or 0..1)."""
        if self._mean is None or self._var is None:
            self._core = (np.asarray(where, np.float32) > 0).astype(np.float32)
            self._mean = features.copy()
            self._var = np.full_like(features, FLOOR**2)
            self._seen = 1
            return
        rate = max(self.rate, 1.0 / (self._seen + 1))  # the first frames count fully, then a steady rate
        w = (np.asarray(where, np.float32)[..., None] * rate).astype(np.float32)
        delta = features - self._mean
        self._mean += w * delta
        self._var = (1 - w) * self._var + w * delta**2
        self._seen += 1


def _align(kps5: NDArray[Any]) -> NDArray[Any] | None:
    """The similarity taking the eye centres to EYES (frame -> chip), or ``None`` for a degenerate face."""
    eyes = kps5[:2].astype(np.float32)
    if float(np.linalg.norm(eyes[1] - eyes[0])) < 4:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(eyes, EYES)
    return matrix


def _core(points: NDArray[Any]) -> NDArray[Any]:
    """The face (jaw line up to the brows) less the inner mouth, as a bool (CHIP, CHIP) mask."""
    mask = np.zeros((CHIP, CHIP), np.uint8)
    outline = np.concatenate([points[0:17], points[26:16:-1]])
    cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    mouth = cv2.convexHull(np.round(points[60:68] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, mouth, 0, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _features(chip: NDArray[Any], where: NDArray[Any]) -> NDArray[Any]:
    """(CHIP, CHIP, 3) float32: lightness and the two colour axes, each relative to the face's median
    within ``where`` and divided by the spread of its lightness (robust: a covered part moves neither)."""
    lab = cv2.cvtColor(chip, cv2.COLOR_BGR2LAB).astype(np.float32)
    inside = lab[where] if where.any() else lab.reshape(-1, 3)
    median = np.median(inside, axis=0)
    spread = float(np.median(np.abs(inside[:, 0] - median[0]))) * 1.4826 + 4.0
    return np.asarray((lab - median) / spread, np.float32)


def _to_frame(covered: NDArray[Any], matrix: NDArray[Any], width: int, height: int) -> Occlusion | None:
    """The chip's covered mask in frame coordinates: softened and grown a little (a seam just inside
    the occluder shows less than swapped skin painted over its edge)."""
    soft = cv2.GaussianBlur(cv2.dilate(covered.astype(np.float32), np.ones((3, 3), np.uint8)), (0, 0), 0.8)
    inverse = cv2.invertAffineTransform(matrix)
    corners = cv2.transform(np.array([[[0, 0], [CHIP, 0], [CHIP, CHIP], [0, CHIP]]], np.float32), inverse)[0]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return None
    local = matrix.astype(np.float64) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
    mask = cv2.warpAffine(soft, local, (int(x1 - x0), int(y1 - y0)), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    return Occlusion(int(x0), int(y0), np.clip(mask, 0, 1).astype(np.float32))
