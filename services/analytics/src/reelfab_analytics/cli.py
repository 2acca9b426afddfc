"""`reelfab analytics …`: the leaderboard per arm space with 95 % credible intervals (``report``), the
rules' audit (``flags``) and an operator's clearing of a flag (``clear``). They read and write the
analytics service's PostgreSQL schema directly (migrated first, as the service does)."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reelfab.contracts.arms import ARM_SPACES, SUBJECT, TEMPLATE

from .posteriors import Posterior, Prior
from .repository import AuditEntry, PostgresRepository, Standings
from .rules import CLEARED, FACE, TEMPLATE_KIND

app = typer.Typer(help="Analytics: the learned policy, its leaderboard and the rules' flags.", no_args_is_help=True)
console = Console()
T = TypeVar("T")
SCHEMA = "analytics"
SchemaOption = typer.Option(SCHEMA, "--schema", help="The analytics PostgreSQL schema.", hidden=True)
KIND_OF_SPACE = {SUBJECT: FACE, TEMPLATE: TEMPLATE_KIND}


# ------------------------------------------------------------------------------ the leaderboard (pure)


def leaderboard(standings: Standings, prior: Prior, *, space: str | None = None, top: int = 10) -> dict[str, Any]:
    """The report as data: per space, its ``top`` arms by posterior mean (then pulls) with the 95 %
    equal-tailed credible interval, pulls, disabled and flag; plus the prior and post counts."""
    if space is not None and space not in standings.spaces:
        raise typer.BadParameter(f"unknown arm space {space!r}; one of {', '.join(ARM_SPACES)}", param_hint="--space")
    spaces = []
    for name, arms in standings.spaces.items():
        if space is not None and name != space:
            continue
        ranked = sorted(((arm, Posterior.of(prior, arm.stats)) for arm in arms),
                        key=lambda ap: (-ap[1].mean, -ap[1].pulls, ap[0].arm_id))
        rows = []
        for rank, (arm, posterior) in enumerate(ranked[:top], 1):
            low, high = posterior.interval()  # only for the rows shown: exact quantiles are not free
            kind = KIND_OF_SPACE.get(name)
            rows.append({
                "rank": rank, "arm_id": arm.arm_id, "mean": posterior.mean, "ci95_low": low, "ci95_high": high,
                "alpha": posterior.alpha, "beta": posterior.beta, "pulls": posterior.pulls, "disabled": arm.disabled,
                "flag": standings.flags.get((kind, arm.arm_id)) if kind else None,
            })
        spaces.append({"space": name, "policy_version": standings.versions.get(name, 0), "arms_total": len(arms),
                       "arms": rows})
    return {
        "prior": {"alpha": prior.alpha, "beta": prior.beta},
        "posts": {"tracked": standings.posts, "unattributed": standings.unattributed},
        "spaces": spaces,
    }


def render(report: dict[str, Any], out: Console) -> None:
    posts = report["posts"]
    out.print(f"{posts['tracked']} post(s) tracked, {posts['unattributed']} waiting for publish.completed; "
              f"prior Beta({report['prior']['alpha']:g}, {report['prior']['beta']:g})")
    for space in report["spaces"]:
        if not space["arms"]:
            out.print(f"{space['space']} (policy v{space['policy_version']}): no arms with posts yet")
            continue
        table = Table(title=f"{space['space']} (policy v{space['policy_version']}, "
                            f"{len(space['arms'])} of {space['arms_total']} arm(s))", title_justify="left")
        for column in ("#", "arm", "mean", "95 % interval", "pulls", "state"):
            table.add_column(column, justify="right" if column in ("#", "mean", "pulls") else "left")
        for arm in space["arms"]:
            state = "disabled" if arm["disabled"] else (arm["flag"] or "").lower().replace("_", " ")
            table.add_row(str(arm["rank"]), arm["arm_id"], f"{arm['mean']:.4f}",
                          f"{arm['ci95_low']:.4f} – {arm['ci95_high']:.4f}", str(arm["pulls"]),
                          f"[red]{state}[/red]" if state else "")
        out.print(table)


def audit_rows(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    return [{"at": e.at.isoformat(), "actor": e.actor, "rule": e.rule, "kind": e.kind, "target_id": e.target_id,
             "action": e.action, "reason": e.reason, "evidence": e.evidence, "event_id": e.event_id} for e in entries]


# ------------------------------------------------------------------------------ the database


@asynccontextmanager
async def _session(schema: str) -> AsyncIterator[PostgresRepository]:
    from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
    from reelfab.settings import get_settings

    pool = await create_pool(get_settings())
    try:
        await migrate(pool, schema, delivery_migrations() + package_migrations(__package__ or "reelfab_analytics"))
        yield PostgresRepository(pool, schema)
    finally:
        await pool.close()


def _run(schema: str, work: Callable[[PostgresRepository], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _session(schema) as repo:
            return await work(repo)

    return asyncio.run(go())


def _prior() -> Prior:
    from reelfab.settings import get_settings

    settings = get_settings()
    return Prior(settings.analytics_prior_alpha, settings.analytics_prior_beta)


@app.command()
def report(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON instead of tables."),
    space: str | None = typer.Option(None, "--space", help=f"One arm space: {', '.join(ARM_SPACES)}."),
    top: int = typer.Option(10, "--top", min=1, help="Arms shown per space."),
    schema: str = SchemaOption,
) -> None:
    """The leaderboard per arm space: posterior mean, 95 % credible interval, pulls, flags."""
    data = leaderboard(_run(schema, lambda repo: repo.standings()), _prior(), space=space, top=top)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        render(data, console)


@app.command()
def flags(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON."),
    limit: int = typer.Option(50, "--limit", min=1, help="Newest entries shown."),
    schema: str = SchemaOption,
) -> None:
    """The rules' audit: who flagged what, why, on what evidence (newest first)."""
    rows = audit_rows(_run(schema, lambda repo: repo.audit(limit)))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="analytics rule audit (newest first)", title_justify="left")
    for column in ("at", "actor", "kind", "target", "action", "reason"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["at"][:19], r["actor"], r["kind"], r["target_id"], r["action"], r["reason"])
    console.print(table if rows else "no flags yet")


@app.command()
def clear(
    kind: str = typer.Argument(..., help="FACE or TEMPLATE."),
    target: str = typer.Argument(..., help="The subject or template id."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit)."),
    schema: str = SchemaOption,
) -> None:
    """Clear a flag (a disabled subject or template, an elimination candidate): audited, announced as
    SubjectFlagged CLEARED (the running service relays it), and the policy republishes the arm."""
    kind = kind.upper()
    if kind not in (FACE, TEMPLATE_KIND):
        raise typer.BadParameter(f"kind {kind!r} is not FACE or TEMPLATE", param_hint="KIND")
    before = _run(schema, lambda repo: _clear(repo, kind, target, reason))
    if before is None or before == CLEARED:
        console.print(f"{kind} {target} was not flagged; nothing to clear")
    else:
        console.print(f"cleared {kind} {target} (was {before}); the analytics service announces it")


async def _clear(repo: PostgresRepository, kind: str, target: str, reason: str) -> str | None:
    from reelfab.bus import new_event_id, now_utc
    from reelfab.bus.memory import InMemoryBus
    from reelfab.bus.outbox import Outbox
    from reelfab.contracts.codec import default_codec
    from reelfab.contracts.topics import SUBJECT_FLAGGED
    from reelfab.identifiers import check_identifier
    from reelfab.settings import get_settings

    from .rules import Flag
    from .usecase import flag_record

    check_identifier(target, "target")
    actor = f"cli:{getpass.getuser()}"
    encoder = InMemoryBus(get_settings(), "analytics", default_codec())  # encodes only: the outbox relay sends
    async with repo.pool.acquire() as conn, conn.transaction():
        before = await repo.lock_flag(conn, kind, target)
        if before is None or before == CLEARED:
            return before
        flag = Flag(kind, target, CLEARED, "operator", reason, {"previous": before, "by": actor})
        await repo.record_flag(conn, flag, actor=actor, event_id=None)
        await repo.forget_strikes(conn, kind, target)  # a clean slate: old strikes never re-disable at once
        await Outbox(repo.schema, encoder).add(conn, SUBJECT_FLAGGED, flag_record(
            flag, event_id=new_event_id(), now=now_utc(), producer="analytics", trace_id=None))
    return before


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``): the ``reelfab analytics`` commands."""
    main.add_typer(app, name="analytics")
