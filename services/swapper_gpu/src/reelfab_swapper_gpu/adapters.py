"""The swapper's own adapters behind the workflow's ports: face engines loaded once per backend and
model, and template verdicts remembered per template content and engine. Both block (model loading,
decoding a clip): the workflow calls them in worker threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from reelfab.faces.qc import QCResult, TemplateRules
from reelfab.faces.types import FaceEngine
from reelfab.media.errors import MediaError
from reelfab.settings import Settings

from .domain import Failure, ModelChoice, template_failure, unreadable_template

EngineFactory = Callable[[ModelChoice], FaceEngine]
TemplateCheck = Callable[[Path, FaceEngine, TemplateRules], QCResult]


def backend_engines(settings: Settings) -> EngineFactory:
    """The real engines (reelfab.faces.backends): the classical one, or onnx with the job's swapper model."""

    def load(choice: ModelChoice) -> FaceEngine:
        from reelfab.faces.backends import get_engine

        options = {"swapper": choice.model} if choice.backend == "onnx" else {}
        return get_engine(choice.backend, settings, **options)

    return load


class EngineCache:
    """Sessions are loaded once per process and reused across jobs."""

    def __init__(self, factory: EngineFactory) -> None:
        self.factory = factory
        self.engines: dict[tuple[str, str], FaceEngine] = {}
        self._lock = threading.Lock()

    def __call__(self, choice: ModelChoice) -> FaceEngine:
        key = (choice.backend, choice.model)
        with self._lock:
            if key not in self.engines:
                self.engines[key] = self.factory(choice)
            return self.engines[key]


class TemplateVerdicts:
    """The template's quality gate (reelfab.faces.qc.check_template) as the job's failure, or None when
    it passes. Verdicts are remembered per template content and engine, so a template reused by many
    jobs is judged once."""

    def __init__(self, engines: EngineFactory, check: TemplateCheck, rules: TemplateRules, *, keep: int = 1024) -> None:
        self.engines = engines
        self.check = check
        self.rules = rules
        self.keep = keep
        self.verdicts: dict[tuple[str, str, str], Failure | None] = {}

    def __call__(self, choice: ModelChoice, template: Path, sha256: str) -> Failure | None:
        key = (sha256, choice.backend, choice.model)
        if key not in self.verdicts:
            try:
                verdict = template_failure(self.check(template, self.engines(choice), self.rules))
            except MediaError as exc:
                verdict = unreadable_template(template.name, str(exc))
            if len(self.verdicts) >= self.keep:
                self.verdicts.pop(next(iter(self.verdicts)))
            self.verdicts[key] = verdict
        return self.verdicts[key]
