"""Putting the warped source face into the target frame: a feathered face mask (with the target's
inner mouth cut out when it is open), colour transfer in LAB within the mask, then a feathered or a
Poisson (``cv2.seamlessClone``) composite. Everything works on the region around the face."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.classical.warp import OUTLINE

BLENDS = ("seamless", "feather")
FEATHER = 0.08  # softness of the face outline, as a share of the face's scale (points' RMS radius)
MOUTH_FEATHER = 0.015  # the inner mouth's edge is kept sharper: it runs along the lips
MOUTH_OPEN = 0.08  # inner lips further apart than this share of the mouth width: the mouth is open
POISSON_SIDE = 40  # the Poisson correction is solved at most this many pixels across (see poisson_correct)


def mouth_open(landmarks68: NDArray[Any]) -> bool:
    """Whether the inner lips (61-63 above, 65-67 below) are apart."""
    gap = float(np.linalg.norm(landmarks68[[61, 62, 63]] - landmarks68[[67, 66, 65]], axis=1).mean())
    width = float(np.linalg.norm(landmarks68[54] - landmarks68[48]))
    return gap > MOUTH_OPEN * max(width, 1.0)


def face_mask(points: NDArray[Any], size: tuple[int, int], scale: float) -> NDArray[Any]:
    """Alpha (h, w) float32 in [0, 1]: 1 inside the face, falling to 0 at its outline, from
    ``face_points`` in the region's coordinates. Drawn and blurred at half size (it is smooth; the
    blur at full size cost 1.7 ms), then scaled up."""
    w, h = size
    half = (max(w // 2, 1), max(h // 2, 1))
    outline = np.zeros(half[::-1], np.float32)
    fixed = np.round(points[OUTLINE] * 8).astype(np.int32)  # half size, 4 fractional bits (shift=4)
    cv2.fillPoly(outline, [fixed], 1.0, lineType=cv2.LINE_AA, shift=4)
    # blurring and keeping the inner half puts the whole feather inside the outline: 0 at the edge
    alpha = np.clip(2 * cv2.GaussianBlur(outline, (0, 0), max(FEATHER * scale / 2, 0.5)) - 1, 0, 1)
    return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)


def mouth_hole(points: NDArray[Any], size: tuple[int, int], scale: float) -> NDArray[Any]:
    """(h, w) float32 in [0, 1]: 1 inside the inner lips (60-67), with a narrow soft edge."""
    w, h = size
    hole = np.zeros((h, w), np.float32)
    cv2.fillPoly(hole, [np.round(points[60:68] * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(hole, (0, 0), max(MOUTH_FEATHER * scale, 0.5))


def keep_mouth(target: NDArray[Any], before: NDArray[Any], after: NDArray[Any], hole: NDArray[Any]) -> NDArray[Any]:
    """``target`` with its open mouth's inside (teeth, tongue) shown in ``hole``, moved and scaled
    from the mouth's landmarks ``before`` (48-67) to ``after`` (a similarity: see shape._place)."""
    factor = np.linalg.norm(after[6] - after[0]) / max(float(np.linalg.norm(before[6] - before[0])), 1e-3)
    shift = after.mean(axis=0) - before.mean(axis=0) * factor
    matrix = np.array([[factor, 0, shift[0]], [0, factor, shift[1]]], np.float32)
    moved = cv2.warpAffine(target, matrix, target.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    return cv2.blendLinear(moved, target, hole, 1 - hole)


def match_colour(
    warped: NDArray[Any],
    target: NDArray[Any],
    alpha: NDArray[Any],
    smooth: Callable[[NDArray[Any]], NDArray[Any]] | None = None,
) -> NDArray[Any]:
    """``warped`` with the mean and spread of each LAB channel of ``target`` within the face: a gain and
    an offset per channel, from both faces' statistics over the same pixels, passed through ``smooth``
    where the tracker gives one (``colour.TransferFilter``: no flicker). The statistics come from
    half-size copies, the mapping is one lookup table per channel."""
    half = (max(alpha.shape[1] // 2, 1), max(alpha.shape[0] // 2, 1))
    inside = (cv2.resize(alpha, half, interpolation=cv2.INTER_AREA) > 0.5).astype(np.uint8)
    if not inside.any():
        return warped
    lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB)
    src_mean, src_std = cv2.meanStdDev(cv2.resize(lab, half, interpolation=cv2.INTER_AREA), mask=inside)
    small_target = cv2.resize(target, half, interpolation=cv2.INTER_AREA)
    dst_mean, dst_std = cv2.meanStdDev(cv2.cvtColor(small_target, cv2.COLOR_BGR2LAB), mask=inside)
    gain = np.clip(dst_std / np.maximum(src_std, 1e-3), 0.5, 2.0)  # bounded: one odd frame cannot blow it up
    offset = dst_mean - src_mean * gain
    if smooth is not None:
        smoothed = smooth(np.concatenate([gain.reshape(3), offset.reshape(3)]))
        gain, offset = smoothed[:3].reshape(3, 1), smoothed[3:].reshape(3, 1)
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip(levels * gain.T + offset.T, 0, 255)  # (256, 3)
    return cv2.cvtColor(cv2.LUT(lab, table.astype(np.uint8).reshape(256, 1, 3)), cv2.COLOR_LAB2BGR)


def composite(warped: NDArray[Any], target: NDArray[Any], alpha: NDArray[Any], method: str) -> NDArray[Any]:
    """``warped`` over ``target`` by ``alpha``; "seamless" first gives the face the target's lighting
    at its edge (Poisson blending, see ``poisson_correct``)."""
    if method == "seamless":
        warped = poisson_correct(warped, target, alpha)
    return cv2.blendLinear(warped, target, alpha, 1 - alpha)


def poisson_correct(warped: NDArray[Any], target: NDArray[Any], alpha: NDArray[Any]) -> NDArray[Any]:
    """``warped`` plus the smooth correction ``cv2.seamlessClone`` would add to it. The correction is a
    membrane (harmonic) interpolation of the differences at the region's edge, so it is solved on a
    copy at most POISSON_SIDE px across and scaled back up: seamlessClone costs ~0.7 us per pixel, 9 ms
    on a 100x100 face at full size."""
    h, w = alpha.shape
    factor = min(1.0, POISSON_SIDE / max(h, w))
    size = (max(round(w * factor), 8), max(round(h * factor), 8))
    small_warped = cv2.resize(warped, size, interpolation=cv2.INTER_AREA)
    small_target = cv2.resize(target, size, interpolation=cv2.INTER_AREA)
    region = (cv2.resize(alpha, size, interpolation=cv2.INTER_AREA) > 0.01).astype(np.uint8) * 255
    region[[0, -1], :] = 0  # seamlessClone misbehaves where the region touches the image border
    region[:, [0, -1]] = 0
    x, y, rw, rh = cv2.boundingRect(region)
    if rw < 3 or rh < 3:
        return warped
    # the centre that puts the region's bounding box back exactly where it was
    cloned = cv2.seamlessClone(
        small_warped, small_target, region, (x + rw // 2, y + rh // 2), cv2.NORMAL_CLONE
    )
    correction = cv2.resize(cloned.astype(np.float32) - small_warped.astype(np.float32), (w, h))
    return cv2.add(warped, correction, dtype=cv2.CV_8U)  # saturating: stays within 0..255
