"""Face crops by 5-point alignment and pasting a processed crop back, as FaceFusion's models expect them.

Templates are the 5 points (KPS5_ORDER) in a unit square; a model's crop puts the face's points there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

TEMPLATES: dict[str, NDArray[Any]] = {
    name: np.array(points, np.float32)
    for name, points in {
        "arcface_112_v1": [[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
                           [0.37913393, 0.77687500], [0.62086607, 0.77687500]],
        "arcface_112_v2": [[0.34191607, 0.46157411], [0.65653393, 0.45983393], [0.50022500, 0.64050536],
                           [0.37097589, 0.82469196], [0.63151696, 0.82325089]],
        "arcface_128": [[0.36167656, 0.40387734], [0.63696719, 0.40235469], [0.50019687, 0.56044219],
                        [0.38710391, 0.72160547], [0.61507734, 0.72034453]],
        "ffhq_512": [[0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
                     [0.39308822, 0.72541100], [0.61150205, 0.72490465]],
    }.items()
}  # fmt: skip


@dataclass(frozen=True)
class Crop:
    image: NDArray[Any]  # (size, size, 3) uint8 BGR
    matrix: NDArray[Any]  # (2, 3) float64: frame -> crop


def align_matrix(kps5: NDArray[Any], template: str, size: int) -> NDArray[Any]:
    """The similarity transform (rotation, uniform scale, shift) taking the face's 5 points onto the
    template's, least squares (RANSAC with a threshold no inlier misses, as FaceFusion does)."""
    target = TEMPLATES[template] * np.float32(size)
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(kps5, np.float32), target, method=cv2.RANSAC, ransacReprojThreshold=100
    )
    if matrix is None:
        raise ValueError(f"cannot align points {np.asarray(kps5).tolist()} to template {template}")
    return matrix


def crop(frame: NDArray[Any], kps5: NDArray[Any], template: str, size: int) -> Crop:
    matrix = align_matrix(kps5, template, size)
    image = cv2.warpAffine(frame, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return Crop(image, matrix)


def box_mask(
    size: int, blur: float = 0.3, padding: tuple[float, float, float, float] = (0, 0, 0, 0)
) -> NDArray[Any]:
    """A (size, size) float32 mask, 1 inside and feathered to 0 at the crop's edges: the seam of the
    paste-back falls where the crop is mostly background. ``padding``: top, right, bottom, left in %."""
    blur_px = int(size * 0.5 * blur)
    edge = max(blur_px // 2, 1)
    mask = np.ones((size, size), np.float32)
    top, right, bottom, left = (int(size * p / 100) for p in padding)
    mask[: max(edge, top)] = 0
    mask[size - max(edge, bottom) :] = 0
    mask[:, : max(edge, left)] = 0
    mask[:, size - max(edge, right) :] = 0
    return cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25) if blur_px > 0 else mask


def paste_back(
    frame: NDArray[Any],
    image: NDArray[Any],
    mask: NDArray[Any],
    matrix: NDArray[Any],
    *,
    keep: Callable[[int, int, int, int], NDArray[Any] | None] | None = None,
) -> NDArray[Any]:
    """``frame`` with ``image`` (a crop taken by ``matrix``) warped back and blended in by ``mask``,
    times ``keep(x0, y0, w, h)`` over the footprint where given (``Face.keep``: what covers the face
    stays in front, a fading face fades). Only the crop's footprint in the frame is touched."""
    h, w = frame.shape[:2]
    size = image.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    footprint = cv2.transform(corners[None], inverse)[0]
    x1, y1 = np.clip(np.floor(footprint.min(axis=0)).astype(int), 0, [w, h])
    x2, y2 = np.clip(np.ceil(footprint.max(axis=0)).astype(int), 0, [w, h])
    out = frame.copy()
    if x2 <= x1 or y2 <= y1:
        return out
    local = inverse - np.array([[0, 0, x1], [0, 0, y1]], np.float64)  # into the footprint's coordinates
    region = (int(x2 - x1), int(y2 - y1))
    alpha = cv2.warpAffine(mask, local, region).clip(0, 1)
    if keep is not None and (kept := keep(int(x1), int(y1), *region)) is not None:
        alpha *= kept
    alpha = alpha[..., None]
    warped = cv2.warpAffine(image, local, region, borderMode=cv2.BORDER_REPLICATE)
    target = out[y1:y2, x1:x2].astype(np.float32)
    out[y1:y2, x1:x2] = (target + (warped.astype(np.float32) - target) * alpha).round().astype(np.uint8)
    return out


def to_tensor(
    images: list[NDArray[Any]], mean: tuple[float, ...], std: tuple[float, ...], *, rgb: bool
) -> NDArray[Any]:
    """BGR uint8 crops -> (N, 3, H, W) float32, ((x / 255) - mean) / std per channel."""
    batch = np.stack(images).astype(np.float32) / 255.0
    if rgb:
        batch = batch[..., ::-1]
    batch = (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def from_tensor(batch: NDArray[Any], *, rgb: bool) -> list[NDArray[Any]]:
    """(N, 3, H, W) in 0..1 -> BGR uint8 crops."""
    images = (batch.transpose(0, 2, 3, 1).clip(0, 1) * 255).round().astype(np.uint8)
    return [np.ascontiguousarray(i[..., ::-1] if rgb else i) for i in images]
