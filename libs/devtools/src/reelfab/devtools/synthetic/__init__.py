"""Synthetic "virtual people" for the demo and the tests: procedural faces, template clips and music.

No real person and no downloaded asset: every pixel and every sample comes from a seed.

- ``person``: the face renderer (``PersonParams``, ``render_face``, ``virtual_person``)
- ``clip``: template clips of a moving, talking performer (``template_clip``, ``TemplateClip``)
- ``hard``: hard clips with per-frame ground truth, for swap robustness (``hard_clip``, ``HardClip``)
- ``music``: the seeded synthesiser (``music_bed``)
- ``assets``: the demo's asset set (``demo_assets``)
- ``common``: what they share (``Vec3`` and two colour helpers)"""

from __future__ import annotations

from .assets import demo_assets
from .clip import TemplateClip, template_clip
from .common import Vec3
from .hard import SCENARIOS as HARD_SCENARIOS
from .hard import FrameTruth, HardClip, hard_clip
from .music import music_bed
from .person import BEARDS, HAIR_STYLES, PersonParams, Size, parse_expression, render_face, virtual_person

__all__ = [
    "BEARDS",
    "HAIR_STYLES",
    "HARD_SCENARIOS",
    "FrameTruth",
    "HardClip",
    "PersonParams",
    "Size",
    "TemplateClip",
    "Vec3",
    "demo_assets",
    "hard_clip",
    "music_bed",
    "parse_expression",
    "render_face",
    "template_clip",
    "virtual_person",
]
