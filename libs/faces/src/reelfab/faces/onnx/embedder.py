"""ArcFace identity vectors: the face aligned by its 5 points onto the arcface_112_v2 template at
112x112, RGB scaled to -1..1, one 512-D vector out (raw; compare by cosine)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.faces.onnx import geometry
from reelfab.faces.onnx.manifest import ModelSpec
from reelfab.faces.onnx.runtime import Model


class Embedder:
    def __init__(self, model: Model, spec: ModelSpec, *, batch_size: int = 8) -> None:
        self.model = model
        self.spec = spec
        self.size = int(spec.input_size[0])
        self.template = spec.template or "arcface_112_v2"
        self.batch_size = batch_size
        self._input = model.input_names[0]

    def crops(self, frames: Sequence[NDArray[Any]], kps5: Sequence[NDArray[Any]]) -> list[geometry.Crop]:
        return [geometry.crop(f, k, self.template, self.size) for f, k in zip(frames, kps5, strict=True)]

    def embed(self, frames: Sequence[NDArray[Any]], kps5: Sequence[NDArray[Any]]) -> NDArray[Any]:
        """(N, 512) float32, one row per (frame, points)."""
        if not kps5:
            return np.zeros((0, 512), np.float32)
        images = [c.image for c in self.crops(frames, kps5)]
        batch = geometry.to_tensor(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), rgb=True)  # x / 127.5 - 1
        return self.model.run_batched({self._input: batch}, self.batch_size)[0].astype(np.float32)
