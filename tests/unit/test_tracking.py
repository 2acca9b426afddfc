"""Tracking and stream swapping, through the FaceEngine interface only. The engine is the classical
backend on the astronaut photograph pasted into a plain frame, wrapped to count detector calls."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import pytest

from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.tracking import FaceTracker, Smoothing, swap_stream
from reelfab.faces.types import Embedding, Face, SourceFace

W, H = 480, 640


class Counting:
    """A FaceEngine that passes everything to another and counts the detector calls."""

    def __init__(self, engine: ClassicalEngine) -> None:
        self.engine = engine
        self.name, self.embedder = engine.name, engine.embedder
        self.detections = 0
        self.batches: list[int] = []

    def detect(self, frame: np.ndarray) -> list[Face]:
        self.detections += 1
        return self.engine.detect(frame)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        return [self.detect(f) for f in frames]

    def refine(self, frame: np.ndarray, face: Face) -> Face:
        return self.engine.refine(frame, face)

    def embed(self, frame: np.ndarray, face: Face) -> Embedding:
        return self.engine.embed(frame, face)

    def prepare_source(self, image: np.ndarray) -> SourceFace:
        return self.engine.prepare_source(image)

    def swap_batch(
        self, source: SourceFace, frames: Sequence[np.ndarray], faces: Sequence[Face | None]
    ) -> list[np.ndarray]:
        self.batches.append(len(frames))
        return self.engine.swap_batch(source, frames, faces)

    def enhance_batch(self, frames: Sequence[np.ndarray], faces: Sequence[Face | None]) -> list[np.ndarray]:
        return self.engine.enhance_batch(frames, faces)

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        return self.engine.identity_threshold(asset_kind)


@pytest.fixture(scope="module")
def classical() -> ClassicalEngine:
    return ClassicalEngine()


@pytest.fixture
def engine(classical: ClassicalEngine) -> Counting:
    return Counting(classical)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from skimage import data

    head = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 80:380]
    return cv2.resize(head, None, fx=1.5, fy=1.5)  # the face ~130 px: found at 3/4 scale (HOG needs ~80)


FACE_IN_PORTRAIT = (214, 190)  # the face's box centre in the portrait (the astronaut's at (223, 127))


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return np.full((H, W, 3), (70, 90, 110), np.uint8)


def scene(portrait: np.ndarray, background: np.ndarray, x: float = 90, y: float = 120) -> np.ndarray:
    """The portrait placed at (x, y) (sub-pixel: the face moves smoothly) on the background."""
    shift = np.array([[1, 0, x], [0, 1, y]], np.float32)
    return cv2.warpAffine(portrait, shift, (W, H), dst=background.copy(), borderMode=cv2.BORDER_TRANSPARENT)


def moving(portrait: np.ndarray, background: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield scene(portrait, background, 90 + 30 * math.sin(i / 6), 120 + 2 * i)


def eye_distance(face: Face) -> float:
    return float(np.linalg.norm(face.kps5[1] - face.kps5[0]))


@pytest.mark.parametrize("every", [1, 4])
def test_the_detector_runs_every_n_frames_and_landmarks_follow_in_between(
    engine: Counting, portrait: np.ndarray, background: np.ndarray, every: int
) -> None:
    tracker = FaceTracker(engine, detect_every=every, smoothing=None)
    frames = list(moving(portrait, background, 12))
    faces = [tracker.track(f) for f in frames]
    assert engine.detections == math.ceil(12 / every)
    assert all(f is not None for f in faces)
    reference = ClassicalEngine()
    for frame, face in zip(frames, faces, strict=True):  # tracked landmarks match a fresh detection
        assert face is not None and face.landmarks68 is not None
        detected = reference.detect(frame)[0]
        assert detected.landmarks68 is not None
        error = np.linalg.norm(face.landmarks68 - detected.landmarks68, axis=1).mean()
        assert error < 0.1 * eye_distance(detected)


def test_landmarks_of_a_still_face_are_smoothed(
    engine: Counting, portrait: np.ndarray, background: np.ndarray
) -> None:
    rng = np.random.default_rng(7)
    still = scene(portrait, background)
    frames = [np.clip(still + rng.normal(0, 8, still.shape), 0, 255).astype(np.uint8) for _ in range(30)]

    def jitter(smoothing: Smoothing | None) -> float:
        tracker = FaceTracker(engine, detect_every=5, smoothing=smoothing)
        tracks = [tracker.track(f) for f in frames]
        points = np.array([t.landmarks68 for t in tracks if t is not None])
        assert len(points) == len(frames)
        return float(points[5:].std(axis=0).mean()) / eye_distance(tracks[-1])  # type: ignore[arg-type]

    raw, smoothed = jitter(None), jitter(Smoothing())
    assert raw > 0.003  # the noise does shake the raw landmarks (measured 0.008 of the eye distance)
    assert smoothed < 0.6 * raw


def test_a_lost_face_gives_none_and_is_found_again_at_once(
    engine: Counting, portrait: np.ndarray, background: np.ndarray
) -> None:
    tracker = FaceTracker(engine, detect_every=5)
    present = [tracker.track(f) for f in moving(portrait, background, 8)]
    gone = [tracker.track(background.copy()) for _ in range(6)]
    returning = list(moving(portrait, background, 4))
    back = [tracker.track(f) for f in returning]
    assert all(f is not None for f in present)
    assert gone == [None] * 6  # from the very first frame without the face
    assert all(f is not None for f in back)  # re-acquired on the first frame it is back
    fresh = ClassicalEngine().detect(returning[0])[0]
    assert back[0] is not None and back[0].landmarks68 is not None and fresh.landmarks68 is not None
    offset = np.linalg.norm(back[0].landmarks68.mean(axis=0) - fresh.landmarks68.mean(axis=0))
    assert offset < 2  # where it is now, not smoothed from where it was


def test_a_face_that_jumps_is_not_followed_but_found_again(
    engine: Counting, portrait: np.ndarray, background: np.ndarray
) -> None:
    tracker = FaceTracker(engine, detect_every=10, smoothing=None)
    for f in moving(portrait, background, 3):
        tracker.track(f)
    jumped = tracker.track(scene(portrait, background, -60, 180))  # a cut: the face is elsewhere
    assert jumped is not None
    centre = np.array([(jumped.box[0] + jumped.box[2]) / 2, (jumped.box[1] + jumped.box[3]) / 2])
    assert (
        np.linalg.norm(centre - (np.array(FACE_IN_PORTRAIT) + (-60, 180))) < 15
    )  # found at once in its new place
    # the first lock, the look around where the face was, then the whole frame
    assert engine.detections == 3


def test_swap_stream_keeps_order_batches_and_is_lazy(
    engine: Counting, portrait: np.ndarray, background: np.ndarray
) -> None:
    source = engine.prepare_source(cv2.flip(portrait, 1))
    frames = list(moving(portrait, background, 5))
    frames[2] = background.copy()  # no face: passed through unchanged
    results = list(swap_stream(engine, source, frames, batch_size=2))
    assert engine.batches == [2, 2, 1]
    assert len(results) == 5
    for i, (swapped, face) in enumerate(results):
        if i == 2:
            assert face is None and np.array_equal(swapped, frames[2])
        else:
            assert face is not None and not np.array_equal(swapped, frames[i])

    endless = itertools.cycle(frames[:2])  # pulls frames only as batches fill: never the whole clip
    first = list(itertools.islice(swap_stream(engine, source, endless, batch_size=3), 4))
    assert len(first) == 4 and all(face is not None for _, face in first)
