"""One swap job, streamed: decode the template through an ffmpeg pipe, swap the face in batches where
the template's face track says (tracked once per template: reelfab.faces.template_track), and stream
the frames into another ffmpeg pipe. No frame touches the disk; memory holds one batch. Before the
swap, the track's report is judged by the quality gate (a template the face would go into too few
frames of fails the job, ``SwapQualityError``, instead of shipping a half-swapped clip).

Where the frames go is the deployment's choice:

- **mezzanine** (the default): lossless H.264 RGB (libx264rgb, qp 0: bit-exact to the swapped frames,
  2-3x faster to write and read than FFV1) in Matroska with the template's audio copied in; the
  post-producer's encode is the clip's only lossy, delivery-quality encode.
- **fused** (``RenderOrder``): straight into the final render (reelfab.media.render.FrameRender: the same
  filter graph and encoder the post-producer would run), so the render runs while the swap does and no
  mezzanine is written. Still one lossy encode; the post-producer then checks the spec, signs and stores.

Between batches the job asks ``should_stop``: a consent revoked mid-job stops it there. Where the time
went is kept per stage (``StageClock``: decode, swap, encode, finish)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from reelfab.errors import PermanentError
from reelfab.faces.clip import write_track
from reelfab.faces.errors import SwapQualityError
from reelfab.faces.report import QualityGate, SwapReport
from reelfab.faces.template_track import TemplateTrack, swap_tracked, template_frames, track_template
from reelfab.faces.types import Face, FaceEngine
from reelfab.media.frames import FrameWriter
from reelfab.media.overlap import Sink, WriteBehind, read_ahead
from reelfab.media.probe import VideoInfo
from reelfab.media.render import FrameRender, RenderJob, RenderSpec

DEFAULT_GATE = QualityGate()
MEZZANINE_CODEC = "x264rgb-lossless"
OVERLAP_FRAMES = 8  # decoded frames read ahead, swapped frames queued for the encoder (each ~2.7 MB at 720p)


class Stopped(PermanentError):
    """The job was stopped between batches (consent withdrawn)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class RenderOrder:
    """Fused mode: render the swapped frames to the platform spec as they come (no mezzanine)."""

    spec: RenderSpec
    music: Path | None = None
    caption_text: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class StageClock:
    """Seconds spent per stage of one job (a stage timed several times adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def timed(self, name: str, items: Iterator[Any]) -> Generator[Any, None, None]:
        """``items``, the time spent waiting for each counted as ``name``."""
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.seconds[name] += time.perf_counter() - started
                return
            self.seconds[name] += time.perf_counter() - started
            yield item


@dataclass
class SwapOutput:
    video: Path  # the mezzanine, or (``rendered``) the platform-spec render
    track: Path
    info: VideoInfo
    frames: int
    frames_with_face: int
    seconds: float
    report: SwapReport
    rendered: bool = False
    stages: Mapping[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def run_swap(
    engine: FaceEngine,
    source_image: NDArray[Any],
    template: Path,
    workdir: Path,
    *,
    track: TemplateTrack | None = None,
    detect_every: int = 5,
    batch_size: int = 8,
    should_stop: Callable[[], tuple[str, str] | None] = lambda: None,
    on_frames: Callable[[int], None] = lambda n: None,
    gate: QualityGate = DEFAULT_GATE,
    render: RenderOrder | None = None,
    clock: StageClock | None = None,
) -> SwapOutput:
    """Swap the face of ``source_image`` into ``template`` where ``track`` (the template's face track)
    says; without one, the template is tracked first (``detect_every``). ``render``: fused mode."""
    clock = clock or StageClock()
    if track is None:
        with clock.stage("track"):
            track = track_template(engine, template, detect_every=detect_every)
    info = track.info
    report = track.report()
    if (reason := gate.judge(report)) is not None:  # the workflow judged it before; a direct caller too
        raise SwapQualityError(reason, report)
    track_path = workdir / "track.json"
    document = track.document()
    started = time.perf_counter()
    if render is not None:
        video = workdir / "render.mp4"
        job = RenderJob(input=template, output=video, duration_s=info.duration_s, music=render.music,
                        caption_text=render.caption_text, face_track=document, metadata=render.metadata)
        sink: Sink = FrameRender(job, render.spec, info, log_dir=workdir)
    else:
        video = workdir / "mezzanine.mkv"
        sink = FrameWriter(video, info.width, info.height, info.fps, codec=MEZZANINE_CODEC,
                           audio_from=template if info.has_audio else None)
    sink = WriteBehind(sink, depth=OVERLAP_FRAMES)  # the encoder works while the next batch is swapped
    faces: list[Face | None] = []
    decoded = read_ahead(template_frames(template, info), depth=OVERLAP_FRAMES)  # ... and the decoder too
    frames = clock.timed("decode", decoded)
    swapped = None
    try:
        with clock.stage("source"):  # the source face found and aligned, while both ffmpegs start
            source = engine.prepare_source(source_image)
        swapped = swap_tracked(engine, source, frames, track, batch_size=batch_size)
        while True:
            if len(faces) % batch_size == 0 and (stop := should_stop()):
                raise Stopped(*stop)
            with clock.stage("swap"):  # the decode inside it is counted apart and taken off below
                item = next(swapped, None)
            if item is None:
                break
            with clock.stage("encode"):
                sink.write(item[0])
            faces.append(item[1])
            on_frames(1)
        with clock.stage("finish"):
            sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:  # the decoder's ffmpeg goes now, not whenever the generators are collected
        if swapped is not None:
            swapped.close()
        frames.close()
        decoded.close()
    clock.seconds["swap"] -= clock.seconds["decode"]
    write_track(track_path, faces, info, report)
    return SwapOutput(video, track_path, info, len(faces), sum(f is not None for f in faces),
                      time.perf_counter() - started, report, rendered=render is not None, stages=dict(clock.seconds))
