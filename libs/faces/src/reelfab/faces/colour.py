"""The performer's face colour, measured per frame and smoothed over time, for the swap's colour
transfer: the swapped face follows a light swing, but measurement noise (grain, a blink, the mouth
opening) does not make it flicker.

Statistics are the mean and spread of each LAB channel over the face's skin (jaw line up to the brows,
less the eyes, the inner mouth and whatever covers the face), measured on a half-size copy of the face's
region. The filter is a One-Euro filter on the six numbers: heavy smoothing while they hold still,
little lag while they move (a light swing), and a reset when the track starts again."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import ColourStats, Face

MIN_PIXELS = 40


def measure(frame: NDArray[Any], face: Face) -> ColourStats | None:
    """The face's skin statistics in ``frame`` (``None`` without 68 landmarks or visible skin)."""
    if face.landmarks68 is None:
        return None
    points = face.landmarks68.astype(np.float32)
    h, w = frame.shape[:2]
    x0, y0 = (max(int(v), 0) for v in points.min(axis=0))
    x1, y1 = min(int(points[:, 0].max()) + 1, w), min(int(points[:, 1].max()) + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    factor = 0.5
    size = (max((x1 - x0) // 2, 1), max((y1 - y0) // 2, 1))
    region = cv2.resize(frame[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    local = np.round((points - (x0, y0)) * factor * 16).astype(np.int32)
    mask = np.zeros(size[::-1], np.uint8)
    cv2.fillPoly(mask, [np.concatenate([local[0:17], local[26:16:-1]])], 1, shift=4)
    for part in (local[36:42], local[42:48], local[60:68]):
        cv2.fillConvexPoly(mask, cv2.convexHull(part), 0, shift=4)
    if face.occlusion is not None:
        covered = face.occlusion.region(x0, y0, x1 - x0, y1 - y0)
        mask[cv2.resize(covered, size, interpolation=cv2.INTER_AREA) > 0.3] = 0
    if int(mask.sum()) < MIN_PIXELS:
        return None
    mean, std = cv2.meanStdDev(cv2.cvtColor(region, cv2.COLOR_BGR2LAB), mask=mask)
    return ColourStats(mean.reshape(3).astype(np.float64), std.reshape(3).astype(np.float64))


class ColourFilter:
    """One-Euro filter over ColourStats. ``min_cutoff`` (Hz): lower is steadier when still; ``beta``:
    how fast the cutoff rises with the speed of change (per LAB level per second)."""

    def __init__(self, fps: float = 25.0, *, min_cutoff: float = 0.6, beta: float = 0.08, d_cutoff: float = 1.0) -> None:
        self.period = 1.0 / fps
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._value: NDArray[Any] | None = None
        self._rate = np.zeros(6)  # filtered rate of change, per second (signed: noise averages out)

    def __call__(self, stats: ColourStats) -> ColourStats:
        value = np.concatenate([stats.mean, stats.std])
        if self._value is None:
            self._value = value
            return stats
        step = value - self._value
        self._rate += _alpha(self.d_cutoff, self.period) * (step / self.period - self._rate)
        speed = float(np.abs(self._rate[:3]).max())
        self._value = self._value + _alpha(self.min_cutoff + self.beta * speed, self.period) * step
        return ColourStats(self._value[:3].copy(), self._value[3:].copy())


def _alpha(cutoff: float, period: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)
