"""Piecewise-affine warp of the source face onto the target's landmarks.

The 68 landmarks plus points on the forehead are triangulated once, on the source (Delaunay). Every
target pixel is labelled with the triangle it falls in and mapped back into the source by that
triangle's affine transform, so the whole face is one ``cv2.remap``. Two triangles' transforms agree
on the edge they share, so the map is continuous across edges: no seams, and no per-triangle masks to
sum and normalise."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import Delaunay

FOREHEAD_RISE = 0.1  # brow points raised by this share of the eyes-to-chin distance (below most fringes)
# the face's outline through face_points(): jaw 0..16 (image left to right), then the forehead back
OUTLINE = np.array([*range(17), *range(77, 67, -1)])


def face_points(landmarks68: NDArray[Any]) -> NDArray[Any]:
    """The 68 landmarks and 10 forehead points above the brows (17..26), (78, 2) float32."""
    lm = landmarks68.astype(np.float32)
    up = lm[36:48].mean(axis=0) - lm[8]  # chin to the eyes: the face's own "up", whatever its roll
    return np.asarray(np.concatenate([lm, lm[17:27] + FOREHEAD_RISE * up]), dtype=np.float32)


def scale_of(points: NDArray[Any]) -> float:
    """Root-mean-square distance of the points from their centroid: a rotation-free face size."""
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def triangulate(points: NDArray[Any]) -> NDArray[Any]:
    """Delaunay triangles over ``points``, (T, 3) vertex indices."""
    return np.asarray(Delaunay(points.astype(np.float64)).simplices, dtype=np.int32)


def warp(
    src: NDArray[Any],
    src_points: NDArray[Any],
    dst_points: NDArray[Any],
    triangles: NDArray[Any],
    size: tuple[int, int],
) -> tuple[NDArray[Any], NDArray[Any]]:
    """``src`` warped so that ``src_points`` land on ``dst_points``, into an image of ``size`` (w, h);
    with the mask (bool) of the pixels some triangle covers."""
    w, h = size
    labels = np.zeros((h, w), np.int32)  # 0: outside every triangle; i: triangle i - 1
    fixed = np.round(dst_points * 16).astype(np.int32)  # 4 fractional bits (shift=4): sub-pixel edges
    for i, tri in enumerate(triangles, 1):
        cv2.fillConvexPoly(labels, fixed[tri], i, lineType=cv2.LINE_8, shift=4)
    a, b, c, d, e, f = (np.take(row, labels) for row in _inverse_affines(src_points, dst_points, triangles).T)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_x = a * xs + b * ys + c
    map_y = d * xs + e * ys + f
    image = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return image, labels > 0


def _inverse_affines(src_points: NDArray[Any], dst_points: NDArray[Any], triangles: NDArray[Any]) -> NDArray[Any]:
    """Per triangle, the affine map from target to source pixels as (a, b, c, d, e, f):
    x_src = a x + b y + c, y_src = d x + e y + f. Row 0 (no triangle) sends pixels outside the source."""
    dst = dst_points[triangles].astype(np.float64)  # (T, 3, 2)
    src = src_points[triangles].astype(np.float64)
    homogeneous = np.concatenate([dst, np.ones((len(triangles), 3, 1))], axis=2)  # (T, 3, 3)
    inverse = np.empty_like(homogeneous)
    flat = np.abs(np.linalg.det(homogeneous)) < 1e-3  # squashed to a line in the target (a turned head)
    inverse[~flat] = np.linalg.inv(homogeneous[~flat])
    inverse[flat] = np.linalg.pinv(homogeneous[flat])  # no exact inverse: the least-squares one
    m = inverse @ src  # (T, 3, 2): [x y 1] @ m = source point
    rows = np.concatenate([m[:, :, 0], m[:, :, 1]], axis=1)  # (T, 6)
    outside = np.array([[0, 0, -1, 0, 0, -1]], np.float64)
    return np.ascontiguousarray(np.concatenate([outside, rows]).astype(np.float32))
