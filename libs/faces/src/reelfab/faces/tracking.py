"""Following the performer's face through a clip with any ``FaceEngine``, and swapping a stream of frames.

Detection is the expensive step, so it runs every ``detect_every`` frames; while a face is followed it
runs on a crop around where the face should be, turned upright by the face's roll (the HOG detector
misses faces rolled past ~15 degrees) and scaled so the face is about 100 px. In between, the engine
re-fits the landmarks from the previous frame's (``refine``), also on an upright crop.

**Whose face.** A detection joins the track only when it is consistent with it: near where the face
should be, of a plausible size, and (at acquisition, after a loss, when the overlap is weak, and every
``verify_every`` detections) identified as the performer by its embedding (``identity.Performer``:
within the engine's identity threshold and nearer the performer than any other face the clip shows).
A face-like thing elsewhere (a drawing on a shirt, a poster, a second person) starts no swap: it is
refused, and the frame's status says so. Without a ``Performer`` from ``profile_performer`` the tracker
learns the performer from its first lock.

**Partial occlusion.** When something covers the lower face, the landmark fit there goes wrong while
the eyes, brows and nose stay right: a re-fit whose upper face still matches the previous shape is
kept, its other points carried from the previous shape by the upper face's motion. The occlusion model
(``occlusion``) then marks what covers the face, and the engines keep it in front of the swap.

**Blurred faces**: a face region less than ``BLURRED`` as sharp as the face usually is (a fast move) is
left untouched: no landmark fit on it is right, and a swap held where the face was would land beside
it. **Lost faces** (covered, out of frame): the last good face is held for
``hold_frames`` frames, moving on with its recent motion and fading out over the last ``fade_frames``
of them, then the frame is left untouched (status ``lost``); the detector runs on every frame until the
performer is found again. Nothing is re-detected onto something else.

Landmarks are smoothed with a One-Euro filter (steady when the face is still, little lag when it
moves), so the swap does not jitter. ``colour=True`` smooths the swap's colour transfer with another
(``colour.TransferFilter``, applied by the engine frame by frame in order); it is off by default: on
the hard clips per-frame matching flickered less and followed light swings better."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces import colour as colours
from reelfab.faces.identity import Performer
from reelfab.faces.occlusion import OcclusionModel
from reelfab.faces.report import FrameStatus, SwapReport
from reelfab.faces.types import Face, FaceEngine, Occlusion, SourceFace, kps5_from_68

MAX_JUMP = 0.5  # a face's centre moves at most this share of its size from one frame to the next
MAX_GROWTH = 1.5  # ... and its size changes at most by this factor
MIN_INSIDE = 0.5  # a face with less than this share of its box inside the frame is lost
SAME_FACE_IOU = 0.3  # a detection overlapping the tracked face this much is the tracked face
KEEP_SHARE = 0.5  # ... and is kept while its score is at least this share of the best detection's
DETECT_FACE_PX = 100  # a followed face is looked for at the scale that makes it this large (HOG: >= 80)
MIN_DETECT_SCALE = 0.25
CHIP = 24  # side of the grey patch compared between frames (aligned on the eyes and mouth)
UPPER_ROWS = 14  # the chip's rows down to the nose: what a hand over the mouth leaves to compare


@dataclass(frozen=True)
class Smoothing:
    """One-Euro filter settings. Cutoffs in Hz; ``beta`` in Hz per (face size per second), so one
    setting works at any resolution. Lower ``min_cutoff``: steadier still faces; higher ``beta``: less
    lag on moving ones."""

    min_cutoff: float = 1.5
    beta: float = 8.0
    d_cutoff: float = 1.0


SMOOTHING = Smoothing()


UPRIGHT_ROLL = 8.0  # degrees: a face rolled more than this is refined and looked for on an upright crop
UPPER = np.r_[17:31, 36:48]  # brows, nose bridge and eyes: what a hand over the mouth leaves in place
MAX_UPPER_ERROR = 0.08  # upper-face shape vs the previous one, after a similarity fit, in face scales
NEAR_SIDE = 3.0  # a followed face is looked for in a square this many face sizes across
LOWER = np.r_[0:17, 31:36, 48:68]  # jaw, nostrils and mouth
LOWER_DRIFT = 0.15  # ... moving this far (face scales, RMS) from where the upper face takes them: not kept
CHANGED_LOOK = 0.8  # a face whose look correlates less than this with the frame before is identified again
REVERIFY_GAP = 5  # ... at most once every this many frames
BLURRED = 0.3  # a face region this much less sharp than the face usually is, is blurred beyond use
ROLL_SEARCH = 20.0  # degrees: a lost face is also looked for in the frame turned by this much each way
REFUSED_FOR = 12  # frames a refused face (in the same place) is refused without a new embedding
HOLD_APPEARANCE = 0.35  # a lost face is held while its upper part correlates this well with its last look


class FaceTracker:
    """Feed frames in order to ``track``; it returns the face to swap in each (``None``: leave the
    frame as it is) and sets ``status`` (and ``refused``: faces refused in that frame).

    ``max_unseen``: frames a face is followed without the detector seeing it before its identity is
    checked again; ``min_appearance``: the correlation under which the face region no longer looks like
    the previous frame's; ``performer``: whose face to follow (see ``identity``); ``verify_every``:
    detections between identity checks of a followed face; ``hold_frames``/``fade_frames``: the lost-face
    policy; ``occlusion``/``colour``: measure what covers the face, smooth the colour transfer."""

    def __init__(
        self,
        engine: FaceEngine,
        *,
        detect_every: int = 5,
        detect_scale: float = 0.75,
        smoothing: Smoothing | None = SMOOTHING,
        fps: float = 25.0,
        min_score: float = 0.0,
        max_unseen: int = 25,
        min_appearance: float = 0.5,
        performer: Performer | None = None,
        verify_every: int = 10,
        hold_frames: int = 8,
        fade_frames: int = 4,
        occlusion: bool = True,
        colour: bool = False,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {detect_every}")
        if not 0 <= fade_frames <= hold_frames:
            raise ValueError(f"fade_frames ({fade_frames}) must be within 0..hold_frames ({hold_frames})")
        self.engine = engine
        self.detect_every = detect_every
        self.detect_scale = detect_scale
        self.min_score = min_score
        self.max_unseen = max_unseen
        self.min_appearance = min_appearance
        self.performer = performer
        self.verify_every = verify_every
        self.hold_frames = hold_frames
        self.fade_frames = fade_frames
        self.status = FrameStatus.LOST
        self.refused = 0
        self._filter = _OneEuro(smoothing, fps) if smoothing else None
        self._occlusion = OcclusionModel() if occlusion else None
        self._fps = fps
        self._colour = colours.TransferFilter(fps) if colour else None
        self._face: Face | None = None  # the last measured (unsmoothed) face, while following
        self._chip: NDArray[Any] | None = None  # its appearance
        self._since_detect = 0
        self._since_seen = 0  # frames since the detector last found the face
        self._detections = 0  # detections of the followed face since its identity was last checked
        self._last: Face | None = None  # the last face returned (smoothed, with its additions)
        self._velocity = np.zeros(2, np.float32)  # of the returned face's centre, px per frame
        self._held = 0  # frames held since the face was lost
        self._last_chip: NDArray[Any] | None = None  # the appearance of the last face found
        self._frame = 0
        self._full_search = -detect_every  # frame of the last full-size search
        self._refused: list[tuple[tuple[float, float, float, float], int]] = []  # (box, until frame)
        self._sharpness: float | None = None  # the followed face's usual sharpness (see _sharpness)
        self._verified_at = -REVERIFY_GAP  # frame of the last identity check

    # ------------------------------------------------------------------ per frame

    def track(self, frame: NDArray[Any]) -> Face | None:
        self.refused = 0
        self._frame += 1
        self._since_detect += 1
        self._since_seen += 1
        face: Face | None = None
        where = self._face or self._last
        if where is not None and self._sharpness is not None:
            sharpness = _sharpness(frame, where)
            if sharpness < BLURRED * self._sharpness:  # blurred beyond use: no landmark fit is right
                self._reset()
                self.status = FrameStatus.LOST
                return None
        if self._face is not None:
            if self._since_detect >= self.detect_every:
                face = self._detect_near(frame, self._face)
                if face is None:  # the detector misses turned heads: keep following
                    face = self._follow(frame, confirm=self._since_seen > self.max_unseen)
            else:
                face = self._follow(frame)
                if face is None:  # lost between detections: look again now
                    face = self._detect_near(frame, self._face)
        if face is None:
            if self._face is not None:
                self._lose()
            held = self._holdable(frame)
            face = self._acquire(frame, near=held[0] if held else None)
            if face is None:
                if held is None:
                    self._reset()
                    self.status = FrameStatus.REJECTED if self.refused else FrameStatus.LOST
                    return None
                return self._hold(*held)
        return self._emit(frame, face)

    def _emit(self, frame: NDArray[Any], face: Face) -> Face:
        previous = self._face
        self._face = face
        self._held = 0
        self._last_chip = self._chip
        occlusion = self._occlusion.measure(frame, face) if self._occlusion else None
        if occlusion is not None and previous is not None:
            face = _carry_covered(previous, face, occlusion)
        out = self._filter(face) if self._filter else face
        out = replace(out, occlusion=occlusion)
        if self._colour is not None:
            out = replace(out, colour=self._colour)
        sharpness = _sharpness(frame, face)
        self._sharpness = sharpness if self._sharpness is None else self._sharpness + 0.1 * (sharpness - self._sharpness)
        if self._last is not None:
            self._velocity = 0.5 * self._velocity + 0.5 * (_centre(out) - _centre(self._last))
        self._last = out
        self.status = FrameStatus.SWAPPED
        return out

    def _holdable(self, frame: NDArray[Any]) -> tuple[Face, Occlusion | None] | None:
        """The lost-face policy: the last face, moving on and slowing down, is held while the face is
        still there (blurred, turned: its upper part still looks as it did) or is being covered by
        what was already coming over it; a face that is simply gone (a cut, out of frame) is not."""
        last = self._last
        if last is None or self._held >= self.hold_frames:
            return None
        moved = _shifted(last, self._velocity * 0.7)
        occlusion = self._occlusion.measure(frame, moved, learn=False) if self._occlusion else None
        seen = self._last_chip is not None and _correlation(
            self._last_chip[:UPPER_ROWS], _chip(frame, moved)[:UPPER_ROWS]) >= HOLD_APPEARANCE
        covering = occlusion is not None and (last.occlusion is not None or self._held > 0)
        return (moved, occlusion) if seen or covering else None

    def _hold(self, moved: Face, occlusion: Occlusion | None) -> Face:
        self._held += 1
        self._velocity *= 0.7
        left = self.hold_frames - self._held  # frames still to hold after this one
        opacity = 1.0 if left >= self.fade_frames else (left + 1) / (self.fade_frames + 1)
        self._last = replace(moved, occlusion=occlusion)
        self.status = FrameStatus.HELD
        return replace(moved, opacity=opacity, occlusion=occlusion)

    def _lose(self) -> None:
        """The followed face is gone: the next faces are judged as a new acquisition."""
        self._face = self._chip = None
        if self._filter:
            self._filter.reset()

    def _reset(self) -> None:
        self._lose()
        self._last = self._last_chip = None
        self._sharpness = None
        self._held = 0
        self._velocity[:] = 0
        if self._occlusion:
            self._occlusion.reset()
        if self._colour:  # a new filter, not a reset one: frames of the batch before still use the old
            self._colour = colours.TransferFilter(self._fps)

    # ------------------------------------------------------------------ finding the face

    def _acquire(self, frame: NDArray[Any], *, near: Face | None = None) -> Face | None:
        """A face found anywhere in the frame, accepted only as the performer (and, while a lost face
        is held at ``near``, only near it: what appears elsewhere then is not the covered performer).
        When the reduced frame gives nothing acceptable, the full frame is searched too (a weakly
        detected face), at most every ``detect_every`` frames."""
        self._since_detect = 0
        found = self._acquire_at(frame, self.detect_scale, 0.0, near)
        if found is None and self._frame - self._full_search >= self.detect_every:
            self._full_search = self._frame
            for scale, roll in ((1.0, 0.0), (self.detect_scale, ROLL_SEARCH), (self.detect_scale, -ROLL_SEARCH)):
                if (scale, roll) != (self.detect_scale, 0.0):
                    found = self._acquire_at(frame, scale, roll, near)
                if found is not None:
                    break
        return found

    def _acquire_at(self, frame: NDArray[Any], scale: float, roll: float, held: Face | None) -> Face | None:
        """``_acquire`` on the frame at ``scale``, turned by ``roll`` degrees (a rolled head)."""
        h, w = frame.shape[:2]
        if roll:
            centre = np.array([w / 2, h / 2], np.float32)
            small, matrix = _upright(frame, centre, roll, float(max(w, h)), scale, always=True)
            inverse = cv2.invertAffineTransform(matrix)
            found = [_moved(f, inverse) for f in self.engine.detect(small)]
        else:
            small = frame if scale == 1 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            found = [f.scaled(1 / scale) for f in self.engine.detect(small)]
        faces = sorted(found, key=lambda f: -f.score)
        self._refused = [(box, until) for box, until in self._refused if until > self._frame]
        for face in faces:
            if held is not None and not _near(held, face, 1 + self._held):
                self.refused += 1
                continue
            # a face refused a moment ago, still there: refused again without another embedding
            if (i := _overlapping(self._refused, face.box)) is not None:
                self._refused[i] = (face.box, self._refused[i][1])
                self.refused += 1
                continue
            full = self._full_resolution(frame, face) if scale != 1 or roll else face
            if not self._is_performer(frame, full):
                self._refused.append((face.box, self._frame + REFUSED_FOR))
                self.refused += 1
                continue
            if held is not None and _iou(held.box, full.box) < SAME_FACE_IOU and self._filter:
                self._filter.reset()  # found elsewhere: do not smooth from where it was
            self._chip = _chip(frame, full)
            self._since_seen = 0
            self._detections = 0
            return full
        return None

    def _detect_near(self, frame: NDArray[Any], previous: Face) -> Face | None:
        """The followed face, detected on an upright crop around it; a detection is taken only where
        the face can have moved, and its identity is checked when the overlap is weak or its turn has come."""
        self._since_detect = 0
        size = max(previous.size, 1.0)
        scale = min(1.0, max(DETECT_FACE_PX / size, MIN_DETECT_SCALE))
        crop, matrix = _upright(frame, _centre(previous), _roll(previous), NEAR_SIDE * size, scale)
        inverse = cv2.invertAffineTransform(matrix)
        found = [_moved(f, inverse) for f in self.engine.detect(crop)]
        near = [f for f in found if _near(previous, f, 1)]
        self.refused += len(found) - len(near)
        if not near:
            return None
        chosen = max(near, key=lambda f: (_iou(f.box, previous.box), f.score))
        full = self._full_resolution(frame, chosen)
        self._detections += 1
        if self._detections >= self.verify_every or _iou(full.box, previous.box) < 0.5:
            if not self._is_performer(frame, full):
                self.refused += 1
                return None
            self._detections = 0
        if not _plausible_move(previous, full, frame.shape[1], frame.shape[0]):
            return None
        self._chip = _chip(frame, full)
        self._since_seen = 0
        return full

    def _follow(self, frame: NDArray[Any], *, confirm: bool = False) -> Face | None:
        """The landmarks re-fitted from the previous frame's; a fit whose lower face went wrong (something
        covers it) is kept when its upper face still matches. ``confirm``: the detector has not seen the
        face for a while, so its identity is checked."""
        previous = self._face
        assert previous is not None
        face = self._refine(frame, previous)
        moved = _plausible_move(previous, face, frame.shape[1], frame.shape[0])
        chip = _chip(frame, face)
        if not (face.score > self.min_score and moved and self._looks_alike(chip)):
            partial = _upper_only(previous, face) if moved else None
            if partial is None or not self._looks_alike(_chip(frame, partial), upper=True):
                return None
            face, chip = partial, _chip(frame, partial)
        elif (carried := _upper_only(previous, face)) is not None and _lower_drift(face, carried) > LOWER_DRIFT:
            face = carried  # the lower face jumped away from where the upper face says it is: a hand
        # a face that suddenly looks different (a cut to someone else in the same place) is identified
        # again, at most every few frames (an embedding costs ~0.1 s on the classical backend)
        changed = self._chip is not None and _correlation(self._chip, chip) < CHANGED_LOOK
        if changed and self._frame - self._verified_at >= REVERIFY_GAP:
            confirm = True
        if confirm:
            if not self._is_performer(frame, face):
                return None
            self._since_seen = 0
        self._chip = chip
        return face

    def _looks_alike(self, chip: NDArray[Any], *, upper: bool = False) -> bool:
        if self._chip is None:
            return False
        rows = slice(0, UPPER_ROWS) if upper else slice(None)
        return _correlation(self._chip[rows], chip[rows]) >= self.min_appearance

    def _is_performer(self, frame: NDArray[Any], face: Face) -> bool:
        self._verified_at = self._frame
        embedding = self.engine.embed(frame, face)
        if self.performer is None:  # no profile: the first face locked on is the performer
            self.performer = Performer((embedding,), gate=self.engine.identity_threshold("photo"))
            return True
        verdict = self.performer.judge(embedding)
        return verdict.accepted

    def _refine(self, frame: NDArray[Any], face: Face) -> Face:
        """``engine.refine``, on a crop turned upright when the face is rolled (the landmark fit starts
        from an upright mean shape)."""
        roll = _roll(face)
        if abs(roll) <= UPRIGHT_ROLL:
            return self.engine.refine(frame, face)
        crop, matrix = _upright(frame, _centre(face), roll, NEAR_SIDE * face.size, 1.0)
        refined = self.engine.refine(crop, _moved(face, matrix))
        return _moved(refined, cv2.invertAffineTransform(matrix))

    def _full_resolution(self, frame: NDArray[Any], face: Face) -> Face:
        """Landmarks fitted at full resolution; the detector's box and score kept."""
        refined = self._refine(frame, face)
        return replace(refined, box=face.box, score=face.score) if refined.score > self.min_score else face


def swap_stream(
    engine: FaceEngine,
    source: SourceFace,
    frames: Iterable[NDArray[Any]],
    *,
    detect_every: int = 5,
    batch_size: int = 8,
    detect_scale: float = 0.75,
    smoothing: Smoothing | None = SMOOTHING,
    fps: float = 25.0,
    performer: Performer | None = None,
    report: SwapReport | None = None,
) -> Iterator[tuple[NDArray[Any], Face | None]]:
    """Track the performer's face through ``frames`` and swap ``source`` onto it, ``batch_size`` frames
    at a time; yields each swapped frame, in order, with the face used (``None``: the frame unchanged).
    At most one batch of frames is held at a time. ``report`` counts what happened to each frame."""
    tracker = FaceTracker(
        engine, detect_every=detect_every, detect_scale=detect_scale, smoothing=smoothing, fps=fps,
        performer=performer,
    )  # fmt: skip
    batch: list[NDArray[Any]] = []
    faces: list[Face | None] = []
    for frame in frames:
        batch.append(frame)
        faces.append(tracker.track(frame))
        if report is not None:
            report.record(tracker.status, refused=tracker.refused, occluded=faces[-1] is not None and faces[-1].occlusion is not None)
        if len(batch) == batch_size:
            yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)
            batch, faces = [], []
    if batch:
        yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)


# ---------------------------------------------------------------------- geometry


def _centre(face: Face) -> NDArray[Any]:
    return np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2], np.float32)


def _roll(face: Face) -> float:
    """The face's roll in degrees, from its eyes (positive: the image-right eye lower)."""
    dx, dy = (face.kps5[1] - face.kps5[0]).astype(np.float64)
    return math.degrees(math.atan2(dy, dx)) if abs(dx) + abs(dy) > 1e-6 else 0.0


def _upright(
    frame: NDArray[Any], centre: NDArray[Any], roll: float, side: float, scale: float, *, always: bool = False
) -> tuple[NDArray[Any], NDArray[Any]]:
    """A square crop ``side`` px across (before ``scale``) about ``centre``, turned by -``roll`` so the
    face is upright (small rolls are left alone unless ``always``); with the (2, 3) matrix taking frame
    points into it."""
    out = max(int(round(side * scale)), 16)
    angle = roll if always or abs(roll) > UPRIGHT_ROLL else 0.0
    matrix = np.asarray(cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale), np.float64)
    matrix[:, 2] += np.array([out / 2, out / 2], np.float64) - centre
    crop = cv2.warpAffine(frame, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def _moved(face: Face, matrix: NDArray[Any]) -> Face:
    """``face`` carried by the similarity ``matrix``: points transformed, the box kept square to the
    new axes with its size scaled."""
    factor = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    centre = cv2.transform(_centre(face).reshape(1, 1, 2), matrix)[0, 0]
    half_w, half_h = face.width / 2 * factor, face.height / 2 * factor
    box = (float(centre[0] - half_w), float(centre[1] - half_h), float(centre[0] + half_w), float(centre[1] + half_h))

    def points(p: NDArray[Any] | None) -> NDArray[Any] | None:
        return None if p is None else cv2.transform(p.reshape(1, -1, 2).astype(np.float32), matrix)[0]

    kps5 = points(face.kps5)
    assert kps5 is not None
    return replace(face, box=box, kps5=kps5, landmarks68=points(face.landmarks68))


def _shifted(face: Face, by: NDArray[Any]) -> Face:
    return _moved(face, np.array([[1, 0, by[0]], [0, 1, by[1]]], np.float32))


def _near(previous: Face, face: Face, frames: int) -> bool:
    """Whether ``face`` is where ``previous`` can be ``frames`` frames later, at a plausible size."""
    distance = float(np.linalg.norm(_centre(face) - _centre(previous)))
    growth = face.size / max(previous.size, 1e-6)
    reach = MAX_GROWTH ** min(frames, 3)
    return distance <= MAX_JUMP * previous.size * min(frames, 6) and 1 / reach <= growth <= reach


def _similarity(src: NDArray[Any], dst: NDArray[Any]) -> tuple[NDArray[Any] | None, float]:
    """The least-squares similarity taking ``src`` points to ``dst``, and its RMS error in face scales."""
    matrix, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        return None, math.inf
    fitted = cv2.transform(src.reshape(1, -1, 2).astype(np.float32), matrix)[0]
    scale = float(np.sqrt(((dst - dst.mean(axis=0)) ** 2).sum(axis=1).mean()))
    error = float(np.sqrt(((fitted - dst) ** 2).sum(axis=1).mean())) / max(scale, 1e-6)
    return matrix, error


def _upper_only(previous: Face, refit: Face) -> Face | None:
    """``refit`` kept for its upper face (brows, nose bridge, eyes) when that still matches
    ``previous``'s, the rest of the shape carried from ``previous`` by the upper face's motion."""
    if previous.landmarks68 is None or refit.landmarks68 is None:
        return None
    matrix, error = _similarity(previous.landmarks68[UPPER], refit.landmarks68[UPPER])
    if matrix is None or error > MAX_UPPER_ERROR:
        return None
    carried = _moved(previous, matrix)
    assert carried.landmarks68 is not None
    points = carried.landmarks68.copy()
    points[UPPER] = refit.landmarks68[UPPER]
    return replace(carried, score=previous.score * 0.98, kps5=kps5_from_68(points), landmarks68=points)


def _lower_drift(face: Face, carried: Face) -> float:
    """How far ``face``'s jaw, nostrils and mouth are from ``carried``'s, RMS in face scales."""
    assert face.landmarks68 is not None and carried.landmarks68 is not None
    points = face.landmarks68
    scale = float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))
    error = float(np.sqrt(((points[LOWER] - carried.landmarks68[LOWER]) ** 2).sum(axis=1).mean()))
    return error / max(scale, 1e-6)


def _carry_covered(previous: Face, face: Face, occlusion: Occlusion) -> Face:
    """``face`` with its landmarks under ``occlusion`` carried from ``previous`` by the motion of the
    uncovered ones (a landmark fit on a hand is a guess)."""
    if previous.landmarks68 is None or face.landmarks68 is None:
        return face
    points = face.landmarks68
    x = np.clip(np.round(points[:, 0]).astype(int) - occlusion.x0, 0, occlusion.mask.shape[1] - 1)
    y = np.clip(np.round(points[:, 1]).astype(int) - occlusion.y0, 0, occlusion.mask.shape[0] - 1)
    covered = occlusion.mask[y, x] > 0.5
    if not covered.any() or (~covered).sum() < 8:
        return face
    matrix, _ = _similarity(previous.landmarks68[~covered], points[~covered])
    if matrix is None:
        return face
    carried = cv2.transform(previous.landmarks68.reshape(1, -1, 2).astype(np.float32), matrix)[0]
    fixed = points.copy()
    fixed[covered] = carried[covered]
    return replace(face, kps5=kps5_from_68(fixed), landmarks68=fixed)


class _OneEuro:
    """A One-Euro filter over all of a face's points at once (box corners, 5 points, 68 landmarks):
    one cutoff for the whole face, from its mean speed, so the points move together and the face
    keeps its shape."""

    def __init__(self, settings: Smoothing, fps: float) -> None:
        self.settings = settings
        self.period = 1.0 / fps
        self.reset()

    def reset(self) -> None:
        self._points: NDArray[Any] | None = None
        self._speed = 0.0

    def __call__(self, face: Face) -> Face:
        points = _stack(face)
        if self._points is None or self._points.shape != points.shape:
            self._points = points
            return face
        s = self.settings
        step = points - self._points
        # speed in face sizes per second, so the filter does not depend on resolution
        speed = float(np.linalg.norm(step, axis=1).mean()) / max(face.size, 1.0) / self.period
        self._speed += self._alpha(s.d_cutoff) * (speed - self._speed)
        self._points = self._points + self._alpha(s.min_cutoff + s.beta * self._speed) * step
        return _unstack(face, self._points)

    def _alpha(self, cutoff: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.period)


def _stack(face: Face) -> NDArray[Any]:
    box = np.array(face.box, np.float32).reshape(2, 2)
    parts = [box, face.kps5.astype(np.float32)]
    if face.landmarks68 is not None:
        parts.append(face.landmarks68.astype(np.float32))
    return np.concatenate(parts)


def _unstack(face: Face, points: NDArray[Any]) -> Face:
    x0, y0, x1, y1 = (float(v) for v in points[:2].reshape(-1))
    landmarks = points[7:].astype(np.float32) if face.landmarks68 is not None else None
    return Face((x0, y0, x1, y1), face.score, points[2:7].astype(np.float32), landmarks)


def _plausible_move(before: Face, after: Face, width: int, height: int) -> bool:
    bc = np.array([(before.box[0] + before.box[2]) / 2, (before.box[1] + before.box[3]) / 2])
    ac = np.array([(after.box[0] + after.box[2]) / 2, (after.box[1] + after.box[3]) / 2])
    growth = after.size / max(before.size, 1e-6)
    inside_w = max(0.0, min(after.box[2], width) - max(after.box[0], 0))
    inside_h = max(0.0, min(after.box[3], height) - max(after.box[1], 0))
    inside = inside_w * inside_h / max(after.width * after.height, 1e-6)
    return bool(
        np.linalg.norm(ac - bc) <= MAX_JUMP * before.size
        and 1 / MAX_GROWTH <= growth <= MAX_GROWTH
        and inside >= MIN_INSIDE
    )


def _chip(frame: NDArray[Any], face: Face) -> NDArray[Any]:
    """A small grey patch of the face, aligned on its eyes and mouth: what the face looks like. The
    face's region is first shrunk by area averaging, so that grain and skin texture do not alias."""
    k = face.kps5.astype(np.float32)
    eyes, mouth = (k[0] + k[1]) / 2, (k[3] + k[4]) / 2
    span = float(max(np.linalg.norm(k[1] - k[0]), np.linalg.norm(mouth - eyes)))
    if span < 1:
        return np.zeros((CHIP, CHIP), np.float32)
    h, w = frame.shape[:2]
    x0, y0 = (max(int(v - span), 0) for v in k.min(axis=0))
    x1, y1 = min(int(k[:, 0].max() + span) + 1, w), min(int(k[:, 1].max() + span) + 1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((CHIP, CHIP), np.float32)
    shrink = min(1.0, CHIP / 2 / span)  # the eyes-to-mouth span becomes about half the chip
    region = frame[y0:y1, x0:x1]
    if shrink < 1:
        size = (max(round((x1 - x0) * shrink), 1), max(round((y1 - y0) * shrink), 1))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    origin = np.array([x0, y0], np.float32)
    src = np.stack([k[0], k[1], mouth]).astype(np.float32)
    src = (src - origin) * np.float32(region.shape[1] / (x1 - x0))
    dst = np.array([[0.25, 0.3], [0.75, 0.3], [0.5, 0.8]], np.float32) * CHIP
    patch = cv2.warpAffine(
        region, cv2.getAffineTransform(src, dst), (CHIP, CHIP), borderMode=cv2.BORDER_REPLICATE
    )
    return cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _correlation(a: NDArray[Any], b: NDArray[Any]) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-6 else 0.0


def _sharpness(frame: NDArray[Any], face: Face) -> float:
    """How sharp the face's region is: the variance of its Laplacian at 48 px across, over the
    variance of its grey levels (so a darker or brighter light does not change it)."""
    h, w = frame.shape[:2]
    x0, y0 = max(int(face.box[0]), 0), max(int(face.box[1]), 0)
    x1, y1 = min(int(face.box[2]) + 1, w), min(int(face.box[3]) + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    grey = cv2.cvtColor(cv2.resize(frame[y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var()) / (float(grey.var()) + 1.0)


def _overlapping(boxes: list[tuple[tuple[float, float, float, float], int]], box: tuple[float, float, float, float]) -> int | None:
    return next((i for i, (other, _) in enumerate(boxes) if _iou(other, box) >= 0.5), None)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
