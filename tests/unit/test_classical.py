"""The classical backend on real detections: the astronaut photograph (scikit-image) and generated
virtual people and template clips (reelfab.devtools.synthetic). dlib on the CPU, no downloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from reelfab.devtools import synthetic
from reelfab.faces.classical import ClassicalEngine, models
from reelfab.faces.errors import ManyFacesError, ModelError, NoFaceError
from reelfab.faces.tracking import swap_stream
from reelfab.faces.types import Embedding, Face, SourceFace, best_face
from reelfab.media.frames import read_frames

# the astronaut's face in the 512x512 image: its box centre sits near (223, 127) (measured)
FACE_REGION = (195, 100, 250, 155)  # x0, y0, x1, y1 of where that centre may be


@pytest.fixture(scope="module")
def engine() -> ClassicalEngine:
    return ClassicalEngine()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def source(engine: ClassicalEngine) -> SourceFace:
    return engine.prepare_source(synthetic.virtual_person(3, size=512))


def centre(face: Face) -> tuple[float, float]:
    return (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2


def on_the_face(face: Face) -> bool:
    x, y = centre(face)
    return FACE_REGION[0] <= x <= FACE_REGION[2] and FACE_REGION[1] <= y <= FACE_REGION[3]


def test_model_files_are_found_in_the_package_without_importing_it() -> None:
    path = models.model_path(models.LANDMARKS_68)
    assert path.is_file() and path.parent.name == "models"


def test_a_missing_model_package_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="face-recognition-models"):
        models.model_path(models.RECOGNITION)


def test_the_face_is_chosen_by_score_not_by_box_size(astronaut: np.ndarray) -> None:
    # with a lower threshold the spacesuit is "detected" too, with a larger box than the face's
    faces = ClassicalEngine(threshold=-0.5).detect(astronaut)
    suit = [f for f in faces if not on_the_face(f)]
    assert suit and max(suit, key=lambda f: f.size).size > min(f.size for f in faces if on_the_face(f))
    chosen = best_face(faces)
    assert chosen is not None and on_the_face(chosen)


def test_detection_gives_68_landmarks_and_5_points_inside_the_box(
    engine: ClassicalEngine, astronaut: np.ndarray
) -> None:
    face = best_face(engine.detect(astronaut))
    assert face is not None and on_the_face(face) and face.score > 0.5
    assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
    assert face.landmarks68.dtype == np.float32 and face.kps5.dtype == np.float32
    grow = 0.1 * face.size  # the jaw line may reach a little past the detector's box
    x0, y0, x1, y1 = face.box
    lm = face.landmarks68
    assert (lm[:, 0] >= x0 - grow).all() and (lm[:, 0] <= x1 + grow).all()
    assert (lm[:, 1] >= y0 - grow).all() and (lm[:, 1] <= y1 + grow).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = face.kps5
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # image-left first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_refine_follows_a_moved_face_and_flags_a_lost_one(
    engine: ClassicalEngine, astronaut: np.ndarray
) -> None:
    face = best_face(engine.detect(astronaut))
    assert face is not None and face.landmarks68 is not None
    moved = np.roll(astronaut, (6, -4), axis=(0, 1))
    refined = engine.refine(moved, face)
    assert refined.landmarks68 is not None
    shift = (refined.landmarks68 - face.landmarks68).mean(axis=0)
    assert np.allclose(shift, (-4, 6), atol=1.0)
    assert 0 < refined.score < face.score  # decays: the detector did not see this frame
    # a previous shape the new fit is not a moved, turned or scaled copy of: the predictor lost the face
    mirrored = face.landmarks68 * np.array([1, -1], np.float32) + np.float32(2 * centre(face)[1]) * np.array(
        [0, 1], np.float32
    )
    assert engine.refine(astronaut, Face(face.box, face.score, face.kps5, mirrored)).score == 0.0


def test_embeddings_of_altered_copies_stay_close(engine: ClassicalEngine, astronaut: np.ndarray) -> None:
    def embed(image: np.ndarray) -> Embedding:
        face = best_face(engine.detect(image))
        assert face is not None
        return engine.embed(image, face)

    original = embed(astronaut)
    _, encoded = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 30])
    jpeg = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert jpeg is not None
    rotation = cv2.getRotationMatrix2D((256, 256), 10, 1.0)
    rotated = cv2.warpAffine(astronaut, rotation, (512, 512), borderMode=cv2.BORDER_REFLECT)
    # measured 0.21, 0.19, 0.07
    assert original.distance(embed(cv2.flip(astronaut, 1))) < 0.3
    assert original.distance(embed(jpeg)) < 0.25
    assert original.distance(embed(rotated)) < 0.1
    stranger = embed(synthetic.virtual_person(0, size=512))
    assert original.distance(stranger) > engine.identity_threshold("photo")


def test_generated_people_are_nearer_themselves_than_each_other(engine: ClassicalEngine) -> None:
    neutral = {
        seed: engine.prepare_source(synthetic.virtual_person(seed, size=512)).embedding for seed in (0, 5)
    }
    talking = {
        seed: engine.prepare_source(synthetic.virtual_person(seed, size=512, expression="talk:0.5")).embedding
        for seed in (0, 5)
    }
    between = neutral[0].distance(neutral[5])
    for seed in (0, 5):
        assert neutral[seed].distance(talking[seed]) < between
    # the synthetic threshold errs on the safe side: two different people are never the same
    assert between > engine.identity_threshold("synthetic")
    assert engine.identity_threshold("photo") == 0.6
    with pytest.raises(ValueError, match="asset kind"):
        engine.identity_threshold("drawing")


def test_a_source_without_a_face_or_with_two_is_refused_with_the_reason(
    engine: ClassicalEngine, astronaut: np.ndarray
) -> None:
    with pytest.raises(NoFaceError, match=r"source image 640x480: no face"):
        engine.prepare_source(np.full((480, 640, 3), 128, np.uint8))
    with pytest.raises(ManyFacesError, match=r"source image 1024x512: 2 faces of comparable detector score"):
        engine.prepare_source(np.hstack([astronaut, cv2.flip(astronaut, 1)]))


def test_a_weak_false_positive_does_not_make_a_source_ambiguous(astronaut: np.ndarray) -> None:
    lenient = ClassicalEngine(threshold=-0.5, source_max_side=400)  # sees the spacesuit too; searches reduced
    assert len(lenient.detect(astronaut)) >= 2
    prepared = lenient.prepare_source(astronaut)
    assert on_the_face(prepared.face)
    assert prepared.face.landmarks68 is not None and on_the_face(prepared.face)  # full-resolution landmarks
    assert prepared.embedding.model == "dlib_resnet_v1" and prepared.embedding.vector.shape == (128,)


def test_swap_changes_the_face_only_and_leaves_inputs_alone(
    engine: ClassicalEngine, source: SourceFace, astronaut: np.ndarray
) -> None:
    face = best_face(engine.detect(astronaut))
    blank = np.full_like(astronaut, 90)
    before = astronaut.copy()
    swapped, untouched = engine.swap_batch(source, [astronaut, blank], [face, None])
    assert np.array_equal(astronaut, before)  # not modified in place
    assert untouched is not blank and np.array_equal(untouched, blank)
    changed = np.abs(swapped.astype(int) - astronaut.astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 2000  # the face really was replaced
    assert face is not None and face.landmarks68 is not None
    x0, y0 = face.landmarks68.min(axis=0) - 0.25 * face.size
    x1, y1 = face.landmarks68.max(axis=0) + 0.25 * face.size
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    for blend in ("seamless", "feather"):  # both composites keep to the face
        other = ClassicalEngine(blend=blend).swap_batch(source, [astronaut], [face])[0]
        assert other.shape == astronaut.shape and other.dtype == np.uint8


def test_enhancement_needs_the_onnx_backend(engine: ClassicalEngine, astronaut: np.ndarray) -> None:
    with pytest.raises(ModelError, match="onnx backend"):
        engine.enhance_batch([astronaut], [None])


def test_swapped_clip_shows_the_source_identity_not_the_performer(
    engine: ClassicalEngine, source: SourceFace, tmp_path: Path
) -> None:
    """The issue's acceptance criterion: in at least 90% of frames the swapped face is nearer the
    source's identity than the template performer's."""
    clip = synthetic.template_clip(
        tmp_path / "template.mp4", seed=0, seconds=1.2, size=(360, 640), with_audio=False
    )
    frames = list(read_frames(clip.path))
    nearer_source = checked = 0
    for i, (frame, (swapped, face)) in enumerate(
        zip(frames, swap_stream(engine, source, frames), strict=True)
    ):
        assert face is not None, f"no face tracked in frame {i}"
        if i % 3:
            continue
        performer = engine.embed(frame, face)
        result = engine.embed(swapped, engine.refine(swapped, face))
        nearer_source += result.distance(source.embedding) < result.distance(performer)
        checked += 1
    assert nearer_source >= 0.9 * checked, f"{nearer_source} of {checked} frames nearer the source"
