"""The ``facefusion`` backend: delegates a whole clip to an installed FaceFusion (3.x) through its
headless CLI. Useful where FaceFusion is already deployed; Reelfab's own backends batch crops and
stream frames, FaceFusion runs one crop per inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reelfab.faces.errors import ModelError
from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.settings import Settings


@dataclass(frozen=True)
class FaceFusionRun:
    command: list[str]
    output: Path
    log_tail: str


class FaceFusionBackend:
    name = "facefusion"

    def __init__(self, home: Path | None, python: str = "python3", timeout_s: float = 3600) -> None:
        if home is None:
            raise ModelError(
                "the facefusion backend needs an installed FaceFusion: set REELFAB_FACEFUSION_HOME to the "
                "folder holding facefusion.py"
            )
        self.home = Path(home)
        self.script = self.home / "facefusion.py"
        if not self.script.is_file():
            raise ModelError(f"REELFAB_FACEFUSION_HOME={self.home} holds no facefusion.py")
        self.python = python
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceFusionBackend:
        return cls(settings.facefusion_home, settings.facefusion_python)

    def command(
        self,
        source: Path,
        target: Path,
        output: Path,
        *,
        swapper_model: str = "hyperswap_1a_256",
        enhancer_model: str | None = None,
        execution_providers: Sequence[str] = ("cpu",),
    ) -> list[str]:
        processors = ["face_swapper"] + (["face_enhancer"] if enhancer_model else [])
        cmd = [
            self.python, str(self.script), "headless-run",
            "-s", str(source), "-t", str(target), "-o", str(output),
            "--processors", *processors,
            "--face-swapper-model", swapper_model,
            "--execution-providers", *execution_providers,
        ]
        if enhancer_model:
            cmd += ["--face-enhancer-model", enhancer_model]
        return cmd

    def swap_clip(self, source: Path, target: Path, output: Path, **options: object) -> FaceFusionRun:
        for p in (source, target):
            if not p.is_file():
                raise MediaError(f"{p}: no such file")
        cmd = self.command(source, target, output, **options)  # type: ignore[arg-type]
        proc = children.run(cmd, cwd=self.home, capture_output=True, text=True, timeout=self.timeout_s)
        tail = (proc.stdout + proc.stderr).strip()[-1500:]
        if proc.returncode != 0 or not output.is_file() or output.stat().st_size == 0:
            raise MediaError(f"FaceFusion failed (exit {proc.returncode}) on {target}: {tail or 'no output'}")
        return FaceFusionRun(cmd, output, tail)
