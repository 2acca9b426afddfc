"""`reelfab accounts …` (posting accounts and their tokens) and `reelfab review …` (the review queue,
takedowns, the operators who may review). They work on the publisher's PostgreSQL schema directly
(migrated first, as the service does); what they announce (a rejection's job.failed) goes through the
publisher's outbox, which the running service relays."""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reelfab.errors import ReelfabError

from .accounts import MODES, NoValidToken, account_problem
from .bootstrap import Publisher
from .desk import Approval, ReviewError
from .post_rules import PRIVACY_LEVELS
from .repository import AccountRow
from .review import RESERVED_ACTORS, ReviewDesk, token_sha256

accounts_app = typer.Typer(help="Posting accounts (TikTok or dry-run) and their OAuth tokens.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue: approve or reject rendered videos; takedowns.", no_args_is_help=True)
operators_app = typer.Typer(help="Who may use the review page (each gets a token).", no_args_is_help=True)
review_app.add_typer(operators_app, name="operators")
console = Console()
T = TypeVar("T")
SchemaOption = typer.Option("publisher", "--schema", help="The publisher's PostgreSQL schema.", hidden=True)


@asynccontextmanager
async def publisher_session(schema: str = "publisher") -> AsyncIterator[Publisher]:
    """The publisher's adapters over its migrated schema, for a command (no consumers, no worker)."""
    from reelfab.bus.memory import InMemoryBus
    from reelfab.contracts.codec import default_codec
    from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
    from reelfab.service import ServiceSpec, build_context
    from reelfab.settings import get_settings

    from .bootstrap import bootstrap
    from .main import SPEC

    settings = get_settings()
    spec = ServiceSpec(**{**asdict(SPEC), "db_schema": schema})
    pool = await create_pool(settings)
    try:
        await migrate(pool, schema, delivery_migrations() + package_migrations(spec.package))
        bus = InMemoryBus(settings, spec.name, default_codec(settings))  # encodes only: the service relays
        p = bootstrap(build_context(spec, settings, bus, pool, lambda _: None))
        try:
            yield p
        finally:
            if p.client is not None:
                await p.client.aclose()
    finally:
        await pool.close()


def _run(schema: str, work: Callable[[Publisher], Awaitable[T]]) -> T:
    async def go() -> T:
        async with publisher_session(schema) as p:
            return await work(p)

    try:
        return asyncio.run(go())
    except (ReviewError, NoValidToken) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


async def _account(p: Publisher, name: str) -> AccountRow:
    a = await p.repo.account(name)
    if a is None:
        raise ReviewError(f"no account {name!r}; `reelfab accounts list` shows them")
    return a


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _name(value: str, what: str) -> str:
    from reelfab.identifiers import check_identifier

    try:
        return check_identifier(value, what)
    except ReelfabError as exc:
        raise typer.BadParameter(str(exc), param_hint=what) from None


# ------------------------------------------------------------------------------ accounts


@accounts_app.command("add")
def accounts_add(
    name: str = typer.Argument(..., help="A name for the account (operators choose it on approval)."),
    open_id: str = typer.Option(None, "--open-id", help="The TikTok user's open_id (from the OAuth grant)."),
    access_token: str = typer.Option(None, "--access-token", help="The OAuth access token."),
    refresh_token: str = typer.Option(None, "--refresh-token", help="The OAuth refresh token."),
    expires_in: int = typer.Option(None, "--expires-in", min=1, help="Seconds the access token is valid (TikTok: 7200)."),
    refresh_expires_in: int = typer.Option(15552000, "--refresh-expires-in", min=1,
                                           help="Seconds the refresh token is valid (TikTok: 180 days)."),
    mode: str = typer.Option("direct", "--mode", help="direct (Direct Post) or inbox (drafts the creator finishes)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="A dry-run account: posts go to a local folder."),
    sandbox: bool = typer.Option(False, "--sandbox", help="A TikTok sandbox account (may auto-approve)."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Approve waiting videos automatically "
                                      "(dry-run and sandbox accounts only)."),
    auto_privacy: str = typer.Option(None, "--auto-privacy", help="The privacy level auto-approved posts get."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing account's tokens (re-authorised)."),
    schema: str = SchemaOption,
) -> None:
    """Add a posting account; its tokens are stored encrypted."""
    _name(name, "NAME")
    if mode not in MODES:
        raise typer.BadParameter(f"mode {mode!r} is not one of {', '.join(MODES)}", param_hint="--mode")
    _auto_options(auto_approve, auto_privacy, dry_run=dry_run, sandbox=sandbox)
    if dry_run and any((open_id, access_token, refresh_token, expires_in)):
        raise typer.BadParameter("a dry-run account takes no --open-id or tokens (it posts into a local folder)")
    if not dry_run:
        missing = [o for o, v in (("--open-id", open_id), ("--access-token", access_token),
                                  ("--refresh-token", refresh_token), ("--expires-in", expires_in)) if not v]
        if missing:
            raise typer.BadParameter(f"a TikTok account needs {', '.join(missing)} (or --dry-run)")

    async def work(p: Publisher) -> str:
        now = p.clock()
        row = AccountRow(
            name=name, platform="dryrun" if dry_run else "tiktok", mode=mode, open_id=open_id,
            access_token=p.tokens.cipher.seal(access_token) if access_token else None,
            access_expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
            refresh_token=p.tokens.cipher.seal(refresh_token) if refresh_token else None,
            refresh_expires_at=now + timedelta(seconds=refresh_expires_in) if refresh_token else None,
            token_problem=None, auto_approve=auto_approve, auto_privacy=auto_privacy, sandbox=sandbox,
            self_only=False, paused_until=None, paused_reason=None)
        if await p.repo.add_account(row):
            return "added"
        if not replace:
            raise ReviewError(f"account {name} exists; --replace gives it new tokens, `accounts remove` removes it")
        existing = await p.repo.account(name)
        assert existing is not None
        if row.platform != existing.platform:
            raise ReviewError(f"account {name} is a {existing.platform} account; remove it first")
        if row.access_token and row.refresh_token and row.access_expires_at and row.refresh_expires_at:
            async with p.pool.acquire() as conn, conn.transaction():
                await p.repo.store_tokens(conn, name, row.access_token, row.access_expires_at, row.refresh_token,
                                          row.refresh_expires_at)
        await p.repo.update_account(name, mode=mode, auto_approve=auto_approve, auto_privacy=auto_privacy,
                                    sandbox=sandbox)
        return "replaced"

    done = _run(schema, work)
    console.print(f"account {name} {done} ({'dry-run' if dry_run else 'tiktok'}, {mode})")


def _auto_options(auto_approve: bool, auto_privacy: str | None, *, dry_run: bool, sandbox: bool) -> None:
    if auto_approve and not (dry_run or sandbox):
        raise typer.BadParameter("auto-approval is only for dry-run and sandbox accounts: TikTok's Direct Post "
                                 "rules want the account owner to approve each post", param_hint="--auto-approve")
    if auto_approve and not auto_privacy:
        raise typer.BadParameter("auto-approval needs --auto-privacy LEVEL: there is no default privacy level",
                                 param_hint="--auto-privacy")
    if auto_privacy and auto_privacy not in PRIVACY_LEVELS:
        raise typer.BadParameter(f"{auto_privacy!r} is not one of {', '.join(PRIVACY_LEVELS)}",
                                 param_hint="--auto-privacy")


@accounts_app.command("set")
def accounts_set(
    name: str = typer.Argument(...),
    audited: bool = typer.Option(False, "--audited", help="The TikTok app passed its audit: offer every privacy "
                                 "level again (an unaudited answer had restricted the account to SELF_ONLY)."),
    auto_approve: bool = typer.Option(None, "--auto-approve/--no-auto-approve", help="Dry-run and sandbox accounts only."),
    auto_privacy: str = typer.Option(None, "--auto-privacy", help="The privacy level auto-approved posts get."),
    schema: str = SchemaOption,
) -> None:
    """Change an account's settings (tokens: `accounts add NAME --replace …`)."""

    async def work(p: Publisher) -> list[str]:
        a = await _account(p, name)
        changes: dict[str, Any] = {}
        if audited:
            changes["self_only"] = False
        if auto_approve is not None or auto_privacy is not None:
            wanted = a.auto_approve if auto_approve is None else auto_approve
            level = auto_privacy if auto_privacy is not None else a.auto_privacy
            _auto_options(wanted, level, dry_run=a.platform == "dryrun", sandbox=a.sandbox)
            changes.update(auto_approve=wanted, auto_privacy=level)
        if not changes:
            raise ReviewError("nothing to change: give --audited, --auto-approve/--no-auto-approve or --auto-privacy")
        await p.repo.update_account(name, **changes)
        return sorted(changes)

    changed = _run(schema, work)
    console.print(f"account {name}: {', '.join(changed)} changed")


@accounts_app.command("list")
def accounts_list(as_json: bool = typer.Option(False, "--json"), schema: str = SchemaOption) -> None:
    """Accounts, their token expiry and whether they can post now (tokens are never shown)."""

    async def work(p: Publisher) -> list[dict[str, Any]]:
        now = p.clock()
        return [{"name": a.name, "platform": a.platform, "mode": a.mode, "open_id": a.open_id,
                 "access_expires_at": a.access_expires_at.isoformat() if a.access_expires_at else None,
                 "refresh_expires_at": a.refresh_expires_at.isoformat() if a.refresh_expires_at else None,
                 "auto_approve": a.auto_approve, "sandbox": a.sandbox, "self_only": a.self_only,
                 "problem": account_problem(a, now)} for a in await p.repo.accounts()]

    rows = _run(schema, work)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="posting accounts", title_justify="left")
    for column in ("name", "platform", "mode", "access token until", "auto", "state"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["platform"], r["mode"], (r["access_expires_at"] or "-")[:19],
                      "yes" if r["auto_approve"] else "", f"[red]{r['problem']}[/red]" if r["problem"] else "ok")
    console.print(table if rows else "no accounts yet: `reelfab accounts add NAME …`")


@accounts_app.command("refresh")
def accounts_refresh(name: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """Refresh the account's access token now (the rotated refresh token is stored at once)."""

    async def work(p: Publisher) -> None:
        a = await _account(p, name)
        if a.platform == "dryrun":
            raise ReviewError(f"account {name} is a dry-run account: it has no tokens to refresh")
        await p.tokens.refresh(name)

    _run(schema, work)
    console.print(f"account {name}: access token refreshed")


@accounts_app.command("remove")
def accounts_remove(name: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """Remove an account and its tokens. Videos approved for it and not yet uploaded go back to the review queue."""
    if not _run(schema, lambda p: p.repo.remove_account(name)):
        console.print(f"[red]no account {name}[/red]")
        raise typer.Exit(1)
    console.print(f"account {name} removed")


@accounts_app.command("unpause")
def accounts_unpause(name: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """Let a paused account (spam risk) post again before its pause ends."""

    async def work(p: Publisher) -> bool:
        a = await _account(p, name)
        await p.repo.update_account(name, paused_until=None, paused_reason=None)
        return a.paused_until is not None and a.paused_until > p.clock()

    was_paused = _run(schema, work)
    console.print(f"account {name} may post again" if was_paused else f"account {name} was not paused")


# ------------------------------------------------------------------------------ review


def _item_row(i: Any) -> dict[str, Any]:
    d = asdict(i)
    for k in ("received_at", "decided_at"):
        d[k] = d[k].isoformat() if d[k] else None
    d["hashtags"] = list(d["hashtags"])
    return d


@review_app.command("list")
def review_list(
    every: bool = typer.Option(False, "--all", help="Decided jobs too (newest first)."),
    as_json: bool = typer.Option(False, "--json"),
    schema: str = SchemaOption,
) -> None:
    """Videos waiting for a decision (oldest first)."""

    async def work(p: Publisher) -> list[dict[str, Any]]:
        desk = ReviewDesk(p)
        items = await desk.waiting() + (await desk.recent(200) if every else [])
        return [_item_row(i) for i in items]

    rows = _run(schema, work)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="review queue", title_justify="left")
    for column in ("job", "status", "subject", "template", "duration", "title", "decided by"):
        table.add_column(column, overflow="fold", no_wrap=column == "job")
    for r in rows:
        table.add_row(r["job_id"], r["status"], r["subject_id"], r["template_id"], f"{r['duration_s']:.1f} s",
                      r["title"][:40], r["decided_by"] or "")
    console.print(table if rows else "nothing waiting for review")


@review_app.command("show")
def review_show(job: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """One job: its video, consent and lineage, decision and the audit of it."""

    async def work(p: Publisher) -> dict[str, Any]:
        item = _item_row(await ReviewDesk(p).item(job))
        item["audit"] = [{**a, "at": a["at"].isoformat()} for a in await p.repo.audit_of(job)]
        return item

    print(json.dumps(_run(schema, work), indent=2, default=str))


@review_app.command("approve")
def review_approve(
    job: str = typer.Argument(...),
    account: str = typer.Option(..., "--account", help="The account to post with."),
    privacy: str = typer.Option(..., "--privacy", help="A privacy level the account offers now (no default)."),
    title: str = typer.Option(None, "--title", help="Replace the title."),
    hashtag: list[str] = typer.Option(None, "--hashtag", help="Replace the hashtags (repeat)."),
    disable_comment: bool = typer.Option(False, "--disable-comment"),
    disable_duet: bool = typer.Option(False, "--disable-duet"),
    disable_stitch: bool = typer.Option(False, "--disable-stitch"),
    brand_content: bool = typer.Option(False, "--brand-content", help="Disclose a paid partnership."),
    brand_organic: bool = typer.Option(False, "--brand-organic", help="Disclose promotion of your own business."),
    schema: str = SchemaOption,
) -> None:
    """Approve a waiting video for posting (audited). It is always labelled AI-generated."""
    approval = Approval(account=account, privacy_level=privacy, title=title, hashtags=tuple(hashtag) if hashtag else None,
                        disable_comment=disable_comment, disable_duet=disable_duet, disable_stitch=disable_stitch,
                        brand_content_toggle=brand_content, brand_organic_toggle=brand_organic)
    item = _run(schema, lambda p: ReviewDesk(p).approve(job, approval, _actor()))
    console.print(f"approved {item.job_id} for {item.account} ({item.privacy_level}); the publisher posts it")


@review_app.command("reject")
def review_reject(job: str = typer.Argument(...), reason: str = typer.Option(..., "--reason", help="Why (up to 1000 characters)."),
                  schema: str = SchemaOption) -> None:
    """Reject a waiting video (audited; the job ends with job.failed rejected_in_review)."""
    item = _run(schema, lambda p: ReviewDesk(p).reject(job, reason, _actor()))
    console.print(f"rejected {item.job_id}: {item.reason}")


@review_app.command("takedowns")
def review_takedowns(every: bool = typer.Option(False, "--all", help="Done ones too."),
                     as_json: bool = typer.Option(False, "--json"), schema: str = SchemaOption) -> None:
    """Posts a revoked consent listed for takedown (the API cannot delete: an operator does it in the app)."""
    rows = [{**asdict(t), "requested_at": t.requested_at.isoformat(),
             "done_at": t.done_at.isoformat() if t.done_at else None}
            for t in _run(schema, lambda p: ReviewDesk(p).takedowns(every))]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="takedowns", title_justify="left")
    for column in ("post", "subject", "account", "platform", "requested", "reason", "done"):
        table.add_column(column, overflow="fold", no_wrap=column == "post")
    for r in rows:
        done = f"{r['done_by']}: {r['note']}" if r["done_at"] else ""
        table.add_row(r["post_id"], r["subject_id"], r["account"] or "", r["platform"], r["requested_at"][:19],
                      r["reason"], done)
    console.print(table if rows else "no takedowns waiting")


@review_app.command("takedown-done")
def review_takedown_done(post: str = typer.Argument(...), note: str = typer.Option(..., "--note"),
                         schema: str = SchemaOption) -> None:
    """Mark a takedown done (the post was removed in the app); audited."""
    _run(schema, lambda p: ReviewDesk(p).takedown_done(post, _actor(), note))
    console.print(f"takedown of {post} marked done")


@operators_app.command("add")
def operators_add(name: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """Give an operator a review-page token (printed once; a new one replaces the old and ends its sessions)."""
    _name(name, "NAME")
    if name.lower() in RESERVED_ACTORS or name.lower().startswith(("auto", "cli", "demo")):
        raise typer.BadParameter(f"{name!r} is reserved for what the publisher itself records in the audit; "
                                 "choose the operator's own name", param_hint="NAME")
    token = secrets.token_urlsafe(24)
    _run(schema, lambda p: p.repo.add_operator(name, token_sha256(token)))
    print(token)


@operators_app.command("revoke")
def operators_revoke(name: str = typer.Argument(...), schema: str = SchemaOption) -> None:
    """Revoke an operator's token at once."""
    if not _run(schema, lambda p: p.repo.revoke_operator(name)):
        console.print(f"[red]no active operator {name}[/red]")
        raise typer.Exit(1)
    console.print(f"operator {name} revoked")


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``): `reelfab accounts` and `reelfab review`."""
    main.add_typer(accounts_app, name="accounts")
    main.add_typer(review_app, name="review")
