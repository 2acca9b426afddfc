"""`reelfab storage …`: what the object store holds per kind, and retention by policy (README
"Storage retention"). ``prune`` is a dry run unless ``--apply``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Object-store usage per kind, and retention by policy.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def _store(root: str | None) -> Any:
    from reelfab.settings import get_settings
    from reelfab.storage import open_store

    return open_store(root or get_settings().storage_root)


def _usage_table(title: str, usage: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title)
    for col, justify in (("kind", "left"), ("objects", "right"), ("size", "right"), ("bytes", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for kind, u in usage.items():
        style = "bold" if kind == "total" else None
        table.add_row(kind, str(u["objects"]), human(u["bytes"]), str(u["bytes"]), style=style)
    return table


@app.command()
def usage(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    root: str | None = typer.Option(None, help="Store root URI (default: REELFAB_STORAGE_ROOT)."),
) -> None:
    """Bytes and objects the store holds, per kind (intermediate, input, final, consent, partial, other)."""
    from reelfab.retention.adapters import store_usage

    store = _store(root)
    result = store_usage(store).as_dict()
    if as_json:
        print(json.dumps({"root": store.root_uri, "usage": result}, indent=2))
        return
    console.print(_usage_table(f"object store {store.root_uri}", result))


@app.command()
def prune(
    apply: bool = typer.Option(False, "--apply", help="Delete; without it, only show what would go."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    root: str | None = typer.Option(None, help="Store root URI (default: REELFAB_STORAGE_ROOT)."),
    schema: list[str] = typer.Option([], "--schema", help="Prune delivery rows only in this schema (repeat); default: every schema with the delivery tables."),
    no_rows: bool = typer.Option(False, "--no-rows", help="Leave the outbox and processed-event tables alone."),
    show: int = typer.Option(50, help="List at most this many objects (the totals count them all)."),
    every: float = typer.Option(0, help="Run again every this many seconds (a retention worker); 0: once."),
    rounds: int = typer.Option(0, help="With --every: stop after this many rounds (0: until stopped)."),
    metrics_port: int = typer.Option(0, help="With --every: serve /metrics (reelfab_storage_bytes{kind}) here."),
) -> None:
    """Show (or with --apply, delete) what the retention policy lets go; consent/ is never touched.

    Finished jobs' intermediates and inputs after the grace period, finals and inputs past their
    maximum age, unfinished jobs' intermediates past the orphan age, and published outbox rows and
    processed-event marks past the redelivery horizon (settings: REELFAB_RETENTION_*)."""
    from reelfab.retention.settings import RetentionSettings
    from reelfab.settings import get_settings

    settings = get_settings()
    retention = RetentionSettings()
    if every > 0:
        _worker(settings, retention, _store(root), apply, schema or None, not no_rows, every, rounds, metrics_port)
        return
    report = asyncio.run(_prune(settings, retention, _store(root), apply, schema or None, not no_rows))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    _print_report(report, show)


def _worker(settings: Any, retention: Any, store: Any, apply: bool, schemas: list[str] | None, rows: bool,
            every: float, rounds: int, metrics_port: int) -> None:
    """Prune on a schedule, as a long-running worker whose gauges Prometheus can scrape; a round that
    cannot reach Kafka or PostgreSQL deletes nothing and the next round tries again."""
    import time

    from prometheus_client import start_http_server

    if metrics_port:
        start_http_server(metrics_port, addr=settings.http_host)
    done = 0
    while rounds == 0 or done < rounds:
        started = time.monotonic()
        try:
            report = asyncio.run(_prune(settings, retention, store, apply, schemas, rows))
            freed = report.done.freed_bytes if report.applied else report.plan.freed.total.bytes
            console.print(f"{datetime.now(UTC).isoformat(timespec='seconds')} "
                          f"{'freed' if report.applied else 'would free'} {human(freed)}; "
                          f"held {human(report.plan.remaining.total.bytes)}")
        except Exception as exc:  # an outage: nothing was deleted; the next round tries again
            err.print(f"[yellow]retention round failed, nothing deleted:[/yellow] {type(exc).__name__}: {exc}")
        done += 1
        if rounds == 0 or done < rounds:
            time.sleep(max(0.0, every - (time.monotonic() - started)))


async def _prune(settings: Any, retention: Any, store: Any, apply: bool, schemas: list[str] | None, rows: bool) -> Any:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.db import create_pool
    from reelfab.retention.adapters import prune as run_prune

    bus = KafkaBus(settings, "reelfab-cli", default_codec(settings))  # scan only: never started
    pool = await create_pool(settings) if rows else None  # reached before anything is deleted
    try:
        return await run_prune(
            store=store, bus=bus, pool=pool, policy=retention.policy(),
            redelivery_horizon=retention.redelivery_horizon, now=datetime.now(UTC), apply=apply, schemas=schemas,
        )
    finally:
        if pool is not None:
            await pool.close()


def _print_report(report: Any, show: int) -> None:
    plan = report.plan
    if plan.deletions:
        table = Table(title="deleted" if report.applied else "would delete")
        for col in ("key", "kind", "size", "reason"):
            table.add_column(col)
        for d in plan.deletions[:show]:
            table.add_row(d.key, d.kind, human(d.size), d.reason)
        console.print(table)
        if len(plan.deletions) > show:
            console.print(f"[dim]… and {len(plan.deletions) - show} more[/dim]")
    console.print(_usage_table("to delete, per kind", plan.freed.as_dict()))
    console.print(_usage_table("left afterwards, per kind", plan.remaining.as_dict()))
    if report.rows:
        rows = Table(title=("deleted" if report.applied else "would delete") + " delivery rows")
        for col in ("schema", "table", "rows"):
            rows.add_column(col)
        for r in report.rows:
            rows.add_row(r.schema, r.table, str(r.rows))
        console.print(rows)
    for d, why in report.done.skipped:
        err.print(f"[yellow]kept[/yellow] {d.key}: {why}")
    if report.scan.unreadable:
        err.print(f"[yellow]{report.scan.unreadable} terminal event(s) could not be read; their jobs keep their objects[/yellow]")
    n_rows = sum(r.rows for r in report.rows)
    rows_text = f" and {n_rows} delivery rows" if report.rows else ""
    console.print(f"jobs with an end seen: {len(report.scan.jobs)}")
    if report.applied:
        console.print(f"[green]freed {human(report.done.freed_bytes)}[/green] ({report.done.freed_bytes} bytes, "
                      f"{len(report.done.deleted)} objects){rows_text}")
    else:
        total = plan.freed.total
        console.print(f"would free {human(total.bytes)} ({total.bytes} bytes, {total.objects} objects){rows_text}; "
                      "dry run: add --apply to delete")


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``): the ``reelfab storage`` commands."""
    main.add_typer(app, name="storage")
