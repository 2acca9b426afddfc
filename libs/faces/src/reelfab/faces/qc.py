"""Quality gates for what enters the factory: a source face (enrolment, swap source) and a template
clip. Each gives reasons an operator can act on, not just a boolean."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import Face, FaceEngine, best_face


@dataclass(frozen=True)
class Reason:
    code: str  # stable, for programs: no_face, several_faces, too_small, not_frontal, blurry, ...
    message: str  # for people


@dataclass
class QCResult:
    passed: bool
    reasons: list[Reason] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def summary(self) -> str:
        return "passed" if self.passed else "; ".join(r.message for r in self.reasons)


@dataclass(frozen=True)
class SourceRules:
    min_face_px: int = 512  # long side of the face crop, as the seed's brief requires
    max_yaw_deg: float = 25.0
    max_roll_deg: float = 20.0
    min_sharpness: float = 60.0  # variance of the Laplacian on the face crop at 256 px
    min_light_balance: float = 0.6  # darker half / brighter half of the face
    brightness_range: tuple[float, float] = (50.0, 215.0)
    min_eye_openness: float = 0.12  # eye aspect ratio from the 68 landmarks
    second_face_ratio: float = 0.5  # another face counts if its score is at least this share of the best


@dataclass(frozen=True)
class TemplateRules:
    min_seconds: float = 5.0
    max_seconds: float = 60.0
    min_short_side: int = 540
    min_face_share: float = 0.8
    sample_every: int = 5
    detect_width: int = 540  # frames are scaled down to this width before detection


def face_crop_side(face: Face) -> float:
    """Long side of the crop the swap works on: the detector box grown to include forehead and chin
    (HOG boxes are tight, model detectors looser; 1.3 is the usual crop margin)."""
    return face.size * 1.3 if face.landmarks68 is not None else face.size


def check_source(image: NDArray[Any], engine: FaceEngine, rules: SourceRules = SourceRules()) -> QCResult:
    faces = engine.detect(image)
    if not faces:
        return QCResult(False, [Reason("no_face", f"no face found in the {image.shape[1]}x{image.shape[0]} image")])
    face = best_face(faces)
    assert face is not None
    others = [f for f in faces if f is not face and f.score >= rules.second_face_ratio * face.score]
    reasons: list[Reason] = []
    metrics: dict[str, Any] = {"faces": len(faces), "score": round(face.score, 3)}
    if others:
        reasons.append(Reason("several_faces", f"{1 + len(others)} faces found; the source must show exactly one"))
    side = face_crop_side(face)
    metrics["face_px"] = round(side)
    if side < rules.min_face_px:
        reasons.append(Reason("too_small", f"face crop is {side:.0f} px on its long side; at least {rules.min_face_px} px needed"))
    yaw, roll = head_pose(face)
    metrics.update(yaw_deg=round(yaw, 1), roll_deg=round(roll, 1))
    if abs(yaw) > rules.max_yaw_deg:
        reasons.append(Reason("not_frontal", f"head turned {yaw:+.0f}° (at most ±{rules.max_yaw_deg:.0f}°)"))
    if abs(roll) > rules.max_roll_deg:
        reasons.append(Reason("tilted", f"head tilted {roll:+.0f}° (at most ±{rules.max_roll_deg:.0f}°)"))
    crop = _crop(image, face)
    sharpness = float(cv2.Laplacian(crop, cv2.CV_64F).var())
    metrics["sharpness"] = round(sharpness, 1)
    if sharpness < rules.min_sharpness:
        reasons.append(Reason("blurry", f"face is blurry (sharpness {sharpness:.0f}, at least {rules.min_sharpness:.0f})"))
    left, right = float(crop[:, : crop.shape[1] // 2].mean()), float(crop[:, crop.shape[1] // 2 :].mean())
    balance = min(left, right) / max(left, right, 1e-6)
    brightness = float(crop.mean())
    metrics.update(light_balance=round(balance, 2), brightness=round(brightness, 1))
    if balance < rules.min_light_balance:
        reasons.append(Reason("uneven_light", f"one side of the face is much darker (balance {balance:.2f}, at least {rules.min_light_balance})"))
    lo, hi = rules.brightness_range
    if not lo <= brightness <= hi:
        word = "dark" if brightness < lo else "bright"
        reasons.append(Reason(f"too_{word}", f"face is too {word} (mean {brightness:.0f}, expected {lo:.0f}–{hi:.0f})"))
    if face.landmarks68 is not None:
        openness = min(eye_aspect_ratio(face.landmarks68[36:42]), eye_aspect_ratio(face.landmarks68[42:48]))
        metrics["eye_openness"] = round(openness, 3)
        if openness < rules.min_eye_openness:
            reasons.append(Reason("eyes_closed", f"eyes not visible or closed (openness {openness:.2f}, at least {rules.min_eye_openness})"))
    return QCResult(not reasons, reasons, metrics)


def check_template(path: Path, engine: FaceEngine, rules: TemplateRules = TemplateRules()) -> QCResult:
    from reelfab.media.frames import read_frames
    from reelfab.media.probe import probe

    info = probe(path)
    reasons: list[Reason] = []
    metrics: dict[str, Any] = {
        "duration_s": round(info.duration_s, 2), "width": info.width, "height": info.height, "fps": round(info.fps, 3),
    }
    if not rules.min_seconds <= info.duration_s <= rules.max_seconds:
        reasons.append(Reason("duration", f"lasts {info.duration_s:.1f} s; templates must last {rules.min_seconds:.0f}–{rules.max_seconds:.0f} s"))
    if min(info.width, info.height) < rules.min_short_side:
        reasons.append(Reason("resolution", f"{info.width}x{info.height} is too small (short side at least {rules.min_short_side} px)"))
    scale = min(1.0, rules.detect_width / info.width)
    size = (round(info.width * scale) // 2 * 2, round(info.height * scale) // 2 * 2)
    sampled = seen = 0
    for i, frame in enumerate(read_frames(path, size=size, info=info)):
        if i % rules.sample_every:
            continue
        sampled += 1
        seen += bool(engine.detect(frame))
    share = seen / sampled if sampled else 0.0
    metrics.update(sampled_frames=sampled, face_share=round(share, 3))
    if seen == 0:  # not a template at all for a face swap: say so plainly
        reasons.append(Reason("no_face", f"no face in any of the {sampled} sampled frames"))
    elif share < rules.min_face_share:
        reasons.append(Reason("face_hidden", f"a face is visible in {share:.0%} of sampled frames; at least {rules.min_face_share:.0%} needed"))
    return QCResult(not reasons, reasons, metrics)


def head_pose(face: Face) -> tuple[float, float]:
    """(yaw, roll) in degrees from the 5 points: roll from the eye line, yaw from where the nose sits
    between the eyes (0 frontal; ±1 of the half eye distance ≈ ±60°)."""
    k = face.kps5.astype(np.float64)
    left_eye, right_eye, nose = k[0], k[1], k[2]
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    eye_mid = (left_eye + right_eye) / 2
    half = max(float(np.linalg.norm(right_eye - left_eye)) / 2, 1e-6)
    # project the nose offset on the eye line so a tilted head does not read as turned
    offset = float(np.dot(nose - eye_mid, (right_eye - left_eye) / (2 * half))) / half
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return yaw, roll


def eye_aspect_ratio(eye: NDArray[Any]) -> float:
    """Height over width of one eye's six landmarks (Soukupová & Čech): ~0.3 open, < 0.15 closed."""
    p = eye.astype(np.float64)
    vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(vertical / (2.0 * max(float(np.linalg.norm(p[0] - p[3])), 1e-6)))


def _crop(image: NDArray[Any], face: Face) -> NDArray[Any]:
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    gray = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (256, 256), interpolation=cv2.INTER_AREA)


def reasons_text(reasons: Iterable[Reason]) -> str:
    return "; ".join(f"{r.code}: {r.message}" for r in reasons)
