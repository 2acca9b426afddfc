"""The ``reelfab models`` commands: the model manifest and verified downloads."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from reelfab.settings import get_settings

console = Console()
err = Console(stderr=True)


def _say(line: str) -> None:
    console.print(f"[dim]·[/dim] {line}")


models_app = typer.Typer(help="ONNX model files: list what the manifest knows, pull one.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """The model manifest, with what is installed."""
    from reelfab.faces.onnx.store import ModelStore, models_dir

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
    from reelfab.faces.onnx.store import ModelStore, models_dir

    settings = get_settings()
    path = ModelStore(models_dir(settings)).pull(name, commercial_mode=settings.commercial_mode)
    _say(f"{name}: verified and installed at {path}")


def register(main: typer.Typer) -> None:
    """Entry point (group ``reelfab.cli``)."""
    main.add_typer(models_app, name="models")
