"""Choosing a backend by name, with settings deciding the details."""

from __future__ import annotations

from pathlib import Path

from reelfab.faces.errors import ModelError
from reelfab.faces.types import FaceEngine
from reelfab.settings import Settings

FRAME_BACKENDS = ("classical", "onnx")


def models_dir(settings: Settings) -> Path:
    return Path(settings.models_dir) if settings.models_dir else Path(settings.state_dir) / "models"


def get_engine(name: str, settings: Settings, **options: object) -> FaceEngine:
    """A frame-level engine: ``classical`` or ``onnx`` (``facefusion`` works on whole clips: see
    reelfab.faces.facefusion)."""
    if name == "classical":
        from reelfab.faces.classical import ClassicalEngine

        return ClassicalEngine(**options)  # type: ignore[arg-type]
    if name == "onnx":
        from reelfab.faces.onnx.engine import OnnxEngine
        from reelfab.faces.onnx.store import ModelStore

        providers = [p for p in settings.execution_providers.split(",") if p] or None
        return OnnxEngine(  # type: ignore[misc]
            ModelStore(models_dir(settings)), providers=providers, commercial_mode=settings.commercial_mode, **options
        )
    raise ModelError(f"unknown face backend {name!r}: one of classical, onnx, facefusion")
