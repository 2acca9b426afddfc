"""Swap robustness on the hard synthetic clips (reelfab.devtools.synthetic.hard), scored against their
ground truth by reelfab.devtools.swapeval: the classical backend through the factory's own path (the
performer profile from 16 sampled frames, then swap_stream). Each test prints its figures (run with -s).

Goals from the issue: identity share >= 0.95, no edit off the performer's face, the performer never
left showing. Where the classical backend falls short of a goal, the bound below is what it measured
(stated), not the goal, so that a regression still fails: the identity share on turning heads (dlib's
embedding of a classical warp at 20-35 degrees of yaw) and a hand of the performer's own colour over
the mouth (the occlusion model finds its fingers, not its palm: the swap is painted over the palm) are
the known shortfalls, listed in bench/RESULTS.md."""

from __future__ import annotations

from functools import cache

import pytest

from reelfab.devtools.swapeval import ClipScore, score_clip
from reelfab.devtools.synthetic import virtual_person
from reelfab.devtools.synthetic.hard import HardClip, hard_clip
from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.identity import profile_performer
from reelfab.faces.report import FrameStatus, SwapReport
from reelfab.faces.tracking import swap_stream
from reelfab.faces.types import SourceFace

SEED = 1  # performer 1001 (seed 0's performer 1000 is one dlib barely detects: see the hard clips' tests)


@cache
def engine() -> ClassicalEngine:
    return ClassicalEngine()


@cache
def source() -> SourceFace:
    return engine().prepare_source(virtual_person(3))


@cache
def swapped(name: str) -> tuple[HardClip, ClipScore, SwapReport]:
    clip = hard_clip(name, seed=SEED)
    step = max(len(clip.frames) // 16, 1)
    performer = profile_performer(engine(), clip.frames[::step][:16])
    report = SwapReport()
    pairs = list(swap_stream(engine(), source(), clip.frames, fps=clip.fps, performer=performer, report=report))
    score = score_clip(engine(), source(), clip, [f for f, _ in pairs], [t for _, t in pairs])
    print(f"\n{score.row()}\n{' ' * len(name)}  {report.summary()}")
    return clip, score, report


def off_the_face(score: ClipScore) -> int:
    """Frames with an edit off the performer's face other than on an occluder over it."""
    return score.off_face - score.on_occluder


def test_a_drawing_and_a_poster_of_faces_are_never_swapped() -> None:
    _, score, report = swapped("decoys")
    assert off_the_face(score) == 0  # the shirt print and the poster are never touched
    assert score.performer_showing == 0
    assert score.closer_to_source >= 0.8  # measured 0.89 (goal 0.95)
    assert report.refused_detections > 0  # they were seen, and refused
    assert report.swapped_share >= 0.9


def test_of_two_people_only_the_performer_is_swapped() -> None:
    _, score, report = swapped("two_people")
    assert score.off_face == 0 and score.performer_showing == 0
    assert score.closer_to_source >= 0.95  # measured 0.96
    assert report.swapped_share >= 0.95 and report.refused_detections > 0


def test_a_still_head_keeps_still_landmarks_and_an_even_colour() -> None:
    _, score, report = swapped("static")
    assert score.jitter_px is not None and score.flicker is not None
    print(f"static head: landmark jitter {score.jitter_px:.2f} px RMS, colour flicker {score.flicker:.2f} L levels")
    assert score.jitter_px <= 3.0  # measured 2.21 px on a 130 px face (the tracker before: 2.42)
    assert score.flicker <= 0.3  # measured 0.08 (|dL| per frame beyond the input's)
    assert score.closer_to_source >= 0.95 and score.performer_showing == 0 and score.off_face == 0
    assert report.swapped == report.frames


def test_a_light_swing_is_followed() -> None:
    _, score, _ = swapped("light_swing")
    assert score.closer_to_source >= 0.95 and score.performer_showing == 0 and score.off_face == 0
    assert score.light_follow is not None and score.light_follow <= 0.6  # measured 0.31


def test_rolling_and_turning_heads_stay_swapped_and_on_the_face() -> None:
    _, score, _ = swapped("roll_turn")
    assert score.off_face == 0 and score.performer_showing == 0
    assert score.closer_to_source >= 0.6  # measured 0.67 (goal 0.95; the tracker before: 0.86 with
    # landmarks up to 51 px off at the turns, now at most 10 px: see bench/RESULTS.md)


def test_motion_blur_is_left_untouched_rather_than_swapped_beside_the_face() -> None:
    _, score, report = swapped("blur")
    assert score.off_face == 0 and score.performer_showing == 0
    assert score.closer_to_source >= 0.95
    assert report.lost > 0  # the blurred frames were given up, not pasted where the face was


def test_a_hand_over_the_mouth_leaves_no_edit_off_the_face_and_no_performer_showing() -> None:
    _, score, report = swapped("occluder")
    assert off_the_face(score) == 0 and score.performer_showing == 0
    assert score.on_occluder <= 32  # measured 30 of the ~30 covered frames: the known shortfall
    assert report.occluded > 0  # the occlusion model did see part of the hand


def test_the_unseen_clip() -> None:
    clip, score, report = swapped("unseen")
    assert score.performer_showing == 0
    assert score.closer_to_source >= 0.85  # measured 0.94
    assert off_the_face(score) <= 12  # measured 11: frames where the blur starts, before it is caught
    assert report.frames == len(clip.frames) and report.statuses.count(FrameStatus.SWAPPED) == report.swapped


@pytest.mark.parametrize("share", [0.8, 1.0])
def test_the_quality_gate_judges_the_unseen_clips_report(share: float) -> None:
    from reelfab.faces.report import QualityGate

    _, _, report = swapped("unseen")
    verdict = QualityGate(share).judge(report)
    assert (verdict is None) == (report.swapped_share >= share)
