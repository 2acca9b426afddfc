"""68-point landmarks with 2dfan4: the face box scaled so its long side is 195 px and centred in a
256x256 crop; the model answers in a 64x64 heatmap grid, plus heatmaps whose peaks score the fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.onnx.manifest import ModelSpec
from reelfab.faces.onnx.runtime import Model

BOX_SIDE = 195  # px of the 256 crop the face box's long side fills
DARK = 30  # mean L (0-255) under which the crop's contrast is equalised first


class Landmarker:
    def __init__(self, model: Model, spec: ModelSpec, *, batch_size: int = 8) -> None:
        self.model = model
        self.size = int(spec.input_size[0])
        self.batch_size = batch_size
        self._input = model.input_names[0]

    def fit(
        self, frames: Sequence[NDArray[Any]], boxes: Sequence[Sequence[float]]
    ) -> list[tuple[NDArray[Any], float]]:
        """For each (frame, box): 68 points (float32, frame pixels) and a confidence in 0..1."""
        if not boxes:
            return []
        crops, matrices = zip(*(self.crop(f, b) for f, b in zip(frames, boxes, strict=True)), strict=True)
        batch = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        points, heatmaps = self.model.run_batched({self._input: batch}, self.batch_size)[:2]
        grid = heatmaps.shape[-1]
        scores = np.interp(heatmaps.max(axis=(2, 3)).mean(axis=1), [0, 0.9], [0, 1])
        out = []
        for pts, matrix, score in zip(points, matrices, scores, strict=True):
            local = pts[:, :2] / grid * self.size
            frame_pts = cv2.transform(local[None].astype(np.float64), cv2.invertAffineTransform(matrix))[0]
            out.append((frame_pts.astype(np.float32), float(score)))
        return out

    def crop(self, frame: NDArray[Any], box: Sequence[float]) -> tuple[NDArray[Any], NDArray[Any]]:
        x1, y1, x2, y2 = box
        scale = BOX_SIDE / max(x2 - x1, y2 - y1, 1.0)
        matrix = np.array(
            [[scale, 0, (self.size - (x1 + x2) * scale) / 2], [0, scale, (self.size - (y1 + y2) * scale) / 2]]
        )
        image = cv2.warpAffine(frame, matrix, (self.size, self.size))
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2Lab)
        if lab[:, :, 0].mean() < DARK:  # the model misses faces in the dark; FaceFusion equalises them
            lab[:, :, 0] = cv2.createCLAHE(clipLimit=2).apply(lab[:, :, 0])
            image = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)
        return image, matrix
