"""Choosing a backend by name, with settings deciding the details."""

from __future__ import annotations

from typing import Any

from reelfab.faces.errors import ModelError
from reelfab.faces.onnx.store import ModelStore, models_dir
from reelfab.faces.types import FaceEngine
from reelfab.settings import Settings

FRAME_BACKENDS = ("classical", "onnx")

__all__ = ["FRAME_BACKENDS", "get_engine", "models_dir"]  # models_dir: re-exported, the store owns it


def get_engine(name: str, settings: Settings, **options: Any) -> FaceEngine:
    """A frame-level engine: ``classical`` or ``onnx`` (``facefusion`` works on whole clips: see
    reelfab.faces.facefusion)."""
    if name == "classical":
        from reelfab.faces.classical import ClassicalEngine

        return ClassicalEngine(**options)
    if name == "onnx":
        from reelfab.faces.onnx.engine import OnnxEngine

        providers = [p for p in settings.execution_providers.split(",") if p] or None
        return OnnxEngine(
            ModelStore(models_dir(settings)), providers=providers, commercial_mode=settings.commercial_mode, **options
        )
    raise ModelError(f"unknown face backend {name!r}: one of classical, onnx, facefusion")
