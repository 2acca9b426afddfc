"""Face engine benchmarks, each against a baseline run side by side in the same invocation.

1. classical backend, frames/s of swap_stream on a generated template (a virtual performer, no real
   person) at 720x1280 and 1080x1920, with detection every N frames (N = 1 is the baseline: detect
   every frame); ratio vs N = 1 at the same size.
2. onnx backend, frames/s through swap_batch at batch sizes 1, 8, 32 with the test models built by
   tests/faces_models.py (real input/output signatures, trivial arithmetic inside): this measures
   our batching and paste-back pipeline, not the models; ratio vs batch 1. The GPU path is not
   measured here (no GPU on this machine).

    python bench/faces.py [--frames 100] [--skip-onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reelfab.devtools.synthetic import template_clip, virtual_person  # noqa: E402
from reelfab.faces.classical import ClassicalEngine  # noqa: E402
from reelfab.faces.tracking import swap_stream  # noqa: E402
from reelfab.media.frames import read_frames  # noqa: E402


def classical(frames: int) -> None:
    engine = ClassicalEngine()
    source = engine.prepare_source(virtual_person(3))
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((720, 1280), (1080, 1920)):
            clip = template_clip(Path(tmp) / f"t{size[0]}.mp4", seed=0, seconds=frames / 25 + 0.2, size=size, with_audio=False)
            decoded = list(read_frames(clip.path, max_frames=frames))  # decode once: measure the engine
            base = None
            for every in (1, 5, 10):
                best = 0.0
                for _ in range(2):
                    started = time.perf_counter()
                    n = sum(1 for _ in swap_stream(engine, source, decoded, detect_every=every, batch_size=8))
                    best = max(best, n / (time.perf_counter() - started))
                base = base or best
                print(f"  classical {size[0]}x{size[1]} detect every {every:2d}: {best:6.1f} frames/s   ratio vs every frame {best / base:.2f}")


def onnx_batches(frames: int) -> None:
    import numpy as np

    from reelfab.faces.onnx.engine import OnnxEngine
    from tests.faces_models import build_store, face_frame

    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp))
        base = None
        for batch in (1, 8, 32):
            engine = OnnxEngine(store, swapper="ghost_2_256", commercial_mode=False, batch_size=batch)
            frame = face_frame((720, 1280), (640, 360), (120, 150))
            source = engine.prepare_source(face_frame((1024, 1024), (512, 512), (260, 320)))
            face = engine.detect(frame)[0]
            batch_frames = [np.ascontiguousarray(frame) for _ in range(frames)]
            best = 0.0
            for _ in range(2):
                started = time.perf_counter()
                for i in range(0, frames, batch):
                    engine.swap_batch(source, batch_frames[i:i + batch], [face] * len(batch_frames[i:i + batch]))
                best = max(best, frames / (time.perf_counter() - started))
            base = base or best
            print(f"  onnx (test models) ghost_2_256 batch {batch:2d}: {best:6.1f} frames/s   ratio vs batch 1 {best / base:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()
    print(f"Face engine, {args.frames} frames per run, best of 2:")
    classical(args.frames)
    if not args.skip_onnx:
        onnx_batches(args.frames)


if __name__ == "__main__":
    main()
