"""Quality gates give reasons, not just a verdict. The engine is a stand-in returning given faces,
so each rule is exercised alone; the backends' own tests run the gates on real detections."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from reelfab.faces.qc import SourceRules, TemplateRules, check_source, check_template, head_pose
from reelfab.faces.types import Face
from reelfab.media.tools import tool


def face(cx: float = 500, cy: float = 500, side: float = 450, yaw_offset: float = 0.0, roll_deg: float = 0.0,
         eye_open: float = 0.3, score: float = 2.0) -> Face:
    half = side / 2
    eye_dx = side * 0.2
    r = math.radians(roll_deg)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])

    def p(x: float, y: float) -> np.ndarray:
        return rot @ np.array([x, y]) + np.array([cx, cy])

    kps = np.array([p(-eye_dx, -side * 0.1), p(eye_dx, -side * 0.1), p(yaw_offset * eye_dx, side * 0.05),
                    p(-eye_dx * 0.8, side * 0.2), p(eye_dx * 0.8, side * 0.2)], np.float32)
    lm = np.zeros((68, 2), np.float32)
    for start, centre in ((36, kps[0]), (42, kps[1])):
        w, h = side * 0.08, side * 0.08 * eye_open
        lm[start:start + 6] = centre + np.array([[-w, 0], [-w / 3, -h], [w / 3, -h], [w, 0], [w / 3, h], [-w / 3, h]])
    return Face((cx - half, cy - half, cx + half, cy + half), score, kps, lm)


class StandIn:
    name = "stand-in"
    embedder = "none"

    def __init__(self, faces: Sequence[Face]) -> None:
        self.faces = list(faces)

    def detect(self, frame: np.ndarray) -> list[Face]:
        return list(self.faces)


def portrait(brightness: int = 140, blur: int = 0, shade_right: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(brightness, 40, (1000, 1000, 3)), 0, 255).astype(np.uint8)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img[:, 500:] = (img[:, 500:] * shade_right).astype(np.uint8)
    return img


def test_a_good_source_passes_with_its_metrics() -> None:
    result = check_source(portrait(), StandIn([face()]))  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert result.metrics["face_px"] >= 512 and abs(result.metrics["yaw_deg"]) < 1


@pytest.mark.parametrize(
    ("faces", "image", "code"),
    [
        ([], portrait(), "no_face"),
        ([face(300, 500, score=2.0), face(700, 500, score=1.8)], portrait(), "several_faces"),
        ([face(side=200)], portrait(), "too_small"),
        ([face(yaw_offset=0.8)], portrait(), "not_frontal"),
        ([face(roll_deg=35)], portrait(), "tilted"),
        ([face()], portrait(blur=6), "blurry"),
        ([face()], portrait(shade_right=0.3), "uneven_light"),
        ([face()], portrait(brightness=25), "too_dark"),
        ([face(eye_open=0.05)], portrait(), "eyes_closed"),
    ],
    ids=["no-face", "two-faces", "small", "turned", "tilted", "blurry", "half-shadow", "dark", "eyes-closed"],
)
def test_each_problem_is_named(faces: list[Face], image: np.ndarray, code: str) -> None:
    result = check_source(image, StandIn(faces))  # type: ignore[arg-type]
    assert not result.passed
    assert code in result.codes(), result.summary()


def test_a_weak_second_detection_is_not_a_second_face() -> None:
    result = check_source(portrait(), StandIn([face(score=2.0), face(100, 100, side=60, score=0.2)]))  # type: ignore[arg-type]
    assert "several_faces" not in result.codes()


def test_the_rules_are_configurable() -> None:
    assert check_source(portrait(), StandIn([face(side=200)]), SourceRules(min_face_px=200)).passed  # type: ignore[arg-type]


def test_head_pose_reads_yaw_and_roll() -> None:
    yaw, roll = head_pose(face(yaw_offset=0.5, roll_deg=10))
    assert 25 < yaw < 35 and 9 < roll < 11


def _clip(path: Path, seconds: float, size: str = "720x1280") -> Path:
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


class Flicker(StandIn):
    """Finds a face in every other sampled frame."""

    def __init__(self) -> None:
        super().__init__([face()])
        self.calls = 0

    def detect(self, frame: np.ndarray) -> list[Face]:
        self.calls += 1
        return list(self.faces) if self.calls % 2 else []


def test_template_rules_give_reasons(tmp_path: Path) -> None:
    short = _clip(tmp_path / "short.mp4", 2.0, "320x240")
    result = check_template(short, StandIn([face()]), TemplateRules(sample_every=10))  # type: ignore[arg-type]
    assert set(result.codes()) == {"duration", "resolution"}
    hidden = check_template(_clip(tmp_path / "ok.mp4", 5.2), Flicker(), TemplateRules(sample_every=10))  # type: ignore[arg-type]
    assert hidden.codes() == ["face_hidden"] and 0.4 <= hidden.metrics["face_share"] <= 0.6
    good = check_template(tmp_path / "ok.mp4", StandIn([face()]), TemplateRules(sample_every=10))  # type: ignore[arg-type]
    assert good.passed and good.metrics["sampled_frames"] == 13


def test_a_template_without_any_face_says_no_face(tmp_path: Path) -> None:
    result = check_template(_clip(tmp_path / "empty.mp4", 5.2), StandIn([]), TemplateRules(sample_every=10))  # type: ignore[arg-type]
    assert result.codes() == ["no_face"] and result.metrics["face_share"] == 0.0
