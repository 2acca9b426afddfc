"""One job through the services against the encode floor, side by side in one run (issue: "a job
within 1.5x of the encode floor"). Generated template, music and person only (no real person).

- The job: the consent registry, swapper-gpu and post-producer run in this process over the local
  stack, started once, exactly as `make demo` runs them; a virtual person consents through the
  registry's HTTP API; each job (a new job_id) is a swap.requested record, timed from its publish
  to its render.completed on the topic (read by a consumer positioned before the publish).
- The floor: what any job must do at least, in one ffmpeg command on the same template: decode,
  scale to the render spec's size at its fps, x264 at its preset/crf/profile/pix_fmt
  (reelfab.media.render.RenderSpec), the same music mixed under the template's audio, AAC, mp4.
  No swap, captions, label, fades, loudnorm, spec check or signature.

Runs alternate floor, job, floor, job ... on one template (the first job is reported as cold, the
rest as warm; --fresh-template gives every run a template of its own seed: all cold). Per job it
prints the time each stage took (the deltas of reelfab.metrics.STAGE_SECONDS' sums, every
(service, stage) the services recorded; consume:<topic> includes its handler's time and is left
out of the sums) and "hops": the job's time less the swapper's and post-producer's stages, i.e.
Kafka, the outbox relays, queueing and whatever no stage accounts for (split into the part inside
the two handlers, consume:* less their stages, and the part between them). CPU seconds are printed
beside the wall times (the job's: this process, where the services run, and its ffmpeg children):
on a loaded machine they move far less than wall time does.

Settings come from the environment (REELFAB_*; the local stack must be up); --env KEY=VALUE
overrides a Settings field for the workers (swapper-gpu, post-producer):

    python bench/job.py [--seconds 8] [--runs 5] [--fresh-template] [--env fused_render=true] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reelfab.contracts.topics import JOB_FAILED, RENDER_COMPLETED, SWAP_COMPLETED, SWAP_REQUESTED  # noqa: E402
from reelfab.faces.qc import TemplateRules  # noqa: E402
from reelfab.media.render import RenderSpec  # noqa: E402
from reelfab.media.tools import tool  # noqa: E402
from reelfab.metrics import STAGE_SECONDS  # noqa: E402
from reelfab.settings import Settings, get_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
Stage = tuple[str, str]  # (service, stage)


@dataclass
class Run:
    index: int
    kind: str  # cold | warm
    template_seed: int
    floor_s: float
    floor_cpu_s: float
    job_s: float = 0.0
    job_cpu_s: float = 0.0  # this process (the three services) and its children (their ffmpeg)
    job_id: str = ""
    outcome: str = ""  # render.completed, or job.failed: <stage> <reason_code>
    swap_fps: float | None = None
    frames: int | None = None
    stages: dict[str, float] = field(default_factory=dict)  # "service:stage" -> seconds in this job
    staged_s: float = 0.0  # the swapper's and post-producer's stages, consume:* left out
    hops_s: float = 0.0
    unstaged_s: float = 0.0  # of the hops: inside those services' handlers (consume:*) but in no stage

    @property
    def completed(self) -> bool:
        return self.outcome == "render.completed"

    @property
    def ratio(self) -> float | None:
        return self.job_s / self.floor_s if self.completed else None  # a failed job is no measurement

    @property
    def cpu_ratio(self) -> float | None:
        return self.job_cpu_s / self.floor_cpu_s if self.completed else None


def say(line: str) -> None:
    print(f"  · {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ settings


def overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """--env KEY=VALUE pairs as typed Settings values (KEY: the field, or its REELFAB_ variable)."""
    from pydantic import TypeAdapter, ValidationError

    update: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name = key.strip().lower().removeprefix("reelfab_")
        if not sep or not name:
            sys.exit(f"--env {pair!r}: expected KEY=VALUE")
        info = Settings.model_fields.get(name)
        if info is None:
            sys.exit(f"--env {key}: {name!r} is not a field of reelfab.settings.Settings")
        kind: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        try:
            update[name] = TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            sys.exit(f"--env {key}: {value!r} is not a valid {name}: {exc.errors()[0]['msg']}")
    return update


# --------------------------------------------------------------------------------------------- floor


def floor_command(template: Path, music: Path, out: Path, spec: RenderSpec, duration: float) -> list[str]:
    """Decode, scale, x264 and the music under the template's audio, AAC: the least a job's render does."""
    layout = "stereo" if spec.channels == 2 else f"{spec.channels}c"
    to_spec = f"aresample={spec.sample_rate},aformat=channel_layouts={layout}"
    graph = ";".join([
        f"[0:v:0]fps={spec.fps},scale={spec.width}:{spec.height},format={spec.pix_fmt}[v]",
        f"[0:a:0]{to_spec}[orig]",
        f"[1:a:0]{to_spec},volume={spec.music_gain_db:g}dB[music]",
        "[orig][music]amix=inputs=2:duration=first:normalize=0[a]",
    ])
    return [
        tool("ffmpeg"), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
        "-i", str(template), "-stream_loop", "-1", "-i", str(music),
        "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-profile:v", spec.profile, "-pix_fmt", spec.pix_fmt,
        "-crf", str(spec.crf), "-preset", spec.preset, "-r", str(spec.fps),
        "-c:a", spec.audio_codec, "-b:a", spec.audio_bitrate, "-ar", str(spec.sample_rate), "-ac", str(spec.channels),
        "-t", f"{duration:.3f}", "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def run_floor(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of the floor's ffmpeg."""
    cpu, started = cpu_seconds(), time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started, cpu_seconds() - cpu


def cpu_seconds() -> float:
    """User + system CPU of this process (the services run in it) and of its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ------------------------------------------------------------------------------------ stage metrics


def stage_sums() -> dict[Stage, float]:
    """Every (service, stage) of reelfab_stage_seconds recorded in this process so far: its _sum."""
    name = next(iter(STAGE_SECONDS.describe())).name
    from prometheus_client import REGISTRY

    sums: dict[Stage, float] = {}
    for metric in REGISTRY.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name == f"{name}_sum":
                    sums[(sample.labels["service"], sample.labels["stage"])] = sample.value
    return sums


def stage_deltas(before: dict[Stage, float], after: dict[Stage, float]) -> dict[Stage, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


# ------------------------------------------------------------------------------------------ follower


class Follower:
    """A consumer of the job's outcome topics positioned at their ends before the publish, so the
    render.completed is seen when it lands (no polling interval in the job's time)."""

    def __init__(self, settings: Settings, codec: Any) -> None:
        from aiokafka import AIOKafkaConsumer

        self.codec = codec
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=10, max_partition_fetch_bytes=settings.broker_max_message_bytes,
        )

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        tps = []
        for topic in (SWAP_COMPLETED, RENDER_COMPLETED, JOB_FAILED):
            partitions = self.consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await self.consumer._client.force_metadata_update()  # noqa: SLF001 - first look at a topic
                partitions = self.consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.mark()

    async def mark(self) -> None:
        """Skip everything already on the topics (call before publishing the next job)."""
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)  # resolves the lazy seek now

    async def follow(self, job_id: str, timeout: float = 900) -> dict[str, tuple[dict[str, Any], float]]:
        """The job's records by topic with the perf_counter they were seen at, until render.completed or job.failed."""
        seen: dict[str, tuple[dict[str, Any], float]] = {}
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            batch = await self.consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    if r.key == job_id.encode() and r.topic not in seen:
                        seen[r.topic] = (self.codec.decode(r.value).value, now)
            if RENDER_COMPLETED in seen or JOB_FAILED in seen:
                return seen
        raise TimeoutError(f"no result for {job_id} within {timeout:.0f} s")

    async def stop(self) -> None:
        await self.consumer.stop()


# ---------------------------------------------------------------------------------------------- runs


async def bench(
    settings: Settings, workers_update: dict[str, Any], args: argparse.Namespace, tmp: Path
) -> tuple[list[Run], list[str]]:
    """The runs, and the services whose stages a job's time is made of, in the job's order."""
    import asyncpg
    import cv2

    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.devtools.demo import give_consent
    from reelfab.devtools.embedded import RunningService
    from reelfab.devtools.synthetic import music_bed, template_clip, virtual_person
    from reelfab.storage import open_store
    from reelfab_consent_registry import main as registry_main
    from reelfab_consent_registry import tokens
    from reelfab_post_producer import main as post_main
    from reelfab_swapper_gpu import main as swapper_main

    settings = settings.model_copy(update={"consent_asset_kind": "synthetic", "log_level": "WARNING"})
    face = tmp / "vera.png"
    cv2.imwrite(str(face), virtual_person(1))
    music = await asyncio.to_thread(music_bed, tmp / "bed.m4a", seed=1, seconds=20.0)
    spec = RenderSpec()

    registry = RunningService(registry_main, settings)
    await registry.ready()
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    admin = await tokens.create_token(pool, registry.spec.db_schema, f"bench-admin-{uuid.uuid4().hex[:6]}", "admin")
    reader = await tokens.create_token(pool, registry.spec.db_schema, f"bench-worker-{uuid.uuid4().hex[:6]}", "reader")
    await pool.close()
    await give_consent(registry.url, admin, face, say)  # no daily cap: as many jobs as we like

    workers = settings.model_copy(update={"consent_token": reader, "consent_registry_url": registry.url, **workers_update})
    swapper, post = RunningService(swapper_main, workers), RunningService(post_main, workers)
    pipeline = [swapper.spec.name, post.spec.name]
    codec = default_codec(settings)
    bus = KafkaBus(settings, "bench-job", codec)
    follower = Follower(settings, codec)
    runs: list[Run] = []
    try:
        await swapper.ready()
        await post.ready()
        await bus.start()
        await follower.start()
        say(f"services up: registry {registry.url}, swapper-gpu {swapper.url}, post-producer {post.url}")
        store = open_store(settings.storage_root)
        template = None
        for i in range(args.runs):
            seed = 1 + i if args.fresh_template else 1
            if template is None or args.fresh_template:
                template = await asyncio.to_thread(template_clip, tmp / f"template-{seed}.mp4", seed=seed,
                                                   seconds=args.seconds, size=(720, 1280))
            kind = "cold" if args.fresh_template or i == 0 else "warm"
            command = floor_command(template.path, music, tmp / "floor.mp4", spec, args.seconds)
            run = Run(i + 1, kind, seed, *await asyncio.to_thread(run_floor, command))
            await one_job(run, bus, follower, store, face, template.path, music, set(pipeline))
            runs.append(run)
            ratio = f"ratio {run.ratio:.2f}" if run.ratio is not None else "no ratio: the job did not complete"
            say(f"run {run.index} ({kind}): floor {run.floor_s:.2f} s, job {run.job_s:.2f} s ({run.outcome}), {ratio}")
    finally:
        await follower.stop()
        await bus.stop()
        for service in (post, swapper, registry):
            await service.stop()
    return runs, pipeline


async def one_job(run: Run, bus: Any, follower: Follower, store: Any, face: Path, template: Path,
                  music: Path, staged_services: set[str]) -> None:
    run.job_id = job_id = f"bench-{uuid.uuid4().hex[:8]}"
    from reelfab.devtools.demo import swap_request

    request = swap_request(store, job_id, face, template, music, producer="bench")
    await follower.mark()
    before = stage_sums()
    cpu, submitted = cpu_seconds(), time.perf_counter()
    await bus.publish(SWAP_REQUESTED, request)
    seen = await follower.follow(job_id)
    end_topic = RENDER_COMPLETED if RENDER_COMPLETED in seen else JOB_FAILED
    value, seen_at = seen[end_topic]
    run.job_s, run.job_cpu_s = seen_at - submitted, cpu_seconds() - cpu
    if end_topic == RENDER_COMPLETED:
        run.outcome = "render.completed"
    else:
        run.outcome = f"job.failed: {value['stage']} {value['reason_code']}: {value['reason']}"
    if SWAP_COMPLETED in seen:
        run.swap_fps, run.frames = float(seen[SWAP_COMPLETED][0]["fps"]), int(seen[SWAP_COMPLETED][0]["frames"])
    await asyncio.sleep(1.0)  # stages observed after the outcome's publish (consume:* ends after its handler)
    deltas = stage_deltas(before, stage_sums())
    run.stages = {f"{svc}:{stage}": s for (svc, stage), s in sorted(deltas.items())}
    ours = {(svc, stage): s for (svc, stage), s in deltas.items() if svc in staged_services}
    run.staged_s = sum(s for (_, stage), s in ours.items() if not stage.startswith("consume:"))
    run.hops_s = run.job_s - run.staged_s
    run.unstaged_s = sum(s for (_, stage), s in ours.items() if stage.startswith("consume:")) - run.staged_s


# -------------------------------------------------------------------------------------------- report


def header(args: argparse.Namespace, workers_update: dict[str, Any], settings: Settings) -> list[str]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = " (uncommitted changes to tracked files)" if git("status", "--porcelain", "--untracked-files=no") else ""
    ffmpeg = subprocess.run([tool("ffmpeg"), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    spec = RenderSpec()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"Command: python {shlex.join(['bench/job.py', *sys.argv[1:]])}",
        f"Commit: {git('rev-parse', '--short', 'HEAD')}{dirty}   date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"Machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), load average {load}; {ffmpeg}",
        f"Stack: Kafka {settings.kafka_bootstrap}, PostgreSQL {settings.postgres_host}:{settings.postgres_port}; "
        f"face backend {settings.face_backend}; worker overrides: {workers_update or 'none'}",
        f"Template: {args.seconds:g} s 720x1280 generated (seed 1{', then one seed per run' if args.fresh_template else ''}), "
        f"rendered to {spec.width}x{spec.height} {spec.fps} fps x264 {spec.preset} crf {spec.crf} {spec.profile} {spec.pix_fmt}",
    ]


def table(runs: list[Run], pipeline: list[str]) -> list[str]:
    # services in the job's order, each one's stages in the order the registry first saw them
    first_seen = list(dict.fromkeys(s for r in runs for s in r.stages))
    rank = {name: i for i, name in enumerate(pipeline)}
    stages = sorted(first_seen, key=lambda s: (rank.get(s.split(":")[0], len(rank)), first_seen.index(s)))
    width = max([len(s) for s in stages] + [34])
    cols = [f"{r.index} {r.kind}" for r in runs]

    def row(name: str, values: Iterable[float | None], fmt: str = "{:9.2f}") -> str:
        cells = ["{:>9}".format("-") if v is None else fmt.format(v) for v in values]
        return f"{name:<{width}}" + "".join(cells)

    lines = [f"{'seconds per run':<{width}}" + "".join(f"{c:>9}" for c in cols)]
    for s in stages:
        lines.append(row(("  " if ":consume:" in s else "") + s, (r.stages.get(s) for r in runs)))
    lines += [
        row("stages (swapper + post, no consume:*)", (r.staged_s for r in runs)),
        row("hops (job - stages)", (r.hops_s for r in runs)),
        row("  in handlers, no stage (consume - stages)", (r.unstaged_s for r in runs)),
        row("  between handlers (Kafka, outboxes, ...)", (r.hops_s - r.unstaged_s for r in runs)),
        row("job (publish -> render.completed)", (r.job_s for r in runs)),
        row("floor (one ffmpeg)", (r.floor_s for r in runs)),
        row("ratio job/floor", (r.ratio for r in runs)),
        row("CPU s: job (services + their ffmpeg)", (r.job_cpu_s for r in runs)),
        row("CPU s: floor", (r.floor_cpu_s for r in runs)),
        row("CPU ratio job/floor", (r.cpu_ratio for r in runs)),
        row("swap frames/s (swap.completed)", (r.swap_fps for r in runs), "{:9.1f}"),
    ]
    return lines


def summary(runs: list[Run]) -> dict[str, float | None]:
    """Medians over the jobs that completed, warm and cold apart (cold: the first job, or every job
    with --fresh-template)."""
    ok = [r for r in runs if r.completed]
    out: dict[str, float | None] = {}
    for kind in ("warm", "cold"):
        mine = [r for r in ok if r.kind == kind]
        out[f"{kind}_runs"] = len(mine)
        out[f"{kind}_ratio"] = statistics.median(r.job_s / r.floor_s for r in mine) if mine else None
        out[f"{kind}_cpu_ratio"] = statistics.median(r.job_cpu_s / r.floor_cpu_s for r in mine) if mine else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="the template's length")
    ap.add_argument("--runs", type=int, default=5, help="floor+job pairs")
    ap.add_argument("--fresh-template", action="store_true", help="a newly generated template per run (all cold)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a Settings override for the workers")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    args = ap.parse_args()
    rules = TemplateRules()  # a template the swapper would refuse measures nothing
    if args.runs < 1 or not rules.min_seconds <= args.seconds <= rules.max_seconds:
        ap.error(f"--runs must be at least 1 and --seconds within {rules.min_seconds:g}-{rules.max_seconds:g} "
                 "(the template rules' durations)")
    workers_update = overrides(args.env)
    settings = get_settings()
    lines = header(args, workers_update, settings)
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        runs, pipeline = asyncio.run(bench(settings, workers_update, args, Path(tmp)))
    lines += table(runs, pipeline)
    for r in runs:
        if r.outcome != "render.completed":
            lines.append(f"run {r.index}: {r.outcome} (left out of the ratios)")
    s = summary(runs)

    def median(kind: str, key: str) -> str:
        value = s[f"{kind}_{key}"]
        return "n/a" if value is None else f"{value:.2f}"

    lines.append(f"job/floor, median of {s['warm_runs']} warm: {median('warm', 'ratio')} (CPU {median('warm', 'cpu_ratio')});  "
                 f"of {s['cold_runs']} cold: {median('cold', 'ratio')} (CPU {median('cold', 'cpu_ratio')})   (target <= 1.5)")
    lines.append(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"header": lines[:5], "runs": [{**asdict(r), "ratio": r.ratio, "cpu_ratio": r.cpu_ratio} for r in runs],
                                         **s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
