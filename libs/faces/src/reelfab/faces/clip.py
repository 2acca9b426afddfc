"""Swapping a whole clip with a frame-level engine: stream frames from ffmpeg, track and swap in
batches, stream them into an encoder; no per-frame files. The result says how fast it went and
which face was used in every frame (the face track the post-producer reframes around)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

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
) -> ClipResult:
    from reelfab.faces.tracking import swap_stream

    info = probe(target)
    source = engine.prepare_source(source_image)
    started = time.perf_counter()
    track: list[Face | None] = []
    writer = FrameWriter(output, info.width, info.height, info.fps, codec=codec,
                         audio_from=target if info.has_audio else None)
    with writer:
        for frame, face in swap_stream(
            engine, source, read_frames(target, info=info), detect_every=detect_every, batch_size=batch_size
        ):
            writer.write(frame)
            track.append(face)
            if progress:
                progress(1)
    seconds = time.perf_counter() - started
    return ClipResult(output, len(track), sum(f is not None for f in track), seconds, info, track)


def track_document(track: list[Face | None], info: VideoInfo) -> dict[str, Any]:
    """The face track sidecar: per frame, the swapped face's box and 5 points (null: no face)."""

    def one(face: Face | None) -> dict[str, Any] | None:
        if face is None:
            return None
        return {"box": [round(v, 1) for v in face.box], "kps5": np.round(face.kps5, 1).tolist(), "score": round(face.score, 3)}

    return {"version": 1, "width": info.width, "height": info.height, "fps": info.fps, "frames": [one(f) for f in track]}


def write_track(path: Path, track: list[Face | None], info: VideoInfo) -> None:
    path.write_text(json.dumps(track_document(track, info), separators=(",", ":")))
