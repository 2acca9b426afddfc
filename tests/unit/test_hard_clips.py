"""Hard clips (``synthetic.hard``) and the swap scoring built on their truth (``swapeval``).

The truth is only worth something if it is right: the face polygon is checked against dlib's landmarks,
the decoys against dlib's detector, the hand against the pixels, the blur against sharpness. Then the
scoring is checked on swaps whose answer is known: none at all, a patch on a decoy or on the hand, and
a real classical swap of the still clip. Each clip is rendered once for the module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from reelfab.devtools.swapeval import score_clip
from reelfab.devtools.synthetic import virtual_person
from reelfab.devtools.synthetic.hard import SCENARIOS, HardClip, hard_clip
from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.types import Face, SourceFace
from reelfab.media.frames import read_frames
from reelfab.media.probe import probe

SEED = 1  # performer 1001; performer 1000 (seed 0) is one dlib scores weakly (it misses them at 3/4 size)

Box = tuple[float, float, float, float]


@pytest.fixture(scope="module")
def engine() -> ClassicalEngine:
    return ClassicalEngine()


@pytest.fixture(scope="module")
def source(engine: ClassicalEngine) -> SourceFace:
    return engine.prepare_source(virtual_person(3))


@pytest.fixture(scope="module")
def clip_of() -> Callable[[str], HardClip]:
    cache: dict[str, HardClip] = {}

    def get(name: str) -> HardClip:
        if name not in cache:
            cache[name] = hard_clip(name, seed=SEED)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def faces_in(engine: ClassicalEngine, clip_of: Callable[[str], HardClip]) -> Callable[[str, int], list[Face]]:
    cache: dict[tuple[str, int], list[Face]] = {}

    def get(name: str, i: int) -> list[Face]:
        if (name, i) not in cache:
            cache[name, i] = engine.detect(clip_of(name).frames[i])
        return cache[name, i]

    return get


def iou(a: Box, b: Box) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_of(poly: NDArray[Any]) -> Box:
    return float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max())


def fill(shape: tuple[int, ...], poly: NDArray[Any]) -> NDArray[np.bool_]:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


# ------------------------------------------------------------------ the clips and their truth


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_renders_with_a_truth_per_frame_and_the_performer_dominant(
    name: str, clip_of: Callable[[str], HardClip]
) -> None:
    clip = clip_of(name)
    count = round((3.6 if name == "unseen" else 3.0) * 25)
    assert len(clip.frames) == len(clip.truth) == count and clip.size == (360, 640) and clip.name == name
    assert all(f.shape == (640, 360, 3) and f.dtype == np.uint8 for f in clip.frames)
    assert clip.performer_seed == 1000 + SEED and clip.description
    present = [t for t in clip.truth if t.face_polygon is not None and t.visible_share >= 0.5]
    assert len(present) >= 0.8 * count  # present most of the time ...
    for t in clip.truth:
        assert 0.0 <= t.visible_share <= 1.0 and t.static is (name == "static")
        if t.face_polygon is not None:  # ... and the largest face
            x0, y0, x1, y1 = box_of(t.face_polygon)
            assert all((x1 - x0) * (y1 - y0) > (b[2] - b[0]) * (b[3] - b[1]) for b in t.decoy_boxes)
    if name == "static":  # nothing moves: only the grain differs
        first = clip.truth[0].face_polygon
        assert first is not None
        assert all(t.face_polygon is not None and np.array_equal(t.face_polygon, first) for t in clip.truth)
        assert np.abs(clip.frames[-1].astype(int) - clip.frames[0]).mean() < 2.0


def test_hard_clips_are_deterministic_for_a_seed() -> None:
    for name in SCENARIOS:  # short: the props (hand, shake, print, poster, second person) come in at once
        a, b = hard_clip(name, seed=7, seconds=0.2), hard_clip(name, seed=7, seconds=0.2)
        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True)), name
        assert [t.visible_share for t in a.truth] == [t.visible_share for t in b.truth]
    other = hard_clip("unseen", seed=8, seconds=0.04)
    assert not np.array_equal(other.frames[0], a.frames[0])
    with pytest.raises(ValueError, match="unknown hard scenario"):
        hard_clip("sideways")


def test_a_hard_clip_writes_as_h264_with_or_without_its_sound(tmp_path: Path) -> None:
    clip = hard_clip("occluder", seed=SEED, seconds=0.4)
    silent = probe(clip.write(tmp_path / "silent.mp4"))
    assert (silent.width, silent.height, silent.codec, silent.has_audio) == (360, 640, "h264", False)
    decoded = list(read_frames(tmp_path / "silent.mp4"))
    assert len(decoded) == len(clip.frames)
    assert np.abs(decoded[5].astype(int) - clip.frames[5]).mean() < 3  # crf 18
    assert probe(clip.write(tmp_path / "sound.mp4", with_audio=True)).audio_codec == "aac"


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_face_polygon_matches_dlibs_landmarks(
    name: str, clip_of: Callable[[str], HardClip], faces_in: Callable[[str, int], list[Face]]
) -> None:
    clip = clip_of(name)
    overlaps = []
    for i in range(0, len(clip.frames), 3):
        t = clip.truth[i]
        if t.face_polygon is None or t.visible_share < 0.99 or t.blur_px > 0:
            continue
        box = box_of(t.face_polygon)
        found = [f for f in faces_in(name, i) if iou(f.box, box) >= 0.3]
        if not found:
            continue
        assert found[0].landmarks68 is not None
        hull = cv2.convexHull(found[0].landmarks68).reshape(-1, 2)
        a, b = fill(clip.frames[i].shape, t.face_polygon), fill(clip.frames[i].shape, hull)
        overlaps.append((a & b).sum() / (a | b).sum())
    assert len(overlaps) >= 5, f"dlib found the performer in only {len(overlaps)} sampled frames"
    assert np.mean(np.array(overlaps) >= 0.55) >= 0.9 and np.median(overlaps) >= 0.7, np.round(overlaps, 2)


@pytest.mark.parametrize(("name", "least"), [("decoys", 0.8), ("two_people", 0.8), ("unseen", 0.7)])
def test_the_decoys_are_faces_to_dlib_where_the_truth_puts_them(
    name: str, least: float, clip_of: Callable[[str], HardClip], faces_in: Callable[[str, int], list[Face]]
) -> None:
    clip = clip_of(name)
    expected = {"decoys": 2, "two_people": 1, "unseen": 1}[name]
    hits: dict[int, list[bool]] = {}
    for i in range(0, len(clip.frames), 2):
        boxes = clip.truth[i].decoy_boxes
        assert len(boxes) == expected
        for k, box in enumerate(boxes):
            hits.setdefault(k, []).append(any(iou(f.box, box) >= 0.3 for f in faces_in(name, i)))
    for k, found in hits.items():
        assert np.mean(found) >= least, f"decoy {k} found in {np.mean(found):.0%} of the frames"
    if name == "decoys":  # the performer is covered a while: the tracker is tempted by the drawing
        assert sum(t.visible_share < 0.8 for t in clip.truth) >= 10


@pytest.mark.parametrize("name", ["occluder", "unseen"])
def test_the_hand_covers_mouth_and_chin_for_about_a_second_when_the_truth_says(
    name: str, clip_of: Callable[[str], HardClip]
) -> None:
    clip = clip_of(name)
    assert clip.truth[0].occluder_polygon is None and clip.truth[0].visible_share == 1.0
    covered = []
    for i, t in enumerate(clip.truth):
        occ = t.occluder_polygon
        if occ is None:
            continue
        inside = [cv2.pointPolygonTest(occ.reshape(-1, 1, 2), t.points[k], True) >= 2 for k in ("mouth", "chin")]
        if all(inside):
            covered.append(i)
    runs = np.split(np.array(covered), np.flatnonzero(np.diff(covered) > 1) + 1)
    assert max(len(r) for r in runs) >= 0.8 * clip.fps and len(covered) <= 1.5 * clip.fps  # about a second
    # the pixels: at the mouth, the colour (chromaticity: shading aside) of the hand where the truth
    # says it covers the mouth; the lips' and skin's elsewhere (the light is constant in "occluder")
    hand_colour = None
    apart = []
    for i, (t, frame) in enumerate(zip(clip.truth, clip.frames, strict=True)):
        x, y = (round(v) for v in t.points["mouth"])
        mouth = chroma(frame[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).mean(axis=0))
        if i in covered:
            assert t.face_polygon is not None and t.occluder_polygon is not None
            assert 0.4 <= t.visible_share <= 0.85
            hand = cv2.erode(fill(frame.shape, t.occluder_polygon).astype(np.uint8), np.ones((5, 5), np.uint8))
            pixels = frame[hand.astype(bool)].astype(np.float64)
            hand_colour = np.median(pixels / pixels.sum(axis=1, keepdims=True).clip(1, None), axis=0)
            assert np.abs(mouth - hand_colour).max() < 0.01
        elif t.occluder_polygon is None:
            apart.append(mouth)
    if name == "occluder":
        assert hand_colour is not None
        assert np.median([np.abs(m - hand_colour).max() for m in apart]) > 0.015


def chroma(bgr: NDArray[np.float64]) -> NDArray[np.float64]:
    values = np.asarray(bgr, np.float64)
    return values / max(float(values.sum()), 1.0)


def test_blurred_frames_move_fast_and_are_blurrier_than_sharp_ones(clip_of: Callable[[str], HardClip]) -> None:
    clip = clip_of("blur")

    def sharpness(i: int) -> float:
        poly = clip.truth[i].face_polygon
        assert poly is not None
        x0, y0, x1, y1 = (round(v) for v in box_of(poly))
        grey = cv2.cvtColor(clip.frames[i][max(y0, 0) : y1, max(x0, 0) : x1], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    blurred = [i for i, t in enumerate(clip.truth) if t.blur_px >= 10]
    sharp = [i for i, t in enumerate(clip.truth) if t.blur_px == 0]
    assert 0.3 * clip.fps <= len([t for t in clip.truth if t.blur_px > 0]) <= 0.7 * clip.fps
    assert len(blurred) >= 5
    assert max(sharpness(i) for i in blurred) < 0.6 * float(np.median([sharpness(i) for i in sharp[::4]]))
    centres = [t.face_polygon.mean(axis=0) for t in clip.truth if t.face_polygon is not None]
    widths = [np.ptp(t.face_polygon[:, 0]) for t in clip.truth if t.face_polygon is not None]
    steps = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)
    face_width = np.median(widths) / 0.85  # the core spans 0.85 of the face's width
    assert steps.max() >= 0.3 * face_width  # at the peak, the face moves 0.3 face widths per frame or more


def test_the_light_swings_from_dark_and_warm_to_bright_and_cool(clip_of: Callable[[str], HardClip]) -> None:
    clip = clip_of("light_swing")
    means = []
    for frame, t in zip(clip.frames, clip.truth, strict=True):
        assert t.face_polygon is not None
        means.append(frame[fill(frame.shape, t.face_polygon)].mean(axis=0))
    bgr = np.array(means)
    luma = bgr @ np.array([0.114, 0.587, 0.299])
    assert luma.max() >= 1.8 * luma.min()
    warmth = bgr[:, 2] / bgr[:, 0]  # red over blue
    assert warmth[0] > 1.25 * warmth[int(np.argmax(luma))]  # warm when dark, cool when bright


# ------------------------------------------------------------------ scoring swaps


def visible_frames(clip: HardClip) -> int:
    return sum(t.face_polygon is not None and t.visible_share >= 0.7 and t.blur_px == 0 for t in clip.truth)


@pytest.mark.parametrize("name", SCENARIOS)
def test_an_untouched_clip_scores_as_the_performer_everywhere_and_nothing_edited(
    name: str, engine: ClassicalEngine, source: SourceFace, clip_of: Callable[[str], HardClip]
) -> None:
    clip = clip_of(name)
    score = score_clip(engine, source, clip, clip.frames, sample_every=25)
    assert score.frames == len(clip.frames) and score.sampled >= 1
    assert score.closer_to_source == 0.0
    assert score.off_face == score.on_occluder == 0
    assert score.performer_showing == visible_frames(clip)
    assert score.jitter_px is None and score.light_follow is None  # no track; nothing swapped
    assert (score.flicker == 0.0) if name == "static" else score.flicker is None
    assert name in score.row()


def test_an_edit_on_a_decoy_or_on_the_hand_is_counted(
    engine: ClassicalEngine, source: SourceFace, clip_of: Callable[[str], HardClip]
) -> None:
    decoys = clip_of("decoys")
    painted = []
    for frame, t in zip(decoys.frames, decoys.truth, strict=True):
        out = frame.copy()
        x0, y0, x1, y1 = (round(v) for v in t.decoy_boxes[1])  # the shirt print
        out[y0:y1, x0:x1] = 128
        painted.append(out)
    score = score_clip(engine, source, decoys, painted, sample_every=1000)
    assert score.off_face == len(decoys.frames) and score.on_occluder == 0
    assert score.performer_showing == visible_frames(decoys)  # the performer is still left as they were

    occluder = clip_of("occluder")
    painted, expected = [], 0
    for frame, t in zip(occluder.frames, occluder.truth, strict=True):
        out = frame.copy()
        if t.occluder_polygon is not None and t.face_polygon is not None:
            on_face = fill(frame.shape, t.occluder_polygon) & fill(frame.shape, t.face_polygon)
            out[on_face] = 128  # a swap pasted over the hand
            expected += on_face.sum() > 200
        painted.append(out)
    score = score_clip(engine, source, occluder, painted, sample_every=1000)
    assert expected >= 20 and score.on_occluder == expected and score.off_face >= score.on_occluder


def test_a_classical_swap_of_the_still_clip_scores_as_the_source_with_no_stray_edit(
    engine: ClassicalEngine, source: SourceFace, clip_of: Callable[[str], HardClip]
) -> None:
    from reelfab.faces.tracking import swap_stream

    clip = clip_of("static")
    swapped = list(swap_stream(engine, source, clip.frames, detect_every=5, batch_size=8, fps=25))
    outputs = [frame for frame, _ in swapped]
    track = [face for _, face in swapped]
    score = score_clip(engine, source, clip, outputs, track)
    print(score.row())
    assert score.performer_showing == 0
    assert score.sampled >= 20 and score.closer_to_source >= 0.9
    assert score.off_face == 0
    assert score.jitter_px is not None and score.flicker is not None and score.light_follow is not None
    assert 0.0 <= score.flicker < 3.0
