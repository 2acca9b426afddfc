"""Face swappers (inswapper, hyperswap, ghost, simswap): the target face aligned onto the model's
template, swapped in batches against one source vector, and pasted back through a feathered box mask.

FaceFusion runs one crop per inference; here every crop of a batch of frames goes through together,
in chunks of ``batch_size``, or one at a time for models exported with a fixed batch of 1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from reelfab.faces.errors import ModelError
from reelfab.faces.onnx import geometry
from reelfab.faces.onnx.manifest import ModelSpec
from reelfab.faces.onnx.runtime import Model
from reelfab.faces.types import Face


def read_emap(path: Path) -> NDArray[Any]:
    """inswapper's embedding map: its graph's last initializer, a (512, 512) matrix that takes an
    ArcFace vector into the space the model was trained on."""
    graph = onnx.load(str(path)).graph
    if not graph.initializer:
        raise ModelError(f"{path}: no initializers, so no emap (is this an inswapper model?)")
    emap = numpy_helper.to_array(graph.initializer[-1]).astype(np.float32)
    if emap.ndim != 2 or emap.shape[0] != emap.shape[1]:
        raise ModelError(f"{path}: last initializer has shape {emap.shape}, not a square emap")
    return emap


class Swapper:
    """``converter``: the crossface model for ghost/simswap; ``emap``: inswapper's matrix (read from
    the model file when not given)."""

    def __init__(
        self,
        model: Model,
        spec: ModelSpec,
        *,
        converter: Model | None = None,
        emap: NDArray[Any] | None = None,
        batch_size: int = 8,
        mask_blur: float = 0.3,
    ) -> None:
        missing = {"target", "source"} - set(model.input_names)
        if missing:
            raise ModelError(
                f"{spec.name}: the model's inputs are {model.input_names}; a swapper needs 'target' and 'source'"
            )
        self.model = model
        self.spec = spec
        self.size = int(spec.input_size[0])
        self.source_kind = spec.source_embedding.get("kind", "normed")
        if self.source_kind == "converter" and converter is None:
            raise ModelError(
                f"{spec.name} needs its embedding converter {spec.source_embedding.get('converter')}"
            )
        self.converter = converter
        if emap is None and self.source_kind == "emap":
            emap = read_emap(model.path)
        self.emap = emap
        self.batch_size = batch_size
        self.rgb = spec.preprocess.get("channels", "rgb") == "rgb"
        self.mask = geometry.box_mask(self.size, mask_blur)

    def source_vector(self, embedding: NDArray[Any]) -> NDArray[Any]:
        """What the model's ``source`` input wants, from a raw ArcFace embedding (see the manifest's
        ``source_embedding``)."""
        raw = np.asarray(embedding, np.float32).reshape(1, -1)
        if self.source_kind == "emap":
            assert self.emap is not None
            mapped: NDArray[Any] = (raw @ self.emap / np.linalg.norm(raw)).reshape(-1)
            return mapped
        if self.source_kind == "converter":
            assert self.converter is not None
            raw = self.converter.run({self.converter.input_names[0]: raw})[0].reshape(1, -1)
            if not self.spec.source_embedding.get("normalise", False):
                return raw.reshape(-1)
        return (raw / np.linalg.norm(raw)).reshape(-1)

    def swap_batch(
        self, source: NDArray[Any], frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]
    ) -> list[NDArray[Any]]:
        """Each frame with ``source`` on its face; frames without one come back as copies."""
        todo = [(i, face) for i, face in enumerate(faces) if face is not None]
        out = [frame.copy() if face is None else frame for frame, face in zip(frames, faces, strict=True)]
        if not todo:
            return out
        crops = [geometry.crop(frames[i], face.kps5, self.spec.template, self.size) for i, face in todo]
        swapped = self.run([c.image for c in crops], source)
        for (i, face), c, image in zip(todo, crops, swapped, strict=True):
            out[i] = geometry.paste_back(frames[i], image, self.mask, c.matrix, keep=face.keep)
        return out

    def run(self, crops: list[NDArray[Any]], source: NDArray[Any]) -> list[NDArray[Any]]:
        """Aligned BGR crops -> swapped BGR crops."""
        target = geometry.to_tensor(crops, self.spec.mean, self.spec.std, rgb=self.rgb)
        sources = np.repeat(source.reshape(1, -1).astype(np.float32), len(crops), axis=0)
        result = self.model.run_batched({"target": target, "source": sources}, self.batch_size)[0]
        if self.spec.preprocess.get("output") == "denormalise":
            std = np.asarray(self.spec.std, np.float32).reshape(1, 3, 1, 1)
            mean = np.asarray(self.spec.mean, np.float32).reshape(1, 3, 1, 1)
            result = result * std + mean
        return geometry.from_tensor(result, rgb=self.rgb)
