"""One swap job, streamed: decode the template through an ffmpeg pipe, track and swap in batches,
encode the mezzanine through another pipe. No frame touches the disk; memory holds one batch.
Before the swap, frames sampled over the template tell who the performer is (only that face is
swapped: reelfab.faces.identity); every frame's status is counted, and a swap that put the face into
too few frames fails the job (``SwapQualityError``) instead of shipping a half-swapped clip.

The mezzanine is FFV1 (lossless, bit-exact to the swapped frames) in Matroska with the template's
audio copied in, so the post-producer's encode is the clip's only lossy, delivery-quality encode.
Between batches the job asks ``should_stop``: a consent revoked mid-job stops it there."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from reelfab.errors import PermanentError
from reelfab.faces.clip import profile_template, write_track
from reelfab.faces.errors import SwapQualityError
from reelfab.faces.report import QualityGate, SwapReport
from reelfab.faces.tracking import swap_stream
from reelfab.faces.types import Face, FaceEngine
from reelfab.media.frames import FrameWriter, read_frames
from reelfab.media.probe import VideoInfo, probe

DEFAULT_GATE = QualityGate()


class Stopped(PermanentError):
    """The job was stopped between batches (consent withdrawn)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class SwapOutput:
    mezzanine: Path
    track: Path
    info: VideoInfo
    frames: int
    frames_with_face: int
    seconds: float
    report: SwapReport

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def run_swap(
    engine: FaceEngine,
    source_image: NDArray[Any],
    template: Path,
    workdir: Path,
    *,
    detect_every: int = 5,
    batch_size: int = 8,
    should_stop: Callable[[], tuple[str, str] | None] = lambda: None,
    on_frames: Callable[[int], None] = lambda n: None,
    gate: QualityGate = DEFAULT_GATE,
) -> SwapOutput:
    info = probe(template)
    source = engine.prepare_source(source_image)
    performer = profile_template(engine, template, info)
    report = SwapReport()
    mezzanine = workdir / "mezzanine.mkv"
    track_path = workdir / "track.json"
    track: list[Face | None] = []
    started = time.perf_counter()
    # the decoder resamples to a constant rate: a variable-frame-rate template gets a steady clock
    frames = read_frames(template, info=info, fps=info.fps if info.variable_frame_rate else None)
    with FrameWriter(mezzanine, info.width, info.height, info.fps, codec="ffv1",
                     audio_from=template if info.has_audio else None) as writer:
        for i, (frame, face) in enumerate(swap_stream(engine, source, frames, detect_every=detect_every,
                                                      batch_size=batch_size, fps=info.fps, performer=performer,
                                                      report=report)):
            if i % batch_size == 0 and (stop := should_stop()):
                raise Stopped(*stop)
            writer.write(frame)
            track.append(face)
            on_frames(1)
    if (reason := gate.judge(report)) is not None:
        raise SwapQualityError(reason, report)
    write_track(track_path, track, info, report)
    return SwapOutput(mezzanine, track_path, info, len(track), sum(f is not None for f in track),
                      time.perf_counter() - started, report)
