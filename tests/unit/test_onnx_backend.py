"""The onnx backend end to end on stand-in models that carry the real models' signatures (see
tests/faces_models.py): detection, alignment, batching at 1/8/32 and on fixed-batch exports,
paste-back, embeddings, enhancement, provider choice and the session cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from reelfab.faces.backends import get_engine
from reelfab.faces.errors import ModelError, NoFaceError
from reelfab.faces.onnx import geometry, runtime
from reelfab.faces.onnx.detector import Detector
from reelfab.faces.onnx.engine import OnnxEngine
from reelfab.faces.onnx.store import ModelStore
from reelfab.faces.onnx.swapper import read_emap
from reelfab.faces.types import Face, FaceEngine
from reelfab.settings import Settings
from tests import faces_models as fm

CENTRE, AXES = (240.0, 180.0), (60.0, 80.0)
OTHER = fm.Palette(skin=(60, 90, 230), eyes=(30, 20, 90), mouth=(20, 20, 120))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return fm.build_store(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def fixed_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return fm.build_store(tmp_path_factory.mktemp("models_fixed"), fixed=True)


def engine(store: ModelStore, **options: object) -> OnnxEngine:
    options.setdefault("commercial_mode", False)  # arcface, which every swapper needs, is non-commercial
    options.setdefault("providers", ["cpu"])
    return OnnxEngine(store, **options)  # type: ignore[arg-type]


def clip_frames(n: int = 32) -> tuple[list[np.ndarray], list[bool]]:
    """Frames with the face wandering and resizing; every fifth frame has none."""
    frames, has_face = [], []
    for i in range(n):
        frame = np.full((360, 480, 3), fm.BACKGROUND, np.uint8)
        if i % 5 != 4:
            fm.draw_face(frame, (200 + 3 * i, 170 + (i % 7)), (50 + i % 9, 70 + i % 9), fm.Palette())
        frames.append(frame)
        has_face.append(i % 5 != 4)
    return frames, has_face


def test_the_stand_ins_verify_against_their_manifest(store: ModelStore) -> None:
    installed = [s.name for s in store.manifest if store.is_installed(s.name)]
    assert len(installed) == 10
    for name in installed:
        store.verify(name)


# detection and landmarks


def test_detects_the_face_where_it_is(store: ModelStore) -> None:
    faces = engine(store).detect(fm.face_frame(centre=CENTRE, axes=AXES))
    assert len(faces) == 1
    face = faces[0]
    assert face.score == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(face.kps5, fm.expected_kps5(CENTRE, AXES), atol=1.0)
    assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert (cx, cy) == pytest.approx(CENTRE, abs=1.0)
    assert (face.width, face.height) == pytest.approx((2 * AXES[0], 2 * AXES[1]), rel=0.03)  # the ellipse


def test_a_large_frame_is_shrunk_to_the_detector_and_mapped_back(store: ModelStore) -> None:
    centre, axes = (900.0, 420.0), (150.0, 200.0)
    faces = engine(store).detect(fm.face_frame((720, 1280), centre, axes))
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].kps5, fm.expected_kps5(centre, axes), atol=3.0)


def test_no_face_no_detection(store: ModelStore) -> None:
    frame = np.full((360, 480, 3), fm.BACKGROUND, np.uint8)
    assert engine(store).detect(frame) == []
    with pytest.raises(NoFaceError, match="480x360: no face"):
        engine(store).prepare_source(frame)


def test_scrfd_outputs_decode_to_the_face_they_hold(tmp_path: Path) -> None:
    box, kps = (100.0, 120.0, 180.0, 220.0), fm.expected_kps5((140, 170), (40, 50))
    path = tmp_path / "scrfd_2.5g.onnx"
    onnx.save(fm.scrfd(box, kps), str(path))
    spec = ModelStore(tmp_path).spec("scrfd_2.5g")
    detector = Detector(runtime.load(path, ["CPUExecutionProvider"]), spec)
    frame = np.zeros((480, 1280, 3), np.uint8)  # shrunk by 2 into the 640 square: boxes come back doubled
    (faces,) = detector.detect_batch([frame])
    assert len(faces) == 1
    assert faces[0].box == pytest.approx(tuple(2 * v for v in box), abs=1e-3)
    np.testing.assert_allclose(faces[0].kps5, 2 * kps, atol=1e-3)
    assert faces[0].score == pytest.approx(0.9)


def test_refine_follows_the_face_and_lets_go_when_it_is_gone(store: ModelStore) -> None:
    e = engine(store)
    (face,) = e.detect(fm.face_frame(centre=CENTRE, axes=AXES))
    moved = e.refine(fm.face_frame(centre=(CENTRE[0] + 6, CENTRE[1] + 4), axes=AXES), face)
    assert moved.box[0] - face.box[0] == pytest.approx(6, abs=0.5)
    assert moved.box[1] - face.box[1] == pytest.approx(4, abs=0.5)
    assert moved.score == pytest.approx(face.score * 0.98)
    np.testing.assert_allclose(moved.kps5, fm.expected_kps5((CENTRE[0] + 6, CENTRE[1] + 4), AXES), atol=1.0)
    gone = e.refine(np.full((360, 480, 3), fm.BACKGROUND, np.uint8), face)
    assert gone.score == 0.0


# alignment, embeddings


def test_the_aligned_crop_puts_the_eyes_where_the_template_says() -> None:
    size = 112
    template = geometry.TEMPLATES["arcface_112_v2"] * size
    angle, scale, shift = np.radians(12), 2.3, np.array([150.0, 90.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    kps5 = (template @ rotation.T + shift).astype(np.float32)  # the template, moved, turned and scaled
    matrix = geometry.align_matrix(kps5, "arcface_112_v2", size)
    mapped = cv2.transform(kps5[None].astype(np.float64), matrix)[0]
    np.testing.assert_allclose(mapped, template, atol=1e-3)
    for (x, y), (tx, ty) in zip(
        kps5, template, strict=True
    ):  # and the pixels agree: a dot lands on its point
        frame = np.zeros((480, 640, 3), np.uint8)
        cv2.circle(frame, (round(x), round(y)), 5, (255, 255, 255), -1)
        weight = geometry.crop(frame, kps5, "arcface_112_v2", size).image[:, :, 0].astype(float)
        ys, xs = np.mgrid[:size, :size]
        centroid = ((weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum())
        assert centroid == pytest.approx((tx, ty), abs=0.8)


def test_the_same_face_embeds_the_same_and_another_one_differently(store: ModelStore) -> None:
    e = engine(store)

    def embed(**kw: object):  # type: ignore[no-untyped-def]
        frame = fm.face_frame(**kw)  # type: ignore[arg-type]
        return e.embed(frame, e.detect(frame)[0])

    a = embed()
    assert a.model == "arcface_w600k_r50" and a.metric == "cosine" and a.vector.shape == (512,)
    assert a.distance(embed()) == pytest.approx(0.0, abs=1e-6)
    assert a.distance(embed(centre=(200.0, 200.0), axes=(45.0, 60.0))) < 0.15  # moved, smaller: alignment
    assert a.distance(embed(palette=OTHER)) > e.identity_threshold("photo")
    assert e.identity_threshold("photo") == 0.6
    with pytest.raises(ValueError, match="asset kind"):
        e.identity_threshold("video")


# swapping


def test_swap_batches_of_1_8_and_32_give_the_same_frames(store: ModelStore, fixed_store: ModelStore) -> None:
    frames, has_face = clip_frames(32)
    source_image = fm.face_frame(palette=OTHER)
    results = []
    for st, batch_size in ((store, 1), (store, 8), (store, 32), (fixed_store, 8)):
        e = engine(st, batch_size=batch_size)
        detected = e.detect_batch(frames)
        faces = [f[0] if f else None for f in detected]
        assert [f is not None for f in faces] == has_face
        results.append((faces, e.swap_batch(e.prepare_source(source_image), frames, faces)))
    assert engine(fixed_store)._swapper.model.fixed_batch == 1  # the fallback really ran one by one
    (faces, swapped), others = results[0], results[1:]
    for other_faces, other_swapped in others:  # on CPU the results are identical, not just close
        for a, b in zip(faces, other_faces, strict=True):
            assert (a is None and b is None) or (
                a is not None and b is not None and np.array_equal(a.kps5, b.kps5)
            )
        assert all(np.array_equal(x, y) for x, y in zip(swapped, other_swapped, strict=True))
    for frame, out, face in zip(frames, swapped, faces, strict=True):
        assert (face is None) == np.array_equal(frame, out)


@pytest.mark.parametrize("swapper", ["ghost_2_256", "inswapper_128", "simswap_256"])
def test_paste_back_changes_only_the_face_region(store: ModelStore, swapper: str) -> None:
    e = engine(store, swapper=swapper)
    frame = fm.face_frame(centre=CENTRE, axes=AXES)
    (face,) = e.detect(frame)
    (out,) = e.swap_batch(e.prepare_source(fm.face_frame(palette=OTHER)), [frame], [face])
    changed = np.any(out != frame, axis=2)
    # the crop's footprint in the frame: the only place paste-back may write
    template, size = e._swapper.spec.template, e._swapper.size
    matrix = geometry.align_matrix(face.kps5, template, size)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    footprint = cv2.transform(corners[None], cv2.invertAffineTransform(matrix))[0]
    inside = np.zeros(changed.shape, np.uint8)
    cv2.fillConvexPoly(inside, np.round(footprint).astype(np.int32), 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
    assert changed.sum() > 0.3 * (np.pi * AXES[0] * AXES[1])  # the face itself changed...
    assert not (changed & ~inside).any()  # ...and nothing outside its crop
    assert changed[int(CENTRE[1]), int(CENTRE[0])]
    assert not changed[5, 5] and not changed[-5, -5]


def test_the_swapped_colour_comes_from_the_source(store: ModelStore) -> None:
    e = engine(store)
    frame = fm.face_frame(centre=CENTRE, axes=AXES)
    faces = e.detect(frame)
    a = e.swap_batch(e.prepare_source(fm.face_frame(palette=OTHER)), [frame], faces)[0]
    b = e.swap_batch(e.prepare_source(fm.face_frame()), [frame], faces)[0]
    again = e.swap_batch(e.prepare_source(fm.face_frame(palette=OTHER)), [frame], faces)[0]
    assert np.array_equal(a, again)
    cy, cx = int(CENTRE[1]), int(CENTRE[0])
    assert np.abs(a[cy, cx].astype(int) - b[cy, cx].astype(int)).max() > 10


def test_source_vectors_follow_each_family(store: ModelStore) -> None:
    image = fm.face_frame(palette=OTHER)
    raw = engine(store).prepare_source(image).embedding.vector
    inswapper = engine(store, swapper="inswapper_128").prepare_source(image).extra["source_vector"]
    emap = read_emap(store.path("inswapper_128"))
    emap_last = onnx.numpy_helper.to_array(onnx.load(str(store.path("inswapper_128"))).graph.initializer[-1])
    np.testing.assert_array_equal(emap, emap_last)
    np.testing.assert_allclose(inswapper, raw @ emap / np.linalg.norm(raw), rtol=1e-5, atol=1e-6)
    converter = runtime.load(store.path("crossface_ghost"), ["CPUExecutionProvider"])
    ghost = engine(store, swapper="ghost_2_256").prepare_source(image).extra["source_vector"]
    np.testing.assert_allclose(ghost, converter.run({"input": raw[None]})[0][0], rtol=1e-5, atol=1e-6)
    simswap = engine(store, swapper="simswap_256").prepare_source(image).extra["source_vector"]
    assert np.linalg.norm(simswap) == pytest.approx(1.0, abs=1e-5)  # simswap's is normalised, ghost's is not


# enhancement


@pytest.mark.parametrize("enhancer", ["gfpgan_1.4", "codeformer"])
def test_enhance_changes_the_face_only(store: ModelStore, enhancer: str) -> None:
    e = engine(store, enhancer=enhancer)
    frame = fm.face_frame(centre=CENTRE, axes=AXES)
    faces = e.detect(frame)
    out, untouched = e.enhance_batch([frame, frame], [faces[0], None])
    assert np.array_equal(untouched, frame)
    changed = np.any(out != frame, axis=2)
    assert changed[int(CENTRE[1]), int(CENTRE[0])] and not changed[5, 5]


def test_enhance_without_an_enhancer_says_how_to_get_one(store: ModelStore) -> None:
    with pytest.raises(ModelError, match="gfpgan_1.4"):
        engine(store).enhance_batch([fm.face_frame()], [None])


# construction


def test_the_engine_is_a_face_engine_and_the_backend_factory_builds_it(store: ModelStore) -> None:
    assert isinstance(engine(store), FaceEngine)
    settings = Settings(models_dir=store.root, commercial_mode=False, execution_providers="cpu")
    built = get_engine("onnx", settings)
    assert built.name == "onnx" and built.embedder == "arcface_w600k_r50"


def test_missing_models_are_named_with_the_command_that_fetches_them(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        engine(ModelStore(tmp_path))
    for name in ("yolo_face_8n", "2dfan4", "arcface_w600k_r50", "ghost_2_256", "crossface_ghost"):
        assert f"reelfab models pull {name}" in str(err.value)


def test_commercial_mode_refuses_non_commercial_models(store: ModelStore) -> None:
    with pytest.raises(ModelError) as err:
        OnnxEngine(store, swapper="inswapper_128", commercial_mode=True, providers=["cpu"])
    assert "inswapper_128 is licensed InsightFace non-commercial" in str(err.value)
    # the surprise: ArcFace itself is non-commercial, and every swapper is driven by it
    with pytest.raises(ModelError, match="arcface_w600k_r50 is licensed"):
        OnnxEngine(store, commercial_mode=True, providers=["cpu"])


def test_models_of_the_wrong_kind_are_refused(store: ModelStore) -> None:
    with pytest.raises(ModelError, match="2dfan4 is a landmarker, not a detector"):
        engine(store, detector="2dfan4")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        engine(store, swapper="nope")


# runtime


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
         ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)  # fmt: skip
def test_providers_best_first(
    monkeypatch: pytest.MonkeyPatch, available: list[str], expected: list[str]
) -> None:
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: available)
    assert runtime.choose_providers() == expected


def test_requested_providers_are_honoured_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert runtime.choose_providers(["cuda"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.choose_providers(["cpu"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="TensorrtExecutionProvider not available"):
        runtime.choose_providers(["tensorrt", "cuda"])


def test_sessions_are_cached_per_file_and_providers(store: ModelStore) -> None:
    path = store.path("crossface_ghost")
    first = runtime.load(path, ["CPUExecutionProvider"])
    assert runtime.load(path, ["CPUExecutionProvider"]) is first
    assert runtime.load(path, ["CPUExecutionProvider"], threads=1) is not first


def test_the_io_binding_path_gives_the_plain_results(tmp_path: Path) -> None:
    path = tmp_path / "converter.onnx"
    onnx.save(fm.converter(), str(path))
    model = runtime.load(path, ["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    plain = model.run({"input": x})[0]
    model.bind_device = "cpu"  # the CUDA path's code, with the binding on the one device this machine has
    try:
        np.testing.assert_array_equal(model.run({"input": x})[0], plain)
    finally:
        model.bind_device = None


def test_a_fixed_batch_model_runs_in_padded_chunks(tmp_path: Path) -> None:
    dynamic, fixed4 = tmp_path / "dynamic.onnx", tmp_path / "fixed4.onnx"
    onnx.save(fm.converter(), str(dynamic))
    onnx.save(fm.converter(fixed=4), str(fixed4))
    a, b = runtime.load(dynamic, ["CPUExecutionProvider"]), runtime.load(fixed4, ["CPUExecutionProvider"])
    assert (a.fixed_batch, b.fixed_batch) == (None, 4)
    x = np.random.default_rng(0).standard_normal((10, 512)).astype(np.float32)
    with pytest.raises(ModelError, match="inference failed"):
        b.run({"input": x})  # what the field notes saw: a fixed-batch model rejects other batch sizes
    np.testing.assert_allclose(
        b.run_batched({"input": x}, 8)[0], a.run_batched({"input": x}, 8)[0], atol=1e-5
    )
    assert a.run_batched({"input": x}, 3)[0].shape == (10, 512)


def test_a_face_without_landmarks_still_swaps(store: ModelStore) -> None:
    e = engine(store, landmarker=None)
    frame = fm.face_frame(centre=CENTRE, axes=AXES)
    (face,) = e.detect(frame)
    assert face.landmarks68 is None
    bare = Face(face.box, face.score, face.kps5)
    (out,) = e.swap_batch(e.prepare_source(fm.face_frame(palette=OTHER)), [frame], [bare])
    assert not np.array_equal(out, frame)
    assert e.refine(frame, bare).box == pytest.approx(face.box)
