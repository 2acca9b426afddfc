"""The ``reelfab`` command."""

from __future__ import annotations

import asyncio
import json
import os
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
def topics(
    create: bool = typer.Option(False, "--create", help="Create missing topics first."),
    min_partitions: int = typer.Option(
        0, "--min-partitions", min=0,
        help="With --create: give every non-compacted catalogue topic at least this many partitions, "
        "growing existing ones (a deployment scaling consumers past the catalogue's counts).",
    ),
) -> None:
    """List the broker's topics beside the topic catalogue (schemas/topics.toml)."""
    from reelfab.bus.admin import ensure_topics
    from reelfab.contracts.topics import BY_NAME, DLQ_SUFFIX

    s = get_settings()
    if min_partitions and not create:
        err.print("[red]--min-partitions needs --create[/red]")
        raise typer.Exit(2)
    if create:
        ensure_topics(s, say=_say, min_partitions=min_partitions)
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
    from reelfab.service import installed_services, load_service, run_service

    known = installed_services()
    if service not in known:
        err.print(f"[red]unknown service {service!r}[/red]; installed here: {', '.join(known) or 'none'}")
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


def _plugins() -> None:
    """Other distributions add their commands through the ``reelfab.cli`` entry-point group: each entry is
    a ``register(app)`` function. A service image has only the commands of what it installed."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="reelfab.cli"), key=lambda e: e.name):
        entry.load()(app)


_plugins()


def configure_cli_logging() -> None:
    """Logs of a command go to stderr, readable, warnings and up unless REELFAB_LOG_LEVEL says otherwise:
    stdout is the command's output (``--json`` must parse)."""
    from reelfab.logging import configure_logging

    configure_logging("pretty", os.environ.get("REELFAB_LOG_LEVEL", "WARNING"))


def main() -> None:
    """Entry point: a known failure prints one line naming what went wrong, not a traceback."""
    from reelfab.errors import ReelfabError

    configure_cli_logging()
    try:
        app()
    except (ReelfabError, ValueError, OSError) as exc:
        if os.environ.get("REELFAB_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
