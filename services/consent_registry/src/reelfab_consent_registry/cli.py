"""`reelfab consent …`: the registry's operator commands. They work on the registry's database
directly (like the service does), and publish the resulting events at once when Kafka answers;
otherwise the events wait in the outbox for the running service to relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Consent registry: enrol faces, grant, revoke, erase, audit.", no_args_is_help=True)
keys_app = typer.Typer(help="The registry's lease-signing keys.", no_args_is_help=True)
tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tokens_app, name="tokens")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")
ACTOR = "cli"


SchemaOption = typer.Option("consent_registry", "--schema", help="The registry's PostgreSQL schema.", hidden=True)


@asynccontextmanager
async def _session(schema: str | None = None) -> AsyncIterator[Any]:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
    from reelfab.settings import get_settings

    from .bootstrap import SCHEMA, bootstrap_postgres
    from .keys import ensure_signing_key

    settings = get_settings()
    schema = schema or SCHEMA
    pool = await create_pool(settings)
    try:
        await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_consent_registry"))
        bus = KafkaBus(settings, "consent-registry", default_codec(settings))
        registry = bootstrap_postgres(settings, pool, bus, schema=schema).registry
        if key := await ensure_signing_key(pool, schema, registry.wrapper):
            console.print(f"· made the registry's first signing key {key}")
        yield registry
        await _relay(pool, schema, bus)
    finally:
        await pool.close()


def _database(registry: Any) -> tuple[Any, str]:
    """The pool and schema of the registry's database (the CLI works on it directly)."""
    return registry.repository.pool, registry.repository.schema


async def _relay(pool: Any, schema: str, bus: Any) -> None:
    from reelfab.bus.outbox import OutboxRelay

    relay = OutboxRelay(pool, schema, bus)
    if await relay.pending() == 0:
        return
    try:
        await bus.start()
    except Exception:
        console.print(f"· {await relay.pending()} event(s) wait in the outbox; the consent-registry service will publish them")
        return
    try:
        while await relay.relay_once():
            pass
        console.print("· published the consent event(s)")
    finally:
        await bus.stop()


def _run(work: Callable[[Any], Awaitable[T]], schema: str | None = None) -> T:
    async def go() -> T:
        async with _session(schema) as registry:
            return await work(registry)

    return asyncio.run(go())


@app.command()
def enrol(subject: str, image: Path, name: str = typer.Option("", "--name", help="Display name (creates the subject).")) -> None:
    """Enrol IMAGE for SUBJECT (created with --name if new): QC, identity checks, encrypted at rest."""
    from .errors import NotFound

    data = image.read_bytes()

    async def work(registry: Any) -> dict[str, Any]:
        try:
            await registry.get_subject(subject)
        except NotFound:
            if not name:
                raise NotFound(f"no subject {subject}; pass --name to create it") from None
            # created in the enrolment's transaction: a refused enrolment leaves no empty subject behind
            return await registry.enrol(subject, data, ACTOR, create_name=name)  # type: ignore[no-any-return]
        return await registry.enrol(subject, data, ACTOR)  # type: ignore[no-any-return]

    result = _run(work)
    console.print(f"enrolled {image} for {subject}: sha256 {result['sha256'][:16]}…, phash {result['phash']}")


@app.command()
def grant(
    subject: str,
    document: Path = typer.Option(..., help="The signed consent document (any file; its sha256 is kept)."),
    platform: list[str] = typer.Option(["tiktok"], help="Platforms covered (repeat)."),
    tag: list[str] = typer.Option([], help="Template tags allowed (repeat; none: any)."),
    territory: list[str] = typer.Option([], help="Territories (repeat; none: anywhere)."),
    commercial: bool = typer.Option(False, "--commercial/--no-commercial"),
    valid_until: datetime | None = typer.Option(None, help="End of validity (ISO date/time, UTC)."),
    daily_cap: int | None = typer.Option(None, help="Uses per day at most."),
) -> None:
    """Grant consent: a signed lease, published on the consent topic."""
    from reelfab.consent.lease import Scope

    body = document.read_bytes()
    scope = Scope(tuple(platform), tuple(tag), tuple(territory), commercial)
    until = valid_until.replace(tzinfo=UTC) if valid_until and valid_until.tzinfo is None else valid_until
    terms = _run(lambda r: r.grant(subject, document=body, scope=scope, valid_from=None, valid_until=until,
                                   daily_cap=daily_cap, actor=ACTOR, document_uri=document.resolve().as_uri()))
    console.print(f"granted {subject} consent v{terms.consent_version} (lease key {terms.key_id})")


@app.command()
def amend(
    subject: str,
    platform: list[str] | None = typer.Option(None, help="Platforms covered, replacing the current ones (repeat)."),
    tag: list[str] | None = typer.Option(None, help="Template tags allowed, replacing the current ones (repeat)."),
    any_tag: bool = typer.Option(False, "--any-tag", help="Allow any template tag (clears the tag list)."),
    territory: list[str] | None = typer.Option(None, help="Territories, replacing the current ones (repeat)."),
    commercial: bool | None = typer.Option(None, "--commercial/--no-commercial", help="Commercial use."),
    valid_until: datetime | None = typer.Option(None, help="New end of validity (ISO date/time, UTC)."),
    daily_cap: int | None = typer.Option(None, min=1, help="Uses per day at most."),
    reason: str | None = typer.Option(None, help="Why (kept in the audit chain)."),
) -> None:
    """Amend SUBJECT's current consent: a new version with the changes given; what is not given stays."""
    if any_tag and tag:
        err.print("[red]error:[/red] --any-tag and --tag contradict each other: give one")
        raise typer.Exit(2)
    changes: dict[str, Any] = {name: tuple(dict.fromkeys(values)) for name, values in
                               (("platforms", platform), ("allowed_tags", tag), ("territories", territory)) if values}
    if any_tag:
        changes["allowed_tags"] = ()
    if commercial is not None:
        changes["commercial_use"] = commercial
    if not changes and valid_until is None and daily_cap is None:
        err.print("[red]error:[/red] nothing to amend: give --platform, --tag/--any-tag, --territory, "
                  "--commercial/--no-commercial, --valid-until or --daily-cap")
        raise typer.Exit(2)
    until = valid_until.replace(tzinfo=UTC) if valid_until and valid_until.tzinfo is None else valid_until
    terms = _run(lambda r: r.amend(subject, actor=ACTOR, scope_changes=changes, valid_until=until,
                                   daily_cap=daily_cap, reason=reason))
    console.print(f"amended {subject}: consent v{terms.consent_version} (lease key {terms.key_id})")


@app.command()
def revoke(subject: str, reason: str = typer.Option(..., help="Why (kept in the audit chain).")) -> None:
    """Revoke at once; lists the posts that used the face, for takedown."""
    terms, posts = _run(lambda r: r.revoke(subject, actor=ACTOR, reason=reason))
    console.print(f"revoked {subject} (consent v{terms.consent_version})")
    for p in posts:
        console.print(f"  take down: {p['platform']} post {p['post_id']} (job {p['job_id']})")
    if not posts:
        console.print("  no published posts used this face")


@app.command()
def erase(subject: str) -> None:
    """Destroy SUBJECT's key: their images and embeddings become unreadable everywhere."""
    report = _run(lambda r: r.erase(subject, actor=ACTOR))
    console.print(f"erased {subject}: {len(report['unreadable_images'])} image(s) and "
                  f"{report['unreadable_embeddings']} embedding(s) can no longer be decrypted")
    for uri in report["unreadable_images"]:
        console.print(f"  unreadable: {uri}")


@app.command("list")
def list_subjects() -> None:
    """Subjects with their latest consent."""
    rows = _run(lambda r: r.list_subjects())
    table = Table(title="subjects")
    for col in ("subject", "name", "consent", "status", "valid until", "images"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["subject_id"], row["display_name"], f"v{row['version']}" if row["version"] else "-",
                      row["status"] or ("ERASED" if row["erased_at"] else "none"), str(row["valid_until"] or ""), str(row["images"]))
    console.print(table)


@app.command()
def show(subject: str) -> None:
    """Everything the registry holds about SUBJECT (hashes, not biometrics)."""
    console.print_json(json.dumps(_run(lambda r: r.get_subject(subject))))


@app.command()
def check(
    subject: str,
    platform: str = typer.Option("tiktok"),
    purpose: str = typer.Option("swap"),
    tag: list[str] = typer.Option([]),
    commercial: bool = typer.Option(True, "--commercial/--no-commercial"),
    image: Path | None = typer.Option(None, help="The image to be used (checked against the enrolled ones)."),
) -> None:
    """Would SUBJECT's face be allowed here and now? Exit 1 with the reason if not."""
    from reelfab.consent.decision import ConsentRequest

    req = ConsentRequest(subject, purpose, platform, datetime.now(UTC), tuple(tag), commercial=commercial)
    data = image.read_bytes() if image else None
    decision = _run(lambda r: r.check(req, image_bytes=data, actor=ACTOR))
    if not decision.allowed:
        err.print(f"[red]denied[/red] ({decision.reason}): {decision.detail}")
        raise typer.Exit(1)
    console.print(f"allowed: {decision.detail}")


@app.command("verify-audit")
def verify_audit(schema: str = SchemaOption) -> None:
    """Recompute the audit hash chain and check it against the strongest signed checkpoint found
    (every message on the checkpoint topic, and the registry's record of those it issued): names a
    replayed older checkpoint and the first broken or missing entry."""
    result = _run(lambda r: r.trail.verify_audit(), schema)
    cp = result.checkpoint
    if not result.ok:
        where = f" at entry {result.first_broken}" if result.first_broken is not None else ""
        err.print(f"[red]audit chain broken{where}[/red]: {result.problem}")
        raise typer.Exit(1)
    if cp is None:
        console.print(f"audit chain verified: {result.entries} entries (consistent in itself)")
        err.print(f"[yellow]warning[/yellow]: {result.note}")
        return
    console.print(f"audit chain verified: {result.entries} entries; it extends the signed checkpoint of "
                  f"{cp['issued_at']:%Y-%m-%dT%H:%M:%SZ} ({cp['entry_count']} entries, head {cp['head_hash'][:16]}…, "
                  f"key {cp['key_id']})")


@app.command("checkpoint")
def checkpoint(schema: str = SchemaOption) -> None:
    """Sign a checkpoint of the audit chain now and publish it on the checkpoint topic."""
    cp = _run(lambda r: r.trail.issue_checkpoint("demand"), schema)
    if cp is None:
        console.print("the audit chain is empty: nothing to sign")
        return
    console.print(f"signed audit checkpoint: {cp.entry_count} entries, head seq {cp.head_seq} "
                  f"({cp.head_hash[:16]}…), key {cp.key_id}, {cp.when}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key; the old one retires but keeps verifying old leases."""
    from . import keys

    async def work(registry: Any) -> str:
        pool, schema = _database(registry)
        async with pool.acquire() as conn, conn.transaction():
            return await keys.generate(conn, schema, registry.wrapper)

    console.print(f"new signing key {_run(work)}")


@keys_app.command("list")
def keys_list() -> None:
    """Public keys, as services load them (REELFAB_CONSENT_PUBLIC_KEYS)."""
    from reelfab.consent.lease import public_key_text

    found = _run(lambda r: r.public_keys())
    console.print(",".join(f"{k}={public_key_text(v)}" for k, v in found.items()))


@tokens_app.command("create")
def tokens_create(name: str, role: str = typer.Option("reader", help="admin or reader")) -> None:
    """Create an API token; it is shown once and stored hashed."""
    from . import tokens

    token = _run(lambda r: tokens.create_token(*_database(r), name, role))
    console.print(token)


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``): the ``reelfab consent`` commands."""
    main.add_typer(app, name="consent")
