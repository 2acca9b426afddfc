"""The demo's asset set: swap-source people, template clips and music beds, written under one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2

from reelfab.media.errors import MediaError

from .clip import template_clip
from .music import music_bed
from .person import virtual_person


def demo_assets(
    folder: Path, *, people: int = 4, templates: int = 3, music: int = 3, seconds: float = 8.0
) -> dict[str, list[Any]]:
    """Write the demo's synthetic assets under ``folder``: ``people/person-<seed>.png`` (swap sources),
    ``templates/template-<seed>.mp4`` and ``music/bed-<seed>.m4a``, seeds from 1. Returns
    {"people": [Path], "templates": [TemplateClip], "music": [Path]}."""
    written: dict[str, list[Any]] = {"people": [], "templates": [], "music": []}
    for sub in ("people", "templates", "music"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in range(1, people + 1):
        target = folder / "people" / f"person-{seed}.png"
        if not cv2.imwrite(str(target), virtual_person(seed)):
            raise MediaError(f"could not write {target}")
        written["people"].append(target)
    for seed in range(1, templates + 1):
        written["templates"].append(
            template_clip(folder / "templates" / f"template-{seed}.mp4", seed=seed, seconds=seconds)
        )
    for seed in range(1, music + 1):
        written["music"].append(
            music_bed(folder / "music" / f"bed-{seed}.m4a", seed=seed, seconds=max(seconds, 20.0))
        )
    return written
