"""Swapping a whole clip with a frame-level engine: first learn who the performer is from frames
sampled over the clip (``profile_template``), then stream frames from ffmpeg, track the performer and
swap in batches, stream them into an encoder; no per-frame files. The result says how fast it went,
which face was used in every frame (the face track the post-producer reframes around) and what
happened to every frame (``SwapReport``); a ``QualityGate`` refuses a clip swapped in too few frames."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.faces.errors import SwapQualityError
from reelfab.faces.identity import Performer, profile_performer
from reelfab.faces.report import QualityGate, SwapReport
from reelfab.faces.types import Face, FaceEngine
from reelfab.media.frames import FrameWriter, read_frames
from reelfab.media.probe import VideoInfo, probe


@dataclass
class ClipResult:
    output: Path
    frames: int
    frames_with_face: int
    seconds: float  # wall time spent
    info: VideoInfo
    track: list[Face | None]
    report: SwapReport

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def swap_clip(
    engine: FaceEngine,
    source_image: NDArray[Any],
    target: Path,
    output: Path,
    *,
    detect_every: int = 5,
    batch_size: int = 8,
    codec: str = "x264",
    progress: Callable[[int], None] | None = None,
    gate: QualityGate | None = None,
) -> ClipResult:
    """``gate``: refuse (``SwapQualityError``, the output removed) a clip swapped in too few frames."""
    from reelfab.faces.tracking import swap_stream

    if output.exists() and target.exists() and output.resolve() == target.resolve():
        raise ValueError(f"the output {output} is the template itself: choose another path")
    info = probe(target)
    source = engine.prepare_source(source_image)
    started = time.perf_counter()
    performer = profile_template(engine, target, info)
    report = SwapReport()
    track: list[Face | None] = []
    writer = FrameWriter(output, info.width, info.height, info.fps, codec=codec,
                         audio_from=target if info.has_audio else None)
    with writer:
        for frame, face in swap_stream(
            engine, source, read_frames(target, info=info), detect_every=detect_every, batch_size=batch_size,
            fps=info.fps, performer=performer, report=report,
        ):
            writer.write(frame)
            track.append(face)
            if progress:
                progress(1)
    seconds = time.perf_counter() - started
    if gate is not None and (reason := gate.judge(report)) is not None:
        output.unlink(missing_ok=True)
        raise SwapQualityError(f"{target.name}: {reason}", report)
    return ClipResult(output, len(track), sum(f is not None for f in track), seconds, info, track, report)


SAMPLES = 16  # frames over the clip that tell who the performer is


def profile_template(engine: FaceEngine, path: Path, info: VideoInfo | None = None, *, samples: int = SAMPLES) -> Performer | None:
    """Who the performer of the clip at ``path`` is (``identity.profile_performer``), from ``samples``
    frames spread evenly over it (ffmpeg drops the others while decoding)."""
    info = info or probe(path)
    rate = min(info.fps, max(samples / max(info.duration_s, 1e-3), 0.05))
    frames = read_frames(path, info=info, fps=rate)
    try:
        return profile_performer(engine, itertools.islice(frames, samples))
    finally:
        frames.close()  # type: ignore[attr-defined]


def track_document(
    track: list[Face | None], info: VideoInfo, report: SwapReport | None = None
) -> dict[str, Any]:
    """The face track sidecar: per frame, the swapped face's box and 5 points (null: no face); with a
    ``report``, each frame's status (swapped, held, lost, rejected) and the counts."""

    def one(face: Face | None) -> dict[str, Any] | None:
        if face is None:
            return None
        return {"box": [round(v, 1) for v in face.box], "kps5": np.round(face.kps5, 1).tolist(), "score": round(face.score, 3)}

    document: dict[str, Any] = {"version": 1, "width": info.width, "height": info.height, "fps": info.fps,
                                "frames": [one(f) for f in track]}
    if report is not None:
        document["statuses"] = [s.value for s in report.statuses]
        document["report"] = report.as_dict()
    return document


def write_track(path: Path, track: list[Face | None], info: VideoInfo, report: SwapReport | None = None) -> None:
    path.write_text(json.dumps(track_document(track, info, report), separators=(",", ":")))
