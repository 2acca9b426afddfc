"""The face engine: detection, landmarks, identity embeddings, swapping and enhancement behind one
interface (``FaceEngine``), with three backends: ``classical`` (CPU, dlib models shipped in a package,
no downloads), ``onnx`` (FaceFusion-compatible models on onnxruntime: TensorRT/CUDA/CPU) and
``facefusion`` (delegates whole clips to an installed FaceFusion)."""

from reelfab.faces.errors import (
    FaceError,
    FaceTooSmallError,
    ManyFacesError,
    ModelError,
    NoFaceError,
)
from reelfab.faces.types import Embedding, Face, FaceEngine, SourceFace

__all__ = [
    "Embedding", "Face", "FaceEngine", "FaceError", "FaceTooSmallError", "ManyFacesError",
    "ModelError", "NoFaceError", "SourceFace",
]
