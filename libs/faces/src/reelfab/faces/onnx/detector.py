"""Face detectors: yolo_face (YOLOv8-face) and SCRFD, prepared and decoded as FaceFusion does: the
frame shrunk to fit the model's square (never enlarged), placed top-left on a black canvas, BGR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.onnx.manifest import ModelSpec
from reelfab.faces.onnx.runtime import Model
from reelfab.faces.types import Face

SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2  # anchors per feature-map cell


class Detector:
    """``score``: minimum detector confidence; ``nms``: IoU above which the weaker of two boxes goes."""

    def __init__(
        self, model: Model, spec: ModelSpec, *, score: float = 0.5, nms: float = 0.4, batch_size: int = 8
    ) -> None:
        self.family = "scrfd" if spec.stem.startswith("scrfd") else "yolo_face"
        self.model = model
        self.spec = spec
        self.size = int(spec.input_size[0])
        self.score = score
        self.nms = nms
        self.batch_size = batch_size
        self._input = model.input_names[0]

    def detect_batch(self, frames: Sequence[NDArray[Any]]) -> list[list[Face]]:
        if not frames:
            return []
        canvases, ratios = zip(*(self.prepare(f) for f in frames), strict=True)
        if self.family == "scrfd":  # its outputs carry no batch axis: one frame per run
            raw = [
                self._scrfd(self.model.run({self._input: c[None]}), r)
                for c, r in zip(canvases, ratios, strict=True)
            ]
        else:
            out = self.model.run_batched({self._input: np.stack(canvases)}, self.batch_size)[0]
            raw = [self._yolo(o, r) for o, r in zip(out, ratios, strict=True)]
        return [self._suppress(*r) for r in raw]

    def prepare(self, frame: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """The (3, size, size) input for ``frame`` and the (x, y) factors from model to frame pixels."""
        h, w = frame.shape[:2]
        scale = min(1.0, self.size / h, self.size / w)
        small = cv2.resize(frame, (int(w * scale), int(h * scale))) if scale < 1 else frame
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        canvas[: small.shape[0], : small.shape[1]] = small
        scaled = canvas / 255.0 if self.family == "yolo_face" else (canvas - 127.5) / 128.0
        ratio = np.array([w / small.shape[1], h / small.shape[0]])
        return np.ascontiguousarray(scaled.transpose(2, 0, 1)), ratio

    def _yolo(self, out: NDArray[Any], ratio: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        rows = out.T  # (anchors, 4 + 1 + 15)
        rows = rows[rows[:, 4] > self.score]
        cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * np.tile(ratio, 2)
        kps = rows[:, 5:20].reshape(-1, 5, 3)[:, :, :2] * ratio
        return boxes, rows[:, 4], kps

    def _scrfd(
        self, outputs: list[NDArray[Any]], ratio: NDArray[Any]
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        boxes, scores, kps = [], [], []
        n = len(SCRFD_STRIDES)
        for i, stride in enumerate(SCRFD_STRIDES):
            score = outputs[i].reshape(-1)
            keep = score >= self.score
            if not keep.any():
                continue
            cells = self.size // stride
            ys, xs = np.mgrid[:cells, :cells]
            anchors = np.repeat(np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride, SCRFD_ANCHORS, axis=0)[
                keep
            ]
            dist = outputs[i + n].reshape(-1, 4)[keep] * stride
            boxes.append(np.concatenate([anchors - dist[:, :2], anchors + dist[:, 2:]], axis=1))
            kps.append(anchors[:, None, :] + outputs[i + 2 * n].reshape(-1, 5, 2)[keep] * stride)
            scores.append(score[keep])
        if not scores:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return np.concatenate(boxes) * np.tile(ratio, 2), np.concatenate(scores), np.concatenate(kps) * ratio

    def _suppress(self, boxes: NDArray[Any], scores: NDArray[Any], kps: NDArray[Any]) -> list[Face]:
        if not len(scores):
            return []
        rects = [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in boxes]
        keep = cv2.dnn.NMSBoxes(rects, [float(s) for s in scores], self.score, self.nms)
        return [
            Face(_box(boxes[i]), float(scores[i]), kps[i].astype(np.float32))
            for i in np.asarray(keep).reshape(-1)
        ]


def _box(values: NDArray[Any]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2
