"""Face engine benchmarks, each against a baseline run side by side in the same invocation.

1. classical backend, frames/s of swap_stream on a generated template (a virtual performer, no real
   person) at 720x1280 and 1080x1920, with detection every N frames (N = 1 is the baseline: detect
   every frame); ratio vs N = 1 at the same size.
2. onnx backend, frames/s through swap_batch at batch sizes 1, 8, 32 with the test models built by
   tests/faces_models.py (real input/output signatures, trivial arithmetic inside): this measures
   our batching and paste-back pipeline, not the models; ratio vs batch 1. The GPU path is not
   measured here (no GPU on this machine).
3. robustness: the hard synthetic clips (reelfab.devtools.synthetic.hard: roll and turn, light swing,
   a hand over the mouth, motion blur, drawn and printed faces, a second person, and all at once),
   swapped with the classical backend by the tracker before identity-aware tracking
   (bench/tracking_v1.py, the baseline) and by the current one, side by side; per clip the figures of
   reelfab.devtools.swapeval (identity share, edits off the face, performer left showing, landmark
   jitter, colour flicker) and frames/s of tracking + swap (the current one's profile pass timed
   apart), with the ratio current / baseline. Each scenario with seeds 0, 1, 2 (performers 1000-1002).

    python bench/faces.py [--frames 100] [--skip-onnx] [--skip-classical] [--skip-robustness] [--seconds 3]
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
from reelfab.faces.tracking import FaceTracker, swap_stream  # noqa: E402
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


def robustness(seconds: float, scenarios: list[str], seeds: list[int], colour: bool = False) -> None:
    from bench.tracking_v1 import swap_stream as baseline_stream
    from reelfab.devtools.swapeval import score_clip
    from reelfab.devtools.synthetic.hard import SCENARIOS, hard_clip
    from reelfab.faces.identity import profile_performer

    engine = ClassicalEngine()
    source = engine.prepare_source(virtual_person(3))
    print(f"Robustness, classical backend, hard clips of {seconds} s at 360x640 (baseline: the tracker before)")
    for name, seed in ((n, s) for n in scenarios or list(SCENARIOS) for s in seeds):
        clip = hard_clip(name, seed=seed, seconds=None if name == "unseen" else seconds)
        step = max(len(clip.frames) // 16, 1)
        started = time.perf_counter()
        performer = profile_performer(engine, clip.frames[::step][:16])
        profile_s = time.perf_counter() - started
        runs = {}
        for label in ("baseline", "current"):
            started = time.perf_counter()
            if label == "baseline":
                pairs = list(baseline_stream(engine, source, clip.frames, fps=clip.fps))
            else:
                tracker = FaceTracker(engine, fps=clip.fps, performer=performer, colour=colour)
                faces = [tracker.track(frame) for frame in clip.frames]
                outputs = [o for i in range(0, len(faces), 8)
                           for o in engine.swap_batch(source, clip.frames[i:i + 8], faces[i:i + 8])]
                pairs = list(zip(outputs, faces, strict=True))
            fps = len(pairs) / (time.perf_counter() - started)
            score = score_clip(engine, source, clip, [f for f, _ in pairs], [t for _, t in pairs])
            runs[label] = (score, fps)
            print(f"  {label:8s} {score.row()}  {fps:5.1f} frames/s")
        ratio = runs["current"][1] / runs["baseline"][1]
        print(f"  {name} seed {seed}: speed current / baseline {ratio:.2f}; profile pass {profile_s:.2f} s once per clip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each hard clip")
    ap.add_argument("--scenario", action="append", default=[], help="hard clips to run (default: all)")
    ap.add_argument("--seed", action="append", type=int, default=[], help="clip seeds (default: 0, 1, 2)")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--skip-classical", action="store_true")
    ap.add_argument("--skip-robustness", action="store_true")
    ap.add_argument("--colour-smoothing", action="store_true", help="the current tracker with colour=True")
    args = ap.parse_args()
    if not args.skip_classical:
        print(f"Face engine, {args.frames} frames per run, best of 2:")
        classical(args.frames)
    if not args.skip_onnx:
        onnx_batches(args.frames)
    if not args.skip_robustness:
        robustness(args.seconds, args.scenario, args.seed or [0, 1, 2], args.colour_smoothing)


if __name__ == "__main__":
    main()
