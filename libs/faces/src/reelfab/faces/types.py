"""The one interface every backend implements, and the values it trades in.

Conventions: frames are ``numpy.ndarray`` of shape (H, W, 3), dtype uint8, **BGR** channel order
(OpenCV's); points are float32 (x, y) in frame pixels. Batches are first-class: the GPU path lives on
them, and the CPU path accepts them too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

# 5-point order, as FaceFusion / insightface use it: image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner
KPS5_ORDER = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in one frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # detector confidence; faces are chosen by this, not by box size
    kps5: NDArray[Any]  # (5, 2) float32, KPS5_ORDER
    landmarks68: NDArray[Any] | None = None  # (68, 2) float32, iBUG 300-W order, where the backend has them
    # what the tracker adds for the swap (engines honour them when pasting; detection leaves them unset):
    opacity: float = 1.0  # how strongly the swap is blended in (below 1 while a lost face fades out)
    occlusion: Occlusion | None = None  # what covers the face: it stays in front of the swapped face
    colour: Callable[[NDArray[Any]], NDArray[Any]] | None = None  # smooths the colour transfer (colour.py)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Long side of the box, in pixels."""
        return max(self.width, self.height)

    def scaled(self, factor: float) -> Face:
        """The same face in a frame ``factor`` times the size (detection runs on reduced frames); the
        tracker's additions are not carried over."""
        return Face(
            tuple(v * factor for v in self.box),  # type: ignore[arg-type]
            self.score,
            (self.kps5 * factor).astype(np.float32),
            None if self.landmarks68 is None else (self.landmarks68 * factor).astype(np.float32),
        )

    def keep(self, x0: int, y0: int, width: int, height: int) -> NDArray[Any] | None:
        """How much of the swap to keep at each pixel of the frame region (x0, y0, width, height), as
        (height, width) float32 in [0, 1]: ``opacity``, less what ``occlusion`` covers. ``None`` when
        that is 1 everywhere (nothing to multiply)."""
        if self.occlusion is None:
            return None if self.opacity >= 1 else np.full((height, width), self.opacity, np.float32)
        keep = 1 - self.occlusion.region(x0, y0, width, height)
        if self.opacity < 1:
            keep *= self.opacity
        return keep


@dataclass(frozen=True, eq=False)
class Occlusion:
    """Where something in front covers a face: ``mask`` (float32, 1 = covered) over the frame
    rectangle whose top-left corner is (x0, y0)."""

    x0: int
    y0: int
    mask: NDArray[Any]

    def region(self, x0: int, y0: int, width: int, height: int) -> NDArray[Any]:
        """The mask cut or padded (with 0) to the frame rectangle (x0, y0, width, height)."""
        out = np.zeros((height, width), np.float32)
        mh, mw = self.mask.shape
        ax0, ay0 = max(x0, self.x0), max(y0, self.y0)
        ax1, ay1 = min(x0 + width, self.x0 + mw), min(y0 + height, self.y0 + mh)
        if ax1 > ax0 and ay1 > ay0:
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = self.mask[ay0 - self.y0 : ay1 - self.y0,
                                                                      ax0 - self.x0 : ax1 - self.x0]
        return out


@dataclass(frozen=True, eq=False)
class Embedding:
    """An identity vector and the model that made it; only vectors of one model compare."""

    vector: NDArray[Any]  # float32, 1-D
    model: str
    metric: str = "euclidean"  # "euclidean" (dlib) or "cosine" (ArcFace)

    def distance(self, other: Embedding) -> float:
        if other.model != self.model:
            raise ValueError(f"cannot compare a {self.model} embedding with a {other.model} one")
        a = self.vector.astype(np.float64)
        b = other.vector.astype(np.float64)
        if self.metric == "cosine":
            return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        return float(np.linalg.norm(a - b))


@dataclass(frozen=True, eq=False)
class SourceFace:
    """The identity to put onto target faces, prepared once per job by the backend that swaps."""

    image: NDArray[Any]  # the source image (BGR)
    face: Face  # the one face in it
    embedding: Embedding
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific (crops, latent vectors)


@runtime_checkable
class FaceEngine(Protocol):
    """What every backend does. ``refine`` re-fits landmarks near a known face (tracking between
    detections); ``swap_batch`` puts ``source`` onto the given face of each frame (``None``: leave
    the frame as it is)."""

    name: str
    embedder: str  # the embedding model name, e.g. "dlib_resnet_v1", "arcface_w600k_r50"

    def detect(self, frame: NDArray[Any]) -> list[Face]: ...

    def detect_batch(self, frames: Sequence[NDArray[Any]]) -> list[list[Face]]: ...

    def refine(self, frame: NDArray[Any], face: Face) -> Face: ...

    def embed(self, frame: NDArray[Any], face: Face) -> Embedding: ...

    def prepare_source(self, image: NDArray[Any]) -> SourceFace: ...

    def swap_batch(
        self, source: SourceFace, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]
    ) -> list[NDArray[Any]]: ...

    def enhance_batch(self, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]) -> list[NDArray[Any]]: ...

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        """Distance under which two embeddings are the same person, calibrated per embedder and per
        asset kind ("photo" for real photographs, "synthetic" for the generated demo people)."""
        ...


def kps5_from_68(points: NDArray[Any]) -> NDArray[Any]:
    """The 5 points (KPS5_ORDER) from 68 iBUG landmarks: eye centres (36-41 is the image-left eye),
    nose tip, mouth corners."""
    return np.stack(
        [points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]]
    ).astype(np.float32)


def best_face(faces: Sequence[Face]) -> Face | None:
    """The face to work on: highest detector score (a spacesuit fooled "largest box" in a trial)."""
    return max(faces, key=lambda f: f.score, default=None)
