"""Which swap model a job on a template uses: configurable rules per shot (settings.planner_model_rules,
``"close-up:a,b;wide:c,d"``, first fitting model wins), licence-aware. Pure but for
``manifest_licences``, which reads the face engine's model manifest where it is installed."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reelfab.errors import PermanentError

from .catalogue import SHOTS, Template

CLASSICAL = "classical"
# The classical backend downloads no weights, but its dlib 68-point landmark predictor was trained on
# iBUG 300-W, whose terms exclude commercial use: the swapper refuses it for commercial jobs
# (reelfab_swapper_gpu.domain.CLASSICAL_LICENCE; a test keeps the two equal), so the planner does too.
CLASSICAL_LICENCE = "dlib models (68-point predictor trained on iBUG 300-W: non-commercial)"
CLASSICAL_COMMERCIAL_USE = False
MODEL_BACKENDS = ("onnx", "facefusion")  # both run the manifest's models by name
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# The manifest's swappers (name -> licence, commercial use), for a planner installed without the face
# engine (its image leaves it out); tests/unit/services/test_planner_model_rules.py keeps it equal to
# reelfab/faces/onnx/manifest.json.
SWAPPER_LICENCES: dict[str, tuple[str, bool]] = {
    "inswapper_128": ("InsightFace non-commercial research", False),
    "inswapper_128_fp16": ("InsightFace non-commercial research", False),
    "hyperswap_1a_256": ("ResearchRAIL", False),
    "hyperswap_1b_256": ("ResearchRAIL", False),
    "hyperswap_1c_256": ("ResearchRAIL", False),
    "ghost_1_256": ("Apache-2.0", True),
    "ghost_2_256": ("Apache-2.0", True),
    "ghost_3_256": ("Apache-2.0", True),
    "simswap_256": ("non-commercial (neuralchen SimSwap)", False),
}


class BadModelRules(PermanentError):
    """settings.planner_model_rules cannot be read; the message names the bad part."""


class NoModel(PermanentError):
    """No model of the template's shot may run this job (licence, or not in the manifest)."""


@dataclass(frozen=True)
class ModelPick:
    model: str
    licence: str
    reason: str  # one line for the job's lineage and the log


def parse_rules(text: str) -> dict[str, tuple[str, ...]]:
    """``"close-up:a,b;wide:c,d"`` -> {"close-up": ("a", "b"), "wide": ("c", "d")}; every shot must
    have a rule (a template of an uncovered shot could never be planned)."""
    rules: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        shot, colon, models_text = part.partition(":")
        shot = shot.strip()
        if not colon:
            raise BadModelRules(f"model rule {part.strip()!r}: expected 'shot:model,model'")
        if shot not in SHOTS:
            raise BadModelRules(f"model rule {part.strip()!r}: unknown shot {shot!r} (one of {', '.join(SHOTS)})")
        if shot in rules:
            raise BadModelRules(f"model rule {part.strip()!r}: shot {shot!r} has a rule already")
        models = tuple(m.strip() for m in models_text.split(","))
        bad = [m for m in models if not _MODEL_NAME.fullmatch(m)]
        if bad or not models:
            raise BadModelRules(f"model rule {part.strip()!r}: bad model name(s) {bad}")
        if len(set(models)) != len(models):
            raise BadModelRules(f"model rule {part.strip()!r}: a model is listed twice")
        rules[shot] = models
    missing = [s for s in SHOTS if s not in rules]
    if missing:
        raise BadModelRules(f"model rules {text!r}: no rule for {', '.join(missing)} (expected e.g. "
                            "'close-up:hyperswap_1a_256,ghost_2_256;wide:inswapper_128,ghost_1_256')")
    return rules


def check_rules(rules: Mapping[str, Sequence[str]], licences: Mapping[str, tuple[str, bool]]) -> None:
    """BadModelRules naming every ruled model that is not a swapper the manifest knows (a typo would
    otherwise only show when a job is planned)."""
    unknown = sorted({m for models in rules.values() for m in models if m not in licences})
    if unknown:
        raise BadModelRules(f"model rules name {', '.join(unknown)}, not swappers of the model manifest "
                            f"(known: {', '.join(sorted(licences))})")


def pick_model(template: Template, *, commercial: bool, backend: str, rules: Mapping[str, Sequence[str]],
               licences: Mapping[str, tuple[str, bool]]) -> ModelPick:
    """The model a job on ``template`` uses. ``commercial``: the job needs a licence that allows
    commercial use (a commercial job, or settings.commercial_mode). The classical backend downloads
    no weights, so no licence limits it; otherwise the first model ruled for the template's shot that
    the manifest knows and whose licence fits, else NoModel naming the shot and every candidate."""
    if backend == CLASSICAL:
        if commercial and not CLASSICAL_COMMERCIAL_USE:
            raise NoModel(f"the classical backend cannot make commercial jobs: {CLASSICAL_LICENCE}; use a model "
                          "backend (REELFAB_FACE_BACKEND=onnx) with a commercially licensed swapper")
        return ModelPick(CLASSICAL, CLASSICAL_LICENCE, f"classical backend ({template.shot} template)")
    if backend not in MODEL_BACKENDS:
        raise NoModel(f"unknown face backend {backend!r}: one of {CLASSICAL}, {', '.join(MODEL_BACKENDS)}")
    candidates = rules.get(template.shot, ())
    skipped: list[str] = []
    for model in candidates:
        known = licences.get(model)
        if known is None:
            skipped.append(f"{model} (not a swapper of the model manifest)")
            continue
        licence, commercial_use = known
        if commercial and not commercial_use:
            skipped.append(f"{model} ({licence}: no commercial use)")
            continue
        why = f"{template.shot} template: {model} is the first fitting model of its rule"
        if skipped:
            why += f" (skipped {', '.join(skipped)})"
        return ModelPick(model, licence, why)
    job = "a commercial job" if commercial else "a job"
    listed = ", ".join(skipped) or "none ruled"
    raise NoModel(f"no swap model for {job} on {template.shot} template {template.template_id!r}: candidates {listed}")


def manifest_licences() -> dict[str, tuple[str, bool]]:
    """Every swapper of the face engine's model manifest: name -> (licence, commercial use). A planner
    installed without the face engine uses SWAPPER_LICENCES, the same table (a test keeps them equal)."""
    try:
        from reelfab.faces.onnx.manifest import default_manifest
    except ModuleNotFoundError:
        return dict(SWAPPER_LICENCES)
    return {s.name: (s.licence, s.commercial_use) for s in default_manifest() if s.kind == "swapper"}
