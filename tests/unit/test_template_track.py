"""A template's face track, made once and reused (reelfab.faces.template_track), and the swapper's cache
of them (reelfab_swapper_gpu.adapters.TrackCache): a job swapping along a kept track gives exactly the
frames tracking and swapping in one pass gives; a track that does not fit the clip is refused; the
cache keeps what fits its budget and tracks a template once however many jobs ask at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from reelfab.devtools.synthetic import template_clip, virtual_person
from reelfab.faces.classical import ClassicalEngine
from reelfab.faces.clip import profile_template
from reelfab.faces.report import FrameStatus, SwapReport
from reelfab.faces.template_track import (
    TemplateTrack,
    TrackMismatch,
    swap_tracked,
    template_frames,
    track_template,
)
from reelfab.faces.tracking import swap_stream
from reelfab.faces.types import Face, FaceEngine, Occlusion
from reelfab.media.frames import read_frames
from reelfab.media.probe import VideoInfo, probe
from reelfab_swapper_gpu.adapters import TrackCache
from reelfab_swapper_gpu.domain import CLASSICAL


@pytest.fixture(scope="module")
def engine() -> ClassicalEngine:
    return ClassicalEngine()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return template_clip(tmp_path_factory.mktemp("tt") / "t.mp4", seed=3, seconds=1.6, size=(288, 512),
                         with_audio=False).path


def test_swapping_along_a_kept_track_gives_the_frames_of_one_pass(engine: ClassicalEngine, clip: Path) -> None:
    info = probe(clip)
    source = engine.prepare_source(virtual_person(2, size=512))
    one_pass = SwapReport()
    expected = list(swap_stream(engine, source, read_frames(clip, info=info), fps=info.fps,
                                performer=profile_template(engine, clip, info), report=one_pass))
    track = track_template(engine, clip, info)
    assert track.frames == len(expected) == info.frames and track.seconds > 0
    assert track.report().as_dict() == one_pass.as_dict() and one_pass.swapped > 0
    for reuse in range(2):  # a kept track serves any number of jobs, unchanged
        got = list(swap_tracked(engine, source, template_frames(clip, info), track, batch_size=3 + reuse))
        assert len(got) == len(expected)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, expected, strict=True))
        assert [f is None for _, f in got] == [f is None for _, f in expected]
    assert track.document()["statuses"] == [s.value for s in one_pass.statuses]


def test_a_track_that_does_not_fit_the_frames_is_refused(engine: ClassicalEngine, clip: Path) -> None:
    info = probe(clip)
    track = track_template(engine, clip, info)
    source = engine.prepare_source(virtual_person(2, size=512))
    frames = list(template_frames(clip, info))
    with pytest.raises(TrackMismatch, match=f"gave {len(frames) - 1} frames, its track has {len(frames)}"):
        list(swap_tracked(engine, source, frames[:-1], track))
    with pytest.raises(TrackMismatch, match="more frames than its track"):
        list(swap_tracked(engine, source, [*frames, frames[0]], track))
    small = [f[: info.height // 2] for f in frames]
    with pytest.raises(TrackMismatch, match=r"frame 0 is 288x256, the track's clip 288x512"):
        list(swap_tracked(engine, source, small, track))
    with pytest.raises(ValueError, match="batch_size"):
        list(swap_tracked(engine, source, frames, track, batch_size=0))


# ---------------------------------------------------------------------------------------- the cache


def _track(frames: int, *, mask_px: int = 0) -> TemplateTrack:
    info = VideoInfo(Path("t.mp4"), 64, 64, 25.0, frames / 25, frames, "h264", "yuv420p", 0, False, None, None, False, {})
    occlusion = Occlusion(0, 0, np.zeros((mask_px, mask_px), np.float32)) if mask_px else None
    face = Face((1.0, 1.0, 9.0, 9.0), 0.9, np.zeros((5, 2), np.float32), occlusion=occlusion)
    return TemplateTrack(info, (face,) * frames, (FrameStatus.SWAPPED,) * frames, (0,) * frames, 5, 0.01)


class Tracker:
    """Counts the templates it tracks; ``slow`` keeps each call busy (so callers overlap), and
    ``overlapped`` records which templates were being tracked while another one started."""

    def __init__(self, sizes: dict[str, int], slow: float = 0.0) -> None:
        self.sizes, self.slow = sizes, slow
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlapped: set[frozenset[str]] = set()
        self._lock = threading.Lock()

    def __call__(self, engine: FaceEngine, template: Path, detect_every: int) -> TemplateTrack:
        with self._lock:
            self.calls.append(template.name)
            self.overlapped |= {frozenset({template.name, other}) for other in self.running}
            self.running.add(template.name)
        time.sleep(self.slow)
        with self._lock:
            self.running.discard(template.name)
        return _track(10, mask_px=self.sizes[template.name])


def _engines(choice: object) -> FaceEngine:
    return ClassicalEngine.__new__(ClassicalEngine)  # never used by the fake tracker


def test_the_cache_keeps_what_fits_its_budget_least_recently_used_first() -> None:
    one = _track(10, mask_px=100).nbytes  # 10 masks of 100x100 float32: ~400 kB
    tracker = Tracker({"a": 100, "b": 100, "c": 100, "huge": 400})
    cache = TrackCache(_engines, budget_bytes=2 * one + one // 2, track=tracker)
    for name in ("a", "b", "a", "c"):  # c pushes out b (a was used since)
        cache(CLASSICAL, Path(name), f"sha-{name}")
    assert tracker.calls == ["a", "b", "c"] and (cache.hits, cache.misses) == (1, 3)
    assert [k[0] for k in cache.tracks] == ["sha-a", "sha-c"] and cache.nbytes == 2 * one
    cache(CLASSICAL, Path("b"), "sha-b")  # tracked again: it had been evicted
    assert tracker.calls[-1] == "b" and [k[0] for k in cache.tracks] == ["sha-c", "sha-b"]
    made = cache(CLASSICAL, Path("huge"), "sha-huge")  # larger than the whole budget: used, not kept
    assert made.frames == 10 and "sha-huge" not in [k[0] for k in cache.tracks] and cache.nbytes == 2 * one
    zero = TrackCache(_engines, budget_bytes=0, track=tracker)  # a budget of 0 keeps nothing
    zero(CLASSICAL, Path("a"), "sha-a")
    zero(CLASSICAL, Path("a"), "sha-a")
    assert zero.tracks == {} and zero.misses == 2


def test_jobs_asking_at_once_for_an_untracked_template_track_it_once() -> None:
    tracker = Tracker({"a": 10, "b": 10}, slow=0.3)
    cache = TrackCache(_engines, budget_bytes=2**30, track=tracker)
    got: list[TemplateTrack] = []
    threads = [threading.Thread(target=lambda n=n: got.append(cache(CLASSICAL, Path(n), f"sha-{n}")))
               for n in ("a", "a", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tracker.calls) == ["a", "b"]  # a once however many asked
    assert tracker.overlapped == {frozenset({"a", "b"})}  # and b was tracked while a was, not after it
    assert len({id(t) for t in got}) == 2 and (cache.hits, cache.misses) == (2, 2)
