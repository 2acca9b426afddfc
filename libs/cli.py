"""The ``reelfab`` command."""

from __future__ import annotations

import asyncio
import json
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
        console.print(f"[bold]{name}[/bold]: {json.dumps(st, default=str)}")


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
        table.add_column(col)
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


def main() -> None:
    """Entry point: a known failure prints one line naming what went wrong, not a traceback."""
    from reelfab.errors import ReelfabError

    try:
        app()
    except ReelfabError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
