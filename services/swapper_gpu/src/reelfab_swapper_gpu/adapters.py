"""The swapper's own adapters behind the workflow's ports: face engines loaded once per backend and
model, template verdicts remembered per template content and engine, and templates' face tracks kept
within a memory budget. All block (model loading, decoding a clip): the workflow calls them in worker
threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from reelfab.faces.qc import QCResult, TemplateRules
from reelfab.faces.template_track import TemplateTrack, track_template
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


TrackTemplate = Callable[[FaceEngine, Path, int], TemplateTrack]  # (engine, template, detect_every)


def track_with(engine: FaceEngine, template: Path, detect_every: int) -> TemplateTrack:
    return track_template(engine, template, detect_every=detect_every)


class TrackCache:
    """Templates' face tracks (reelfab.faces.template_track), made once per template content, engine
    and detection interval, and kept while they fit ``budget_bytes`` (least recently used go first; a
    track larger than the whole budget is used and not kept). Two jobs on a template nobody has tracked
    yet track it once: the second waits for the first. ``hits``/``misses`` count the answers."""

    def __init__(self, engines: EngineFactory, budget_bytes: int, *, track: TrackTemplate = track_with,
                 detect_every: int = 5) -> None:
        self.engines = engines
        self.budget = budget_bytes
        self.track = track
        self.detect_every = detect_every
        self.tracks: OrderedDict[tuple[str, str, str, int], TemplateTrack] = OrderedDict()
        self.hits = self.misses = 0
        self.nbytes = 0  # what the kept tracks hold
        self._lock = threading.Lock()
        self._making: dict[tuple[str, str, str, int], threading.Lock] = {}

    def __call__(self, choice: ModelChoice, template: Path, sha256: str) -> TemplateTrack:
        key = (sha256, choice.backend, choice.model, self.detect_every)
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in self.tracks:
                    self.tracks.move_to_end(key)
                    self.hits += 1
                    return self.tracks[key]
            made = self.track(self.engines(choice), template, self.detect_every)
            with self._lock:
                self.misses += 1
                self._making.pop(key, None)
                size = made.nbytes
                if size <= self.budget:
                    while self.tracks and self.nbytes + size > self.budget:
                        self.nbytes -= self.tracks.popitem(last=False)[1].nbytes
                    self.tracks[key] = made
                    self.nbytes += size
            return made
