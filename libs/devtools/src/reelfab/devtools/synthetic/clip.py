"""Template clips: a virtual performer (turning, nodding, dollying, talking) over a generated scene,
encoded with x264, with a beat and a voice-like hum that follows the mouth."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.media.frames import FrameWriter

from .common import _arr, _hsv
from .music import _SR, _encode_audio, _master, _synth_music
from .person import _DEPTH, PersonParams, _build_canon, _Canon, _canon_n, _compose, _rotation, _View

_TEMPLATE_RENDER_SCALE = 0.5  # frames are drawn at half size and upscaled: ~4x faster, detection unchanged
_TALK_LEVELS = 8  # mouth openings are quantised so each level's canonical maps are built once


@dataclass
class TemplateClip:
    path: Path
    seconds: float
    fps: int
    size: tuple[int, int]  # (width, height)
    performer_seed: int
    tags: list[str] = field(default_factory=list)
    centers: list[tuple[float, float]] = field(default_factory=list)  # per frame: face centre, pixels


@dataclass(frozen=True)
class _Motion:
    """How the performer moves: smooth, seeded curves of time."""

    yaw: tuple[float, float, float, float]  # amplitude, period, phase; a faster wobble's amplitude
    nod_period: float
    nod_phase: float
    roll_phase: float
    dolly_period: float
    dolly_phase: float
    sway_phase: float
    syllable_hz: float
    phrases: tuple[tuple[float, float], ...]  # (start, end) of speech, seconds

    @classmethod
    def from_rng(cls, rng: np.random.Generator, seconds: float) -> _Motion:
        phrases, t = [], float(rng.uniform(0.0, 0.4))
        while t < seconds:
            end = t + float(rng.uniform(1.2, 2.6))
            phrases.append((t, min(end, seconds)))
            t = end + float(rng.uniform(0.25, 0.7))
        return cls(
            yaw=(float(rng.uniform(14, 17)), float(rng.uniform(4.5, 7.0)), float(rng.uniform(0, 6.28)), 3.0),
            nod_period=float(rng.uniform(1.1, 1.6)),
            nod_phase=float(rng.uniform(0, 6.28)),
            roll_phase=float(rng.uniform(0, 6.28)),
            dolly_period=float(rng.uniform(5.0, 8.0)),
            dolly_phase=float(rng.uniform(0, 6.28)),
            sway_phase=float(rng.uniform(0, 6.28)),
            syllable_hz=float(rng.uniform(3.6, 5.0)),
            phrases=tuple(phrases),
        )

    def pose(self, t: float) -> dict[str, float]:
        amp, period, phase, wobble = self.yaw
        yaw = amp * math.sin(2 * math.pi * t / period + phase) + wobble * math.sin(
            2 * math.pi * t / 2.1 + phase
        )
        bursts = 0.5 + 0.5 * math.sin(2 * math.pi * t / 4.7 + self.nod_phase)  # nods come and go
        pitch = 2.0 + 7.0 * bursts * math.sin(2 * math.pi * t / self.nod_period + self.nod_phase)
        return {
            "yaw": max(-20.0, min(20.0, yaw)),
            "pitch": pitch,
            "roll": 4.0 * math.sin(2 * math.pi * t / 3.3 + self.roll_phase),
            "scale": 1.0 + 0.18 * math.sin(2 * math.pi * t / self.dolly_period + self.dolly_phase),
            "cx": 0.5 + 0.05 * math.sin(2 * math.pi * t / 6.1 + self.sway_phase),
            "cy": 0.4 + 0.015 * math.sin(2 * math.pi * t / 4.3 + self.sway_phase),
        }

    def talk(self, t: float) -> float:
        """Mouth opening 0..1: syllables inside phrases, closed in the pauses."""
        for start, end in self.phrases:
            if start <= t < end:
                edge = min(1.0, (t - start) / 0.15, (end - t) / 0.15)
                syllable = 0.5 + 0.5 * math.sin(2 * math.pi * self.syllable_hz * (t - start) - math.pi / 2)
                return float(np.clip(edge * (0.15 + 0.85 * syllable), 0.0, 1.0))
        return 0.0


def _scene(w: int, h: int, rng: np.random.Generator) -> tuple[NDArray[Any], str]:
    """A soft background (float32 BGR, 0..1) a little larger than the frame, and its style."""
    style = str(rng.choice(["studio", "room", "stage"]))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    hue = int(rng.integers(0, 180))
    top, bottom = (
        _hsv(hue, rng.integers(30, 110), rng.integers(150, 230)),
        _hsv(hue, rng.integers(40, 140), rng.integers(50, 120)),
    )
    grad = (ys / h)[..., None]
    img = _arr(top) * (1 - grad) + _arr(bottom) * grad
    if style == "studio":  # bokeh: big soft discs of light
        for _ in range(14):
            col = _hsv((hue + rng.integers(-25, 25)) % 180, rng.integers(20, 120), 255)
            r = float(rng.uniform(0.03, 0.09)) * w
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h * 0.7))
            disc = np.clip((r - np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)) / 3.0, 0, 1)[..., None]
            img = img * (1 - 0.35 * disc) + _arr(col) * 0.35 * disc
    elif style == "room":  # a wall, a floor, a bright window and a shelf of boxes
        floor = int(h * float(rng.uniform(0.72, 0.8)))
        img[floor:] = _arr(_hsv(int(rng.integers(5, 25)), rng.integers(80, 160), rng.integers(60, 120)))
        wx = int(w * (0.06 if rng.random() < 0.5 else 0.62))
        img[int(h * 0.12) : int(h * 0.42), wx : wx + int(w * 0.32)] = _arr((0.97, 0.96, 0.9))
        img[int(h * 0.27) : int(h * 0.28), wx : wx + int(w * 0.32)] = _arr(bottom)
        shelf_y, sx = int(h * float(rng.uniform(0.5, 0.58))), int(w * (0.55 if wx < w * 0.5 else 0.05))
        img[shelf_y : shelf_y + int(h * 0.012), sx : sx + int(w * 0.38)] = _arr((0.2, 0.25, 0.3))
        x = sx
        while x < sx + int(w * 0.36):
            bw, bh = int(w * rng.uniform(0.02, 0.06)), int(h * rng.uniform(0.03, 0.08))
            img[shelf_y - bh : shelf_y, x : x + bw] = _arr(
                _hsv(rng.integers(0, 180), rng.integers(60, 200), rng.integers(80, 220))
            )
            x += bw + int(w * 0.006)
    else:  # stage: dark, with coloured beams from above
        img *= 0.35
        for _ in range(3):
            beam_col = _arr(_hsv(rng.integers(0, 180), rng.integers(120, 255), 255))
            x0 = float(rng.uniform(0.1, 0.9)) * w
            spread = float(rng.uniform(0.1, 0.2)) * w
            across = np.abs(xs - x0 - (ys / h) * float(rng.uniform(-0.3, 0.3)) * w) / (
                spread * (0.2 + ys / h)
            )
            beam = np.clip(1 - across, 0, 1) ** 1.5 * (0.25 + 0.5 * ys / h)
            img = img + beam_col * beam[..., None] * 0.5
    img = cv2.GaussianBlur(img, (0, 0), 0.006 * w)  # the background is out of focus
    return np.clip(img, 0, 1).astype(np.float32), style


def _camera(scene: NDArray[Any], w: int, h: int, t: float, zoom: float, phase: float) -> NDArray[Any]:
    """The frame's view of the (larger) scene: a slow pan, and part of the performer's dolly (parallax)."""
    sh, sw = scene.shape[:2]
    pan_x = 0.5 * (sw - w) * (1 + 0.8 * math.sin(2 * math.pi * t / 11.0 + phase))
    pan_y = 0.5 * (sh - h) * (1 + 0.5 * math.sin(2 * math.pi * t / 9.0 + phase))
    z = 1.0 + 0.3 * (zoom - 1.0)
    # zoom about the frame centre
    m = _arr([[z, 0, w / 2 - z * (pan_x + w / 2)], [0, z, h / 2 - z * (pan_y + h / 2)]])
    return cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _face_centre(view: _View) -> tuple[float, float]:
    """Where the detector's box centre falls: a point between the eyes and the mouth, projected."""
    p = _rotation(view.yaw, view.pitch, view.roll) @ np.array([0.0, _BOX_CENTRE_V, _DEPTH * 0.95])
    return view.cx + float(p[0]) * view.unit, view.cy + float(p[1]) * view.unit


_BOX_CENTRE_V = 0.28  # HOG box centre below the eye line, head units (measured on frontal renders)


def _template_audio(seed: int, seconds: float, opening: list[float], fps: int, p: PersonParams) -> NDArray[Any]:
    """The template's track: a quieter beat, and a buzzy 'voice' whose loudness follows the mouth."""
    music = _synth_music(seed, seconds) * 0.45
    t = np.arange(len(music), dtype=np.float32) / _SR
    pitch = 110.0 + 90.0 * (p.seed % 7) / 6  # each performer keeps a voice of their own
    wobble = 2 * np.pi * np.cumsum(pitch * (1 + 0.04 * np.sin(2 * np.pi * 0.7 * t))) / _SR
    voice = sum((0.7**k) * np.sin((k + 1) * wobble) for k in range(6))
    loud = np.interp(t, np.arange(len(opening)) / fps, np.asarray(opening, np.float32))
    voice = (voice * loud * 0.35).astype(np.float32)
    mix = music + voice[:, None]
    return _master(mix, seconds, fade_out=0.3)


def template_clip(
    path: Path,
    *,
    seed: int,
    seconds: float = 8.0,
    fps: int = 25,
    size: tuple[int, int] = (720, 1280),
    with_audio: bool = True,
    performer_seed: int | None = None,
) -> TemplateClip:
    """A clip of a virtual performer (turning, nodding, dollying, talking) over a generated scene,
    encoded with x264 (crf 18) and, ``with_audio``, an AAC 48 kHz stereo track (beat + a voice-like hum
    that follows the mouth). ``size`` is (width, height); the performer is person ``performer_seed``
    (default ``1000 + seed``, so demo templates never show the demo source people)."""
    if seconds <= 0 or fps <= 0:
        raise ValueError(
            f"template_clip needs a positive duration and frame rate, not {seconds} s at {fps} fps"
        )
    if size[0] % 2 or size[1] % 2 or min(size) < 16:
        raise ValueError(
            f"template size {size[0]}x{size[1]}: width and height must be even (yuv420p) and at least 16"
        )
    performer = 1000 + seed if performer_seed is None else performer_seed
    p = PersonParams.from_seed(performer)
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0xC11F]))
    w, h = size
    rs = _TEMPLATE_RENDER_SCALE
    rw, rh = max(2, round(w * rs)), max(2, round(h * rs))
    scene, style = _scene(int(rw * 1.25), int(rh * 1.25), rng)
    motion = _Motion.from_rng(rng, seconds)
    cam_phase = float(rng.uniform(0, 6.28))
    base_unit = 0.25 * min(rw, rh)
    n = _canon_n(base_unit * 1.2)  # one grid for the whole clip, sharp at the closest dolly
    canons: dict[int, _Canon] = {}
    frames = max(1, round(seconds * fps))
    centers: list[tuple[float, float]] = []
    talk: list[float] = []
    with tempfile.TemporaryDirectory(prefix="reelfab-template-") as tmp:
        audio = None
        if with_audio:
            opening = [motion.talk(i / fps) for i in range(frames)]
            audio = _encode_audio(_template_audio(seed, frames / fps, opening, fps, p), Path(tmp), "aac")
        with FrameWriter(path, w, h, fps, codec="x264", crf=18, audio_from=audio) as out:
            for i in range(frames):
                t = i / fps
                pose = motion.pose(t)
                level = round(motion.talk(t) * _TALK_LEVELS)
                if level not in canons:
                    canons[level] = _build_canon(p, level / _TALK_LEVELS, 0.0, n)
                view = _View(
                    pose["cx"] * rw,
                    pose["cy"] * rh,
                    base_unit * pose["scale"],
                    pose["yaw"],
                    pose["pitch"],
                    pose["roll"],
                )
                bg = _camera(scene, rw, rh, t, pose["scale"], cam_phase)
                frame = _compose(p, canons[level], view, bg, lighting_angle=25.0)
                if (rw, rh) != (w, h):
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
                out.write(frame)
                cx, cy = _face_centre(view)
                centers.append((cx / rs, cy / rs))
                talk.append(level / _TALK_LEVELS)
    tags = ["synthetic", "virtual-performer", "talking", "head-turn", "nod", "dolly", style, p.hair_style]
    if with_audio:
        tags.append("audio")
    return TemplateClip(path, frames / fps, fps, (w, h), performer, tags, centers)
