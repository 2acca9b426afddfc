"""The planner's catalogue, broker-free: ids, tags, shot classification, template limits, caption styles
(the TOML and the built-in ones), and the catalogue store's rules on the in-memory store. The same
rules run against PostgreSQL in tests/integration/test_planner_catalogue.py (``store_rules`` and
``music_rules`` below are shared)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from reelfab_planner.catalogue import (
    BUILT_IN_STYLES,
    CLOSE_UP,
    WIDE,
    CatalogueError,
    Duplicate,
    IdTaken,
    TemplateLimits,
    caption_styles,
    check_catalogue_id,
    check_licence,
    chosen_id,
    classify_shot,
    id_from_name,
    non_commercial,
    normalise_tags,
    parse_caption_styles,
)
from reelfab_planner.catalogue_store import CatalogueStore, InMemoryCatalogueStore
from tests.unit.services.planner_samples import NOW, music, template

# ------------------------------------------------------------------------------------ ids, tags, shots


@pytest.mark.parametrize("value", ["dance-01", "T_2", "a.b", "x" * 128])
def test_a_catalogue_id_is_an_opaque_identifier(value: str) -> None:
    assert check_catalogue_id(value) == value


@pytest.mark.parametrize(("value", "says"), [
    ("a/b", "template_id 'a/b'"),
    ("has space", "template_id 'has space'"),
    (".hidden", "template_id '.hidden'"),
    ("", "template_id ''"),
    ("x" * 129, "template_id"),
    ("a~b", "separates the parts of an arm id"),
    ("-", "reserved"),
])
def test_a_bad_catalogue_id_is_refused_naming_it(value: str, says: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(says)):
        check_catalogue_id(value)


def test_the_id_error_names_the_kind() -> None:
    with pytest.raises(CatalogueError, match="music_id 'a~b'"):
        check_catalogue_id("a~b", "music")


@pytest.mark.parametrize(("name", "expected"), [
    ("Dance Clip #1.MP4", "dance-clip-1"),
    ("/some/folder/beach_walk.v2.mov", "beach_walk.v2"),
    ("---Wow!!---.mp4", "wow"),
    ("a~b.mp4", "a-b"),
    ("x" * 100 + ".mp4", "x" * 64),
])
def test_an_id_from_a_file_name_is_a_readable_slug(name: str, expected: str) -> None:
    assert id_from_name(name) == expected


def test_a_file_name_without_letters_gives_no_id() -> None:
    with pytest.raises(CatalogueError, match="pass --id"):
        id_from_name("!!!.mp4")


def test_no_id_given_means_one_from_the_file_name() -> None:
    assert chosen_id(None, "Beach Walk.mp4") == "beach-walk"
    assert chosen_id("beach-02", "Beach Walk.mp4") == "beach-02"


@pytest.mark.parametrize("given", ["", "   ", "\t"])
def test_an_empty_or_blank_id_is_refused_not_replaced_by_the_file_name(given: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(f"music_id {given!r} is empty")) as caught:
        chosen_id(given, "bed.m4a", "music")
    assert "--id" in str(caught.value) and "leave --id out" in str(caught.value)


def test_tags_are_lower_cased_without_hash_each_once_in_order() -> None:
    assert normalise_tags(["#Dance", "dance", " POP ", "k-pop", "summer_2030"]) == ("dance", "pop", "k-pop", "summer_2030")


def test_bad_tags_are_refused_all_named() -> None:
    with pytest.raises(CatalogueError) as caught:
        normalise_tags(["ok", "two words", "-dash", "x" * 65])
    message = str(caught.value)
    assert "'two words'" in message and "'-dash'" in message and "'" + "x" * 65 + "'" in message
    assert "'ok'" not in message


def test_at_least_one_tag() -> None:
    with pytest.raises(CatalogueError, match="at least one tag"):
        normalise_tags([])
    with pytest.raises(CatalogueError, match="music tag"):
        normalise_tags([""], "music")


@pytest.mark.parametrize(("share", "shot"), [(0.45, CLOSE_UP), (0.2, CLOSE_UP), (0.1999, WIDE), (0.05, WIDE), (0.0, WIDE)])
def test_a_face_filling_enough_of_the_frame_height_is_a_close_up(share: float, shot: str) -> None:
    assert classify_shot(share, 0.2) == shot


def test_template_limits_refuse_nonsense() -> None:
    assert TemplateLimits().min_seconds == 15.0 and TemplateLimits().max_seconds == 30.0
    for bad in (dict(min_seconds=0.0), dict(min_seconds=31.0), dict(min_short_side=0), dict(min_face_share=1.5),
                dict(samples=0)):
        with pytest.raises(CatalogueError, match="template"):
            TemplateLimits(**bad)


# ------------------------------------------------------------------------------------------- licences

NON_COMMERCIAL = ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-ND-4.0", "cc-by-nc-3.0", "CC BY-NC-SA 4.0",
                  "CC-BY-NC-ND-2.5-UK", "Attribution-NonCommercial 4.0 International", "non-commercial use only",
                  "Non Commercial", "noncommercial", "NON_COMMERCIAL", "free, not for commercial use",
                  "no commercial use"]
COMMERCIAL_OR_UNSAID = ["CC0-1.0", "CC0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-ND-4.0", "MIT", "Pixabay Content License",
                        "royalty-free, commercial use allowed", "SYNC licence 2030", "Proprietary (bought for ads)"]


@pytest.mark.parametrize("licence", NON_COMMERCIAL)
def test_a_non_commercial_licence_is_known_as_such(licence: str) -> None:
    assert non_commercial(licence)


@pytest.mark.parametrize("licence", COMMERCIAL_OR_UNSAID)
def test_other_licences_are_not_taken_for_non_commercial(licence: str) -> None:
    assert not non_commercial(licence)


@pytest.mark.parametrize("licence", NON_COMMERCIAL)
def test_commercial_use_under_a_non_commercial_licence_is_refused_naming_it(licence: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(f"licence {licence!r} does not allow commercial use")):
        check_licence(licence, commercial=True)
    assert check_licence(f" {licence} ", commercial=False) == licence


@pytest.mark.parametrize("licence", COMMERCIAL_OR_UNSAID)
def test_any_other_named_licence_may_be_marked_either_way(licence: str) -> None:
    """Commercial use is said by hand (--commercial): leaving it off a commercial licence is merely
    conservative (the bed goes to non-commercial jobs only)."""
    assert check_licence(licence, commercial=True) == check_licence(licence, commercial=False) == licence


@pytest.mark.parametrize("text", ["", "   ", "x" * 201, "CC\nBY"])
def test_a_licence_must_be_named_in_printable_text(text: str) -> None:
    with pytest.raises(CatalogueError, match="1 to 200 printable characters"):
        check_licence(text, commercial=False)


# ---------------------------------------------------------------------------------------- caption styles

STYLES = """
[styles.loud]
captions = ["Wait for it", "  Plot twist  "]
font_size = 16
position = "middle"
colour = "#ffe14d"

[styles.quiet]
captions = ["just vibes"]
"""


def test_caption_styles_from_toml() -> None:
    loud, quiet = parse_caption_styles(STYLES)
    assert (loud.style_id, loud.captions, loud.font_size, loud.position, loud.colour) == (
        "loud", ("Wait for it", "Plot twist"), 16, "middle", "#FFE14D")
    assert (quiet.font_size, quiet.position, quiet.colour) == (10, "bottom", "#FFFFFF")  # the defaults


def test_a_style_picks_the_same_caption_for_the_same_seed() -> None:
    loud = parse_caption_styles(STYLES)[0]
    assert [loud.caption_for(s) for s in (0, 1, 2, 7)] == ["Wait for it", "Plot twist", "Wait for it", "Plot twist"]


def test_no_file_means_the_built_in_styles(tmp_path: Path) -> None:
    assert caption_styles(None) == list(BUILT_IN_STYLES)
    assert {s.style_id for s in BUILT_IN_STYLES} == {"clean", "bold", "minimal"}
    path = tmp_path / "styles.toml"
    path.write_text(STYLES)
    assert [s.style_id for s in caption_styles(path)] == ["loud", "quiet"]


@pytest.mark.parametrize(("text", "says"), [
    ("[styles.a\ncaptions = 1", "not valid TOML.*line 1"),
    ("title = 'x'", r"unknown top-level key\(s\) \['title'\]"),
    ("[styles]", "no styles"),
    ("[styles.a]\ncaptions = []", r"styles\.a\.captions: must be a non-empty list"),
    ("[styles.a]\ncaptions = ['x', '']", r"styles\.a\.captions"),
    ("[styles.a]\ncaptions = ['x']\nfont_size = 99", r"styles\.a\.font_size: 99"),
    ("[styles.a]\ncaptions = ['x']\nfont_size = true", r"styles\.a\.font_size: True"),
    ("[styles.a]\ncaptions = ['x']\nposition = 'left'", r"styles\.a\.position: 'left'"),
    ("[styles.a]\ncaptions = ['x']\ncolour = 'red'", r"styles\.a\.colour: 'red' must be #RRGGBB"),
    ("[styles.a]\ncaptions = ['x']\nfont = 'Arial'", r"unknown field\(s\) \['font'\]"),
    ("[styles.'a~b']\ncaptions = ['x']", r"styles\.a~b: style_id 'a~b'"),
])
def test_a_bad_styles_file_is_refused_naming_what(text: str, says: str) -> None:
    with pytest.raises(CatalogueError, match=says):
        parse_caption_styles(text, "styles.toml")


def test_an_unreadable_styles_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="nowhere.toml: cannot read it"):
        caption_styles(tmp_path / "nowhere.toml")


# ---------------------------------------------------------------------- the store's rules (shared with PG)


async def store_rules(store: CatalogueStore, run: str) -> None:
    """What every catalogue store does with templates; ``run`` keeps ids and hashes unique."""
    a = dataclasses.replace(template(f"a-{run}", "dance", "Pop"), sha256=f"a{run}".ljust(64, "0"),
                            qc={"face_share": 1.0, "sampled_frames": 15}, face_height_share=0.31)
    b = dataclasses.replace(template(f"b-{run}", "beach", shot=WIDE), sha256=f"b{run}".ljust(64, "0"),
                            added_at=NOW.replace(minute=1), recommended_model="inswapper_128")
    added = await store.add_template(a)
    assert (added.template_id, added.tags, added.shot, added.face_height_share, dict(added.qc)) == (
        a.template_id, a.tags, CLOSE_UP, 0.31, {"face_share": 1.0, "sampled_frames": 15})
    assert not added.retired and added.retired_at is None
    await store.add_template(b)
    assert [t.template_id for t in await store.templates()] == [a.template_id, b.template_id]
    got = await store.template(b.template_id)
    assert got is not None and (got.shot, got.recommended_model, got.width, got.height) == (WIDE, "inswapper_128", 720, 1280)
    assert await store.template(f"nobody-{run}") is None

    with pytest.raises(Duplicate, match=f"as '{a.template_id}'") as dup:  # same bytes, another id
        await store.add_template(dataclasses.replace(a, template_id=f"again-{run}"))
    assert dup.value.existing_id == a.template_id and "retired" not in str(dup.value)
    with pytest.raises(IdTaken, match=f"template id '{a.template_id}' is taken") as taken:  # same id, other bytes
        await store.add_template(dataclasses.replace(a, sha256=f"c{run}".ljust(64, "0")))
    assert taken.value.item_id == a.template_id
    with pytest.raises(CatalogueError, match="shot 'medium'"):
        await store.add_template(dataclasses.replace(a, template_id=f"m-{run}", sha256=f"d{run}".ljust(64, "0"),
                                                     shot="medium"))
    with pytest.raises(CatalogueError, match="template_id 'x~y'"):
        await store.add_template(dataclasses.replace(a, template_id="x~y", sha256=f"e{run}".ljust(64, "0")))

    retired = await store.retire_template(a.template_id, "  too dark  ")
    assert retired.retired and retired.retired_reason == "too dark" and retired.retired_at is not None
    again = await store.retire_template(a.template_id, "another reason")  # harmless: the first retirement stays
    assert (again.retired, again.retired_reason, again.retired_at) == (True, "too dark", retired.retired_at)
    assert [t.template_id for t in await store.templates()] == [b.template_id]
    assert [t.template_id for t in await store.templates(include_retired=True)] == [a.template_id, b.template_id]
    with pytest.raises(Duplicate, match=rf"as '{a.template_id}' \(retired\)") as dup:
        await store.add_template(dataclasses.replace(a, template_id=f"back-{run}"))
    assert dup.value.existing_id == a.template_id
    with pytest.raises(CatalogueError, match=f"no template 'ghost-{run}'"):
        await store.retire_template(f"ghost-{run}", "gone")
    with pytest.raises(CatalogueError, match="needs a reason"):
        await store.retire_template(b.template_id, "   ")
    assert not (await store.template(b.template_id)).retired  # type: ignore[union-attr]


async def music_rules(store: CatalogueStore, run: str) -> None:
    one = dataclasses.replace(music(f"one-{run}"), sha256=f"1{run}".ljust(64, "0"))
    two = dataclasses.replace(music(f"two-{run}", commercial=False), sha256=f"2{run}".ljust(64, "0"),
                              added_at=NOW.replace(minute=5))
    assert await store.add_music(one) == one
    await store.add_music(two)
    beds = await store.music()
    assert [(m.music_id, m.licence, m.commercial) for m in beds] == [
        (one.music_id, "CC-BY-4.0", True), (two.music_id, "CC-BY-NC-4.0", False)]
    with pytest.raises(Duplicate, match=f"music bed is in the catalogue already as '{one.music_id}'"):
        await store.add_music(dataclasses.replace(one, music_id=f"three-{run}"))
    with pytest.raises(IdTaken, match=f"music bed id '{one.music_id}'"):
        await store.add_music(dataclasses.replace(one, sha256=f"3{run}".ljust(64, "0")))
    with pytest.raises(CatalogueError, match="1 to 200 printable characters"):
        await store.add_music(dataclasses.replace(one, music_id=f"four-{run}", sha256=f"4{run}".ljust(64, "0"), licence=" "))
    with pytest.raises(CatalogueError, match="licence 'CC-BY-NC-SA-4.0' does not allow commercial use"):
        await store.add_music(dataclasses.replace(one, music_id=f"five-{run}", sha256=f"5{run}".ljust(64, "0"),
                                                  licence="CC-BY-NC-SA-4.0", commercial=True))
    assert len(await store.music()) == 2


async def test_the_in_memory_store_keeps_the_template_rules() -> None:
    await store_rules(InMemoryCatalogueStore(clock=lambda: NOW), "r1")


async def test_the_in_memory_store_keeps_the_music_rules() -> None:
    await music_rules(InMemoryCatalogueStore(), "r1")


async def test_a_template_is_added_unretired_whatever_it_says() -> None:
    store = InMemoryCatalogueStore()
    added = await store.add_template(template("t", "dance", retired=True))
    assert not added.retired and [t.template_id for t in await store.templates()] == ["t"]
