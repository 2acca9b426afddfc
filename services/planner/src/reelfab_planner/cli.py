"""`reelfab templates add|list|retire`, `reelfab music add|list`, `reelfab styles list`: the planner's
catalogue by hand. They work on the planner's PostgreSQL schema directly (migrated first, as the service
does). A template is QC'd on the file given (template_qc.py) before anything is stored; one that passes
goes into the object store under a key made of its sha256 (catalogue/templates/<sha256>.<ext>: the same
clip is stored once, and retention never touches it) and into the catalogue with the model the rules
recommend for its shot."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .catalogue import (
    CatalogueError,
    Duplicate,
    IdTaken,
    MusicBed,
    Refused,
    Template,
    TemplateLimits,
    check_licence,
    chosen_id,
    normalise_tags,
)
from .catalogue_store import MUSIC, TEMPLATE, CatalogueStore
from .model_rules import MODEL_BACKENDS, ModelPick, NoModel, manifest_licences, parse_rules, pick_model

console = Console()
err = Console(stderr=True)
T = TypeVar("T")
TEMPLATE_PREFIX, MUSIC_PREFIX = "catalogue/templates", "catalogue/music"
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")

templates_app = typer.Typer(help="The planner's template clips: QC'd on the way in, listed, retired.",
                            no_args_is_help=True)
music_app = typer.Typer(help="The planner's music beds, with their licences.", no_args_is_help=True)
styles_app = typer.Typer(help="The caption styles the planner picks from.", no_args_is_help=True)
SchemaOption = typer.Option(None, "--schema", help="The planner's PostgreSQL schema (default: the service's).",
                            hidden=True)


def register(main: typer.Typer) -> None:
    main.add_typer(templates_app, name="templates")
    main.add_typer(music_app, name="music")
    main.add_typer(styles_app, name="styles")


# ------------------------------------------------------------------------------- the workflows (testable)


@dataclass(frozen=True)
class Added:
    template: Template
    qc: dict[str, Any]
    model: ModelPick | None
    note: str  # why no model was recommended, or ""


def content_key(prefix: str, sha256: str, path: Path) -> str:
    """``<prefix>/<sha256><ext>``: one object per distinct file, whatever it was called."""
    suffix = path.suffix.lower()
    return f"{prefix}/{sha256}{suffix if _SUFFIX.fullmatch(suffix) else ''}"


def recommend(template: Template, *, commercial: bool, backend: str, rules_text: str,
              licences: dict[str, tuple[str, bool]] | None = None) -> tuple[ModelPick | None, str]:
    """The model the rules pick for the template's shot on a model backend (the classical backend swaps
    without one, so the recommendation is for the onnx one then). No fitting model: None and why."""
    rules = parse_rules(rules_text)
    try:
        pick = pick_model(template, commercial=commercial, backend=backend if backend in MODEL_BACKENDS else "onnx",
                          rules=rules, licences=licences if licences is not None else manifest_licences())
    except NoModel as exc:
        return None, str(exc)
    return pick, ""


async def refuse_known(catalogue: CatalogueStore, item_id: str, sha256: str) -> None:
    """Duplicate / IdTaken before the QC's work: the store checks again when it adds."""
    for t in await catalogue.templates(include_retired=True):
        if t.sha256 == sha256:
            raise Duplicate(TEMPLATE, t.template_id, sha256, retired=t.retired)
    if await catalogue.template(item_id) is not None:
        raise IdTaken(TEMPLATE, item_id)


async def hash_file(path: Path, what: str) -> str:
    """The file's sha256; a file that cannot be read is Refused naming why (not a traceback)."""
    from reelfab.storage import sha256_file

    try:
        return await asyncio.to_thread(sha256_file, path)
    except OSError as exc:
        raise Refused(what, [f"{path}: cannot read it: {exc.strerror or exc}"], ["unreadable"]) from None


async def store_then_add(objects: Any, key: str, path: Path, sha256: str, add: Callable[[str], Awaitable[T]],
                         catalogued: Callable[[], Awaitable[bool]]) -> T:
    """Put ``path`` under ``key``, then ``add(uri)`` its row. When the add fails the object is taken
    back, so nothing is half-added, but only if this call created it and no row names its bytes once
    asked again (an add that committed before failing, or a writer of the same bytes, keeps it: a
    Duplicate never takes it back); when that cannot be asked, it stays (an unlisted object harms nothing)."""
    created = await asyncio.to_thread(objects.stat_key, key) is None
    stored = await asyncio.to_thread(objects.put_file, key, path)
    try:
        if stored.sha256 != sha256:
            raise CatalogueError(f"{path} changed while it was being added (sha256 {sha256[:12]}… then "
                                 f"{stored.sha256[:12]}…)")
        return await add(stored.uri)
    except Duplicate:
        raise
    except BaseException:
        if created:
            try:
                if not await catalogued():
                    await asyncio.to_thread(objects.delete_key, key)
            except Exception:  # the add's error is the one to report
                pass
        raise


async def add_template_file(
    catalogue: CatalogueStore,
    objects: Any,  # reelfab.storage.ObjectStore
    path: Path,
    tags: Sequence[str],
    *,
    template_id: str | None,
    limits: TemplateLimits,
    engine: Any,  # reelfab.faces.types.FaceEngine
    closeup_face_share: float,
    commercial: bool,
    backend: str,
    rules_text: str,
    now: datetime,
) -> Added:
    """QC ``path``; on a pass store it by content and add it to the catalogue. Refused naming every
    failed rule; Duplicate / IdTaken / CatalogueError for what the catalogue refuses."""
    from .template_qc import check_file, template_qc

    clean_tags = normalise_tags(tags, "template")
    item_id = chosen_id(template_id, path.name, "template")
    what = f"template {path.name}"
    check_file(path, what, empty_code="not_video")  # before hashing it: the QC would say the same, after a probe
    sha256 = await hash_file(path, what)
    await refuse_known(catalogue, item_id, sha256)
    qc = await asyncio.to_thread(template_qc, path, engine, limits, closeup_face_share=closeup_face_share)
    template = Template(
        template_id=item_id, uri="", sha256=sha256, tags=clean_tags, duration_s=qc.duration_s, width=qc.width,
        height=qc.height, shot=qc.shot, face_share=qc.face_share, recommended_model=None, retired=False, added_at=now,
        face_height_share=qc.face_height_share, qc=qc.metrics,
    )
    pick, note = recommend(template, commercial=commercial, backend=backend, rules_text=rules_text)

    async def add(uri: str) -> Template:
        return await catalogue.add_template(replace(template, uri=uri, recommended_model=pick.model if pick else None))

    async def catalogued() -> bool:
        return any(t.sha256 == sha256 for t in await catalogue.templates(include_retired=True))

    added = await store_then_add(objects, content_key(TEMPLATE_PREFIX, sha256, path), path, sha256, add, catalogued)
    return Added(added, qc.metrics, pick, note)


async def add_music_file(catalogue: CatalogueStore, objects: Any, path: Path, tags: Sequence[str], *,
                         music_id: str | None, licence: str, commercial: bool, now: datetime) -> MusicBed:
    """Check ``path`` (an audio stream that lasts) and its licence; store it by content and add it.
    Refused / CatalogueError (a non-commercial licence said to allow commercial use among them) before
    anything is stored."""
    from .template_qc import music_qc

    clean_tags = normalise_tags(tags, "music")
    item_id = chosen_id(music_id, path.name, "music")
    licence = check_licence(licence, commercial=commercial)
    qc = await asyncio.to_thread(music_qc, path)
    sha256 = await hash_file(path, f"music bed {path.name}")
    beds = await catalogue.music()
    same = next((m for m in beds if m.sha256 == sha256), None)
    if same is not None:
        raise Duplicate(MUSIC, same.music_id, sha256)
    if any(m.music_id == item_id for m in beds):
        raise IdTaken(MUSIC, item_id)

    async def add(uri: str) -> MusicBed:
        return await catalogue.add_music(MusicBed(music_id=item_id, uri=uri, sha256=sha256, tags=clean_tags,
                                                  licence=licence, commercial=commercial, duration_s=qc.duration_s,
                                                  added_at=now))

    async def catalogued() -> bool:
        return any(m.sha256 == sha256 for m in await catalogue.music())

    return await store_then_add(objects, content_key(MUSIC_PREFIX, sha256, path), path, sha256, add, catalogued)


# ------------------------------------------------------------------------------------------ the commands


@asynccontextmanager
async def _catalogue(schema: str | None) -> AsyncIterator[CatalogueStore]:
    from .catalogue_store import PostgresCatalogueStore
    from .cli_db import planner_database

    async with planner_database(schema) as (pool, used):
        yield PostgresCatalogueStore(pool, used)


def _require_qc() -> None:
    """The clip QC reads media with the face engine (reelfab-faces, reelfab-media), which the planner's
    own image leaves out to stay small: say how to get them rather than fail on an import."""
    try:
        from . import template_qc  # noqa: F401
    except ModuleNotFoundError as exc:
        err.print(f"[red]error:[/red] the catalogue's clip QC needs the face engine and media tools ({exc.name} is "
                  f"not installed here): install {escape('reelfab-planner[qc]')}, or run this command from the all-in-one "
                  "environment (`make venv`)")
        raise typer.Exit(2) from None


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``; a refusal or a catalogue error prints its reasons and exits 1."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except Refused as exc:
        err.print(f"[red]refused:[/red] {escape(exc.what)}")
        for code, reason in zip(exc.codes or [""] * len(exc.reasons), exc.reasons, strict=False):
            err.print(f"  · {code + ': ' if code else ''}{escape(reason)}")
        raise typer.Exit(1) from None
    except CatalogueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@templates_app.command("add")
def templates_add(
    file: Path = typer.Argument(..., help="The template clip."),
    tag: list[str] = typer.Option(..., "--tag", "-t", help="A tag (consent scopes and trends select by tags); repeat."),
    template_id: str | None = typer.Option(None, "--id", help="The template's id (default: from the file name)."),
    min_seconds: float | None = typer.Option(None, help="Override REELFAB_PLANNER_TEMPLATE_MIN_S."),
    max_seconds: float | None = typer.Option(None, help="Override REELFAB_PLANNER_TEMPLATE_MAX_S."),
    min_short_side: int | None = typer.Option(None, help="Override REELFAB_PLANNER_TEMPLATE_MIN_SHORT_SIDE."),
    min_face_share: float | None = typer.Option(None, help="Override REELFAB_PLANNER_TEMPLATE_MIN_FACE_SHARE."),
    as_json: bool = typer.Option(False, "--json", help="Print the added template as JSON."),
    schema: str | None = SchemaOption,
) -> None:
    """QC a template clip and add it: refused, with every reason, unless a face shows in enough of its
    sampled frames and its duration and resolution are within the limits."""
    from reelfab.settings import get_settings
    from reelfab.storage import open_store

    _require_qc()
    from .template_qc import qc_engine, template_limits

    settings = get_settings()

    async def work() -> Added:
        base = template_limits(settings)
        limits = TemplateLimits(
            min_seconds=base.min_seconds if min_seconds is None else min_seconds,
            max_seconds=base.max_seconds if max_seconds is None else max_seconds,
            min_short_side=base.min_short_side if min_short_side is None else min_short_side,
            min_face_share=base.min_face_share if min_face_share is None else min_face_share,
            samples=base.samples,
        )
        async with _catalogue(schema) as catalogue:
            return await add_template_file(
                catalogue, open_store(settings.storage_root), file, tag, template_id=template_id, limits=limits,
                engine=qc_engine(settings), closeup_face_share=settings.planner_closeup_face_share,
                commercial=settings.commercial_mode, backend=settings.face_backend,
                rules_text=settings.planner_model_rules, now=datetime.now(UTC))

    added = _run(work)
    t = added.template
    if as_json:
        print(json.dumps(template_json(t) | {"model_reason": added.model.reason if added.model else added.note},
                         indent=2, default=str))
        return
    console.print(f"[green]added[/green] template [bold]{t.template_id}[/bold]: {t.shot}, {t.duration_s:.1f} s, "
                  f"{t.width}x{t.height}, face in {t.face_share:.0%} of {added.qc.get('sampled_frames')} sampled frames "
                  f"(median face height {t.face_height_share:.0%} of the frame)")
    console.print(f"  tags: {', '.join(t.tags)}")
    console.print(f"  stored: {t.uri} (sha256 {t.sha256[:16]}…)")
    if added.model:
        console.print(f"  recommended model: {added.model.model} ({added.model.licence}); {escape(added.model.reason)}")
    else:
        console.print(f"  [yellow]no recommended model:[/yellow] {escape(added.note)}")


@templates_app.command("list")
def templates_list(
    include_retired: bool = typer.Option(False, "--all", help="Retired templates too."),
    as_json: bool = typer.Option(False, "--json"),
    schema: str | None = SchemaOption,
) -> None:
    """The catalogue's templates, oldest first."""

    async def work() -> list[Template]:
        async with _catalogue(schema) as catalogue:
            return await catalogue.templates(include_retired=include_retired)

    rows = _run(work)
    if as_json:
        print(json.dumps([template_json(t) for t in rows], indent=2, default=str))
        return
    table = Table(title=f"templates: {len(rows)}" + (" (retired included)" if include_retired else ""))
    for col in ("id", "shot", "tags", "seconds", "size", "face", "model", "added", "retired"):
        table.add_column(col, overflow="fold")
    for t in rows:
        retired = f"{t.retired_at:%Y-%m-%d}: {escape(t.retired_reason)}" if t.retired and t.retired_at else ""
        table.add_row(t.template_id, t.shot, ", ".join(t.tags), f"{t.duration_s:.1f}", f"{t.width}x{t.height}",
                      f"{t.face_share:.0%}", t.recommended_model or "-", f"{t.added_at:%Y-%m-%d %H:%M}", retired)
    console.print(table)


@templates_app.command("retire")
def templates_retire(
    template_id: str = typer.Argument(..., help="The template's id."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (kept with it, for the audit)."),
    schema: str | None = SchemaOption,
) -> None:
    """Stop planning a template (its row stays: jobs made on it name it)."""

    async def work() -> Template:
        async with _catalogue(schema) as catalogue:
            return await catalogue.retire_template(template_id, reason)

    t = _run(work)
    when = f"{t.retired_at:%Y-%m-%d %H:%M:%S}" if t.retired_at else "?"
    console.print(f"template [bold]{t.template_id}[/bold] retired ({when}): {escape(t.retired_reason)}")


@music_app.command("add")
def music_add(
    file: Path = typer.Argument(..., help="The music bed (any audio ffmpeg reads)."),
    tag: list[str] = typer.Option(..., "--tag", "-t", help="A tag; repeat."),
    licence: str = typer.Option(..., "--licence", "-l", help="Its licence, e.g. CC-BY-4.0."),
    commercial: bool = typer.Option(False, "--commercial/--no-commercial",
                                    help="Whether the licence allows commercial use (refused for a non-commercial "
                                         "licence such as CC-BY-NC-*)."),
    music_id: str | None = typer.Option(None, "--id", help="The bed's id (default: from the file name)."),
    as_json: bool = typer.Option(False, "--json"),
    schema: str | None = SchemaOption,
) -> None:
    """Add a music bed: an audio file with its licence."""
    from reelfab.settings import get_settings
    from reelfab.storage import open_store

    _require_qc()
    settings = get_settings()

    async def work() -> MusicBed:
        async with _catalogue(schema) as catalogue:
            return await add_music_file(catalogue, open_store(settings.storage_root), file, tag, music_id=music_id,
                                        licence=licence, commercial=commercial, now=datetime.now(UTC))

    m = _run(work)
    if as_json:
        print(json.dumps(music_json(m), indent=2, default=str))
        return
    use = "commercial use allowed" if m.commercial else "no commercial use"
    console.print(f"[green]added[/green] music bed [bold]{m.music_id}[/bold]: {m.duration_s:.1f} s, {escape(m.licence)} ({use})")
    console.print(f"  tags: {', '.join(m.tags)}")
    console.print(f"  stored: {m.uri} (sha256 {m.sha256[:16]}…)")


@music_app.command("list")
def music_list(as_json: bool = typer.Option(False, "--json"), schema: str | None = SchemaOption) -> None:
    """The catalogue's music beds, oldest first."""

    async def work() -> list[MusicBed]:
        async with _catalogue(schema) as catalogue:
            return await catalogue.music()

    rows = _run(work)
    if as_json:
        print(json.dumps([music_json(m) for m in rows], indent=2, default=str))
        return
    table = Table(title=f"music beds: {len(rows)}")
    for col in ("id", "tags", "seconds", "licence", "commercial", "added"):
        table.add_column(col, overflow="fold")
    for m in rows:
        table.add_row(m.music_id, ", ".join(m.tags), f"{m.duration_s:.1f}", escape(m.licence), "yes" if m.commercial else "no",
                      f"{m.added_at:%Y-%m-%d %H:%M}")
    console.print(table)


@styles_app.command("list")
def styles_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The caption styles: REELFAB_PLANNER_CAPTION_STYLES (a TOML file) or the built-in ones."""
    from reelfab.settings import get_settings

    from .catalogue import caption_styles

    path = get_settings().planner_caption_styles
    try:
        styles = caption_styles(path)
    except CatalogueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"source": str(path) if path else "built-in",
                          "styles": [{"style_id": s.style_id, "captions": list(s.captions), "font_size": s.font_size,
                                      "position": s.position, "colour": s.colour} for s in styles]}, indent=2))
        return
    table = Table(title=escape(f"caption styles ({path or 'built-in'})"))
    for col in ("id", "position", "size", "colour", "captions"):
        table.add_column(col, overflow="fold")
    for s in styles:
        table.add_row(s.style_id, s.position, str(s.font_size), s.colour, escape(" | ".join(s.captions)))
    console.print(table)


def template_json(t: Template) -> dict[str, Any]:
    return {"template_id": t.template_id, "uri": t.uri, "sha256": t.sha256, "tags": list(t.tags),
            "duration_s": t.duration_s, "width": t.width, "height": t.height, "shot": t.shot,
            "face_share": t.face_share, "face_height_share": t.face_height_share,
            "recommended_model": t.recommended_model, "retired": t.retired, "retired_reason": t.retired_reason or None,
            "retired_at": t.retired_at, "added_at": t.added_at, "qc": dict(t.qc)}


def music_json(m: MusicBed) -> dict[str, Any]:
    return {"music_id": m.music_id, "uri": m.uri, "sha256": m.sha256, "tags": list(m.tags), "licence": m.licence,
            "commercial": m.commercial, "duration_s": m.duration_s, "added_at": m.added_at}
