"""The ``reelfab`` command."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reelfab.settings import get_settings

app = typer.Typer(
    help="Reelfab: consent-first content factory for short vertical video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _say(line: str) -> None:
    console.print(f"[dim]·[/dim] {line}")


@app.command()
def up() -> None:
    """Start the local stack: PostgreSQL and Kafka on 127.0.0.1, and create the topics."""
    from reelfab.localstack import up as stack_up

    stack_up(get_settings(), say=_say)


@app.command()
def down() -> None:
    """Stop what `reelfab up` started (by pid)."""
    from reelfab.localstack import down as stack_down

    stack_down(get_settings(), say=_say)


@app.command()
def status() -> None:
    """Show whether the local stack runs."""
    from reelfab.localstack import kafka_status, postgres_status

    s = get_settings()
    for name, st in (("kafka", kafka_status(s)), ("postgres", postgres_status(s))):
        print(f"{name}: {json.dumps(st, default=str)}")  # one line each, never wrapped: scripts grep it


@app.command()
def topics(create: bool = typer.Option(False, "--create", help="Create missing topics first.")) -> None:
    """List the broker's topics beside DESIGN.md's catalogue."""
    from reelfab.localstack import ensure_topics
    from reelfab.topics import BY_NAME, DLQ_SUFFIX

    s = get_settings()
    if create:
        ensure_topics(s, say=_say)
    described = asyncio.run(_describe_topics(s.kafka_bootstrap))
    table = Table(title=f"topics on {s.kafka_bootstrap}")
    for col in ("topic", "partitions", "cleanup", "carries", "in catalogue"):
        table.add_column(col, no_wrap=col == "topic", overflow="fold")  # names stay whole, to copy
    missing = [name for name in BY_NAME if name not in described]
    for name in sorted(described):
        parts, cleanup = described[name]
        known = BY_NAME.get(name.removesuffix(DLQ_SUFFIX))
        carries = (known.short_record + (" (dead letters)" if name.endswith(DLQ_SUFFIX) else "")) if known else ""
        table.add_row(name, str(parts), cleanup, carries, "yes" if known else "")
    console.print(table)
    if missing:
        err.print(f"[red]missing from the broker:[/red] {', '.join(missing)} (run `reelfab up` or `reelfab topics --create`)")
        raise typer.Exit(1)


async def _describe_topics(bootstrap: str) -> dict[str, tuple[int, str]]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaConnectionError

    from reelfab.errors import StackError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise StackError(f"Kafka does not answer at {bootstrap} ({exc}); start it with `make up`") from None
    try:
        names = [n for n in await admin.list_topics() if not n.startswith("__")]
        meta = await admin.describe_topics(names)
        parts = {m["topic"]: len(m["partitions"]) for m in meta}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        cleanup: dict[str, str] = {}
        for response in configs:
            for res in response.resources:
                name, entries = res[3], res[4]
                cleanup[name] = next((e[1] for e in entries if e[0] == "cleanup.policy"), "?")
        return {n: (parts.get(n, 0), cleanup.get(n, "?")) for n in names}
    finally:
        await admin.close()


@app.command()
def serve(service: str = typer.Argument(..., help="consent-registry, planner, swapper-gpu, post-producer, publisher or analytics")) -> None:
    """Run one service against the configured Kafka and PostgreSQL until SIGTERM."""
    from reelfab.service import SERVICES, load_service, run_service

    if service not in SERVICES:
        err.print(f"[red]unknown service {service!r}[/red]; one of: {', '.join(SERVICES)}")
        raise typer.Exit(2)
    spec, wire = load_service(service)
    asyncio.run(run_service(spec, get_settings(), wire))


@app.command()
def asyncapi(out: Path = typer.Option(Path("docs/asyncapi.json"), "--out", "-o", help="Where to write it ('-' for stdout).")) -> None:
    """Write the AsyncAPI document FastStream generates from the services' wiring."""
    from reelfab.asyncapi import build_document

    text = json.dumps(build_document(get_settings()), indent=2, sort_keys=True)
    if str(out) == "-":
        print(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    _say(f"wrote {out}")


@app.command("check-schemas")
def check_schemas(repo: Path = typer.Option(Path("."), help="Repository root.")) -> None:
    """Check every schema against its previous committed versions (backward compatibility)."""
    from reelfab.schema_compat import check_repository

    problems = check_repository(repo)
    for p in problems:
        err.print(f"[red]✗[/red] {p}")
    if problems:
        raise typer.Exit(1)
    _say("every schema reads data written with its previous versions")


faces_app = typer.Typer(help="The face engine: detect, check and swap.", no_args_is_help=True)
models_app = typer.Typer(help="ONNX model files: list what the manifest knows, pull one.", no_args_is_help=True)
app.add_typer(faces_app, name="faces")
app.add_typer(models_app, name="models")


def _service_cli(package: str) -> typer.Typer:
    """A service's operator commands live in its own package; the CLI only finds them."""
    import importlib

    return importlib.import_module(f"{package}.cli").app  # type: ignore[no-any-return]


app.add_typer(_service_cli("reelfab_services.consent_registry"), name="consent")


def _jobs_cli() -> typer.Typer:
    from reelfab.jobs_cli import app as jobs

    return jobs


app.add_typer(_jobs_cli(), name="jobs")


def _storage_cli() -> typer.Typer:
    from reelfab.retention.cli import app as storage

    return storage


app.add_typer(_storage_cli(), name="storage")


@app.command()
def demo(folder: Path = typer.Option(Path(".reelfab/demo"), help="Where the demo's inputs and final video go.")) -> None:
    """Run the media path end to end on the local stack with a generated person (`make up` first)."""
    from reelfab.demo import run_demo

    asyncio.run(run_demo(get_settings(), folder, _say))  # it says what it made


@app.command()
def setup() -> None:
    """Install what the media path needs from Debian (ffmpeg) where it is missing."""
    from reelfab.media.tools import ensure_ffmpeg

    _say(f"ffmpeg: {ensure_ffmpeg(say=_say)}")


@faces_app.command("swap")
def faces_swap(
    source: Path = typer.Option(..., "--source", "-s", help="Image of the face to put in."),
    target: Path = typer.Option(..., "--target", "-t", help="Template clip."),
    subject: str = typer.Option(..., "--subject", help="The enrolled subject whose consent covers SOURCE."),
    platform: str = typer.Option("tiktok", help="Where the result may go (checked against the consent's scope)."),
    tag: list[str] = typer.Option([], help="The template's tags (checked against the consent's scope)."),
    commercial: bool = typer.Option(False, "--commercial/--no-commercial", help="Will the result be used commercially?"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the swapped clip (.mp4)."),
    backend: str = typer.Option("", help="classical, onnx or facefusion (default: REELFAB_FACE_BACKEND)."),
    detect_every: int = typer.Option(5, help="Run the detector every N frames; track landmarks in between."),
    batch_size: int = typer.Option(8, help="Frames per batch through the swapper."),
) -> None:
    """Swap the face of SOURCE onto the performer of TARGET, if SUBJECT's consent covers it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from reelfab.consent.client import RegistryClient, now_request
    from reelfab.faces.backends import get_engine
    from reelfab.faces.clip import swap_clip
    from reelfab.media.frames import read_image
    from reelfab.media.probe import probe

    settings = get_settings()
    source_bytes = source.read_bytes() if source.is_file() else b""
    # one run of this command is one use of the face: it gets its own id, counted once in the daily cap
    run_id = f"cli-swap-{uuid.uuid4().hex[:12]}"
    decision = RegistryClient.from_settings(settings).check(
        now_request(subject, purpose="swap", platform=platform, tags=tuple(tag), commercial=commercial),
        image_bytes=source_bytes or None, consume=True, job_id=run_id
    )
    if not decision.allowed:
        err.print(f"[red]refused[/red]: consent denied ({decision.reason}): {decision.detail}")
        raise typer.Exit(3)
    _say(f"consent: {decision.detail}")
    name = backend or settings.face_backend
    if name == "facefusion":
        from reelfab.faces.facefusion import FaceFusionBackend

        run = FaceFusionBackend.from_settings(settings).swap_clip(source, target, out)
        _say(f"FaceFusion wrote {run.output}")
        return
    image = read_image(source)
    info = probe(target)
    engine = get_engine(name, settings)
    with Progress(TextColumn("[bold]swapping[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TextColumn("{task.fields[fps]:.1f} frames/s"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("swap", total=info.frames, fps=0.0)
        started = time.perf_counter()

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            bar.update(task, advance=n, fps=done / max(time.perf_counter() - started, 1e-6))

        result = swap_clip(engine, image, target, out, detect_every=detect_every, batch_size=batch_size, progress=advance)
    _say(
        f"wrote {out}: {result.frames} frames, face in {result.frames_with_face}, "
        f"{result.fps:.1f} frames/s with the {engine.name} backend"
    )


@faces_app.command("detect")
def faces_detect(image: Path, backend: str = typer.Option("", help="classical or onnx.")) -> None:
    """List the faces in IMAGE: box, detector score, size."""
    from reelfab.faces.backends import get_engine
    from reelfab.media.frames import read_image

    settings = get_settings()
    engine = get_engine(backend or settings.face_backend, settings)
    faces = sorted(engine.detect(read_image(image)), key=lambda f: -f.score)
    if not faces:
        err.print(f"no face found in {image}")
        raise typer.Exit(1)
    table = Table(title=f"faces in {image}")
    for col in ("#", "box (x1, y1, x2, y2)", "score", "size px", "68 landmarks"):
        table.add_column(col)
    for i, f in enumerate(faces, 1):
        table.add_row(str(i), ", ".join(f"{v:.0f}" for v in f.box), f"{f.score:.2f}", f"{f.size:.0f}",
                      "yes" if f.landmarks68 is not None else "no")
    console.print(table)


@faces_app.command("qc")
def faces_qc(
    path: Path,
    template: bool = typer.Option(False, "--template", help="PATH is a template clip, not a source image."),
    backend: str = typer.Option("", help="classical or onnx."),
) -> None:
    """Run the source-face (or template) quality gate and print its reasons."""
    from reelfab.faces.backends import get_engine
    from reelfab.faces.qc import check_source, check_template
    from reelfab.media.frames import read_image

    settings = get_settings()
    engine = get_engine(backend or settings.face_backend, settings)
    result = check_template(path, engine) if template else check_source(read_image(path), engine)
    for key, value in result.metrics.items():
        console.print(f"  {key}: {value}")
    for reason in result.reasons:
        err.print(f"[red]✗[/red] {reason.code}: {reason.message}")
    if not result.passed:
        raise typer.Exit(1)
    _say(f"{path}: passed")


@faces_app.command("demo-assets")
def faces_demo_assets(folder: Path = typer.Argument(Path(".reelfab/demo-assets"))) -> None:
    """Generate virtual people, template clips and music beds (no real person in any of them)."""
    from reelfab.faces.synthetic import demo_assets

    written = demo_assets(folder)
    _say(f"wrote {sum(len(v) for v in written.values() if isinstance(v, list))} files under {folder}")


@models_app.command("list")
def models_list() -> None:
    """The model manifest, with what is installed."""
    from reelfab.faces.backends import models_dir
    from reelfab.faces.onnx.store import ModelStore

    store = ModelStore(models_dir(get_settings()))
    table = Table(title=f"models ({store.root})")
    for col in ("name", "kind", "licence", "commercial", "installed"):
        table.add_column(col)
    for row in store.list():
        table.add_row(row["name"], row["kind"], row["licence"], "yes" if row["commercial"] else "no",
                      "[green]yes[/green]" if row["installed"] else "no")
    console.print(table)


@models_app.command("pull")
def models_pull(name: str) -> None:
    """Download a model from the manifest's URLs and verify its hash."""
    from reelfab.faces.backends import models_dir
    from reelfab.faces.onnx.store import ModelStore

    settings = get_settings()
    path = ModelStore(models_dir(settings)).pull(name, commercial_mode=settings.commercial_mode)
    _say(f"{name}: verified and installed at {path}")


def main() -> None:
    """Entry point: a known failure prints one line naming what went wrong, not a traceback."""
    from reelfab.errors import ReelfabError

    try:
        app()
    except (ReelfabError, ValueError, OSError) as exc:
        if os.environ.get("REELFAB_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
