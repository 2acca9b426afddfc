"""Hard clips: short scenes that a face swap gets wrong, each with per-frame ground truth.

A template clip (``clip``) shows one performer, facing the camera, in good light: a swap that works there
can still fail on what real reels show. Each scenario here isolates one such difficulty (or, ``unseen``,
stacks them all) and renders it with the ``person`` renderer, so the truth is known exactly:

- ``static``: the head still and the light constant (landmark jitter and colour flicker have nothing to
  follow);
- ``roll_turn``: roll to +-25 degrees, yaw to +-35 (the far eye's outer corner reaches the silhouette),
  nods;
- ``light_swing``: the light goes dark and warm to bright and cool and back (gain 0.55 to 1.3), the key
  light swinging with it;
- ``occluder``: a hand (palm, fingers, thumb and forearm; skin close to the performer's, not equal) comes
  in, covers the mouth and chin for about a second, and leaves;
- ``blur``: half a second of fast shaking (over 0.3 face widths per frame at its peak), rendered with the
  motion blur a 180-degree shutter gives;
- ``decoys``: a face printed on the performer's shirt and a poster of another person on the wall, both
  found by dlib's HOG detector; the hand covers the performer's face for a while;
- ``two_people``: a second, smaller person beside and behind the performer, both moving;
- ``unseen``: roll, turns, the light swing, the hand, the shake and the shirt print in one clip.

The performer is always the dominant face (the largest, and present most of the time). Per frame,
``FrameTruth`` gives the performer's face core (brows to chin, cheek to cheek: where a swap belongs) as a
polygon in frame pixels, projected with the renderer's own geometry; how much of it is visible; the
occluder's outline; the boxes of the other face-like things; the motion blur; and whether head and light
are still. Frames stay in memory (``HardClip.frames``); ``HardClip.write`` encodes them.

Frames are drawn at full size (a 3 s, 360x640 clip takes about a second), with a little sensor grain.
Layouts are made for portrait frames (9:16, the default 360x640)."""

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

from .clip import _Motion, _scene, _template_audio
from .common import _arr
from .music import _encode_audio
from .person import (
    _DEPTH,
    PersonParams,
    _build_canon,
    _Canon,
    _canon_n,
    _compose,
    _edge_profile,
    _exposure,
    _head_radius,
    _mouth_curves,
    _rotation,
    _View,
    render_face,
)

SCENARIOS: tuple[str, ...] = (
    "static",
    "roll_turn",
    "light_swing",
    "occluder",
    "blur",
    "decoys",
    "two_people",
    "unseen",
)
_DEFAULT_SECONDS = {"unseen": 3.6}
_DEFAULT_SECONDS_ANY = 3.0

_UNIT = 0.27  # the performer's head unit, as a share of the frame's short side (HOG needs boxes >= 80 px)
_EYE_Y = 0.33  # the performer's eye line, as a share of the frame's height
_TALK_LEVELS = 8  # mouth openings are quantised: each level's canonical maps are built once
_SHUTTER = 0.5  # exposure as a share of the frame interval (a 180-degree shutter)
_GRAIN = 1.2  # sensor noise, levels (0..255)
_HAND_MOVE = 0.35  # seconds the hand takes to come in (and to go)
_FINGER = 0.13  # a finger's width, in face widths; the four fingers lie side by side, no gap
_FINGERS = tuple(((k - 1.5) * _FINGER, length) for k, length in enumerate((0.33, 0.41, 0.45, 0.42)))
_SHAKE_SECONDS = 0.5
_SHAKE_AMPLITUDE = 0.45  # face widths: 1.5 cycles in 0.5 s peak at ~0.34 face widths per frame at 25 fps
_PANEL = (0.36, 0.47)  # shirt print and poster size, as shares of the frame's short side (width, height)
_PANEL_UNIT = 0.52  # their printed face's head unit, as a share of the panel's width (box ~90 px)


@dataclass
class FrameTruth:
    """What one frame of a hard clip shows, in frame pixels."""

    face_polygon: NDArray[Any] | None  # (N, 2) float32: the performer's face core; None when out of frame
    visible_share: float  # share of that polygon inside the frame and not covered by the occluder (0..1)
    occluder_polygon: NDArray[Any] | None  # (M, 2) float32: the hand (and forearm) inside the frame
    decoy_boxes: list[tuple[float, float, float, float]]  # other face-like things: x1, y1, x2, y2
    blur_px: float  # length of the face's motion during the exposure, pixels (0: sharp)
    static: bool  # head still and light constant
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # eyes, nose, mouth, chin (projected)


@dataclass
class HardClip:
    """A hard scenario's frames (uint8 BGR, in memory) and their ground truth."""

    name: str
    frames: list[NDArray[Any]]
    fps: int
    size: tuple[int, int]  # (width, height)
    performer_seed: int
    truth: list[FrameTruth]
    description: str
    seed: int = 0
    mouth: list[float] = field(default_factory=list)  # per frame: the performer's mouth opening, 0..1

    def write(self, path: Path, *, with_audio: bool = False) -> Path:
        """The frames encoded with x264 (crf 18); ``with_audio``, with a beat and a voice-like hum that
        follows the mouth (AAC)."""
        w, h = self.size
        with tempfile.TemporaryDirectory(prefix="reelfab-hard-") as tmp:
            audio = None
            if with_audio:
                opening = self.mouth or [0.0] * len(self.frames)
                p = PersonParams.from_seed(self.performer_seed)
                track = _template_audio(self.seed, len(self.frames) / self.fps, opening, self.fps, p)
                audio = _encode_audio(track, Path(tmp), "aac")
            with FrameWriter(path, w, h, self.fps, codec="x264", crf=18, audio_from=audio) as out:
                for frame in self.frames:
                    out.write(frame)
        return path


# ---------------------------------------------------------------------------------------------------
# scenario plans


@dataclass(frozen=True)
class _Plan:
    """What a scenario puts in its clip; times in seconds."""

    description: str
    still: bool = False
    yaw: float = 12.0  # amplitudes, degrees
    roll: float = 4.0
    nod: float = 5.0
    yaw_period: float = 2.6
    roll_period: float = 3.1
    cx: float = 0.5  # the performer's horizontal place, share of the width
    talk: bool = True
    light: bool = False  # the warm/dark to cool/bright swing
    hand: tuple[float, float] | None = None  # when the hand fully covers the mouth and chin
    shake: float | None = None  # when the fast shake starts
    shirt: bool = False  # a face printed on the shirt
    poster: bool = False
    second: bool = False


def _plan(name: str, seconds: float) -> _Plan:
    mid = seconds / 2
    if name == "static":
        return _Plan("head still, light constant: for landmark jitter and colour flicker", still=True, talk=False)
    if name == "roll_turn":
        return _Plan(
            "roll sweeping to +-25 degrees, yaw to +-35 (the far eye's outer corner at the silhouette), nodding",
            yaw=35.0, roll=25.0, nod=9.0, yaw_period=2.4, roll_period=2.9,
        )  # fmt: skip
    if name == "light_swing":
        return _Plan("the light swings dark and warm to bright and cool (gain 0.55 to 1.3) and back", light=True)
    if name == "occluder":
        return _Plan(
            "a hand comes in, covers the mouth and chin for about a second, and leaves",
            hand=(mid - 0.5, mid + 0.5),
        )
    if name == "blur":
        return _Plan(
            "half a second of fast shaking (>= 0.3 face widths per frame at the peak), motion-blurred",
            shake=mid - _SHAKE_SECONDS / 2, yaw=8.0,
        )  # fmt: skip
    if name == "decoys":
        return _Plan(
            "a face printed on the shirt and a poster of another person; the hand covers the face a while",
            cx=0.64, shirt=True, poster=True, hand=(0.55 * seconds - 0.4, 0.55 * seconds + 0.4),
        )  # fmt: skip
    if name == "two_people":
        return _Plan("a second, smaller person beside and behind the performer, both moving", cx=0.64, second=True)
    if name == "unseen":
        hand = min(0.9, seconds * 0.25)
        shake = min(seconds - _SHAKE_SECONDS - 0.1, hand + 1.0 + _HAND_MOVE + 0.35)
        return _Plan(
            "roll to 20 degrees, turns, the light swing, a hand over mouth and chin, a fast blurred shake "
            "and a face printed on the shirt, all in one clip",
            yaw=25.0, roll=20.0, nod=7.0, roll_period=min(3.4, seconds), light=True,
            hand=(hand, hand + 1.0), shake=shake, shirt=True,
        )  # fmt: skip
    raise ValueError(f"unknown hard scenario {name!r}: one of {', '.join(SCENARIOS)}")


# ---------------------------------------------------------------------------------------------------
# geometry: the face core and the performer's pose


def _core_outline(p: PersonParams, chin: float, samples: int = 24) -> NDArray[Any]:
    """The face core's outline in canonical head units, closed: a straight top a little above the brows,
    then 0.85 of the head outline's half-width at each height, down to the chin."""
    top = -p.brow_height - 0.05
    v = np.linspace(top, chin, samples)
    half = np.empty_like(v)
    upper = v < 0
    half[upper] = p.face_width * np.sqrt(np.clip(1 - v[upper] ** 2, 0, 1))
    lower = ~upper
    vl = v[lower]
    t = np.clip((vl - 0.15) / (chin - 0.15), 0.0, 1.0)
    half_w = p.face_width * (1 - (1 - p.jaw) * t**1.6)
    e = 2.0 + (p.jaw_square - 2.0) * np.clip(vl / 0.5, 0.0, 1.0)
    half[lower] = half_w * np.clip(1 - np.abs(vl / chin) ** e, 0, 1) ** (1 / e)
    half *= 0.85
    left = np.stack([-half, v], 1)
    right = np.stack([half, v], 1)[::-1]
    return np.asarray(np.concatenate([left, right]), np.float32)


def _depth(p: PersonParams, canon: _Canon | None, uv: NDArray[Any], chin: float) -> NDArray[Any]:
    """Height of the face surface at canonical points: the canonical height field where there is one,
    else the head's ``_DEPTH`` profile."""
    if canon is not None:
        mx, my = canon.px(uv[:, 0], uv[:, 1])
        z = cv2.remap(
            canon.z, mx.reshape(1, -1).astype(np.float32), my.reshape(1, -1).astype(np.float32),
            cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
        return np.asarray(z.reshape(-1), np.float32)
    r = _head_radius(p, uv[:, 0:1].T.astype(np.float32), uv[:, 1:2].T.astype(np.float32), chin)
    return np.asarray((_DEPTH * _edge_profile(np.minimum(r, 1.0))).reshape(-1), np.float32)


def _project(view: _View, uvz: NDArray[Any]) -> NDArray[Any]:
    """Canonical (u, v, z) points to frame pixels, as the renderer maps them (orthographic)."""
    xyz = uvz.astype(np.float64) @ _rotation(view.yaw, view.pitch, view.roll).T
    return np.stack([view.cx + xyz[:, 0] * view.unit, view.cy + xyz[:, 1] * view.unit], 1).astype(np.float32)


def _face_polygon(p: PersonParams, view: _View, canon: _Canon | None, opening: float = 0.0) -> NDArray[Any]:
    """The face core in frame pixels: the convex hull of its outline and inner rings, projected (a turned
    face shows its core's outline and, on the far side, points from inside it)."""
    chin = p.chin + 0.07 * opening
    outline = _core_outline(p, chin)
    centre = np.array([0.0, 0.5 * (outline[:, 1].min() + chin)], np.float32)
    rings = [centre + (outline - centre) * k for k in (1.0, 0.75, 0.5, 0.25)]
    uv = np.concatenate([*rings, centre[None]])
    pts = _project(view, np.column_stack([uv, _depth(p, canon, uv, chin)]))
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    return np.asarray(hull, np.float32)


def _face_points(p: PersonParams, view: _View, canon: _Canon | None, opening: float) -> dict[str, tuple[float, float]]:
    """Eye centres, nose tip, mouth centre and chin, projected onto the frame."""
    chin = p.chin + 0.07 * opening
    mouth = float(_mouth_curves(p, opening, 0.0)["line"][20])
    names = ("left_eye", "right_eye", "nose", "mouth", "chin")
    uv = np.array(
        [[-p.eye_spacing, 0.0], [p.eye_spacing, 0.0], [0.0, p.nose_length], [0.0, mouth], [0.0, chin - 0.02]],
        np.float32,
    )
    pts = _project(view, np.column_stack([uv, _depth(p, canon, uv, chin)]))
    return {n: (float(x), float(y)) for n, (x, y) in zip(names, pts, strict=True)}


def _box(poly: NDArray[Any]) -> tuple[float, float, float, float]:
    return (float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max()))


@dataclass(frozen=True)
class _Phases:
    yaw: float
    nod: float
    roll: float
    sway: float
    bob: float
    shake_dir: float


def _pose(plan: _Plan, ph: _Phases, t: float) -> tuple[float, float, float, float, float]:
    """(yaw, pitch, roll, dx, dy) at time ``t``: angles in degrees, offsets in face widths."""
    if plan.still:
        return 5.0, 2.0, 0.0, 0.0, 0.0
    yaw = plan.yaw * math.sin(2 * math.pi * t / plan.yaw_period + ph.yaw)
    pitch = 2.0 + plan.nod * math.sin(2 * math.pi * t / 1.35 + ph.nod)
    roll = plan.roll * math.sin(2 * math.pi * t / plan.roll_period + ph.roll)
    dx = 0.1 * math.sin(2 * math.pi * t / 3.7 + ph.sway)
    dy = 0.04 * math.sin(2 * math.pi * t / 2.3 + ph.bob)
    if plan.shake is not None and plan.shake <= t <= plan.shake + _SHAKE_SECONDS:
        s = _SHAKE_AMPLITUDE * math.sin(3 * math.pi * (t - plan.shake) / _SHAKE_SECONDS)
        dx += s * math.cos(ph.shake_dir)
        dy += s * math.sin(ph.shake_dir)
    return yaw, pitch, roll, dx, dy


def _light_swing(plan: _Plan, t: float, seconds: float) -> tuple[float, NDArray[Any], float]:
    """(gain, BGR tint, key light angle): 0 dark and warm at the start, bright and cool after ~2 s, back."""
    if not plan.light:
        return 1.0, _arr([1.0, 1.0, 1.0]), 25.0
    rise = min(2.0, 0.6 * seconds)
    if t <= rise:
        s = 0.5 - 0.5 * math.cos(math.pi * t / rise)
    else:
        s = 0.5 + 0.5 * math.cos(math.pi * min(1.0, (t - rise) / max(seconds - rise, 1e-6)))
    warm, cool = _arr([0.8, 0.97, 1.14]), _arr([1.14, 1.0, 0.84])
    return 0.55 + 0.75 * s, warm + (cool - warm) * s, -20.0 + 45.0 * s


# ---------------------------------------------------------------------------------------------------
# props: the hand, the shirt print, the poster


def _hand_progress(plan: _Plan, t: float) -> float:
    """0: the hand out of the frame; 1: over the mouth and chin."""
    if plan.hand is None:
        return 0.0
    start, end = plan.hand
    if t < start:
        x = 1 - (start - t) / _HAND_MOVE
    elif t > end:
        x = 1 - (t - end) / _HAND_MOVE
    else:
        return 1.0
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _hand_mask(w: int, h: int, centre: tuple[float, float], width: float, angle: float) -> NDArray[Any]:
    """Coverage (uint8) of a hand, fingers pointing along ``angle`` (degrees, 180 = image left), its
    forearm running the other way; ``width`` is the performer's face width in pixels."""
    a = math.radians(angle)
    along, across = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    c = np.array(centre)

    def at(x: float, y: float) -> NDArray[Any]:
        return c + (x * along + y * across) * width

    def fx(pts: list[NDArray[Any]]) -> NDArray[Any]:
        return np.round(np.array(pts) * 16).astype(np.int32)

    mask = np.zeros((h, w), np.uint8)
    arm = [at(-0.18, -0.22), at(-2.4, -0.27), at(-2.4, 0.26), at(-0.18, 0.23)]
    cv2.fillPoly(mask, [fx(arm)], 255, cv2.LINE_AA, shift=4)
    palm = [at(0.3 * math.cos(s), 0.27 * math.sin(s)) for s in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
    cv2.fillPoly(mask, [fx(palm)], 255, cv2.LINE_AA, shift=4)
    thick = max(1, round(1.15 * _FINGER * width))  # a little overlap: no slit between the fingers
    for (y, length), spread in zip(_FINGERS, (-2.0, -0.7, 0.7, 2.0), strict=True):  # little finger to index
        s = math.radians(spread)
        base = at(0.15, y)
        tip = base + (math.cos(s) * along + math.sin(s) * across) * (length + 0.05) * width
        cv2.line(mask, tuple(fx([base])[0]), tuple(fx([tip])[0]), 255, thick, cv2.LINE_AA, 4)
    thumb = [at(-0.05, 0.24), at(0.25, 0.37)]
    cv2.line(mask, tuple(fx([thumb[0]])[0]), tuple(fx([thumb[1]])[0]), 255, thick, cv2.LINE_AA, 4)
    return mask


def _shade_hand(
    img: NDArray[Any], mask: NDArray[Any], skin: NDArray[Any], width: float, centre: tuple[float, float], angle: float
) -> None:
    """The hand over ``img`` (float32 BGR, in place) where ``mask`` covers: rounded edges, lit from above,
    darker creases between the fingers."""
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return
    cover = mask[y : y + bh, x : x + bw]
    dist = cv2.distanceTransform((cover > 127).astype(np.uint8), cv2.DIST_L2, 3)
    round_ = 0.72 + 0.28 * np.clip(dist / (0.07 * width), 0, 1)
    ys, xs = np.mgrid[y : y + bh, x : x + bw].astype(np.float32)
    a = math.radians(angle)
    across = -(xs - centre[0]) * math.sin(a) + (ys - centre[1]) * math.cos(a)
    shade = round_ * (0.95 - 0.12 * np.clip(across / (0.4 * width), -1, 1))
    creases = np.zeros((bh, bw), np.uint8)
    along_v, across_v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    for k in (-_FINGER, 0.0, _FINGER):  # between the fingers
        p0 = np.array(centre) - (x, y) + (0.22 * along_v + k * across_v) * width
        p1 = np.array(centre) - (x, y) + (0.55 * along_v + k * across_v) * width
        thick = max(1, round(0.015 * width))
        cv2.line(creases, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), 255, thick)
    soft = cv2.GaussianBlur(creases.astype(np.float32) / 255, (0, 0), max(0.6, 0.008 * width))
    shade = shade * (1 - 0.35 * soft)
    alpha = (cover.astype(np.float32) / 255)[..., None]
    region = img[y : y + bh, x : x + bw]
    region[:] = region * (1 - alpha) + skin[None, None] * shade[..., None] * alpha


def _outline(mask: NDArray[Any]) -> NDArray[Any] | None:
    """The largest outer contour of a coverage mask, (M, 2) float32 frame pixels; None when empty."""
    binary = (mask > 127).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    biggest = max(contours, key=cv2.contourArea)
    if cv2.contourArea(biggest) < 4:
        return None
    poly = cv2.approxPolyDP(biggest, 0.7, True).reshape(-1, 2)
    return np.asarray(poly, np.float32)


@dataclass
class _Panel:
    """A rendered face to print or hang: BGR float32, coverage, and the face core's box in panel pixels."""

    image: NDArray[Any]
    alpha: NDArray[Any]
    box: tuple[float, float, float, float]


def _panel(seed: int, side: int, sketch: bool) -> _Panel:
    """Another person's face on a panel: a poster (colour, framed) or a shirt print (a greyscale,
    edge-enhanced sketch with soft edges)."""
    pw, ph = max(16, round(_PANEL[0] * side)), max(16, round(_PANEL[1] * side))
    p = PersonParams.from_seed(seed)
    scale = _PANEL_UNIT * pw / (0.25 * min(pw, ph))
    centre = (0.5, 0.47)
    img = render_face(p, size=(pw, ph), scale=scale, center=centre, lighting_angle=15.0).astype(np.float32) / 255
    view = _View(centre[0] * pw, centre[1] * ph, 0.25 * min(pw, ph) * scale)
    box = _box(_face_polygon(p, view, None))
    alpha = np.ones((ph, pw), np.float32)
    if sketch:
        grey = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), np.float32)
        sharp: NDArray[Any] = cv2.addWeighted(grey, 2.6, cv2.GaussianBlur(grey, (0, 0), 1.5), -1.6, 0.0)
        lo, hi = (float(q) for q in np.percentile(sharp.astype(np.float64), (2, 98)))  # unsharp, stretched
        ink = np.clip((sharp - lo) / max(hi - lo, 1e-3), 0, 1) * 0.85 + 0.08
        img = np.repeat(ink[..., None], 3, axis=2)
        xs, ys = np.arange(pw, dtype=np.float32) + 0.5, np.arange(ph, dtype=np.float32) + 0.5
        edge = np.minimum(np.minimum(xs, pw - xs)[None, :], np.minimum(ys, ph - ys)[:, None])
        alpha = np.clip(edge / 4.0, 0, 1).astype(np.float32) * 0.92
    else:
        border = max(2, round(0.03 * pw))
        img[:border], img[-border:], img[:, :border], img[:, -border:] = 0.12, 0.12, 0.12, 0.12
    return _Panel(np.asarray(img, np.float32), alpha, box)


def _paste(img: NDArray[Any], panel: _Panel, x: float, y: float, scale: float = 1.0) -> tuple[float, ...]:
    """``panel`` over ``img`` (float32, in place) with its top-left corner at (x, y), scaled; its face
    box in ``img`` pixels. Only the region the panel reaches is warped and blended."""
    h, w = img.shape[:2]
    ph, pw = panel.alpha.shape
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(w, math.ceil(x + pw * scale) + 1), min(h, math.ceil(y + ph * scale) + 1)
    b = panel.box
    box = (x + b[0] * scale, y + b[1] * scale, x + b[2] * scale, y + b[3] * scale)
    if x1 <= x0 or y1 <= y0:
        return box
    m = np.array([[scale, 0, x - x0], [0, scale, y - y0]], np.float32)
    rgba = np.dstack([panel.image * panel.alpha[..., None], panel.alpha])
    warped = cv2.warpAffine(rgba, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    region = img[y0:y1, x0:x1]
    region[:] = region * (1 - warped[..., 3:4]) + warped[..., :3]
    return box


# ---------------------------------------------------------------------------------------------------
# the clip


def hard_clip(
    name: str,
    *,
    seed: int = 0,
    seconds: float | None = None,
    fps: int = 25,
    size: tuple[int, int] = (360, 640),
    performer_seed: int | None = None,
) -> HardClip:
    """The hard scenario ``name`` (one of ``SCENARIOS``), deterministic for ``seed``: ``seconds`` long
    (default 3.0, ``unseen`` 3.6) at ``size`` (width, height). The performer is person ``performer_seed``
    (default ``1000 + seed``); the other faces are people ``performer + 101``, ``+ 202`` and ``+ 303``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown hard scenario {name!r}: one of {', '.join(SCENARIOS)}")
    seconds = _DEFAULT_SECONDS.get(name, _DEFAULT_SECONDS_ANY) if seconds is None else seconds
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"hard_clip needs a positive duration and frame rate, not {seconds} s at {fps} fps")
    w, h = size
    if w % 2 or h % 2 or min(size) < 64:
        raise ValueError(f"hard clip size {w}x{h}: width and height must be even and at least 64")
    plan = _plan(name, seconds)
    performer = 1000 + seed if performer_seed is None else performer_seed
    p = PersonParams.from_seed(performer)
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x4A2D, SCENARIOS.index(name)]))
    ph = _Phases(*(float(v) for v in rng.uniform(0, 2 * math.pi, 6)))
    motion = _Motion.from_rng(rng, seconds)
    side = min(w, h)
    unit = _UNIT * side
    base_x, base_y = plan.cx * w, max(_EYE_Y * h, 1.35 * unit)
    face_w = 2 * p.face_width * unit
    n = _canon_n(unit * 1.1)
    canons: dict[int, _Canon] = {}

    def canon(level: int) -> _Canon:
        if level not in canons:
            canons[level] = _build_canon(p, level / _TALK_LEVELS, 0.0, n)
        return canons[level]

    # the scene, a little larger than the frame, seen through a slowly drifting camera
    mx, my = round(0.06 * w), round(0.06 * h)
    scene, _ = _scene(w + 2 * mx, h + 2 * my, rng)
    poster_box: tuple[float, ...] | None = None
    if plan.poster:
        panel = _panel(performer + 202, side, sketch=False)
        poster_box = _paste(scene, panel, mx + round(0.02 * w), my + round(0.05 * h))
    shirt = _panel(performer + 101, side, sketch=True) if plan.shirt else None
    second = PersonParams.from_seed(performer + 303) if plan.second else None
    second_canon = _build_canon(second, 0.0, 0.0, _canon_n(0.75 * unit * 1.1)) if second is not None else None
    skin = np.clip(_arr(p.skin) * _arr([0.93, 0.95, 1.03]), 0, 1) * _exposure(p) * 0.97

    def camera(t: float) -> tuple[NDArray[Any], float, float]:
        if plan.still:
            ox, oy = 0.0, 0.0
        else:
            ox = 0.5 * mx * math.sin(2 * math.pi * t / 5.3 + ph.sway)
            oy = 0.3 * my * math.sin(2 * math.pi * t / 4.1 + ph.bob)
        m = np.array([[1, 0, -(mx + ox)], [0, 1, -(my + oy)]], np.float32)
        return cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR), mx + ox, my + oy

    def performer_view(t: float) -> _View:
        yaw, pitch, roll, dx, dy = _pose(plan, ph, t)
        return _View(base_x + dx * face_w, base_y + dy * face_w, unit, yaw, pitch, roll)

    def second_view(t: float) -> _View:
        k = 0.75 * unit
        return _View(
            0.2 * w + 0.06 * k * math.sin(2 * math.pi * t / 2.9 + ph.bob),
            base_y - 0.35 * k + 0.03 * k * math.sin(2 * math.pi * t / 2.1 + ph.yaw),
            k, 15.0 * math.sin(2 * math.pi * t / 2.2 + ph.roll), 2.0 + 4.0 * math.sin(2 * math.pi * t / 1.7 + ph.nod),
            3.0 * math.sin(2 * math.pi * t / 2.7 + ph.sway),
        )  # fmt: skip

    def hand_at(view: _View, t: float, level: int) -> tuple[NDArray[Any], tuple[float, float], float] | None:
        progress = _hand_progress(plan, t)
        if progress <= 0:
            return None
        pts = _face_points(p, view, canon(level), level / _TALK_LEVELS)
        mouth, chin = np.array(pts["mouth"]), np.array(pts["chin"])
        # fingers across the face's vertical axis, their middle on the point between mouth and chin
        angle = 182.0 + view.roll - 25.0 * (1 - progress)
        a = math.radians(angle)
        cover = 0.5 * (mouth + chin) - face_w * 0.4 * np.array([math.cos(a), math.sin(a)])
        start = cover + face_w * np.array([1.5, 1.6])
        centre = start + (cover - start) * progress
        mask = _hand_mask(w, h, (float(centre[0]), float(centre[1])), face_w, angle)
        return mask, (float(centre[0]), float(centre[1])), angle

    def render(t: float) -> tuple[NDArray[Any], _View, int, NDArray[Any] | None, list[tuple[float, ...]]]:
        """The frame at time ``t`` before the light swing and grain (float32 BGR 0..1)."""
        bg, ox, oy = camera(t)
        decoys: list[tuple[float, ...]] = []
        if poster_box is not None:
            decoys.append((poster_box[0] - ox, poster_box[1] - oy, poster_box[2] - ox, poster_box[3] - oy))
        _, _, light_angle = _light_swing(plan, t, seconds)
        if second is not None and second_canon is not None:
            sv = second_view(t)
            bg = _compose(second, second_canon, sv, bg, lighting_angle=light_angle).astype(np.float32) / 255
            decoys.append(_box(_face_polygon(second, sv, second_canon)))
        level = round(motion.talk(t) * _TALK_LEVELS) if plan.talk else 0
        view = performer_view(t)
        img = _compose(p, canon(level), view, bg, lighting_angle=light_angle).astype(np.float32) / 255
        if shirt is not None:
            decoys.append(_paste(img, shirt, view.cx - shirt.image.shape[1] / 2, view.cy + 1.78 * unit))
        hand = hand_at(view, t, level)
        mask = None
        if hand is not None:
            mask, centre, angle = hand
            _shade_hand(img, mask, skin, face_w, centre, angle)
        return img, view, level, mask, decoys

    frames: list[NDArray[Any]] = []
    truth: list[FrameTruth] = []
    mouth: list[float] = []
    count = max(1, round(seconds * fps))
    grain_rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x6A1, SCENARIOS.index(name)]))
    for i in range(count):
        t = i / fps
        img, view, level, mask, decoys = render(t)
        blur = 0.0
        if plan.shake is not None and plan.shake - 0.5 / fps <= t <= plan.shake + _SHAKE_SECONDS + 0.5 / fps:
            # the exposure: the face's path length, and as many sub-frames as it needs (one per ~2 px)
            span = _SHUTTER / fps
            fine = [performer_view(t + (k / 16 - 0.5) * span) for k in range(17)]
            blur = float(sum(math.hypot(b.cx - a.cx, b.cy - a.cy) for a, b in zip(fine, fine[1:], strict=False)))
            if blur >= 1.0:
                steps = max(3, math.ceil(blur / 2))
                acc = np.zeros_like(img)
                for k in range(steps):
                    acc += render(t + (k / (steps - 1) - 0.5) * span)[0]
                img = acc / steps
            else:
                blur = 0.0
        gain, tint, _ = _light_swing(plan, t, seconds)
        img = cv2.transform(img, np.diag(tint * gain * 255).astype(np.float32))
        grain = grain_rng.standard_normal((h, w), dtype=np.float32)
        img = cv2.scaleAdd(cv2.merge([grain, grain, grain]), _GRAIN, img)
        frames.append(cv2.convertScaleAbs(img, alpha=1.0, beta=0.5))
        poly = _face_polygon(p, view, canon(level), level / _TALK_LEVELS)
        share = _visible_share(poly, mask, w, h)
        truth.append(
            FrameTruth(
                face_polygon=poly if share > 0 else None,
                visible_share=share,
                occluder_polygon=None if mask is None else _outline(mask),
                decoy_boxes=[(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in decoys],
                blur_px=blur,
                static=plan.still,
                points=_face_points(p, view, canon(level), level / _TALK_LEVELS),
            )
        )
        mouth.append(level / _TALK_LEVELS)
    return HardClip(name, frames, fps, (w, h), performer, truth, plan.description, seed, mouth)


def _visible_share(poly: NDArray[Any], occluder: NDArray[Any] | None, w: int, h: int) -> float:
    """Share of the polygon's area inside the frame and not under the occluder (coverage > 1/2)."""
    x0, y0 = math.floor(min(0.0, float(poly[:, 0].min()))), math.floor(min(0.0, float(poly[:, 1].min())))
    x1, y1 = math.ceil(max(float(w), float(poly[:, 0].max()))), math.ceil(max(float(h), float(poly[:, 1].max())))
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(canvas, [np.round((poly - np.array([x0, y0])) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    total = int(canvas.sum())
    if total == 0:
        return 0.0
    inside = canvas[-y0 : -y0 + h, -x0 : -x0 + w].astype(bool)
    if occluder is not None:
        inside &= occluder <= 127
    return float(inside.sum()) / total

