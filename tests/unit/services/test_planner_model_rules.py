"""Which swap model a job on a template gets: the rules per shot (close-ups a 256-pixel swapper, wide
shots a 128 one), licence-aware (a commercial job never gets a non-commercial model), classical needing
none; a bad rules text is refused naming its bad part; the planner's own licence table is the model
manifest's."""

from __future__ import annotations

import dataclasses

import pytest

from reelfab.settings import Settings
from reelfab_planner.catalogue import CLOSE_UP, WIDE, Template
from reelfab_planner.model_rules import (
    CLASSICAL,
    SWAPPER_LICENCES,
    BadModelRules,
    ModelPick,
    NoModel,
    check_rules,
    manifest_licences,
    parse_rules,
    pick_model,
)
from tests.unit.services.planner_samples import template

DEFAULT = Settings().planner_model_rules
CLOSE, WIDE_SHOT = template("close", shot=CLOSE_UP), template("far", shot=WIDE)


def pick(t: Template, *, commercial: bool = False, backend: str = "onnx", rules: str = DEFAULT) -> ModelPick:
    return pick_model(t, commercial=commercial, backend=backend, rules=parse_rules(rules), licences=manifest_licences())


def test_the_default_rules_name_only_swappers_of_the_manifest() -> None:
    rules = parse_rules(DEFAULT)
    assert set(rules) == {CLOSE_UP, WIDE}
    check_rules(rules, manifest_licences())  # raises on a typo


def test_a_close_up_gets_a_256_pixel_swapper_and_a_wide_shot_a_128_one() -> None:
    close, wide = pick(CLOSE), pick(WIDE_SHOT)
    assert close.model == "hyperswap_1a_256" and close.model.endswith("_256")
    assert wide.model == "inswapper_128" and wide.model.endswith("_128")
    assert "close-up template" in close.reason and wide.licence == "InsightFace non-commercial research"


def test_the_facefusion_backend_follows_the_same_rules() -> None:
    assert pick(CLOSE, backend="facefusion").model == "hyperswap_1a_256"


def test_a_commercial_job_skips_every_model_whose_licence_forbids_it() -> None:
    close, wide = pick(CLOSE, commercial=True), pick(WIDE_SHOT, commercial=True)
    assert (close.model, close.licence) == ("ghost_2_256", "Apache-2.0")
    assert (wide.model, wide.licence) == ("ghost_1_256", "Apache-2.0")
    assert "skipped hyperswap_1a_256 (ResearchRAIL: no commercial use)" in close.reason
    for p in (close, wide):
        assert manifest_licences()[p.model][1] is True


def test_commercial_mode_refuses_when_only_non_commercial_models_are_ruled() -> None:
    rules = "close-up:hyperswap_1a_256,simswap_256;wide:inswapper_128"
    assert pick(CLOSE, rules=rules).model == "hyperswap_1a_256"
    with pytest.raises(NoModel) as caught:
        pick(CLOSE, commercial=True, rules=rules)
    message = str(caught.value)
    assert "a commercial job on close-up template 'close'" in message
    assert "hyperswap_1a_256 (ResearchRAIL: no commercial use)" in message
    assert "simswap_256 (non-commercial (neuralchen SimSwap): no commercial use)" in message


def test_a_ruled_model_the_manifest_does_not_know_is_skipped_and_named() -> None:
    rules = "close-up:made_up_256,ghost_2_256;wide:inswapper_128"
    p = pick(CLOSE, rules=rules)
    assert p.model == "ghost_2_256" and "made_up_256 (not a swapper of the model manifest)" in p.reason
    with pytest.raises(NoModel, match="made_up_256"):
        pick(CLOSE, rules="close-up:made_up_256;wide:inswapper_128")
    with pytest.raises(BadModelRules, match="made_up_256, not swappers of the model manifest"):
        check_rules(parse_rules(rules), manifest_licences())


def test_the_classical_backend_needs_no_model_but_cannot_make_commercial_jobs() -> None:
    p = pick(CLOSE, commercial=False, backend="classical")
    assert p.model == CLASSICAL and "classical backend" in p.reason
    with pytest.raises(NoModel, match="classical backend cannot make commercial jobs.*iBUG"):
        pick(CLOSE, commercial=True, backend="classical")


def test_the_planner_and_the_swapper_agree_on_the_classical_backends_licence() -> None:
    from reelfab_planner.model_rules import CLASSICAL_COMMERCIAL_USE, CLASSICAL_LICENCE
    from reelfab_swapper_gpu.domain import CLASSICAL as SWAPPER_CLASSICAL

    assert (SWAPPER_CLASSICAL.licence, SWAPPER_CLASSICAL.commercial_use) == (CLASSICAL_LICENCE, CLASSICAL_COMMERCIAL_USE)


def test_an_unknown_backend_is_named() -> None:
    with pytest.raises(NoModel, match="unknown face backend 'gpu'"):
        pick(CLOSE, backend="gpu")


def test_a_template_of_a_shot_without_a_rule_cannot_happen() -> None:
    # parse_rules insists on every shot, so pick_model never meets a shot without candidates
    odd = dataclasses.replace(CLOSE, shot="medium")
    with pytest.raises(NoModel, match="none ruled"):
        pick(odd)


@pytest.mark.parametrize(("text", "says"), [
    ("", "no rule for close-up, wide"),
    ("close-up:ghost_2_256", "no rule for wide"),
    ("close-up ghost_2_256;wide:inswapper_128", "expected 'shot:model,model'"),
    ("medium:ghost_2_256;close-up:ghost_2_256;wide:inswapper_128", "unknown shot 'medium'"),
    ("close-up:a;close-up:b;wide:c", "shot 'close-up' has a rule already"),
    ("close-up:ghost_2_256,;wide:inswapper_128", r"bad model name\(s\) \[''\]"),
    ("close-up:ghost 2;wide:inswapper_128", r"bad model name\(s\) \['ghost 2'\]"),
    ("close-up:a,a;wide:c", "a model is listed twice"),
])
def test_a_bad_rules_text_is_refused_naming_its_bad_part(text: str, says: str) -> None:
    with pytest.raises(BadModelRules, match=says):
        parse_rules(text)


def test_spaces_and_empty_parts_are_forgiven() -> None:
    assert parse_rules(" close-up : ghost_2_256 , hyperswap_1a_256 ;; wide: inswapper_128 ;") == {
        CLOSE_UP: ("ghost_2_256", "hyperswap_1a_256"), WIDE: ("inswapper_128",)}


def test_the_planners_licence_table_is_the_model_manifests() -> None:
    """SWAPPER_LICENCES serves a planner installed without the face engine: it must say what the
    manifest says (reelfab/faces/onnx/manifest.json), swapper for swapper."""
    from reelfab.faces.onnx.manifest import default_manifest

    swappers = {s.name: (s.licence, s.commercial_use) for s in default_manifest() if s.kind == "swapper"}
    assert swappers, "the manifest lists no swapper"
    assert manifest_licences() == swappers
    assert SWAPPER_LICENCES == swappers
