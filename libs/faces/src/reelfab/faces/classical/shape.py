"""The source's proportions on the target's head.

A landmark warp alone keeps the target's geometry: where the eyes, brows, nose and mouth sit within the
face. That geometry is much of what an identity embedding sees: on generated people, swapped frames were
nearer the source than the performer in about half the frames with the target's geometry, and in 30 of
31 with the source's. So before warping, the target's brows, nose, eyes and mouth move to where the
source's are, mapped into the target's head by an affine fit on the jaw line and nose bridge (which
follows a turned head). The eyes and mouth keep their own shape (blinks, speech); the outline stays the
target's, since the pixels around it are the target's."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.faces.classical.warp import scale_of

FIT = np.r_[0:17, 27:31]  # jaw line and nose bridge: the head's position, size and turn
# features that move as a whole, keeping their own shape, and their corners (indices within the part)
EYE_LEFT = (slice(36, 42), (0, 3))
EYE_RIGHT = (slice(42, 48), (0, 3))
MOUTH = (slice(48, 68), (0, 6))
MAX_MOVE = 0.3  # no point moves further than this share of the face's scale (a bad fit stays harmless)


def adopt_proportions(target: NDArray[Any], source: NDArray[Any], amount: float) -> NDArray[Any]:
    """``target``'s 68 landmarks with brows, nose, eyes and mouth moved ``amount`` (0..1) of the way
    to ``source``'s, as (68, 2) float32. Eyes and mouth move and scale as a whole: the mouth's new
    place is a similarity transform of its old one (``blend.keep_mouth`` moves its inside with it)."""
    mapped = _apply(_fit_affine(source[FIT], target[FIT]), source)
    moved = target.astype(np.float32).copy()
    moved[17:36] = mapped[17:36]
    for part, corners in (EYE_LEFT, EYE_RIGHT, MOUTH):
        moved[part] = _place(target[part], mapped[part], corners)
    shift = (moved - target) * amount
    length = np.linalg.norm(shift, axis=1, keepdims=True)
    shift *= np.minimum(1.0, MAX_MOVE * scale_of(target) / np.maximum(length, 1e-6))
    return np.asarray(target + shift, dtype=np.float32)


def _fit_affine(src: NDArray[Any], dst: NDArray[Any]) -> NDArray[Any]:
    """The (3, 2) least-squares affine matrix taking ``src`` points onto ``dst``."""
    matrix, *_ = np.linalg.lstsq(_homogeneous(src), dst.astype(np.float64), rcond=None)
    return np.asarray(matrix)


def _apply(matrix: NDArray[Any], points: NDArray[Any]) -> NDArray[Any]:
    return np.asarray(_homogeneous(points) @ matrix, dtype=np.float32)


def _homogeneous(points: NDArray[Any]) -> NDArray[Any]:
    return np.hstack([points.astype(np.float64), np.ones((len(points), 1))])


def _place(own: NDArray[Any], where: NDArray[Any], corners: tuple[int, int]) -> NDArray[Any]:
    """The feature ``own`` moved and scaled to ``where``'s centre and corner-to-corner width, keeping
    its own shape (open or closed)."""
    a, b = corners
    factor = np.linalg.norm(where[b] - where[a]) / max(float(np.linalg.norm(own[b] - own[a])), 1e-3)
    placed: NDArray[Any] = where.mean(axis=0) + (own - own.mean(axis=0)) * factor
    return placed
