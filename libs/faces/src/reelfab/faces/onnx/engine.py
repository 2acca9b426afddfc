"""The onnx backend: FaceFusion-compatible models on onnxruntime behind ``FaceEngine``, batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from numpy.typing import NDArray

from reelfab.faces.errors import ManyFacesError, ModelError, NoFaceError
from reelfab.faces.onnx import runtime
from reelfab.faces.onnx.detector import Detector
from reelfab.faces.onnx.embedder import Embedder
from reelfab.faces.onnx.enhancer import Enhancer
from reelfab.faces.onnx.landmarker import Landmarker
from reelfab.faces.onnx.store import ModelStore
from reelfab.faces.onnx.swapper import Swapper
from reelfab.faces.types import Embedding, Face, SourceFace, best_face, kps5_from_68

# ArcFace cosine distance under which two faces are one person. 0.6 is FaceFusion's default
# (reference_face_distance 0.3 on its 0..2 -> 0..1 scale). Not calibrated on the synthetic demo people:
# no real weights could be run here, so "synthetic" uses the same value until someone measures it.
THRESHOLDS = {"photo": 0.6, "synthetic": 0.6}
REFINE_DECAY = 0.98  # per tracked frame, as the classical backend: the score shows the detection's age


class OnnxEngine:
    """``FaceEngine`` on ONNX models from ``store``. Every model is checked at construction: known,
    of the right kind, allowed by its licence when ``commercial_mode``, installed. ``providers``:
    onnxruntime providers (or tensorrt/cuda/cpu), default the best available; ``batch_size``: crops
    per inference; ``comparable_share``: another face in a source image counts if its detector score
    is at least this share of the best.

    Licences: FaceFusion's only embedder, arcface_w600k_r50, is InsightFace's non-commercial research
    model, and every swapper is driven by its embedding, so commercial mode refuses every swapping
    configuration of this backend until a commercially usable embedder is in the manifest."""

    name = "onnx"

    def __init__(
        self,
        store: ModelStore | None = None,
        *,
        detector: str = "yolo_face_8n",
        landmarker: str | None = "2dfan4",
        embedder: str = "arcface_w600k_r50",
        swapper: str = "ghost_2_256",
        enhancer: str | None = None,
        providers: Sequence[str] | None = None,
        commercial_mode: bool = True,
        batch_size: int = 8,
        detector_score: float = 0.5,
        landmarker_score: float = 0.5,
        comparable_share: float = 0.5,
        threads: int = 0,
    ) -> None:
        store = store or ModelStore()
        roles = {"detector": detector, "landmarker": landmarker, "embedder": embedder, "swapper": swapper,
                 "enhancer": enhancer}  # fmt: skip
        chosen = {kind: name for kind, name in roles.items() if name is not None}
        for kind, name in chosen.items():
            if store.spec(name).kind != kind:
                raise ModelError(f"{name} is a {store.spec(name).kind}, not a {kind}")
        wanted = store.spec(swapper).source_embedding.get("embedder", embedder)
        if wanted != embedder:
            raise ModelError(f"{swapper} is driven by {wanted} embeddings, not {embedder}")
        store.require(list(chosen.values()), commercial_mode=commercial_mode)

        self.store = store
        self.embedder = embedder
        self.swapper = swapper
        self.enhancer = enhancer
        self.providers = runtime.choose_providers(providers)
        self.batch_size = batch_size
        self.landmarker_score = landmarker_score
        self.comparable_share = comparable_share
        self._threads = threads

        spec = store.spec
        self._detector = Detector(
            self._load(detector), spec(detector), score=detector_score, batch_size=batch_size
        )
        self._landmarker = (
            Landmarker(self._load(landmarker), spec(landmarker), batch_size=batch_size)
            if landmarker
            else None
        )
        self._embedder = Embedder(self._load(embedder), spec(embedder), batch_size=batch_size)
        converter = spec(swapper).source_embedding.get("converter")
        self._swapper = Swapper(
            self._load(swapper), spec(swapper), converter=self._load(converter) if converter else None,
            batch_size=batch_size,
        )  # fmt: skip
        self._enhancer = (
            Enhancer(self._load(enhancer), spec(enhancer), batch_size=batch_size) if enhancer else None
        )

    def _load(self, name: str) -> runtime.Model:
        return runtime.load(
            self.store.path(name),
            self.providers,
            threads=self._threads,
            cache_dir=self.store.root / ".trt-cache",
        )

    # detection and landmarks

    def detect(self, frame: NDArray[Any]) -> list[Face]:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[NDArray[Any]]) -> list[list[Face]]:
        found = self._detector.detect_batch(frames)
        if self._landmarker is None:
            return found
        where = [(i, face) for i, faces in enumerate(found) for face in faces]
        fits = self._landmarker.fit([frames[i] for i, _ in where], [face.box for _, face in where])
        out: list[list[Face]] = [[] for _ in frames]
        for (i, face), (points, score) in zip(where, fits, strict=True):
            out[i].append(self._with_landmarks(face, points, score))
        return out

    def _with_landmarks(self, face: Face, points: NDArray[Any], score: float) -> Face:
        # as FaceFusion: the 5 points come from the 68 where the landmarker is confident, else the detector
        kps5 = kps5_from_68(points) if score >= self.landmarker_score else face.kps5
        return Face(face.box, face.score, kps5, points)

    def refine(self, frame: NDArray[Any], face: Face) -> Face:
        """Landmarks re-fitted in ``face``'s box, the box moved with them. The score decays a little
        per call and drops to 0 where the landmarker is no longer confident (the face is lost).
        Without a landmarker: the detection that overlaps ``face`` most."""
        if self._landmarker is None:
            candidates = [(iou(face.box, f.box), f) for f in self.detect(frame)]
            overlap, match = max(candidates, key=lambda c: c[0], default=(0.0, None))
            return match if match is not None and overlap > 0 else replace(face, score=0.0)
        points, score = self._landmarker.fit([frame], [face.box])[0]
        if score < self.landmarker_score:
            return replace(face, score=0.0)
        dx, dy = (
            (points.mean(axis=0) - face.landmarks68.mean(axis=0)) if face.landmarks68 is not None else (0, 0)
        )
        x1, y1, x2, y2 = face.box
        box = (float(x1 + dx), float(y1 + dy), float(x2 + dx), float(y2 + dy))
        return Face(box, face.score * REFINE_DECAY, kps5_from_68(points), points)

    # identity

    def embed(self, frame: NDArray[Any], face: Face) -> Embedding:
        vector = self._embedder.embed([frame], [face.kps5])[0]
        return Embedding(vector, self.embedder, "cosine")

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        """ArcFace cosine distance: 0.6 for photos (FaceFusion's default); see THRESHOLDS."""
        if asset_kind not in THRESHOLDS:
            raise ValueError(f"unknown asset kind {asset_kind!r}: one of {', '.join(THRESHOLDS)}")
        return THRESHOLDS[asset_kind]

    # swapping and enhancing

    def prepare_source(self, image: NDArray[Any]) -> SourceFace:
        """The one face of ``image``, its embedding, and the swapper's source vector (computed once)."""
        h, w = image.shape[:2]
        faces = self.detect(image)
        face = best_face(faces)
        if face is None:
            raise NoFaceError(f"source image {w}x{h}: no face found")
        comparable = [f for f in faces if f.score >= self.comparable_share * face.score]
        if len(comparable) > 1:
            scores = ", ".join(f"{f.score:.2f}" for f in sorted(comparable, key=lambda f: -f.score))
            raise ManyFacesError(
                f"source image {w}x{h}: {len(comparable)} faces of comparable detector score ({scores}); "
                "the source must show exactly one person"
            )
        embedding = self.embed(image, face)
        vector = self._swapper.source_vector(embedding.vector)
        return SourceFace(image, face, embedding, {"swapper": self.swapper, "source_vector": vector})

    def swap_batch(
        self, source: SourceFace, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]
    ) -> list[NDArray[Any]]:
        if source.extra.get("swapper") == self.swapper:
            vector = source.extra["source_vector"]
        elif source.embedding.model == self.embedder:
            vector = self._swapper.source_vector(source.embedding.vector)
        else:
            raise ModelError(
                f"source prepared with a {source.embedding.model} embedding; {self.swapper} needs {self.embedder}"
            )
        return self._swapper.swap_batch(vector, frames, faces)

    def enhance_batch(self, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]) -> list[NDArray[Any]]:
        if self._enhancer is None:
            raise ModelError("no face enhancer configured: build the onnx engine with enhancer='gfpgan_1.4'")
        return self._enhancer.enhance_batch(frames, faces)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
