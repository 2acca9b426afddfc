"""`reelfab plan` and `reelfab jobs list|show`: a batch planned now, and the job ledger read back. They
work on the planner's database directly (like the service does): the consent view is read from the
consent topic, the policy and flags from the planner's tables; the plan's swap jobs are published at
once when Kafka answers, otherwise they wait in the outbox for the running planner to relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .ledger import STATUSES
from .limits import MAX_BATCH

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


@asynccontextmanager
async def _planner(*, bus_needed: bool) -> AsyncIterator[Any]:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.service import build_context
    from reelfab.settings import get_settings

    from .bootstrap import bootstrap
    from .cli_db import planner_database
    from .main import SPEC
    from .repository import restore_policy

    settings = get_settings()
    async with planner_database() as (pool, _schema):
        bus = KafkaBus(settings, SPEC.name, default_codec(settings))
        planner = bootstrap(build_context(SPEC, settings, bus, pool, lambda _ctx: None))
        if bus_needed:
            await asyncio.to_thread(_check_consent_keys, settings)
            try:
                await planner.view.catch_up(bus)
            except Exception as exc:  # noqa: BLE001 - aiokafka's own errors: one line, not its traceback
                raise CliRefusal(f"Kafka at {settings.kafka_bootstrap} does not answer ({type(exc).__name__}: "
                                 f"{exc}); start the stack (`make up`) or set REELFAB_KAFKA_BOOTSTRAP") from None
            planner.policy = restore_policy(await planner.store.policy())
        yield planner, pool, bus


class CliRefusal(Exception):
    """What stops a command before it plans anything, in one line."""


def _check_consent_keys(settings: Any) -> None:
    """A plan reads the consent topic's signed leases: without the keys to verify them every subject
    would be skipped, and the plan would say only that nobody has consent."""
    from reelfab.consent.gate import load_public_keys

    try:
        load_public_keys(settings)
    except Exception as exc:  # noqa: BLE001 - no token, a refused token, the registry away: say which
        raise CliRefusal(f"cannot verify consent leases: {exc}. Set REELFAB_CONSENT_TOKEN to a registry token "
                         "(`reelfab consent tokens create planner --role reader`) or REELFAB_CONSENT_PUBLIC_KEYS "
                         "to the registry's keys") from None


async def _relay(pool: Any, schema: str, bus: Any) -> str:
    from reelfab.bus.outbox import OutboxRelay

    relay = OutboxRelay(pool, schema, bus)
    if await relay.pending() == 0:
        return "nothing to publish"
    try:
        await bus.start()
    except Exception:  # noqa: BLE001 - Kafka away: the running planner relays them later
        return f"{await relay.pending()} job(s) wait in the outbox; the planner service will publish them"
    try:
        while await relay.relay_once():
            pass
        return "published the swap jobs"
    finally:
        await bus.stop()


def _run(work: Callable[[], Awaitable[T]]) -> T:
    from reelfab.errors import PermanentError

    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except (CliRefusal, PermanentError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def plan(
    count: int = typer.Option(..., "--count", "-n", min=1, max=MAX_BATCH, help="How many swap jobs to plan now."),
    allow_repeats: bool = typer.Option(False, "--allow-repeats", help="Plan combinations already produced too."),
    seed: int | None = typer.Option(None, help="Seed the Thompson draw (the same inputs then plan the same batch)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Plan one batch now: what consent allows, not made yet, most likely to perform."""

    async def work() -> tuple[Any, str]:
        from .usecase import plan_now

        async with _planner(bus_needed=True) as (planner, pool, bus):
            made = await plan_now(planner, count, "cli", allow_repeats=allow_repeats, seed=seed)
            return made, await _relay(pool, planner.spec.db_schema, bus)

    made, relayed = _run(work)
    if as_json:
        print(json.dumps(_plan_json(made, count), indent=2, default=str))
        return
    table = Table(title=f"plan {made.plan_id}: {len(made.jobs)} of {count} asked, from {made.candidates:,} candidates")
    for col in ("job", "subject", "template", "music", "style", "model"):
        table.add_column(col, overflow="fold")
    for job in made.jobs:
        c = job.combination
        table.add_row(job.job_id, c.subject, c.template, c.music or "-", c.style, job.model.model)
    console.print(table)
    for note in made.notes:
        console.print(f"[yellow]·[/yellow] {note}")
    for subject, why in made.excluded.items():
        console.print(f"[dim]· left out {subject}: {why}[/dim]")
    console.print(f"· {relayed}")


def _plan_json(made: Any, asked: int) -> dict[str, Any]:
    return {
        "plan_id": made.plan_id, "asked": asked, "planned": len(made.jobs), "candidates": made.candidates,
        "available": made.available, "notes": made.notes, "excluded": made.excluded,
        "jobs": [{"job_id": j.job_id, "arm_id": j.combination.arm_id, "subject_id": j.combination.subject,
                  "template_id": j.combination.template, "music_id": j.combination.music, "caption_style": j.combination.style,
                  "model": j.model.model, "model_licence": j.model.licence, "priority": j.priority} for j in made.jobs],
    }


def jobs_list(
    status: str | None = typer.Option(None, help=f"Only jobs in this status ({', '.join(STATUSES)})."),
    limit: int = typer.Option(50, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The job ledger, newest first."""
    if status is not None and status not in STATUSES:
        err.print(f"[red]error:[/red] unknown status {status!r}; one of {', '.join(STATUSES)}")
        raise typer.Exit(2)

    async def work() -> tuple[list[Any], Any]:
        async with _planner(bus_needed=False) as (planner, _pool, _bus):
            return await planner.store.jobs(status=status, limit=limit), await planner.store.counts(datetime.now(UTC))

    rows, counts = _run(work)
    if as_json:
        print(json.dumps({"counts": counts.by_status, "oldest_unfinished_s": counts.oldest_unfinished_s,
                          "jobs": [r.as_dict() for r in rows]}, indent=2, default=str))
        return
    table = Table(title="jobs: " + ", ".join(f"{s} {counts.by_status.get(s, 0)}" for s in STATUSES))
    for col in ("job", "status", "origin", "subject", "template", "model", "created", "failure"):
        table.add_column(col, overflow="fold")
    for r in rows:
        failure = f"{r.failed_stage}: {r.failed_reason_code}" if r.failed_stage else ""
        table.add_row(r.job_id, r.status, r.origin, r.subject_id or "", r.template_id or "", r.swapper_model or "",
                      r.created_at.strftime("%Y-%m-%d %H:%M:%S"), failure)
    console.print(table)


def jobs_show(job_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One job's lineage and its whole path."""

    async def work() -> Any:
        async with _planner(bus_needed=False) as (planner, _pool, _bus):
            return await planner.store.job(job_id)

    row = _run(work)
    if row is None:
        err.print(f"[red]error:[/red] no job {job_id!r} in the ledger")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(row.as_dict(), indent=2, default=str))
        return
    console.print(f"[bold]{row.job_id}[/bold]  {row.status}  ({row.origin}, plan {row.plan_id or '-'}, trend {row.trend_id or '-'})")
    for name in ("subject_id", "consent_version", "template_id", "music_id", "caption_style", "swapper_model",
                 "model_licence", "priority", "deadline", "arm_id"):
        console.print(f"  {name}: {getattr(row, name)}")
    for key, value in sorted(row.lineage.items()):
        console.print(f"  {key}: {value}")
    if row.failed_stage:
        console.print(f"  [red]failed at {row.failed_stage}: {row.failed_reason_code}: {row.failed_reason}[/red]")
    for step in row.steps:
        console.print(f"  {step.at:%Y-%m-%d %H:%M:%S}  {step.status}")


def register(main: typer.Typer) -> None:
    main.command("plan")(plan)
    jobs = _group(main, "jobs", "The job ledger, and jobs by hand.")
    jobs.command("list")(jobs_list)
    jobs.command("show")(jobs_show)


def _group(main: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The app's ``name`` group (another distribution may have made it: devtools adds submit/watch)."""
    for group in main.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    made = typer.Typer(help=help_text, no_args_is_help=True)
    main.add_typer(made, name=name)
    return made
