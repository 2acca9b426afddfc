"""Virtual people: procedural faces, for swap sources and template performers.

No real person and no downloaded asset: every pixel comes from a seed. A face is a
height field (an ellipsoid head with eye sockets, brows, nose, cheeks, lips and chin bumped in) with an
albedo painted on it, built in a canonical frontal frame; a view turns it (yaw, pitch, roll) by inverse
mapping and shades it with a light direction, so dlib's HOG detector sees face-like gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from .common import Vec3, _arr, _hsv

Size = int | tuple[int, int]

# canonical frame, in head units: eye line at v=0, crown at v=-1, chin near v=+1, u to image right
_U0, _U1, _V0, _V1 = -1.3, 1.3, -1.45, 1.15
_DEPTH = 0.78  # how far the face plane stands in front of the head's silhouette
# soft key light from above: swept against HOG detection (harder light lost 2-4 faces in 50)
_WRAP, _ELEVATION, _AMBIENT = 0.25, 28.0, 0.45
_EDGE = 0.15  # bounds the slope at the silhouette so the inverse mapping converges

HAIR_STYLES = ("short", "long", "bob", "bun", "buzz", "curly")
BEARDS = ("none", "stubble", "moustache", "goatee")

# skin albedo anchors (BGR, 0..1), light to dark; a tone is a point on this curve
_SKIN = np.array(
    [
        (0.80, 0.86, 0.97),
        (0.66, 0.76, 0.93),
        (0.52, 0.64, 0.84),
        (0.40, 0.53, 0.74),
        (0.30, 0.42, 0.62),
        (0.22, 0.31, 0.48),
        (0.17, 0.24, 0.38),
    ],
    dtype=np.float32,
)
_HAIR = {  # BGR albedo
    "black": (0.05, 0.05, 0.06),
    "dark_brown": (0.07, 0.10, 0.16),
    "brown": (0.12, 0.19, 0.30),
    "auburn": (0.10, 0.20, 0.42),
    "blonde": (0.38, 0.58, 0.76),
    "grey": (0.55, 0.56, 0.58),
    "red": (0.08, 0.22, 0.55),
}
_IRIS = {
    "dark_brown": (0.06, 0.12, 0.20),
    "brown": (0.10, 0.22, 0.38),
    "hazel": (0.16, 0.34, 0.42),
    "green": (0.30, 0.45, 0.28),
    "blue": (0.62, 0.45, 0.25),
    "grey": (0.50, 0.48, 0.44),
}


@dataclass(frozen=True)
class PersonParams:
    """Everything that makes one virtual person; lengths are in head units (crown to eye line = 1)."""

    seed: int
    skin: Vec3  # BGR albedo, 0..1
    face_width: float  # half-width at the cheekbones
    chin: float  # eye line to chin
    jaw: float  # jaw width relative to the cheekbones
    jaw_square: float  # superellipse exponent of the lower face: 2 round, 3 square
    cheek: float  # cheekbone prominence (depth)
    eye_spacing: float  # eye line centre to each eye centre
    eye_width: float  # half-width of an eye opening
    eye_open: float  # half-height of an eye opening
    eye_tilt: float  # outer corners raised (+) or lowered (-)
    eye_crease: float  # how visible the upper lid crease is (0: monolid)
    eyeliner: float  # weight of the upper lash line
    iris: Vec3
    brow_height: float  # above the eye line
    brow_arch: float
    brow_thickness: float
    brow_tilt: float  # tails raised (-) or dropped (+)
    nose_length: float  # eye line to nose tip
    nose_width: float  # half-width at the wings
    nose_height: float  # how far the tip stands out
    mouth_width: float  # half-width
    lip_upper: float
    lip_lower: float
    lip_colour: Vec3
    beard: str  # none, stubble, moustache, goatee
    hair_colour: Vec3
    hair_style: str
    hairline: float  # v of the hairline at the middle of the forehead
    fringe: bool  # hair over the forehead
    part: float  # u of the parting
    ear_size: float
    clothing: Vec3
    backdrop: Vec3
    glasses: bool = False  # never drawn for swap sources (the source QC wants a clear face)

    @classmethod
    def from_seed(cls, seed: int) -> PersonParams:
        rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0xFACE]))

        def uni(lo: float, hi: float) -> float:
            return float(rng.uniform(lo, hi))

        # one presentation axis moves jaw, brows, nose, lips and hair together: correlated changes
        # separate identities in the embedding far more than independent small ones
        masc = float(rng.beta(0.6, 0.6))

        def axis(fem: tuple[float, float], man: tuple[float, float]) -> float:
            lo = fem[0] + (man[0] - fem[0]) * masc
            hi = fem[1] + (man[1] - fem[1]) * masc
            return uni(lo, hi)

        tone = uni(0.0, 1.0)
        skin = _skin_tone(tone, undertone=uni(-1.0, 1.0))
        dark = tone > 0.55
        hair_names = list(_HAIR)
        hair_w = [4, 4, 2, 0.3, 0.2, 0.6, 0.1] if dark else [1.5, 2, 2.5, 1, 2, 0.8, 0.7]
        iris_names = list(_IRIS)
        iris_w = [5, 3, 0.6, 0.1, 0.1, 0.1] if dark else [1, 2, 1.5, 1, 1.6, 0.8]
        hair = _HAIR[str(rng.choice(hair_names, p=np.array(hair_w) / sum(hair_w)))]
        iris = _IRIS[str(rng.choice(iris_names, p=np.array(iris_w) / sum(iris_w)))]
        style_w = (
            np.array([1, 3, 3, 2, 0.3, 1.5]) * (1 - masc) + np.array([3, 0.3, 0.2, 0.2, 2.5, 1.5]) * masc
        )
        style = str(rng.choice(HAIR_STYLES, p=style_w / style_w.sum()))
        beard = "none"
        if masc > 0.6:
            beard = str(rng.choice(BEARDS, p=[0.45, 0.3, 0.1, 0.15]))
        red = axis((0.95, 1.1), (0.85, 0.95))
        lip_shift = np.array([uni(0.62, 0.78), uni(0.5, 0.64), uni(0.84, 0.98) * red], dtype=np.float32)
        lip = tuple(float(v) for v in np.clip(np.array(skin) * lip_shift, 0, 1))
        clothing = _hsv(rng.integers(0, 180), rng.integers(40, 200), rng.integers(50, 200))
        backdrop = _hsv(rng.integers(0, 180), rng.integers(10, 70), rng.integers(150, 215))
        return cls(
            seed=seed,
            skin=skin,
            face_width=axis((0.6, 0.7), (0.66, 0.78)),
            chin=axis((0.9, 1.0), (0.95, 1.08)),
            jaw=axis((0.62, 0.8), (0.75, 0.95)),
            jaw_square=axis((2.0, 2.6), (2.4, 3.3)),
            cheek=uni(0.02, 0.07),
            eye_spacing=uni(0.25, 0.34),
            eye_width=uni(0.1, 0.145),
            eye_open=uni(0.032, 0.056),
            eye_tilt=uni(-0.015, 0.03),
            eye_crease=uni(0.0, 0.8),
            eyeliner=axis((0.6, 1.0), (0.0, 0.25)),
            iris=iris,
            brow_height=axis((0.17, 0.23), (0.13, 0.18)),
            brow_arch=axis((0.025, 0.05), (0.0, 0.025)),
            brow_thickness=axis((0.018, 0.035), (0.035, 0.06)),
            brow_tilt=uni(-0.02, 0.03),
            nose_length=axis((0.36, 0.46), (0.42, 0.52)),
            nose_width=axis((0.1, 0.16), (0.14, 0.22)),
            nose_height=axis((0.12, 0.19), (0.16, 0.25)),
            mouth_width=uni(0.17, 0.27),
            lip_upper=axis((0.035, 0.065), (0.02, 0.045)),
            lip_lower=axis((0.05, 0.09), (0.035, 0.065)),
            lip_colour=lip,  # type: ignore[arg-type]
            beard=beard,
            hair_colour=hair,
            hair_style=style,
            hairline=uni(-0.64, -0.5),
            fringe=bool(rng.random() < 0.3) and style in ("short", "long", "bob", "curly"),
            part=uni(-0.25, 0.25),
            ear_size=uni(0.85, 1.15),
            clothing=clothing,
            backdrop=backdrop,
        )


def _skin_tone(t: float, undertone: float) -> Vec3:
    """A point on the light-to-dark anchor curve, nudged warmer (+) or more olive (-)."""
    x = t * (len(_SKIN) - 1)
    i = min(int(x), len(_SKIN) - 2)
    c = _SKIN[i] * (1 - (x - i)) + _SKIN[i + 1] * (x - i)
    c = c * np.array([1 - 0.04 * undertone, 1 - 0.02 * undertone, 1 + 0.03 * undertone], dtype=np.float32)
    return tuple(float(v) for v in np.clip(c, 0, 1))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# expression


def parse_expression(expression: str) -> tuple[float, float]:
    """(mouth opening 0..1, smile 0..1) for "neutral", "smile", "open_mouth" or "talk:<0..1>"."""
    if expression == "neutral":
        return 0.0, 0.0
    if expression == "smile":
        return 0.12, 1.0
    if expression == "open_mouth":
        return 1.0, 0.0
    if expression.startswith("talk:"):
        try:
            amount = float(expression[5:])
        except ValueError:
            raise ValueError(f"bad expression {expression!r}: talk:<0..1> expected") from None
        return min(max(amount, 0.0), 1.0), 0.0
    raise ValueError(f"unknown expression {expression!r}: neutral, smile, open_mouth or talk:<0..1>")


# ---------------------------------------------------------------------------------------------------
# canonical frame: depth, albedo, coverage and specularity of the frontal head


class _Canon:
    """Maps of the frontal head on an n x n grid over the canonical extent."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.s = n / (_U1 - _U0)  # pixels per head unit
        axis_u = (_U0 + (np.arange(n, dtype=np.float32) + 0.5) / self.s).astype(np.float32)
        axis_v = (_V0 + (np.arange(n, dtype=np.float32) + 0.5) / self.s).astype(np.float32)
        self.U, self.V = np.meshgrid(axis_u, axis_v)
        self.z: NDArray[Any] = np.zeros((n, n), np.float32)
        self.albedo = np.zeros((n, n, 3), np.float32)
        self.alpha = np.zeros((n, n), np.float32)
        self.spec = np.zeros((n, n), np.float32)
        self.r = np.full((n, n), 9.0, np.float32)  # normalised head radius (1 on the outline)
        self.tex: NDArray[Any] | None = None  # albedo + alpha, packed for remap
        self.nrm: NDArray[Any] | None = None  # normal + spec, packed for remap

    def px(self, u: Any, v: Any) -> tuple[Any, Any]:
        return (u - _U0) * self.s - 0.5, (v - _V0) * self.s - 0.5

    def window(self, u0: float, v0: float, u1: float, v1: float) -> tuple[slice, slice]:
        x0, y0 = self.px(u0, v0)
        x1, y1 = self.px(u1, v1)
        xs = slice(max(0, int(x0)), min(self.n, int(math.ceil(x1)) + 1))
        ys = slice(max(0, int(y0)), min(self.n, int(math.ceil(y1)) + 1))
        return ys, xs

    def gauss(self, cu: float, cv: float, su: float, sv: float, amp: float) -> None:
        """Add a Gaussian bump (or dip) to the depth, computed only where it matters."""
        ys, xs = self.window(cu - 3 * su, cv - 3 * sv, cu + 3 * su, cv + 3 * sv)
        u, v = self.U[ys, xs], self.V[ys, xs]
        self.z[ys, xs] += amp * np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))

    def weight(self, cu: float, cv: float, su: float, sv: float) -> tuple[slice, slice, NDArray[Any]]:
        ys, xs = self.window(cu - 3 * su, cv - 3 * sv, cu + 3 * su, cv + 3 * sv)
        u, v = self.U[ys, xs], self.V[ys, xs]
        return ys, xs, np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2)).astype(np.float32)

    def _local(self, pts: NDArray[Any], pad: float) -> tuple[slice, slice, NDArray[Any]]:
        ys, xs = self.window(
            pts[:, 0].min() - pad, pts[:, 1].min() - pad, pts[:, 0].max() + pad, pts[:, 1].max() + pad
        )
        x0, y0 = xs.start, ys.start
        px, py = self.px(pts[:, 0], pts[:, 1])
        local = np.stack([px - x0, py - y0], axis=1)
        return ys, xs, np.round(local * 16).astype(np.int32)  # 4 bits of sub-pixel precision

    def poly(self, pts: NDArray[Any], blur_px: float = 0.0) -> tuple[slice, slice, NDArray[Any]]:
        """Coverage mask (0..1) of a filled polygon given in head units."""
        ys, xs, local = self._local(pts, 0.05)
        mask = np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.uint8)
        if mask.size:
            cv2.fillPoly(mask, [local], 255, cv2.LINE_AA, shift=4)
        return ys, xs, _soften(mask, blur_px)

    def line(self, pts: NDArray[Any], width: float, blur_px: float = 0.0) -> tuple[slice, slice, NDArray[Any]]:
        """Coverage mask of a polyline ``width`` head units thick."""
        ys, xs, local = self._local(pts, 0.05 + width)
        mask = np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.uint8)
        if mask.size:
            thick = max(1, int(round(width * self.s)))
            cv2.polylines(mask, [local], False, 255, thick, cv2.LINE_AA, shift=4)
        return ys, xs, _soften(mask, blur_px)

    @staticmethod
    def fit(where: tuple[slice, slice, NDArray[Any]], ys: slice, xs: slice) -> NDArray[Any]:
        """A mask made for one window, re-cut to another (zeros where it did not reach)."""
        wy, wx, mask = where
        out = np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.float32)
        y0, y1 = max(ys.start, wy.start), min(ys.stop, wy.stop)
        x0, x1 = max(xs.start, wx.start), min(xs.stop, wx.stop)
        if y1 > y0 and x1 > x0:
            out[y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = mask[
                y0 - wy.start : y1 - wy.start, x0 - wx.start : x1 - wx.start
            ]
        return out

    def paint(self, where: tuple[slice, slice, NDArray[Any]], colour: Any, opacity: float = 1.0) -> None:
        ys, xs, mask = where
        m = (mask * opacity)[..., None]
        self.albedo[ys, xs] = self.albedo[ys, xs] * (1 - m) + np.asarray(colour, np.float32) * m

    def shade(self, where: tuple[slice, slice, NDArray[Any]], factor: Any, opacity: float = 1.0) -> None:
        """Multiply the albedo by ``factor`` under the mask (darkening creases, blush)."""
        ys, xs, mask = where
        m = (mask * opacity)[..., None]
        self.albedo[ys, xs] *= 1 - m + m * np.asarray(factor, np.float32)


def _soften(mask: NDArray[Any], blur_px: float) -> NDArray[Any]:
    out = mask.astype(np.float32) / 255.0
    if blur_px > 0.3 and out.size:
        return np.asarray(cv2.GaussianBlur(out, (0, 0), blur_px), np.float32)
    return out


def _smoothstep(a: float, b: float, x: Any) -> Any:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> NDArray[Any]:
    """Zero-mean, unit-ish smooth noise: white noise blurred by ``sigma`` pixels."""
    white = rng.standard_normal(shape).astype(np.float32)
    if sigma <= 0.3:
        return white
    # blur at a reduced size for big sigmas: same look, a fraction of the cost
    k = max(1, int(sigma / 3))
    small = rng.standard_normal((shape[0] // k + 1, shape[1] // k + 1)).astype(np.float32) if k > 1 else white
    out = cv2.GaussianBlur(small, (0, 0), sigma / k)
    if k > 1:
        out = cv2.resize(out, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    normalised: NDArray[Any] = out / (out.std() + 1e-6)
    return normalised


def _edge_profile(r: NDArray[Any]) -> NDArray[Any]:
    """Depth profile of the head against its normalised radius: 1 at the centre, 0 at the outline."""
    inside = np.clip(1.0 + _EDGE - r * r, _EDGE, None)
    depth: NDArray[Any] = (np.sqrt(inside) - math.sqrt(_EDGE)) / (math.sqrt(1 + _EDGE) - math.sqrt(_EDGE))
    return depth


def _head_radius(p: PersonParams, u: NDArray[Any], v: NDArray[Any], chin: float) -> NDArray[Any]:
    """Normalised radius of the head outline: a skull ellipse above, a tapering superellipse jaw below."""
    t = np.clip((v - 0.15) / (chin - 0.15), 0.0, 1.0)
    half_w = p.face_width * (1 - (1 - p.jaw) * t**1.6)
    half_h = np.where(v < 0, np.float32(1.0), np.float32(chin))
    e = np.float32(2.0) + np.float32(p.jaw_square - 2.0) * np.clip(v / 0.5, 0.0, 1.0)
    # |x|^e as exp(e log|x|): one pass instead of numpy's general power
    au = np.log(np.abs(u / half_w) + 1e-12)
    av = np.log(np.abs(v / half_h) + 1e-12)
    return np.asarray(np.exp(np.log(np.exp(e * au) + np.exp(e * av) + 1e-30) / e), dtype=np.float32)


def _build_canon(p: PersonParams, opening: float, smile: float, n: int) -> _Canon:
    c = _Canon(n)
    rng = np.random.default_rng(np.random.SeedSequence([p.seed & 0xFFFFFFFF, 0x7E7, n]))
    chin = p.chin + 0.07 * opening
    ys, xs = c.window(-p.face_width - 0.05, -1.05, p.face_width + 0.05, chin + 0.05)
    r = np.full((n, n), 9.0, np.float32)  # normalised head radius; far outside where not computed
    r[ys, xs] = _head_radius(p, c.U[ys, xs], c.V[ys, xs], chin)
    c.r = r
    c.z[ys, xs] = np.where(r[ys, xs] < 1, _DEPTH * _edge_profile(r[ys, xs]), 0.0)
    c.alpha[ys, xs] = np.clip((1 - r[ys, xs]) * p.face_width * c.s / 1.2 + 0.5, 0, 1)
    # skin: base tone, blotches and pores (pores also give the portrait its measurable sharpness)
    blotch = _noise(rng, (n, n), n / 40)
    pores = _noise(rng, (n, n), 0.6)
    tone = 1.0 + 0.035 * blotch + 0.03 * pores
    c.albedo[:] = np.asarray(p.skin, np.float32) * tone[..., None]
    c.spec[:] = 0.12 + 0.25 * max(0.0, 1.0 - _luma(p.skin) / 0.9)  # darker skin shows more sheen
    _ears(c, p)
    _cheeks(c, p, smile)
    _eyes(c, p, smile)
    _brows(c, p, rng)
    _nose(c, p)
    _beard(c, p, rng, opening, smile, chin)
    _mouth(c, p, opening, smile, chin)
    _hair(c, p, rng)
    if p.glasses:
        _glasses(c, p)
    _finish(c)
    return c


def _ears(c: _Canon, p: PersonParams) -> None:
    k = p.ear_size
    for sgn in (-1, 1):
        cu, cv = sgn * (p.face_width - 0.01 + 0.05 * k), 0.15
        su, sv = 0.085 * k, 0.27 * k
        ys, xs = c.window(cu - su * 1.2, cv - sv * 1.2, cu + su * 1.2, cv + sv * 1.2)
        u, v = c.U[ys, xs], c.V[ys, xs]
        # egg-shaped: wider at the top
        d = np.sqrt(((u - cu) / (su * (1.0 - 0.3 * (v - cv) / sv))) ** 2 + ((v - cv) / sv) ** 2)
        cover = np.clip((1 - d) * su * c.s / 1.2 + 0.5, 0, 1)
        fresh = cover * (1 - c.alpha[ys, xs])
        ear_z = 0.1 + 0.05 * np.clip(1 - d, 0, 1)
        c.z[ys, xs] = np.where(fresh > 0.01, np.maximum(c.z[ys, xs], ear_z), c.z[ys, xs])
        c.albedo[ys, xs] = c.albedo[ys, xs] * (1 - fresh[..., None]) + (
            np.asarray(p.skin, np.float32) * _arr([0.93, 0.93, 1.02]) * fresh[..., None]
        )
        c.alpha[ys, xs] = np.maximum(c.alpha[ys, xs], cover)
        bowl = np.exp(
            -0.5 * (((u - cu + sgn * 0.01) / (su * 0.35)) ** 2 + ((v - cv - 0.02) / (sv * 0.4)) ** 2)
        )
        c.shade((ys, xs, (bowl * fresh).astype(np.float32)), 0.6, 0.8)  # the ear's hollow
        c.gauss(cu - sgn * 0.01, cv + 0.02, su * 0.35, sv * 0.4, -0.03)


def _cheeks(c: _Canon, p: PersonParams, smile: float) -> None:
    for sgn in (-1, 1):
        c.gauss(sgn * 0.36, 0.24 - 0.04 * smile, 0.17, 0.14, p.cheek + 0.025 * smile)
        c.gauss(sgn * (p.face_width - 0.08), -0.3, 0.08, 0.14, -0.025)  # temples
        blush = c.weight(sgn * 0.37, 0.3, 0.13, 0.1)
        c.shade(blush, (0.94, 0.92, 1.04), 0.8)
    c.gauss(0.0, -0.45, 0.35, 0.25, 0.03)  # forehead


def _lid_curves(p: PersonParams, sgn: int, smile: float) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """(x, upper v, lower v) of one eye opening; x runs -1 (inner corner) to +1 (outer)."""
    x = np.linspace(-1, 1, 33)
    eh = p.eye_open * (1 - 0.15 * smile)
    tilt = -p.eye_tilt * x
    upper = -eh * (1 - x**2) ** 0.6 * (1 - 0.12 * x) + tilt
    lower = eh * 0.55 * (1 - 0.35 * smile) * (1 - x**2) ** 0.85 * (1 + 0.1 * x) + tilt
    return x, upper, lower


def _eyes(c: _Canon, p: PersonParams, smile: float) -> None:
    ew = p.eye_width
    for sgn in (-1, 1):
        ex = sgn * p.eye_spacing
        c.gauss(ex, -0.02, ew * 1.25, 0.09, -0.06)  # socket
        c.gauss(ex, 0.0, ew * 0.85, 0.05, 0.025)  # eyeball under the lids
        under = c.weight(ex, 0.07, ew * 0.9, 0.035)
        c.shade(under, 0.9, 0.7)
        x, upper, lower = _lid_curves(p, sgn, smile)
        u = ex + sgn * x * ew
        opening = np.concatenate([np.stack([u, upper], 1), np.stack([u[::-1], lower[::-1]], 1)])
        ys, xs, m = c.poly(opening)
        uu, vv = c.U[ys, xs], c.V[ys, xs]
        # sclera: off-white, darker towards the corners and under the upper lid
        lx = np.clip((uu - ex) * sgn / ew, -1, 1)
        top = np.interp(uu * sgn, (u * sgn), upper) if sgn > 0 else np.interp(-uu, -u, upper)
        lid_shadow = 0.55 + 0.45 * np.clip((vv - top) / (p.eye_open * 0.9), 0, 1)
        sclera = _arr([0.88, 0.9, 0.93]) * (0.8 + 0.2 * (1 - lx**2))[..., None]
        c.paint((ys, xs, m), sclera)
        # iris with a dark limbal ring and a pupil
        ir = 0.4 * ew
        d = np.sqrt((uu - ex) ** 2 + vv**2) / ir
        ang = np.arctan2(vv, uu - ex)
        streak = 1 + 0.18 * np.sin(ang * 23 + sgn) * np.sin(ang * 7)
        iris = np.asarray(p.iris, np.float32) * ((0.7 + 0.5 * (1 - np.clip(d, 0, 1))) * streak)[..., None]
        iris = np.where((d > 0.82)[..., None], iris * 0.45, iris)
        iris = np.where((d < 0.36)[..., None], _arr([0.03, 0.03, 0.03]), iris)
        disc = np.clip((1 - d) * ir * c.s / 1.2 + 0.5, 0, 1) * m
        c.paint((ys, xs, disc), iris)
        c.shade((ys, xs, m), lid_shadow[..., None])
        catch = c.weight(ex - 0.3 * ir, -0.35 * ir, 0.1 * ir, 0.1 * ir)
        c.paint((catch[0], catch[1], np.clip(catch[2] * 1.6, 0, 1)), (0.95, 0.96, 0.97), 0.9)
        c.spec[ys, xs] = np.maximum(c.spec[ys, xs], 0.6 * m)
        # lashes (dark upper line, thicker outside), lower lash line, lid crease
        lash = _arr(p.hair_colour) * 0.5 + 0.02
        c.paint(c.line(np.stack([u, upper], 1), 0.009 + 0.006 * p.eyeliner, 0.6), lash)
        c.paint(c.line(np.stack([u[16:], upper[16:] - 0.003], 1), 0.012 + 0.014 * p.eyeliner, 0.6), lash)
        if p.eyeliner > 0.5:  # a flick at the outer corner
            flick = np.array([[u[-3], upper[-3] - 0.002], [u[-1] + sgn * 0.025, upper[-1] - 0.02]])
            c.paint(c.line(flick, 0.008, 0.6), lash, p.eyeliner)
        c.paint(c.line(np.stack([u[4:-2], lower[4:-2] + 0.003], 1), 0.006, 0.6), lash, 0.35)
        crease = np.stack([ex + sgn * x[3:-3] * ew * 1.05, upper[3:-3] * 1.15 - 0.045], 1)
        c.shade(c.line(crease, 0.01, 1.5), 0.7, p.eye_crease)


def _brows(c: _Canon, p: PersonParams, rng: np.random.Generator) -> None:
    ew = p.eye_width
    colour = _arr(p.hair_colour) * 0.75 + 0.02
    if p.hair_colour == _HAIR["grey"] or p.hair_colour == _HAIR["blonde"]:
        colour = colour * 0.6  # brows read darker than the hair
    for sgn in (-1, 1):
        ex = abs(p.eye_spacing)
        bv = -p.brow_height
        key = np.array(
            [
                [ex - ew * 1.0, bv + 0.012],
                [ex + ew * 0.35, bv - p.brow_arch],
                [ex + ew * 1.3, bv + 0.025 + p.brow_tilt],
            ]
        )
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * key[0] + 2 * t * (1 - t) * key[1] + t**2 * key[2]
        thick = p.brow_thickness * (1.0 - 0.65 * t[:, 0] ** 1.5)
        tangent = np.gradient(curve, axis=0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        top = curve - normal * thick[:, None] / 2
        bottom = curve + normal * thick[:, None] / 2
        outline = np.concatenate([top, bottom[::-1]])
        outline[:, 0] *= sgn
        ys, xs, m = c.poly(outline, 0.8)
        hairs = 0.85 + 0.3 * np.clip(_noise(rng, (m.shape[0], m.shape[1]), 0.7), -1, 1)
        c.paint((ys, xs, m), colour * hairs[..., None], 0.92)
        c.gauss(sgn * ex, bv + 0.01, 0.2, 0.05, 0.025)  # brow ridge


def _nose(c: _Canon, p: PersonParams) -> None:
    nl, nw, nh = p.nose_length, p.nose_width, p.nose_height
    ys, xs = c.window(-0.3, -0.2, 0.3, nl + 0.12)
    u, v = c.U[ys, xs], c.V[ys, xs]
    rise = _smoothstep(-0.12, nl, v) ** 1.3
    width = 0.055 + 0.045 * _smoothstep(-0.1, nl, v)
    below = np.where(v > nl - 0.02, np.exp(-0.5 * ((v - nl + 0.02) / 0.035) ** 2), 1.0)
    c.z[ys, xs] += 0.75 * nh * rise * below * np.exp(-0.5 * (u / width) ** 2)
    c.gauss(0.0, nl - 0.015, 0.055 * nw / 0.15, 0.05, nh * 0.3)  # tip
    for sgn in (-1, 1):
        c.gauss(sgn * nw * 0.72, nl + 0.0, 0.045, 0.04, nh * 0.35)  # wings
        nostril = c.poly(_ellipse(sgn * nw * 0.38, nl + 0.04, 0.028 * nw / 0.15, 0.014, sgn * 20), 1.0)
        c.shade(nostril, 0.35)
        wing = _arc(sgn * nw * 0.72, nl + 0.0, 0.05, 0.045, 90 + sgn * 70, 90 + sgn * 190)
        c.shade(c.line(wing, 0.008, 1.0), 0.8, 0.5)
    tip = c.weight(0.0, nl - 0.02, 0.05, 0.04)
    c.shade(tip, (0.97, 0.96, 1.03), 0.8)
    c.spec[tip[0], tip[1]] += 0.15 * tip[2]


def _beard(
    c: _Canon, p: PersonParams, rng: np.random.Generator, opening: float, smile: float, chin: float
) -> None:
    if p.beard == "none":
        return
    m = _mouth_curves(p, opening, smile)
    mw = float(m["x"][-1])
    ys, xs = c.window(-1.0, 0.1, 1.0, chin + 0.12)
    u, v = c.U[ys, xs], c.V[ys, xs]
    r = _head_radius(p, u, v, chin)
    inside = np.clip((1 - r) * c.s * 0.05, 0, 1)
    # the cheek line: high at the sideburns, down to just under the nose in the middle
    cheek_line = 0.22 + (p.nose_length + 0.05 - 0.22) * (
        1 - _smoothstep(0.12, p.face_width * 0.95, np.abs(u))
    )
    jaw_beard = _smoothstep(0.0, 0.06, v - cheek_line) * inside
    corner = float(m["line"][0])  # beyond the mouth, a moustache stops at the corners' height
    lip_top = np.interp(u, m["x"], m["upper_top"], left=corner, right=corner)
    under_nose = p.nose_length + 0.04
    tache = _smoothstep(-0.01, 0.02, v - under_nose) * _smoothstep(-0.01, 0.01, lip_top - v)
    # a moustache widens from the nostrils to the mouth corners; a goatee narrows to the chin
    spread = np.clip((v - under_nose) / max(float(m["upper_top"][20]) - under_nose, 0.01), 0, 1)
    tache = tache * _smoothstep(-0.02, 0.0, p.nose_width + (mw + 0.02 - p.nose_width) * spread - np.abs(u))
    lip_bottom = np.interp(u, m["x"], m["lower_bottom"], left=-9, right=-9)
    down = np.clip((v - float(m["lower_bottom"][20])) / max(chin - float(m["lower_bottom"][20]), 0.01), 0, 1)
    goatee = (
        _smoothstep(0.0, 0.02, v - lip_bottom - 0.01)
        * _smoothstep(-0.03, 0.0, mw * 0.7 * (1 - 0.45 * down**1.5) - np.abs(u))
        * inside
    )
    amount, mask = {
        "stubble": (0.35, jaw_beard),
        "moustache": (0.8, tache),
        "goatee": (0.8, np.maximum(tache, goatee)),
    }[p.beard]
    grain = 0.75 + 0.25 * np.clip(_noise(rng, mask.shape, 0.6), -1.5, 1.5)
    cover = (mask * amount * grain).astype(np.float32)[..., None]
    colour = _arr(p.hair_colour) * 0.9
    c.albedo[ys, xs] = c.albedo[ys, xs] * (1 - cover) + colour * cover


def _mouth_curves(p: PersonParams, opening: float, smile: float) -> dict[str, NDArray[Any]]:
    x = np.linspace(-1, 1, 41)
    mv = p.nose_length + (p.chin - p.nose_length) * 0.38
    mw = p.mouth_width * (1 + 0.12 * smile + 0.05 * opening)
    gap = 0.17 * opening
    line = mv - 0.05 * smile * x**2 + 0.01 * smile
    shape = (1 - x**2) ** 0.7
    bow = (1 - x**2) ** 0.6 * (1 - 0.3 * np.exp(-((x / 0.14) ** 2)))
    curves = {
        "x": x * mw,
        "line": line,
        "upper_bottom": line - gap * 0.22 * shape,
        "lower_top": line + gap * 0.78 * shape,
    }
    curves["upper_top"] = curves["upper_bottom"] - p.lip_upper * bow * (1 - 0.3 * smile) - 0.004
    curves["lower_bottom"] = (
        curves["lower_top"] + p.lip_lower * (1 - x**2) ** 0.55 * (1 - 0.2 * smile) + 0.004
    )
    return curves


def _mouth(c: _Canon, p: PersonParams, opening: float, smile: float, chin: float) -> None:
    m = _mouth_curves(p, opening, smile)
    x = m["x"]
    mv = float(m["line"][20])
    mw = float(x[-1])
    gap = float(m["lower_top"][20] - m["upper_bottom"][20])
    lip = _arr(p.lip_colour)
    c.gauss(0.0, mv - p.lip_upper * 0.5, mw * 0.75, p.lip_upper + 0.01, 0.035)
    c.gauss(0.0, float(m["lower_top"][20]) + p.lip_lower * 0.5, mw * 0.7, p.lip_lower * 0.8, 0.04)
    c.gauss(0.0, chin - 0.13, 0.16, 0.08, 0.045)  # chin
    c.gauss(0.0, p.nose_length + 0.09, 0.03, 0.04, -0.01)  # philtrum
    if gap > 0.006:
        inner = np.concatenate(
            [np.stack([x, m["upper_bottom"]], 1), np.stack([x[::-1], m["lower_top"][::-1]], 1)]
        )
        ys, xs, hole = c.poly(inner, 0.5)
        vv = c.V[ys, xs]
        c.paint((ys, xs, hole), (0.07, 0.05, 0.13))
        teeth = hole * (vv < np.interp(c.U[ys, xs], x, m["upper_bottom"]) + min(0.04, gap * 0.5))
        c.paint((ys, xs, teeth), (0.8, 0.86, 0.9))
        if gap > 0.07:
            tongue = c.poly(_ellipse(0.0, float(m["lower_top"][20]) - 0.02, mw * 0.55, gap * 0.28, 0), 1.0)
            c.paint((ys, xs, c.fit(tongue, ys, xs) * hole), (0.3, 0.3, 0.62))
        c.z[ys, xs] -= 0.07 * hole
        c.spec[ys, xs] = np.maximum(c.spec[ys, xs], 0.3 * teeth)
    upper = np.concatenate(
        [np.stack([x, m["upper_top"]], 1), np.stack([x[::-1], m["upper_bottom"][::-1]], 1)]
    )
    lower = np.concatenate(
        [np.stack([x, m["lower_top"]], 1), np.stack([x[::-1], m["lower_bottom"][::-1]], 1)]
    )
    c.paint(c.poly(upper, 0.7), lip * 0.88)
    ys, xs, low = c.poly(lower, 0.7)
    shine = 1.0 + 0.12 * np.exp(-0.5 * ((c.U[ys, xs] / (mw * 0.4)) ** 2))
    c.paint((ys, xs, low), lip * shine[..., None])
    c.spec[ys, xs] = np.maximum(c.spec[ys, xs], 0.3 * low)
    c.shade(c.line(np.stack([x[2:-2], m["upper_bottom"][2:-2] + 0.002], 1), 0.007, 0.6), 0.45, 0.85)
    for sgn in (-1, 1):
        c.shade(c.weight(sgn * mw, float(m["line"][0]), 0.012, 0.01), 0.55, 0.8)  # corners
        fold = np.array(
            [
                [sgn * p.nose_width * 0.95, p.nose_length + 0.01],
                [sgn * (mw + 0.04), mv - 0.01],
                [sgn * (mw + 0.05), mv + 0.06],
            ]
        )
        t = np.linspace(0, 1, 12)[:, None]
        curve = (1 - t) ** 2 * fold[0] + 2 * t * (1 - t) * fold[1] + t**2 * fold[2]
        c.shade(c.line(curve, 0.012, 2.0), 0.82, 0.25 + 0.45 * smile)


def _ellipse(cu: float, cv: float, au: float, av: float, angle_deg: float) -> NDArray[Any]:
    t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    a = math.radians(angle_deg)
    x, y = au * np.cos(t), av * np.sin(t)
    return np.stack([cu + x * math.cos(a) - y * math.sin(a), cv + x * math.sin(a) + y * math.cos(a)], 1)


def _arc(cu: float, cv: float, au: float, av: float, a0: float, a1: float) -> NDArray[Any]:
    t = np.radians(np.linspace(a0, a1, 16))
    return np.stack([cu + au * np.cos(t), cv + av * np.sin(t)], 1)


@dataclass(frozen=True)
class _Style:
    top: float  # volume over the crown
    side: float  # volume over the temples
    end: float  # v where the hair on the head's sides ends (the back layer carries on below)
    curl: float
    back: float | None  # v where the hair hanging behind the head ends; None: nothing hangs


_STYLE = {
    "short": _Style(0.12, 0.06, -0.05, 0.0, None),
    "long": _Style(0.12, 0.1, 0.15, 0.0, 2.4),
    "bob": _Style(0.13, 0.11, 0.15, 0.0, 0.95),
    "bun": _Style(0.05, 0.035, -0.05, 0.0, None),
    "buzz": _Style(0.012, 0.012, -0.05, 0.0, None),
    "curly": _Style(0.22, 0.16, 0.2, 1.0, 0.55),
}


def _hairline(p: PersonParams, u: NDArray[Any]) -> NDArray[Any]:
    """v of the hairline across the forehead, dropping to sideburns at the head's sides."""
    w = p.face_width
    line: NDArray[Any] = p.hairline + 0.22 * u**2
    line = line + (0.05 - line) * _smoothstep(0.8 * w, 0.97 * w, np.abs(u))
    if p.fringe:
        line = np.maximum(line, -0.36 + 0.12 * u**2)
    return line


def _hair(c: _Canon, p: PersonParams, rng: np.random.Generator) -> None:
    st = _STYLE[p.hair_style]
    top, side, end, curl = st.top, st.side, st.end, st.curl
    w = p.face_width
    half_w = w + side
    reach = half_w * 1.06 + 0.05
    ys, xs = c.window(-reach, _V0, reach, end + 0.1)
    u, v, r_head = c.U[ys, xs], c.V[ys, xs], c.r[ys, xs]
    # outer shell: an ellipse over the crown, straight sides down to ``end``, fading out there
    over = np.where(v < 0, np.sqrt(np.clip(1 - (v / (1 + top)) ** 2, 0, 1)) * half_w, half_w)
    bottom = 1 - _smoothstep(end - 0.1, end + 0.05, v)
    if curl:
        ang = np.arctan2(v, u)
        over = over * (1 + 0.035 * np.sin(ang * 19 + p.seed) + 0.02 * np.sin(ang * 31))
    shell = np.clip((over - np.abs(u)) * c.s / 1.2 + 0.5, 0, 1) * bottom
    shell *= np.clip((v - (-(1 + top) * 1.02)) * c.s, 0, 1)
    skin = ((r_head < 1) & (v > _hairline(p, u))).astype(np.float32)
    face_skin = cv2.GaussianBlur(skin, (0, 0), max(0.8, 0.006 * c.s))
    cover = shell * (1 - face_skin)
    if p.hair_style == "buzz":
        cover = np.where(r_head < 1, cover, 0.0)
    z = c.z[ys, xs]
    if p.hair_style == "bun":
        d2 = u**2 + (v + 1.1) ** 2
        bun = np.clip((0.23 - np.sqrt(d2)) * c.s / 1.2 + 0.5, 0, 1)
        cover = np.maximum(cover, bun)
        z[:] = np.maximum(z, np.where(bun > 0, 0.3 + 0.22 * np.sqrt(np.clip(1 - d2 / 0.053, 0, 1)), 0))
    rr = np.sqrt((u / half_w) ** 2 + (np.minimum(v, 0) / (1 + top)) ** 2)
    hair_z = (
        z + 0.006 if p.hair_style == "buzz" else (_DEPTH + top * 0.8) * _edge_profile(np.minimum(rr, 1.0))
    )
    z[:] = np.where(cover > 0.02, np.maximum(z, hair_z * np.clip(cover * 3, 0, 1)), z)
    # strands radiate from the crown near the parting; curls break them up
    ang = np.arctan2(u - p.part, v + 0.95)
    strands = np.interp(ang * (120 if not curl else 40), np.arange(-400, 400), rng.standard_normal(800))
    grain = 0.78 + 0.2 * np.clip(strands, -1.5, 1.5) + 0.08 * _noise(rng, (u.shape[0], u.shape[1]), 0.8)
    if curl:
        grain = grain + 0.12 * _noise(rng, (u.shape[0], u.shape[1]), c.s * 0.015)
    # hair beside the face lies in its shadow: this also gives the jawline its contrast
    beside = np.clip(1 - (r_head - 1) * w / 0.09, 0, 1) * (r_head > 1) * (v > -0.2)
    grain = (grain * (1 - 0.55 * beside)).astype(np.float32)
    colour = _arr(p.hair_colour)[None, None] * grain[..., None]
    if p.hair_style == "buzz":
        colour = colour * 0.7 + _arr(p.skin) * 0.3
    cover = cover.astype(np.float32)
    m = cover[..., None]
    c.albedo[ys, xs] = c.albedo[ys, xs] * (1 - m) + colour * m
    c.alpha[ys, xs] = np.maximum(c.alpha[ys, xs], cover)
    c.spec[ys, xs] = c.spec[ys, xs] * (1 - cover) + 0.22 * cover


def _glasses(c: _Canon, p: PersonParams) -> None:
    for sgn in (-1, 1):
        rim = _ellipse(sgn * p.eye_spacing, 0.0, p.eye_width * 1.35, 0.085, 0)
        c.paint(c.line(np.vstack([rim, rim[:1]]), 0.014, 0.6), (0.05, 0.05, 0.05))
    c.paint(
        c.line(
            np.array(
                [[-p.eye_spacing + p.eye_width * 1.35, -0.01], [p.eye_spacing - p.eye_width * 1.35, -0.01]]
            ),
            0.012,
            0.6,
        ),
        (0.05, 0.05, 0.05),
    )


def _finish(c: _Canon) -> None:
    """Smooth the depth (no infinite slopes), derive normals, pack the maps for remap."""
    z = cv2.GaussianBlur(c.z, (0, 0), max(1.0, 0.006 * c.s))
    c.z = np.asarray(z, np.float32)
    # ambient occlusion: what lies below its surroundings (sockets, nose sides, under lip) gets less sky
    cavity = cv2.GaussianBlur(c.z, (0, 0), 0.05 * c.s) - c.z
    c.albedo *= np.clip(1.0 - 3.0 * cavity, 0.55, 1.0)[..., None]
    gy, gx = np.gradient(z)
    nx, ny = -gx * c.s, -gy * c.s
    norm = np.sqrt(nx * nx + ny * ny + 1.0)
    c.tex = np.dstack([np.clip(c.albedo, 0, 1), c.alpha]).astype(np.float32)
    c.nrm = np.dstack([nx / norm, ny / norm, 1.0 / norm, c.spec]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# views


def _rotation(yaw: float, pitch: float, roll: float) -> NDArray[Any]:
    """Canonical -> view (x right, y down, z towards the camera); positive yaw turns the nose to image right."""
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rotation: NDArray[Any] = r_roll @ r_pitch @ r_yaw
    return rotation


def _light(angle_deg: float, elevation_deg: float | None = None) -> NDArray[Any]:
    """Unit vector towards the light: ``angle_deg`` round from the camera towards image right, from above."""
    a, e = math.radians(angle_deg), math.radians(_ELEVATION if elevation_deg is None else elevation_deg)
    v = np.array([math.sin(a) * math.cos(e), -math.sin(e), math.cos(a) * math.cos(e)], np.float32)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class _Light:
    direction: NDArray[Any]  # unit vector towards the light, view space
    ambient: float
    gain: float  # key light on the person: darker skin gets more, as a photographer would light it


def _luma(bgr: Vec3) -> float:
    return 0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]


def _exposure(p: PersonParams) -> float:
    return float(np.clip(0.45 / _luma(p.skin), 1.0, 1.6))


@dataclass(frozen=True)
class _View:
    cx: float  # pixel position of the head centre (the eye line's middle)
    cy: float
    unit: float  # pixels per head unit
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0


def _draw_head(img: NDArray[Any], c: _Canon, view: _View, light: _Light) -> None:
    h, w = img.shape[:2]
    # the canonical extent, grown by what a turn can shift, rotated by the roll: the pixels to solve
    corners = np.array(
        [
            [_U0 - 0.35, _V0 - 0.35],
            [_U1 + 0.35, _V0 - 0.35],
            [_U1 + 0.35, _V1 + 0.35],
            [_U0 - 0.35, _V1 + 0.35],
        ]
    )
    a = math.radians(view.roll)
    spun = corners @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * view.unit
    x0, x1 = max(0, int(view.cx + spun[:, 0].min())), min(w, int(view.cx + spun[:, 0].max()) + 1)
    y0, y1 = max(0, int(view.cy + spun[:, 1].min())), min(h, int(view.cy + spun[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    assert c.tex is not None and c.nrm is not None
    # solve coarse (1/4 size, many steps), then refine at full size (two steps): same result, ~1/5 the work
    step = 4
    cw, ch = -(-(x1 - x0) // step), -(-(y1 - y0) // step)
    u, v = _solve_surface(c, view, x0 + step / 2, y0 + step / 2, step, cw, ch, None, 9)
    # only where the coarse pass found the head (plus a margin) gets the full-size work
    mx, my = c.px(u, v)
    seen = cv2.remap(c.alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    if rows.size == 0:
        return
    r0, r1 = max(0, int(rows[0]) - 1), min(ch, int(rows[-1]) + 2)
    k0, k1 = max(0, int(cols[0]) - 1), min(cw, int(cols[-1]) + 2)
    u = cv2.resize(u, (cw * step, ch * step), interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(v, (cw * step, ch * step), interpolation=cv2.INTER_LINEAR)
    ny0, ny1 = y0 + r0 * step, min(y1, y0 + r1 * step)
    nx0, nx1 = x0 + k0 * step, min(x1, x0 + k1 * step)
    u = u[ny0 - y0 : ny1 - y0, nx0 - x0 : nx1 - x0]
    v = v[ny0 - y0 : ny1 - y0, nx0 - x0 : nx1 - x0]
    x0, x1, y0, y1 = nx0, nx1, ny0, ny1
    u, v = _solve_surface(c, view, x0 + 0.5, y0 + 0.5, 1, x1 - x0, y1 - y0, (u, v), 3)
    mx, my = c.px(u, v)
    tex = cv2.remap(c.tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    nrm = cv2.remap(c.nrm, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 1, 0))
    # n_view . L == n_canonical . (R^T L): light the canonical normals, never rotate them
    rot = _rotation(view.yaw, view.pitch, view.roll)
    half = light.direction + _arr([0, 0, 1])
    half /= np.linalg.norm(half)
    dots = cv2.transform(nrm, np.array([[*(rot.T @ light.direction), 0], [*(rot.T @ half), 0]], np.float32))
    lambert = np.clip(
        (dots[..., 0] + _WRAP) * (1 / (1 + _WRAP)), 0, 1
    )  # wrapped: skin scatters past the terminator
    g = np.clip(dots[..., 1], 0, 1)
    g2 = g * g
    g8 = (g2 * g2) ** 2
    gloss = g8 * g8 * g8 * nrm[..., 3]  # g**24, by squaring
    lit = (light.ambient + (1.1 - light.ambient) * lambert) * light.gain
    colour = tex[..., :3] * lit[..., None] + (0.55 * gloss)[..., None]
    _over(img[y0:y1, x0:x1], colour, tex[..., 3])


def _solve_surface(
    c: _Canon,
    view: _View,
    fx0: float,
    fy0: float,
    step: int,
    cw: int,
    ch: int,
    start: tuple[NDArray[Any], NDArray[Any]] | None,
    iterations: int,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Canonical (u, v) of the surface point seen at each pixel of a grid: a damped fixed-point
    iteration on the height field (roll undone first; then x = u cos(yaw) + z sin(yaw), and pitch)."""
    gx = ((fx0 + step * np.arange(cw) - view.cx) / view.unit).astype(np.float32)
    gy = ((fy0 + step * np.arange(ch) - view.cy) / view.unit).astype(np.float32)
    sx, sy = np.meshgrid(gx, gy)
    cr, sr = math.cos(math.radians(view.roll)), math.sin(math.radians(view.roll))
    x, y = sx * cr + sy * sr, -sx * sr + sy * cr
    cyw, syw = math.cos(math.radians(view.yaw)), math.sin(math.radians(view.yaw))
    cp, sp = math.cos(math.radians(view.pitch)), math.sin(math.radians(view.pitch))
    u, v = start if start is not None else (x.copy(), y.copy())
    for _ in range(iterations):
        mx, my = c.px(u, v)
        z = cv2.remap(c.z, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        nu = (x - z * syw) * (1 / cyw)
        nv = (y + (z * cyw - nu * syw) * sp) * (1 / cp)
        u, v = 0.4 * u + 0.6 * nu, 0.4 * v + 0.6 * nv
    return u.astype(np.float32), v.astype(np.float32)


def _draw_body(img: NDArray[Any], p: PersonParams, view: _View, light: _Light) -> None:
    """Back hair, neck and shoulders: flat layers behind the head that follow its position, not its turn."""
    h, w = img.shape[:2]
    cx, cy, k = view.cx, view.cy, view.unit
    st = _STYLE[p.hair_style]
    hair = _arr(p.hair_colour) * light.gain
    if p.hair_style == "buzz":
        hair = hair * 0.7 + _arr(p.skin) * 0.3
    back = np.zeros((h, w), np.uint8)
    shift = -0.35 * math.sin(math.radians(view.yaw)) * k  # the back of the skull, seen past the turn
    axes = (int((p.face_width + st.side) * 0.98 * k), int((1 + st.top) * 0.98 * k))
    cv2.ellipse(back, (int(cx + shift), int(cy - 0.02 * k)), axes, view.roll, 0, 360, 255, -1, cv2.LINE_AA)
    _layer(img, back, hair * 0.55)
    if st.back is not None:
        _hanging_hair(img, p, view, st, hair)
    # neck: a vertical cylinder, shadowed under the jaw
    nw = p.face_width * 0.72 * k
    x0, x1 = max(0, int(cx - nw)), min(w, int(cx + nw) + 1)
    y0, y1 = max(0, int(cy + 0.45 * k)), min(h, int(cy + 2.6 * k))
    if x1 > x0 and y1 > y0:
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        across = np.clip((xs + 0.5 - cx) / nw, -1, 1)
        lam = np.clip(across * light.direction[0] + np.sqrt(1 - across**2) * light.direction[2], 0, 1)
        jaw = cy + p.chin * k
        shadow = 0.5 + 0.5 * _smoothstep(jaw - 0.05 * k, jaw + 0.35 * k, ys)
        shade = (light.ambient + (1.0 - light.ambient) * lam) * shadow * light.gain
        mask = np.clip((1 - np.abs(across)) * nw / 1.5, 0, 1)
        _over(img[y0:y1, x0:x1], _arr(p.skin)[None, None] * shade[..., None] * 0.95, mask)
    # shoulders in clothing with a round neckline, darker towards the arms
    body = np.zeros((h, w), np.uint8)
    cv2.ellipse(
        body, (int(cx), int(cy + 2.35 * k)), (int(2.0 * k), int(0.93 * k)), 0, 0, 360, 255, -1, cv2.LINE_AA
    )
    torso = np.array(
        [
            [cx - 2.0 * k, cy + 2.35 * k],
            [cx + 2.0 * k, cy + 2.35 * k],
            [cx + 2.1 * k, h + 4],
            [cx - 2.1 * k, h + 4],
        ]
    )
    cv2.fillPoly(
        body, [np.round(torso * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4
    )  # down to the frame's edge
    cv2.ellipse(
        body, (int(cx), int(cy + 1.42 * k)), (int(0.48 * k), int(0.22 * k)), 0, 0, 360, 0, -1, cv2.LINE_AA
    )
    fold = 0.75 + 0.25 * np.clip(1 - np.abs(np.arange(w, dtype=np.float32) - cx) / (1.9 * k), 0, 1)
    _layer(img, body, _arr(p.clothing)[None, None] * fold[None, :, None] * light.gain)


def _hanging_hair(img: NDArray[Any], p: PersonParams, view: _View, st: _Style, hair: NDArray[Any]) -> None:
    """Hair falling behind the head and neck: a flat layer with strands, in the head's shadow near it."""
    assert st.back is not None
    h, w = img.shape[:2]
    k = view.unit
    half = (p.face_width + st.side) * k
    x0, x1 = max(0, int(view.cx - half * 1.3)), min(w, int(view.cx + half * 1.3) + 1)
    y0, y1 = max(0, int(view.cy - 0.3 * k)), min(h, int(view.cy + st.back * k) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = (xs - view.cx) / k, (ys - view.cy) / k
    spread = (p.face_width + st.side) * (1 + 0.12 * np.clip(v, 0, None))  # falls slightly outwards
    tip = st.back - 0.25 * (np.abs(u) / spread) ** 2  # the ends curve up towards the sides
    cover = np.clip((spread - np.abs(u)) * k / 1.5, 0, 1) * np.clip((tip - v) * k / 1.5, 0, 1)
    rng = np.random.default_rng(np.random.SeedSequence([p.seed & 0xFFFFFFFF, 0x4A1]))
    strands = np.interp(u * 140, np.arange(-300, 300), rng.standard_normal(600))
    shade = (0.5 + 0.25 * np.cos(np.clip(u / spread, -1, 1) * np.pi / 2)) * (
        0.85 + 0.12 * np.clip(strands, -1.5, 1.5)
    )
    _over(img[y0:y1, x0:x1], hair * shade[..., None], cover)


def _layer(img: NDArray[Any], mask: NDArray[Any], colour: Any) -> None:
    """Blend ``colour`` (a colour, or an array broadcasting to the image) where ``mask`` (uint8) is set."""
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return
    m = mask[y : y + bh, x : x + bw].astype(np.float32) * (1 / 255.0)
    col = np.asarray(colour, np.float32)
    if col.ndim == 3:  # per-pixel: cut the same window (broadcast axes stay whole)
        rows = slice(y, y + bh) if col.shape[0] > 1 else slice(None)
        cols = slice(x, x + bw) if col.shape[1] > 1 else slice(None)
        col = col[rows, cols]
    _over(img[y : y + bh, x : x + bw], col, m)


def _over(region: NDArray[Any], colour: Any, alpha: NDArray[Any]) -> None:
    """``region`` (a float32 view) = colour over region with coverage ``alpha``, in OpenCV's C loop."""
    top = np.empty_like(region)
    top[:] = colour
    region[:] = cv2.blendLinear(
        region, np.clip(top, 0, 1), np.ascontiguousarray(1 - alpha), np.ascontiguousarray(alpha)
    )


def _backdrop(w: int, h: int, colour: Vec3, seed: int) -> NDArray[Any]:
    """A plain studio backdrop: a soft radial falloff and a little grain (no banding)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt(((xs - 0.5 * w) / w) ** 2 + ((ys - 0.35 * h) / h) ** 2)
    base = _arr(colour)[None, None] * (1.08 - 0.55 * d)[..., None]
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0xBAC]))
    backdrop: NDArray[Any] = np.clip(base + rng.normal(0, 0.006, (h, w, 1)).astype(np.float32), 0, 1)
    return backdrop


def _size(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _canon_n(unit: float) -> int:
    """Canonical grid for a head of ``unit`` pixels per head unit: about one texel per pixel."""
    return max(96, int(math.ceil((_U1 - _U0) * unit / 32.0)) * 32)


def render_face(
    params: PersonParams,
    *,
    size: Size = 512,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
    center: tuple[float, float] = (0.5, 0.5),
    expression: str = "neutral",
    background: NDArray[Any] | None = None,
    lighting_angle: float = 20.0,
) -> NDArray[Any]:
    """A shaded head and shoulders as (H, W, 3) uint8 BGR. ``size`` is (width, height) or a side;
    ``scale`` 1 makes crown to chin half the short side; ``center`` places the eye line's middle
    (fractions of width, height); angles are in degrees."""
    w, h = _size(size)
    opening, smile = parse_expression(expression)
    view = _View(center[0] * w, center[1] * h, 0.25 * min(w, h) * scale, yaw, pitch, roll)
    canon = _build_canon(params, opening, smile, _canon_n(view.unit))
    return _compose(params, canon, view, _bg(params, w, h, background), lighting_angle)


def _bg(params: PersonParams, w: int, h: int, background: NDArray[Any] | None) -> NDArray[Any]:
    if background is None:
        return _backdrop(w, h, params.backdrop, params.seed)
    if background.shape[:2] != (h, w):
        background = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
    return background.astype(np.float32) / 255.0


def _compose(
    p: PersonParams,
    canon: _Canon,
    view: _View,
    bg: NDArray[Any],
    lighting_angle: float,
    ambient: float | None = None,
) -> NDArray[Any]:
    ambient = _AMBIENT if ambient is None else ambient
    img = bg.copy()
    light = _Light(_light(lighting_angle), ambient, _exposure(p))
    _draw_body(img, p, view, light)
    _draw_head(img, canon, view, light)
    return cv2.convertScaleAbs(img, alpha=255.0, beta=0.5)  # saturating, in C


def virtual_person(
    seed: int, *, size: int = 1024, expression: str = "neutral", yaw: float = 0.0
) -> NDArray[Any]:
    """A frontal, evenly lit portrait of person ``seed`` on a plain backdrop: a swap source. At 1024 px
    the detector's face box is well over 512 px on its long side."""
    p = PersonParams.from_seed(seed)
    opening, smile = parse_expression(expression)
    view = _View(0.5 * size, 0.5 * size, 0.41 * size, yaw, 0.0, 0.0)
    canon = _build_canon(p, opening, smile, _canon_n(view.unit))
    return _compose(p, canon, view, _bg(p, size, size, None), lighting_angle=8.0, ambient=0.4)
