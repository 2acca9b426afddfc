"""Small stand-ins for the onnx backend's real models (test helper, not a test module).

Each carries the real model's input names, sizes and dtypes, with a dynamic batch axis (or, for the
fixed variants, a batch of 1 as the real exports have), and computes something checkable:

- a synthetic face is a red-dominant ellipse (``draw_face``); its "faceness" per pixel is
  clip((R - B - 0.2) * 10, 0, 1). The detector and landmarker find its centroid and spread and put the
  box, 5 points and 68 points at fixed places of ``LAYOUT`` relative to the ellipse;
- the embedder is a fixed random projection of the 8x8-pooled aligned crop, centred;
- a swapper blends the target crop halfway towards a colour computed from the source vector;
- an enhancer pulls the crop 10 % towards grey; the converter is a fixed rotation.

``build_store`` writes them under a folder laid out like the ModelStore, with a manifest whose hashes
are theirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from reelfab.faces.onnx.manifest import Manifest, default_manifest
from reelfab.faces.onnx.store import ModelStore, file_digests

OPSET = 17
FLOAT = TensorProto.FLOAT

# points of a synthetic face in unit-ellipse coordinates (u right, v down; the ellipse is u² + v² = 1)
EYES = ((-0.4, -0.2), (0.4, -0.2))
NOSE = (0.0, 0.1)
MOUTH = ((-0.3, 0.45), (0.3, 0.45))
KPS5_LAYOUT = np.array([EYES[0], EYES[1], NOSE, MOUTH[0], MOUTH[1]], np.float32)


def _arc(cx: float, cy: float, rx: float, ry: float, degrees: list[float]) -> list[tuple[float, float]]:
    return [(cx + rx * np.cos(np.radians(d)), cy - ry * np.sin(np.radians(d))) for d in degrees]


def _layout68() -> np.ndarray:
    jaw = [(-np.cos(t), np.sin(t)) for t in np.linspace(0, np.pi, 17)]
    brows = [(x, -0.4) for x in np.linspace(-0.6, -0.2, 5)] + [(x, -0.4) for x in np.linspace(0.2, 0.6, 5)]
    bridge = [(0.0, v) for v in np.linspace(-0.2, NOSE[1], 4)]
    nostrils = [(u, 0.15) for u in np.linspace(-0.15, 0.15, 5)]
    eye = [180.0, 120.0, 60.0, 0.0, -60.0, -120.0]  # corner, upper lid, corner, lower lid: centroid exact
    eyes = _arc(*EYES[0], 0.1, 0.05, eye) + _arc(*EYES[1], 0.1, 0.05, eye)
    outer = _arc(0.0, MOUTH[0][1], 0.3, 0.1, [180, 150, 120, 90, 60, 30, 0, -30, -60, -90, -120, -150])
    inner = _arc(0.0, MOUTH[0][1], 0.2, 0.05, [180, 135, 90, 45, 0, -45, -90, -135])
    return np.array(jaw + brows + bridge + nostrils + eyes + outer + inner, np.float32)


LAYOUT68 = _layout68()


@dataclasses.dataclass(frozen=True)
class Palette:
    """An identity: skin and feature colours (BGR), red-dominant so the stand-ins see them as face."""

    skin: tuple[int, int, int] = (70, 110, 210)
    eyes: tuple[int, int, int] = (20, 20, 120)
    mouth: tuple[int, int, int] = (40, 30, 150)


BACKGROUND = (170, 130, 90)  # blue-dominant: no faceness


def draw_face(
    frame: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], palette: Palette
) -> None:
    """A face in place: ellipse, eyes, nose, mouth at LAYOUT positions."""
    (cx, cy), (a, b) = centre, axes

    def at(u: float, v: float) -> tuple[int, int]:
        return round(cx + u * a), round(cy + v * b)

    cv2.ellipse(frame, at(0, 0), (round(a), round(b)), 0, 0, 360, palette.skin, -1)
    for eye in EYES:
        cv2.ellipse(
            frame, at(*eye), (max(round(0.12 * a), 1), max(round(0.07 * b), 1)), 0, 0, 360, palette.eyes, -1
        )
    cv2.circle(frame, at(*NOSE), max(round(0.06 * a), 1), palette.mouth, -1)
    cv2.line(frame, at(*MOUTH[0]), at(*MOUTH[1]), palette.mouth, max(round(0.05 * b), 1))


def face_frame(
    size: tuple[int, int] = (360, 480),
    centre: tuple[float, float] = (240, 180),
    axes: tuple[float, float] = (60, 80),
    palette: Palette = Palette(),
) -> np.ndarray:
    """A (h, w) BGR frame with one synthetic face."""
    frame = np.full((*size, 3), BACKGROUND, np.uint8)
    draw_face(frame, centre, axes, palette)
    return frame


def expected_kps5(centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    return (np.asarray(centre, np.float32) + KPS5_LAYOUT * np.asarray(axes, np.float32)).astype(np.float32)


# graph building


class _Graph:
    """A few helpers over onnx.helper: named nodes, constants, and the ops the stand-ins share."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray | float, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def ints(self, values: list[int]) -> str:
        name = self.name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def channel(self, x: str, c: int) -> str:
        return self.op("Slice", x, self.ints([c]), self.ints([c + 1]), self.ints([1]))

    def faceness(self, bgr01: str) -> str:
        """(N, 1, H, W) in 0..1 from (N, 3, H, W) BGR in 0..1."""
        diff = self.op("Sub", self.channel(bgr01, 2), self.channel(bgr01, 0))
        scaled = self.op("Mul", self.op("Sub", diff, self.const(0.2)), self.const(10.0))
        return self.op("Clip", scaled, self.const(0.0), self.const(1.0))

    def moments(self, mass: str, h: int, w: int) -> tuple[str, str, str, str, str]:
        """Total mass and the centroid and semi-axes (2 sigma) of a filled ellipse, each (N, 1, 1, 1)."""
        ys, xs = np.mgrid[:h, :w].astype(np.float32)
        axes = self.ints([2, 3])
        total = self.op("Add", self.op("ReduceSum", mass, axes, keepdims=1), self.const(1e-6))
        stats = []
        for grid in (xs, ys):
            g = self.const(grid[None, None])
            mean = self.op("Div", self.op("ReduceSum", self.op("Mul", mass, g), axes, keepdims=1), total)
            second = self.op(
                "Div",
                self.op("ReduceSum", self.op("Mul", mass, self.op("Mul", g, g)), axes, keepdims=1),
                total,
            )
            var = self.op("Relu", self.op("Sub", second, self.op("Mul", mean, mean)))
            stats.append((mean, self.op("Mul", self.op("Sqrt", var), self.const(2.0))))
        (mx, ax), (my, ay) = stats
        return total, mx, my, ax, ay

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
        onnx.checker.check_model(model)
        return model


def _batch(fixed: bool | int) -> int | str:
    """The batch dimension: symbolic, or fixed (True: 1, as the real exports have)."""
    return int(fixed) if fixed else "N"


def yolo_face(fixed: bool | int = False, size: int = 640, anchors: int = 8400) -> onnx.ModelProto:
    """input (N, 3, 640, 640) BGR /255 -> (N, 20, 8400): one candidate (anchor 0), zero elsewhere."""
    g = _Graph()
    total, mx, my, ax, ay = g.moments(g.faceness("input"), size, size)
    score = g.op(
        "Mul", g.op("Clip", g.op("Div", total, g.const(1000.0)), g.const(0.0), g.const(1.0)), g.const(0.9)
    )
    fields = [mx, my, g.op("Mul", ax, g.const(2.0)), g.op("Mul", ay, g.const(2.0)), score]
    for u, v in KPS5_LAYOUT:
        fields += [g.op("Add", mx, g.op("Mul", ax, g.const(float(u)))), g.op("Add", my, g.op("Mul", ay, g.const(float(v)))),
                   g.op("Mul", score, g.const(1.0))]  # fmt: skip
    rows = g.op("Reshape", g.op("Concat", *fields, axis=1), g.ints([0, 20, 1]))
    g.op("Pad", rows, g.ints([0, 0, 0, 0, 0, anchors - 1]), out="output0")
    b = _batch(fixed)
    return g.model([helper.make_tensor_value_info("input", FLOAT, [b, 3, size, size])],
                   [helper.make_tensor_value_info("output0", FLOAT, [b, 20, anchors])], "yolo_face")  # fmt: skip


def fan68(fixed: bool | int = False, size: int = 256, grid: int = 64) -> onnx.ModelProto:
    """input (N, 3, 256, 256) BGR /255 -> points (N, 68, 3) on the 64 grid, heatmaps (N, 68, 64, 64)
    peaking at 0.95 when a face fills the crop."""
    g = _Graph()
    total, mx, my, ax, ay = g.moments(g.faceness("input"), size, size)
    centre = g.op("Reshape", g.op("Concat", mx, my, axis=3), g.ints([-1, 1, 2]))
    spread = g.op("Reshape", g.op("Concat", ax, ay, axis=3), g.ints([-1, 1, 2]))
    points = g.op("Add", centre, g.op("Mul", spread, g.const(LAYOUT68[None])))
    grid_points = g.op("Mul", points, g.const(grid / size))
    first = g.op("Slice", grid_points, g.ints([0]), g.ints([1]), g.ints([2]))  # (N, 68, 1)
    visible = g.op("Add", g.op("Mul", first, g.const(0.0)), g.const(1.0))
    g.op("Concat", grid_points, visible, axis=2, out="landmarks")
    presence = g.op("Clip", g.op("Div", total, g.const(2000.0)), g.const(0.0), g.const(1.0))
    g.op("Expand", g.op("Mul", presence, g.const(0.95)), g.ints([1, 68, grid, grid]), out="heatmaps")
    b = _batch(fixed)
    return g.model([helper.make_tensor_value_info("input", FLOAT, [b, 3, size, size])],
                   [helper.make_tensor_value_info("landmarks", FLOAT, [b, 68, 3]),
                    helper.make_tensor_value_info("heatmaps", FLOAT, [b, 68, grid, grid])], "fan68")  # fmt: skip


def arcface(fixed: bool | int = False, seed: int = 1) -> onnx.ModelProto:
    """input (N, 3, 112, 112) RGB -1..1 -> (N, 512): sin(20 x) of the 8x8-pooled crop (so colours a
    little apart give unrelated features) times a fixed projection."""
    g = _Graph()
    pooled = g.op("AveragePool", "input", kernel_shape=[8, 8], strides=[8, 8])
    features = g.op("Flatten", g.op("Sin", g.op("Mul", pooled, g.const(20.0))), axis=1)
    projection = np.random.default_rng(seed).standard_normal((3 * 14 * 14, 512)).astype(np.float32)
    g.op("MatMul", features, g.const(projection), out="embedding")
    b = _batch(fixed)
    return g.model([helper.make_tensor_value_info("input", FLOAT, [b, 3, 112, 112])],
                   [helper.make_tensor_value_info("embedding", FLOAT, [b, 512])], "arcface")  # fmt: skip


def swapper(
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    denormalised_output: bool,
    emap: bool,
    fixed: bool | int = False,
    seed: int = 2,
) -> onnx.ModelProto:
    """target (N, 3, S, S) normalised by mean/std, source (N, 512) -> the target blended halfway
    towards sigmoid(source @ P) as an RGB colour, in the real model's output convention. ``emap``: a
    (512, 512) matrix as the last initializer, as inswapper carries it."""
    g = _Graph()
    rng = np.random.default_rng(seed)
    m = g.const(np.asarray(mean, np.float32).reshape(1, 3, 1, 1))
    s = g.const(np.asarray(std, np.float32).reshape(1, 3, 1, 1))
    unit = g.op("Add", g.op("Mul", "target", s), m)
    colour = g.op(
        "Sigmoid", g.op("MatMul", "source", g.const(rng.standard_normal((512, 3)).astype(np.float32) * 4))
    )
    colour = g.op("Reshape", colour, g.ints([-1, 3, 1, 1]))
    blended = g.op("Add", g.op("Mul", unit, g.const(0.5)), g.op("Mul", colour, g.const(0.5)))
    result = g.op("Div", g.op("Sub", blended, m), s) if denormalised_output else blended
    g.op("Identity", result, out="output")
    if emap:
        q, _ = np.linalg.qr(rng.standard_normal((512, 512)))
        g.const(q.astype(np.float32), "emap")  # last initializer, unused by the graph like the real one
    b = _batch(fixed)
    return g.model([helper.make_tensor_value_info("target", FLOAT, [b, 3, size, size]),
                    helper.make_tensor_value_info("source", FLOAT, [b, 512])],
                   [helper.make_tensor_value_info("output", FLOAT, [b, 3, size, size])], "swapper")  # fmt: skip


def converter(fixed: bool | int = False, seed: int = 3) -> onnx.ModelProto:
    g = _Graph()
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((512, 512)))
    g.op("MatMul", "input", g.const(q.astype(np.float32)), out="output")
    b = _batch(fixed)
    return g.model([helper.make_tensor_value_info("input", FLOAT, [b, 512])],
                   [helper.make_tensor_value_info("output", FLOAT, [b, 512])], "converter")  # fmt: skip


def enhancer(*, weight_input: bool, fixed: bool | int = False, size: int = 512) -> onnx.ModelProto:
    """input (N, 3, 512, 512) in -1..1 -> 0.9 x input (10 % towards grey); CodeFormer's extra
    ``weight`` (double [1]) is read and ignored."""
    g = _Graph()
    factor = g.const(0.9)
    if weight_input:
        factor = g.op("Add", factor, g.op("Mul", g.op("Cast", "weight", to=FLOAT), g.const(0.0)))
    g.op("Mul", "input", factor, out="output")
    b = _batch(fixed)
    inputs = [helper.make_tensor_value_info("input", FLOAT, [b, 3, size, size])]
    if weight_input:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
    return g.model(inputs, [helper.make_tensor_value_info("output", FLOAT, [b, 3, size, size])], "enhancer")


def scrfd(
    box: tuple[float, float, float, float], kps5: np.ndarray, score: float = 0.9, size: int = 640
) -> onnx.ModelProto:
    """input (1, 3, 640, 640) -> SCRFD's nine outputs (scores, box distances, point offsets for strides
    8, 16, 32; no batch axis), constant: one stride-8 anchor holds a face at ``box`` with ``kps5``."""
    g = _Graph()
    stride, cells = 8, size // 8
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col, row = int(cx // stride), int(cy // stride)
    anchor = np.array([col * stride, row * stride], np.float32)
    index = (row * cells + col) * 2  # two anchors per cell, row-major
    outputs = []
    for s in (8, 16, 32):
        n = (size // s) ** 2 * 2
        scores, dist, offsets = np.zeros((n, 1)), np.zeros((n, 4)), np.zeros((n, 10))
        if s == stride:
            scores[index] = score
            dist[index] = [anchor[0] - box[0], anchor[1] - box[1], box[2] - anchor[0], box[3] - anchor[1]]
            offsets[index] = (np.asarray(kps5, np.float32) - anchor).reshape(-1)
        outputs += [(f"score_{s}", scores), (f"bbox_{s}", dist / s), (f"kps_{s}", offsets / s)]
    ordered = outputs[0::3] + outputs[1::3] + outputs[2::3]  # all scores, then boxes, then points
    for name, value in ordered:
        g.op("Identity", g.const(value), out=name)
    return g.model([helper.make_tensor_value_info("input", FLOAT, [1, 3, size, size])],
                   [helper.make_tensor_value_info(name, FLOAT, list(value.shape)) for name, value in ordered], "scrfd")  # fmt: skip


def stand_ins(fixed: bool | int = False) -> dict[str, onnx.ModelProto]:
    """Manifest name -> stand-in model."""
    half, imagenet = ((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return {
        "yolo_face_8n": yolo_face(fixed),
        "2dfan4": fan68(fixed),
        "arcface_w600k_r50": arcface(fixed),
        "inswapper_128": swapper(
            128, (0, 0, 0), (1, 1, 1), denormalised_output=False, emap=True, fixed=fixed
        ),
        "ghost_2_256": swapper(256, *half, denormalised_output=True, emap=False, fixed=fixed),
        "simswap_256": swapper(256, *imagenet, denormalised_output=False, emap=False, fixed=fixed),
        "crossface_ghost": converter(fixed),
        "crossface_simswap": converter(fixed, seed=4),
        "gfpgan_1.4": enhancer(weight_input=False, fixed=fixed),
        "codeformer": enhancer(weight_input=True, fixed=fixed),
    }


def build_store(root: Path, *, fixed: bool | int = False) -> ModelStore:
    """The stand-ins saved under ``root`` with the real file names, and a store whose manifest is the
    real one with these files' sha256 (and no size or crc32)."""
    root.mkdir(parents=True, exist_ok=True)
    real = default_manifest()
    specs = []
    models = stand_ins(fixed)
    for spec in real:
        if spec.name in models:
            path = root / spec.file
            onnx.save(models[spec.name], str(path))
            spec = dataclasses.replace(spec, sha256=file_digests(path)["sha256"], crc32=None, size_bytes=None)
        specs.append(spec)
    return ModelStore(root, Manifest(specs))
