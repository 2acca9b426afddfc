"""The parts of identity-aware tracking, each on its own: the performer's identity verdicts, the frame
report and quality gate, the occlusion model, the colour filter and the lost-face policy. The whole,
on hard clips, is in test_swap_robustness.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reelfab.devtools.synthetic import PersonParams, render_face, virtual_person
from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.colour import TransferFilter
from reelfab.faces.identity import Performer, profile_performer
from reelfab.faces.occlusion import OcclusionModel
from reelfab.faces.report import FrameStatus, QualityGate, SwapReport
from reelfab.faces.tracking import FaceTracker
from reelfab.faces.types import Embedding, Face, Occlusion


@pytest.fixture(scope="module")
def engine() -> ClassicalEngine:
    return ClassicalEngine()


def vec(*values: float) -> Embedding:
    return Embedding(np.array(values, np.float32), "m")


# ------------------------------------------------------------------ identity verdicts


def test_a_face_is_the_performer_only_within_the_gate_and_nearer_the_performer_than_anyone_else() -> None:
    performer = Performer((vec(0, 0), vec(0.1, 0)), others=(vec(1, 0),), gate=0.6)
    assert performer.judge(vec(0.05, 0.1)).accepted
    far = performer.judge(vec(0, 0.7))
    assert not far.accepted and "over 0.60" in far.reason
    # within the gate, but nearer a face the clip also shows (a poster of someone similar)
    nearer_other = performer.judge(vec(0.58, 0))
    assert not nearer_other.accepted and "nearer another face" in nearer_other.reason
    assert Performer((vec(0, 0),), gate=0.6).judge(vec(0.58, 0)).accepted  # no other faces: the gate decides


def test_the_profile_takes_the_face_that_leads_most_samples_and_keeps_the_others_apart(engine: ClassicalEngine) -> None:
    lead, other = PersonParams.from_seed(1001), PersonParams.from_seed(1002)
    samples = []
    for i in range(4):
        frame = render_face(lead, size=(640, 480), scale=1.0, center=(0.35, 0.45), yaw=4.0 * i)
        small = render_face(other, size=(220, 220), scale=1.0)
        frame[20:240, 410:630] = small  # a poster of another person, smaller than the lead
        samples.append(frame)
    performer = profile_performer(engine, samples)
    assert performer is not None and performer.references and performer.others
    lead_alone = engine.embed(samples[0], max(engine.detect(samples[0]), key=lambda f: f.size))
    poster = engine.embed(samples[0], min(engine.detect(samples[0]), key=lambda f: f.size))
    assert performer.judge(lead_alone).accepted
    assert not performer.judge(poster).accepted
    assert profile_performer(engine, [np.zeros((240, 320, 3), np.uint8)]) is None  # no face in any sample


# ------------------------------------------------------------------ report and gate


def test_the_report_counts_every_frame_once_and_the_gate_names_the_counts() -> None:
    report = SwapReport()
    for status in [FrameStatus.SWAPPED] * 7 + [FrameStatus.HELD, FrameStatus.LOST, FrameStatus.REJECTED]:
        report.record(status, refused=1 if status is FrameStatus.REJECTED else 0, occluded=status is FrameStatus.HELD)
    assert (report.frames, report.swapped, report.held, report.lost, report.rejected) == (10, 7, 1, 1, 1)
    assert report.swapped_share == pytest.approx(0.8) and report.refused_detections == 1 and report.occluded == 1
    assert report.as_dict()["swapped_share"] == 0.8 and "statuses" not in report.as_dict()
    assert QualityGate(0.8).judge(report) is None
    reason = QualityGate(0.9).judge(report)
    assert reason is not None and "80% of the frames, under the 90% required" in reason and "1 rejected" in reason
    assert QualityGate(0.0).judge(SwapReport()) == "the clip gave no frames to swap"  # never a good swap
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="a number within 0..1"):
            QualityGate(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ occlusion


def _hand(frame: np.ndarray, face: Face, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` with a palm and four fingers over the mouth and chin, coming in from below: rounded
    (lit from above, darker at its sides), with shadowed gaps between the fingers; and its mask."""
    assert face.landmarks68 is not None
    mouth, chin = face.landmarks68[62], face.landmarks68[8]
    width = float(np.linalg.norm(face.landmarks68[16] - face.landmarks68[0]))
    mask = np.zeros(frame.shape[:2], np.uint8)
    cx, top = int(mouth[0] + 0.05 * width), int(mouth[1] - 0.08 * width)
    half = int(0.28 * width)
    cv2.rectangle(mask, (cx - half, top + int(0.12 * width)), (cx + half, frame.shape[0]), 255, -1)
    gaps = np.zeros_like(mask)
    for k in range(4):  # fingers, with a shadowed gap between each two
        x = cx - half + 4 + k * int(0.14 * width)
        cv2.rectangle(mask, (x, top), (x + int(0.12 * width), top + int(0.2 * width)), 255, -1)
        cv2.line(gaps, (x + int(0.13 * width), top), (x + int(0.13 * width), top + int(0.22 * width)), 255, 2)
    ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]].astype(np.float32)
    across = np.clip(np.abs(xs - cx) / half, 0, 1)
    shade = (1.05 - 0.35 * across**2) * (1.0 - 0.15 * np.clip((ys - top) / width, 0, 1))
    hand = np.clip(np.array(colour, np.float32)[None, None] * shade[..., None], 0, 255)
    hand[gaps > 0] *= 0.55
    out = frame.copy()
    out[mask > 0] = hand.astype(np.uint8)[mask > 0]
    assert chin[1] > top  # the hand covers the chin
    return out, mask > 0


def test_the_occlusion_model_finds_a_hand_over_the_mouth_and_leaves_the_eyes(engine: ClassicalEngine) -> None:
    person = PersonParams.from_seed(1005)
    frames = [render_face(person, size=(480, 640), center=(0.5, 0.4), yaw=4 * np.sin(i / 4), roll=2 * np.cos(i / 5),
                          expression=f"talk:{(i % 4) / 6}") for i in range(12)]
    model = OcclusionModel()
    faces = [engine.detect(f)[0] for f in frames]
    assert [model.measure(f, face) for f, face in zip(frames, faces, strict=True)].count(None) == 12  # nothing covers
    skin = tuple(int(v * 255 * 0.95) for v in person.skin)
    covered, truth = _hand(frames[-1], faces[-1], skin)  # a hand of nearly the performer's own skin tone
    occlusion = model.measure(covered, faces[-1], learn=False)
    assert occlusion is not None
    h, w = occlusion.mask.shape
    found = occlusion.region(0, 0, covered.shape[1], covered.shape[0]) > 0.5
    face_area = np.zeros(truth.shape, np.uint8)
    assert faces[-1].landmarks68 is not None
    cv2.fillConvexPoly(face_area, cv2.convexHull(faces[-1].landmarks68.astype(np.int32)), 1)
    hand_on_face = truth & face_area.astype(bool)
    # much of the hand over the face is found (measured 0.59: the inner mouth is never judged, and the
    # chip is coarse at the jaw line), and what is found is the hand (measured 0.997)
    assert (found & hand_on_face).sum() >= 0.45 * hand_on_face.sum()
    assert (found & truth).sum() >= 0.8 * found.sum()
    eyes = faces[-1].landmarks68[36:48].astype(int)
    assert not found[eyes[:, 1], eyes[:, 0]].any()  # the eyes are not marked covered


def test_what_covers_the_face_stays_in_front_of_the_swap(engine: ClassicalEngine) -> None:
    frame = render_face(PersonParams.from_seed(1007), size=(480, 640), center=(0.5, 0.4))
    face = engine.detect(frame)[0]
    source = engine.prepare_source(virtual_person(3))
    covered = np.zeros(frame.shape[:2], np.float32)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    covered[(y0 + y1) // 2 : y1, x0:x1] = 1.0  # the lower half of the face is behind something
    with_hand = Face(face.box, face.score, face.kps5, face.landmarks68, occlusion=Occlusion(0, 0, covered))
    plain, kept = engine.swap_batch(source, [frame, frame], [face, with_hand])
    lower = covered > 0
    assert np.abs(plain[lower].astype(int) - frame[lower]).max() > 30  # the swap does change the lower face
    assert np.array_equal(kept[lower], frame[lower])  # ... but not where it is covered
    upper = np.zeros_like(lower)
    upper[y0 : (y0 + y1) // 2 - 4, x0:x1] = True
    assert np.abs(kept[upper].astype(int) - frame[upper]).mean() > 5  # the uncovered part is swapped
    faded = Face(face.box, face.score, face.kps5, face.landmarks68, opacity=0.0)
    assert np.array_equal(engine.swap_batch(source, [frame], [faded])[0], frame)  # fully faded: untouched


# ------------------------------------------------------------------ colour


def test_the_transfer_filter_holds_still_under_noise_and_follows_a_light_swing() -> None:
    rng = np.random.default_rng(3)
    still = TransferFilter(25.0)
    noise = rng.normal(0, 2, (60, 3))
    offsets = [still(np.r_[1.0, 1.0, 1.0, 10 + n])[3] for n in noise[:, 0:1] @ np.ones((1, 3))]
    assert np.std(np.diff(offsets[10:])) < 0.4 * np.std(np.diff(noise[10:, 0]))  # the noise is smoothed
    swing = TransferFilter(25.0)
    target = [80 * min(i / 25, 1.0) for i in range(60)]  # the light rises by 80 levels over a second
    out = [swing(np.r_[1.0, 1.0, 1.0, t, 0.0, 0.0])[3] for t in target]
    assert abs(out[30] - target[30]) < 12  # little lag while it moves
    assert abs(out[-1] - target[-1]) < 1  # and settles on it


def test_the_engine_applies_a_tracks_transfer_filter_in_frame_order(engine: ClassicalEngine) -> None:
    person = PersonParams.from_seed(1009)
    source = engine.prepare_source(virtual_person(3))
    frames = [render_face(person, size=(480, 640), center=(0.5, 0.4)) for _ in range(2)]
    frames[1] = np.clip(frames[1].astype(int) + 40, 0, 255).astype(np.uint8)  # the light jumps up
    face = engine.detect(frames[0])[0]
    seen: list[np.ndarray] = []

    def smooth(transfer: np.ndarray) -> np.ndarray:
        seen.append(transfer.copy())
        return seen[0]  # hold the first frame's transfer

    held = engine.swap_batch(source, frames, [Face(face.box, 1, face.kps5, face.landmarks68, colour=smooth)] * 2)
    plain = engine.swap_batch(source, frames[1:], [face])[0]
    assert len(seen) == 2 and seen[1][3] > seen[0][3] + 20  # the second frame's offset (L) rose with the light
    x0, y0, x1, y1 = (int(v) for v in face.box)
    centre = (slice((y0 + y1) // 2 - 10, (y0 + y1) // 2 + 10), slice((x0 + x1) // 2 - 10, (x0 + x1) // 2 + 10))
    assert held[1][centre].mean() < plain[centre].mean() - 15  # held transfer: the face did not brighten


# ------------------------------------------------------------------ the lost-face policy


class Blinded:
    """A FaceEngine that stops seeing faces (no detection, no landmark fit) once ``blind`` is set,
    as the classical one does on a face smeared by motion blur beyond use."""

    def __init__(self, engine: ClassicalEngine) -> None:
        self.engine = engine
        self.name, self.embedder = engine.name, engine.embedder
        self.blind = False

    def detect(self, frame: np.ndarray) -> list[Face]:
        return [] if self.blind else self.engine.detect(frame)

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(f) for f in frames]

    def refine(self, frame: np.ndarray, face: Face) -> Face:
        refined = self.engine.refine(frame, face)
        return Face(refined.box, 0.0, refined.kps5, refined.landmarks68) if self.blind else refined

    def embed(self, frame: np.ndarray, face: Face) -> Embedding:
        return self.engine.embed(frame, face)

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        return self.engine.identity_threshold(asset_kind)


def test_a_face_lost_for_a_moment_is_held_then_faded_and_a_cut_away_is_not(engine: ClassicalEngine) -> None:
    person = PersonParams.from_seed(1003)
    frames = [render_face(person, size=(480, 640), center=(0.5, 0.4), yaw=3 * np.sin(i / 3)) for i in range(10)]
    blinded = Blinded(engine)
    tracker = FaceTracker(blinded, detect_every=5, hold_frames=6, fade_frames=3)  # type: ignore[arg-type]
    assert all(tracker.track(f) is not None for f in frames)
    blinded.blind = True  # the face is still there, but nothing can fit it
    held = [tracker.track(frames[-1]) for _ in range(8)]
    assert [None if f is None else round(f.opacity, 2) for f in held] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, None, None]
    assert tracker.status is FrameStatus.LOST
    last = held[0]
    assert last is not None and last.landmarks68 is not None  # held where the face was (it did not move)
    fresh = engine.detect(frames[-1])[0]
    assert fresh.landmarks68 is not None
    assert np.abs(last.landmarks68 - fresh.landmarks68).mean() < 3
    blinded.blind = False
    assert tracker.track(frames[0]) is not None and tracker.status is FrameStatus.SWAPPED  # found again

    cut = FaceTracker(Blinded(engine), detect_every=5)  # type: ignore[arg-type]
    assert all(cut.track(f) is not None for f in frames)
    assert cut.track(np.full_like(frames[0], 90)) is None  # a cut to an empty wall: nothing is painted there
    assert cut.status is FrameStatus.LOST


# ------------------------------------------------------------------ two jobs in one process


def test_two_swaps_at_once_on_one_engine_give_what_each_gives_alone(engine: ClassicalEngine) -> None:
    """The swapper runs several jobs at once (worker threads) on one cached engine; dlib's models are
    shared by every engine of the process. Without the lock two at once gave wrong frames, or a heap
    corruption ("corrupted size vs. prev_size") that killed the process."""
    import threading

    from reelfab.devtools.synthetic.hard import hard_clip
    from reelfab.faces.tracking import swap_stream

    clips = [hard_clip("light_swing", seed=1, seconds=1.2).frames, hard_clip("two_people", seed=2, seconds=1.2).frames]

    def run(k: int) -> list[np.ndarray]:
        source = engine.prepare_source(virtual_person(7 + k, size=512))
        performer = profile_performer(engine, clips[k][::4])
        return [frame for frame, _ in swap_stream(engine, source, clips[k], performer=performer)]

    alone = [run(0), run(1)]
    for _ in range(3):
        together: list[list[np.ndarray]] = [[], []]
        errors: list[BaseException] = []

        def worker(k: int, together: list[list[np.ndarray]] = together, errors: list[BaseException] = errors) -> None:
            try:
                together[k] = run(k)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for k in (0, 1):
            assert all(np.array_equal(a, b) for a, b in zip(alone[k], together[k], strict=True))


def test_a_swap_never_writes_over_its_own_template(tmp_path: Path) -> None:
    from reelfab.devtools.synthetic import template_clip
    from reelfab.faces.clip import swap_clip

    clip = template_clip(tmp_path / "t.mp4", seed=0, seconds=1.0, size=(360, 640), with_audio=False)
    before = clip.path.read_bytes()
    with pytest.raises(ValueError, match="is the template itself"):
        swap_clip(ClassicalEngine(), virtual_person(3, size=512), clip.path, tmp_path / "." / "t.mp4")
    assert clip.path.read_bytes() == before
