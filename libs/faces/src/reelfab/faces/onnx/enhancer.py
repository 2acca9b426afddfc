"""Face enhancers (GFPGAN, CodeFormer): the face aligned onto ffhq_512, restored, pasted back through a
feathered box mask and blended with the original (FaceFusion's default: 80 % restored)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.faces.onnx import geometry
from reelfab.faces.onnx.manifest import ModelSpec
from reelfab.faces.onnx.runtime import Model
from reelfab.faces.types import Face


class Enhancer:
    """``blend``: share of the restored face in the result; ``weight``: CodeFormer's fidelity (its
    extra input; GFPGAN has none)."""

    def __init__(
        self,
        model: Model,
        spec: ModelSpec,
        *,
        batch_size: int = 8,
        blend: float = 0.8,
        weight: float = 0.5,
        mask_blur: float = 0.3,
    ) -> None:
        self.model = model
        self.spec = spec
        self.size = int(spec.input_size[0])
        self.batch_size = batch_size
        self.weight = weight
        # the blend folded into the paste's mask: the same pixels as blending afterwards, one pass fewer
        self.mask = geometry.box_mask(self.size, mask_blur) * blend
        self._input = next(n for n in model.input_names if n != "weight")

    def enhance_batch(self, frames: Sequence[NDArray[Any]], faces: Sequence[Face | None]) -> list[NDArray[Any]]:
        todo = [(i, face) for i, face in enumerate(faces) if face is not None]
        out = [frame.copy() if face is None else frame for frame, face in zip(frames, faces, strict=True)]
        if not todo:
            return out
        template = self.spec.template or "ffhq_512"
        crops = [geometry.crop(frames[i], face.kps5, template, self.size) for i, face in todo]
        batch = geometry.to_tensor([c.image for c in crops], self.spec.mean, self.spec.std, rgb=True)
        shared = {"weight": np.array([self.weight], np.float64)} if "weight" in self.model.inputs else None
        result = self.model.run_batched({self._input: batch}, self.batch_size, shared=shared)[0]
        std = np.asarray(self.spec.std, np.float32).reshape(1, 3, 1, 1)
        mean = np.asarray(self.spec.mean, np.float32).reshape(1, 3, 1, 1)
        restored = geometry.from_tensor(result * std + mean, rgb=True)
        for (i, _), c, image in zip(todo, crops, restored, strict=True):
            out[i] = geometry.paste_back(frames[i], image, self.mask, c.matrix)
        return out
