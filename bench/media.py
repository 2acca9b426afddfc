"""Media path benchmarks, side by side in one run on the same generated clip (no real person):

(a) post-production in one ffmpeg pass (reelfab.media.render) vs a naive three-pass script doing the
    same work (bench/media_naive.py); ratio of wall and CPU time (target >= 1.8x).
(b) one job end to end through the services (consent registry, swapper-gpu, post-producer on the local
    stack, as `make demo` runs them) vs the swap and post-production stages called directly on the
    same inputs; overhead in percent (target <= 10 %).
(c) lossy encodes at delivery quality per video: the swapper's mezzanine (lossless H.264 RGB) is decoded back and
    compared with the swapped frames it was written from (bit-exact means lossless, PSNR infinite),
    so the render's x264 encode is the only lossy one.

    python bench/media.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.media_naive import naive_three_pass  # noqa: E402
from reelfab.devtools.synthetic import music_bed, template_clip, virtual_person  # noqa: E402
from reelfab.faces.classical import ClassicalEngine  # noqa: E402
from reelfab.faces.tracking import swap_stream  # noqa: E402
from reelfab.media.frames import FrameWriter, read_frames  # noqa: E402
from reelfab.media.probe import probe  # noqa: E402
from reelfab.media.render import RenderJob, RenderSpec, render  # noqa: E402
from reelfab_swapper_gpu.swap import MEZZANINE_CODEC  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *args):  # type: ignore[no-untyped-def]
    cpu, wall = _children_cpu(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - wall, _children_cpu() - cpu


def one_vs_three(tmp: Path, seconds: float) -> None:
    clip = template_clip(tmp / "template.mp4", seed=1, seconds=seconds, size=(720, 1280))
    music = music_bed(tmp / "bed.m4a", seed=1, seconds=8.0)
    spec = RenderSpec()
    results = {"one pass": [], "three passes": []}
    for i in range(2):  # alternate, so drift hits both
        job = RenderJob(input=clip.path, output=tmp / f"one{i}.mp4", music=music, caption_text="Dance with me, virtually",
                        metadata={"job_id": "bench"})
        results["one pass"].append(timed(render, job, spec))
        job3 = RenderJob(input=clip.path, output=tmp / f"three{i}.mp4", music=music, caption_text="Dance with me, virtually",
                         metadata={"job_id": "bench"})
        results["three passes"].append(timed(naive_three_pass, job3, spec))
    one = min(results["one pass"]), min(r[1] for r in results["one pass"])
    three = min(results["three passes"]), min(r[1] for r in results["three passes"])
    print(f"(a) post-production of a {seconds:.0f} s 720x1280 clip to 1080x1920 (captions, label, fades, music, loudnorm), best of 2:")
    print(f"    one pass      wall {one[0][0]:6.2f} s   ffmpeg CPU {one[1]:6.2f} s")
    print(f"    three passes  wall {three[0][0]:6.2f} s   ffmpeg CPU {three[1]:6.2f} s")
    print(f"    ratio three/one: wall {three[0][0] / one[0][0]:.2f}x   CPU {three[1] / one[1]:.2f}x")


def lossless_mezzanine(tmp: Path) -> None:
    clip = template_clip(tmp / "m.mp4", seed=2, seconds=2.0, size=(540, 960), with_audio=False)
    engine = ClassicalEngine()
    source = engine.prepare_source(virtual_person(5))
    swapped = [f for f, _ in swap_stream(engine, source, read_frames(clip.path))]
    with FrameWriter(tmp / "mezzanine.mkv", 540, 960, 25, codec=MEZZANINE_CODEC) as w:
        for f in swapped:
            w.write(f)
    back = list(read_frames(tmp / "mezzanine.mkv"))
    mse = float(np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(swapped, back, strict=True)]))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
    codec = probe(tmp / "mezzanine.mkv").codec
    print("(c) lossy encodes per video:")
    print(f"    mezzanine {codec}: {len(back)} frames, PSNR vs the swapped frames {psnr} dB (bit-exact: {mse == 0})")
    print(f"    lossy encodes at delivery quality: {0 if mse == 0 else 1} (mezzanine) + 1 (render) = {1 if mse == 0 else 2}")


def services_vs_stages(tmp: Path) -> None:
    """(b) one job through the three services on the local stack vs the same two stages called directly."""
    import asyncio

    import cv2

    from reelfab.devtools.demo import run_demo
    from reelfab.media.c2pa_sign import make_test_ca, sign_video
    from reelfab.media.spec_check import verify
    from reelfab.settings import get_settings
    from reelfab_swapper_gpu.swap import run_swap

    result = asyncio.run(run_demo(get_settings(), tmp / "demo", lambda line: None))
    engine = ClassicalEngine()
    started = time.perf_counter()
    out = run_swap(engine, cv2.imread(str(result.face)), result.template, tmp)
    swap_s = time.perf_counter() - started
    material = make_test_ca(tmp / "ca")
    started = time.perf_counter()
    job = RenderJob(input=out.video, output=tmp / "r.mp4", duration_s=out.info.duration_s, music=result.music,
                    caption_text="A virtual dance, made with consent", metadata={"job_id": "bench"})
    render(job, RenderSpec())
    verify(job.output, RenderSpec(), out.info.duration_s)
    sign_video(job.output, tmp / "signed.mp4", material, title="bench", ingredients=[])
    post_s = time.perf_counter() - started
    print("(b) one 8 s job: through the services (Kafka, consent checks, storage) vs the stages called directly:")
    print(f"    services {result.job_seconds:6.2f} s   stages {swap_s:6.2f} + {post_s:6.2f} = {swap_s + post_s:6.2f} s")
    print(f"    overhead {100 * (result.job_seconds / (swap_s + post_s) - 1):+.1f} %  (target <= 10 %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--skip-services", action="store_true", help="skip (b), which needs the local stack")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_vs_three(Path(tmp), args.seconds)
        if not args.skip_services:
            services_vs_stages(Path(tmp))
        lossless_mezzanine(Path(tmp))


if __name__ == "__main__":
    main()
