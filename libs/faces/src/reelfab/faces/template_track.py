"""The performer's face through a template, tracked once and reused by every job on that template.

Tracking decides, frame by frame, which face (if any) gets the swap, and what happened to each frame
(swapped, held, lost, rejected). None of it depends on whose face goes in: the tracker looks at the
template's frames only (``FaceTracker`` takes no source face). So a template that many jobs use is
tracked once (``track_template``: the performer profiled from sampled frames, then every frame
tracked), kept (the swapper's ``TrackCache``), and each job only decodes, swaps and encodes
(``swap_tracked``). The output is the same as tracking and swapping in one pass (``swap_stream``): the
same frames go through the same tracker in the same order.

A track also answers the quality gate before any face is fetched: its ``report()`` is what the swap's
report will be."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from reelfab.faces.clip import profile_template, track_document
from reelfab.faces.report import FrameStatus, SwapReport
from reelfab.faces.tracking import FaceTracker
from reelfab.faces.types import Face, FaceEngine, SourceFace
from reelfab.media.frames import read_frames
from reelfab.media.probe import VideoInfo, probe

FACE_BYTES = 512  # a Face without its occlusion mask: box, points, score (an estimate, for the cache's budget)


class TrackMismatch(ValueError):
    """The frames given do not match the track (another clip, or a decoder that gave more or fewer)."""


@dataclass(frozen=True)
class TemplateTrack:
    """Per frame of the template: the face to swap (``None``: leave the frame), its status and the
    faces refused in it (not the performer). ``seconds``: what tracking took."""

    info: VideoInfo
    faces: tuple[Face | None, ...]
    statuses: tuple[FrameStatus, ...]
    refused: tuple[int, ...]
    detect_every: int
    seconds: float

    @property
    def frames(self) -> int:
        return len(self.faces)

    def report(self) -> SwapReport:
        """The swap report a job on this template gets (a fresh one each call: callers may add to it)."""
        report = SwapReport()
        for face, status, refused in zip(self.faces, self.statuses, self.refused, strict=True):
            report.record(status, refused=refused, occluded=face is not None and face.occlusion is not None)
        return report

    def document(self) -> dict[str, Any]:
        """The face-track sidecar (reelfab.faces.clip.track_document): what the render reframes around."""
        return track_document(list(self.faces), self.info, self.report())

    @property
    def nbytes(self) -> int:
        """Memory it holds, roughly: the occlusion masks dominate."""
        total = 0
        for face in self.faces:
            total += 16
            if face is not None:
                total += FACE_BYTES + (face.occlusion.mask.nbytes if face.occlusion is not None else 0)
        return total


def track_template(
    engine: FaceEngine,
    template: Path,
    info: VideoInfo | None = None,
    *,
    detect_every: int = 5,
    detect_scale: float = 0.75,
    should_stop: Callable[[], object] | None = None,
) -> TemplateTrack:
    """Profile the template's performer and track them through every frame (decoded as a swap job
    decodes them: a variable-frame-rate clip at its steady rate). ``should_stop`` is asked every
    ``detect_every * 8`` frames; a truthy answer ends tracking early (the caller decides what that means:
    ``TrackStopped`` is raised with the answer)."""
    info = info or probe(template)
    started = time.perf_counter()
    performer = profile_template(engine, template, info)
    tracker = FaceTracker(engine, detect_every=detect_every, detect_scale=detect_scale, fps=info.fps,
                          performer=performer)
    faces: list[Face | None] = []
    statuses: list[FrameStatus] = []
    refused: list[int] = []
    frames = template_frames(template, info)
    try:
        for i, frame in enumerate(frames):
            if should_stop is not None and i % (detect_every * 8) == 0 and (answer := should_stop()):
                raise TrackStopped(answer)
            faces.append(tracker.track(frame))
            statuses.append(tracker.status)
            refused.append(tracker.refused)
    finally:
        frames.close()  # type: ignore[attr-defined]
    return TemplateTrack(info, tuple(faces), tuple(statuses), tuple(refused), detect_every,
                         time.perf_counter() - started)


class TrackStopped(Exception):
    """``should_stop`` answered while the template was tracked; ``answer`` is what it said."""

    def __init__(self, answer: object) -> None:
        super().__init__(f"tracking stopped: {answer!r}")
        self.answer = answer


def template_frames(template: Path, info: VideoInfo) -> Iterator[NDArray[Any]]:
    """The template's frames as tracking and swapping both read them (one definition, so they agree)."""
    return read_frames(template, info=info, fps=info.fps if info.variable_frame_rate else None)


def swap_tracked(
    engine: FaceEngine,
    source: SourceFace,
    frames: Iterable[NDArray[Any]],
    track: TemplateTrack,
    *,
    batch_size: int = 8,
) -> Generator[tuple[NDArray[Any], Face | None], None, None]:
    """Swap ``source`` into ``frames`` (the template's, in order) where ``track`` says, ``batch_size``
    frames at a time; yields each frame with the face used. Raises ``TrackMismatch`` when the frames
    run out before the track or go on past it."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    batch: list[NDArray[Any]] = []
    faces: list[Face | None] = []
    n = 0
    for frame in frames:
        if n >= track.frames:
            raise TrackMismatch(f"the clip has more frames than its track ({track.frames})")
        _check_shape(frame, track.info, n)
        batch.append(frame)
        faces.append(track.faces[n])
        n += 1
        if len(batch) == batch_size:
            yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)
            batch, faces = [], []
    if batch:
        yield from zip(engine.swap_batch(source, batch, faces), faces, strict=True)
    if n != track.frames:
        raise TrackMismatch(f"the clip gave {n} frames, its track has {track.frames}")


def _check_shape(frame: NDArray[Any], info: VideoInfo, index: int) -> None:
    if frame.shape[:2] != (info.height, info.width):
        raise TrackMismatch(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, the track's clip {info.width}x{info.height}")
