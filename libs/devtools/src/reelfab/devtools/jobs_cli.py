"""`reelfab jobs …`: drive one job through the media path by hand (until the planner plans them),
and follow its events to the final file or the failure and its reason."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from reelfab.contracts.topics import (
    JOB_FAILED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SWAP_COMPLETED,
    SWAP_REQUESTED,
)

app = typer.Typer(help="Submit a swap job by hand and watch it through the factory.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

STAGES = (SWAP_COMPLETED, RENDER_COMPLETED, PUBLISH_COMPLETED, JOB_FAILED)


@app.command()
def submit(
    subject: str = typer.Option(..., help="Enrolled subject whose consent covers the source image."),
    source: Path = typer.Option(..., help="The subject's enrolled image."),
    template: Path = typer.Option(..., help="Template clip."),
    music: Path | None = typer.Option(None, help="Background music."),
    caption: str | None = typer.Option(None, help="Caption text burned into the video."),
    platform: str = typer.Option("tiktok"),
    tag: list[str] = typer.Option([], help="Template tags (repeat)."),
    model: str = typer.Option("classical", help="Swapper model (classical, or an onnx model from the manifest)."),
    commercial: bool = typer.Option(False, "--commercial/--no-commercial"),
) -> None:
    """Publish a swap job; prints its id."""
    from reelfab.consent.client import RegistryClient, now_request
    from reelfab.settings import get_settings
    from reelfab.storage import open_store

    settings = get_settings()
    for p in (source, template) + ((music,) if music else ()):
        if not p.is_file():
            err.print(f"[red]error:[/red] {p}: no such file")
            raise typer.Exit(2)
    decision = RegistryClient.from_settings(settings).check(
        now_request(subject, purpose="plan", platform=platform, tags=tuple(tag), commercial=commercial),
        image_bytes=source.read_bytes())
    if not decision.allowed:
        err.print(f"[red]refused[/red]: consent denied ({decision.reason}): {decision.detail}")
        raise typer.Exit(3)
    store = open_store(settings.storage_root)
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    src = store.put_file(f"inputs/{job_id}/source{source.suffix}", source)
    tpl = store.put_file(f"inputs/{job_id}/template{template.suffix}", template)
    mus = store.put_file(f"inputs/{job_id}/music{music.suffix}", music) if music else None
    record = {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "jobs-cli",
        "job_id": job_id, "subject_id": subject, "consent_version": decision.consent_version or 0,
        "source_image_uri": src.uri, "source_image_sha256": src.sha256,
        "template_id": template.stem, "template_uri": tpl.uri, "template_sha256": tpl.sha256,
        "template_tags": list(tag), "swapper_model": model, "platform": platform, "commercial": commercial,
        "music_uri": mus.uri if mus else None, "caption_text": caption,
    }
    asyncio.run(_publish(settings, record))
    console.print(job_id)


async def _publish(settings: Any, record: dict[str, Any]) -> None:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec

    bus = KafkaBus(settings, "jobs-cli", default_codec(settings))
    await bus.start()
    try:
        await bus.publish(SWAP_REQUESTED, record)
    finally:
        await bus.stop()


@app.command()
def watch(job_id: str, timeout: float = typer.Option(900, help="Give up after this many seconds.")) -> None:
    """Follow JOB_ID's events until its final file (exit 0) or its failure (exit 1)."""
    from reelfab.settings import get_settings

    code = asyncio.run(_watch(get_settings(), job_id, timeout))
    raise typer.Exit(code)


async def _watch(settings: Any, job_id: str, timeout: float) -> int:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec

    codec = default_codec(settings)
    bus = KafkaBus(settings, "jobs-cli", codec)
    since = datetime.now(UTC) - timedelta(hours=6)
    seen: set[tuple[str, int, int]] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for topic in STAGES:
            for msg in await bus.scan(topic, since):
                if msg.key != job_id.encode() or (msg.topic, msg.partition, msg.offset) in seen:
                    continue
                seen.add((msg.topic, msg.partition, msg.offset))
                value = codec.decode(msg.value).value
                if topic == JOB_FAILED:
                    err.print(f"[red]failed[/red] at {value['stage']}: {value['reason_code']}: {value['reason']}")
                    return 1
                if topic == SWAP_COMPLETED:
                    console.print(f"swapped: {value['frames']} frames at {value['fps']:.1f} frames/s ({value['backend']}/{value['swapper_model']})")
                    if value.get("frames_swapped") is not None:
                        console.print(f"  face in {value['frames_swapped']} swapped + {value['frames_held']} held; "
                                      f"{value['frames_lost']} lost, {value['frames_rejected']} rejected (not the performer)")
                if topic == RENDER_COMPLETED:
                    console.print(f"rendered: {value['final_uri']} (spec check {'passed' if value['spec_check']['passed'] else 'FAILED'})")
                    console.print(f"title: {value['title']}  {' '.join('#' + h for h in value['hashtags'])}")
                    return 0
        await asyncio.sleep(1.0)
    err.print(f"no final event for {job_id} within {timeout:.0f} s")
    return 2
