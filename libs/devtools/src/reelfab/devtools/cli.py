"""Developer commands of the ``reelfab`` CLI: the local stack, the demo, schema checks, the face engine on
files, and job submission by hand. Installed with reelfab-devtools only, never in a service image."""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from reelfab.settings import get_settings

console = Console()
err = Console(stderr=True)


def _say(line: str) -> None:
    console.print(f"[dim]·[/dim] {line}")


app = typer.Typer()  # the commands below are registered on the main app by register()
faces_app = typer.Typer(help="The face engine on files: detect, check and swap.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Start the local stack: PostgreSQL and Kafka on 127.0.0.1, and create the topics."""
    from reelfab.devtools.localstack import up as stack_up

    stack_up(get_settings(), say=_say)


@app.command()
def down() -> None:
    """Stop what `reelfab up` started (by pid)."""
    from reelfab.devtools.localstack import down as stack_down

    stack_down(get_settings(), say=_say)


@app.command()
def status() -> None:
    """Show whether the local stack runs."""
    from reelfab.devtools.localstack import kafka_status, postgres_status

    s = get_settings()
    for name, st in (("kafka", kafka_status(s)), ("postgres", postgres_status(s))):
        print(f"{name}: {json.dumps(st, default=str)}")  # one line each, never wrapped: scripts grep it


@app.command("check-schemas")
def check_schemas(repo: Path = typer.Option(Path("."), help="Repository root.")) -> None:
    """Check every schema against its previous committed versions (backward compatibility)."""
    from reelfab.contracts.compat import check_repository

    problems = check_repository(repo)
    for p in problems:
        err.print(f"[red]✗[/red] {p}")
    if problems:
        raise typer.Exit(1)
    _say("every schema reads data written with its previous versions")


@app.command()
def demo(
    people: int = typer.Option(4, "--people", help="Virtual people who consent, 2 to 8 (one more, who never consents, is always added)."),
    templates: int = typer.Option(3, "--templates", help="Template clips, 1 to 6 (each must pass the template QC)."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds of plan → post → engagement → policy."),
    batch: int = typer.Option(3, "--batch", help="Jobs the planner plans per round."),
    backend: str = typer.Option("classical", "--backend", help="Face swap backend: classical, onnx or facefusion."),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Where the videos, report.json, index.html and the "
                             "log go (emptied first if an earlier demo made it; any other non-empty folder is refused)."),
    publish_to: str = typer.Option("dryrun", "--publish-to", help="dryrun (a local folder) or tiktok (the client, "
                                   "to REELFAB_TIKTOK_API_URL)."),
    account: str = typer.Option(None, "--account", help="The posting account (`reelfab accounts add`); "
                                "dry-run default: demo-dryrun."),
    embedded: bool = typer.Option(False, "--embedded", help="The in-process bus instead of Kafka (no Java needed; "
                                  "PostgreSQL is started if it is not running)."),
) -> None:
    """The whole factory on this machine: six services in one process, generated people with consent,
    rounds of plan, swap, render, review, dry-run posts and engagement; a trend, a revocation and a
    denied job mid-run. Leaves videos, report.json and index.html (`make demo` starts the stack first)."""
    from rich.console import Console

    from reelfab.devtools.demo import DemoOptions, DemoRefused, main_exit_code, run_demo
    from reelfab.devtools.demo.live import View

    options = DemoOptions(people=people, templates=templates, rounds=rounds, batch=batch, backend=backend, out=out,
                          publish_to=publish_to, account=account, embedded=embedded)
    from reelfab.errors import StackError

    view, began = View(Console()), time.time()
    try:
        report = asyncio.run(run_demo(get_settings(), options, view))
    except (DemoRefused, StackError) as exc:
        err.print(f"[red]✗[/red] {exc}", highlight=False)
        log = out / "demo.log"
        if log.is_file() and log.stat().st_size and log.stat().st_mtime >= began:  # this run wrote to it
            err.print(f"  the services' log: {str(log)!r}", highlight=False)
        raise typer.Exit(1) from None
    checks, meta = report["checks"], report["demo"]
    gone = len(report.get("taken_down") or [])
    kept = f"{checks['videos']} video{'' if checks['videos'] == 1 else 's'} posted and kept" + (
        f" ({gone} more taken down with the revocation)" if gone else "")
    _say(f"{kept} in {meta['seconds']:.0f} s; spec passed {checks['spec_passed']}, "
         f"C2PA valid and AI-labelled {checks['c2pa_valid']}, revoked face after the revocation "
         f"{checks['revoked_face_after_revocation']}, unconsented face {checks['unconsented_face']}")
    for problem in checks["problems"]:
        err.print(f"[red]✗[/red] {problem}")
    where = out.resolve()
    _say(f"open {shlex.quote(str(where / 'index.html'))} in a browser; report: {shlex.quote(str(where / 'report.json'))}; "
         f"log: {shlex.quote(str(where / 'demo.log'))}")
    raise typer.Exit(main_exit_code(report))


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
    min_swapped_share: float | None = typer.Option(
        None, help="Fail (and keep no output) when the face went into fewer of the frames than this share "
        "(0..1; default: REELFAB_SWAP_MIN_SWAPPED_SHARE, 0.8).",
    ),
) -> None:
    """Swap the face of SOURCE onto the performer of TARGET, if SUBJECT's consent covers it. Only the
    performer's face is swapped (a drawing, a poster or another person is not); the command reports
    how many frames were swapped, held, lost and rejected, and fails when too few were swapped."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from reelfab.consent.client import RegistryClient, now_request
    from reelfab.faces.backends import get_engine
    from reelfab.faces.clip import swap_clip
    from reelfab.faces.errors import SwapQualityError
    from reelfab.faces.report import QualityGate
    from reelfab.media.frames import read_image
    from reelfab.media.probe import probe

    settings = get_settings()
    share = settings.swap_min_swapped_share if min_swapped_share is None else min_swapped_share
    if not 0 <= share <= 1:
        err.print(f"[red]refused[/red]: --min-swapped-share must be within 0..1, not {share}")
        raise typer.Exit(2)
    if out.exists() and target.exists() and out.resolve() == target.resolve():
        err.print(f"[red]refused[/red]: --out {out} is the template itself: choose another path")
        raise typer.Exit(2)
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

        try:
            result = swap_clip(engine, image, target, out, detect_every=detect_every, batch_size=batch_size,
                               progress=advance, gate=QualityGate(share))
        except SwapQualityError as exc:
            err.print(f"[red]failed[/red]: {exc}; no output kept")
            raise typer.Exit(4) from exc
    report = result.report
    _say(f"wrote {out}: {result.fps:.1f} frames/s with the {engine.name} backend")
    _say(report.summary())


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
    from reelfab.devtools.synthetic import demo_assets

    written = demo_assets(folder)
    _say(f"wrote {sum(len(v) for v in written.values() if isinstance(v, list))} files under {folder}")


@app.command()
def codegen(
    check: bool = typer.Option(False, "--check", help="Only check that the generated files are up to date."),
    repo: Path = typer.Option(Path("."), help="Repository root."),
) -> None:
    """Generate the contracts package's modules from schemas/ (records, topics, the schema texts)."""
    from reelfab.devtools.codegen import CodegenError, stale, write

    try:
        _codegen(check, repo, stale, write)
    except CodegenError as exc:
        err.print(f"[red]✗[/red] {exc}")
        raise typer.Exit(1) from None


def _codegen(check: bool, repo: Path, stale: Any, write: Any) -> None:
    if check:
        out_of_date = stale(repo)
        for path in out_of_date:
            err.print(f"[red]✗[/red] {path} differs from what schemas/ generates")
        if out_of_date:
            err.print("run `make codegen` and commit the result")
            raise typer.Exit(1)
        _say("the generated contracts match schemas/")
        return
    changed = write(repo)
    _say(f"wrote {', '.join(changed)}" if changed else "the generated contracts were already up to date")


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``): add the developer commands to the ``reelfab`` command."""
    from reelfab.devtools.jobs_cli import app as jobs

    for command in app.registered_commands:
        main.registered_commands.append(command)
    main.add_typer(faces_app, name="faces")
    main.add_typer(jobs, name="jobs")
