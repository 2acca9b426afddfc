"""The catalogue on the real PostgreSQL: the store keeps the same rules as its in-memory twin (add, list,
retire, the same bytes twice, an id taken: tests/unit/services/test_planner_catalogue.py's
``store_rules`` and ``music_rules``), in its own schema; and the `reelfab templates|music|styles`
commands end to end on real clips: QC, the object store, the planner's tables."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab.devtools.synthetic import music_bed, template_clip
from reelfab.media.tools import tool
from reelfab.settings import get_settings
from reelfab.storage import sha256_file
from reelfab_planner.catalogue_store import PostgresCatalogueStore
from reelfab_planner.cli import register
from tests.conftest import unique
from tests.unit.services.planner_samples import template
from tests.unit.services.test_planner_catalogue import music_rules, store_rules

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def catalogue(stack: Any) -> AsyncIterator[dict[str, Any]]:
    schema = unique("planner")
    pool = await create_pool(stack)
    await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_planner"))
    try:
        yield {"pool": pool, "schema": schema, "store": PostgresCatalogueStore(pool, schema), "run": schema[-10:]}
    finally:
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def test_postgres_keeps_the_template_rules(catalogue: dict[str, Any]) -> None:
    await store_rules(catalogue["store"], catalogue["run"])


async def test_postgres_keeps_the_music_rules(catalogue: dict[str, Any]) -> None:
    await music_rules(catalogue["store"], catalogue["run"])


async def test_the_store_works_in_its_own_schema_only(catalogue: dict[str, Any]) -> None:
    other = unique("planner")
    await migrate(catalogue["pool"], other, package_migrations("reelfab_planner"))
    try:
        await catalogue["store"].add_template(template(f"here-{catalogue['run']}", "dance"))
        elsewhere = PostgresCatalogueStore(catalogue["pool"], other)
        assert await elsewhere.templates(include_retired=True) == []
        await elsewhere.add_template(template(f"here-{catalogue['run']}", "dance"))  # no clash across schemas
        assert [t.template_id for t in await catalogue["store"].templates()] == [f"here-{catalogue['run']}"]
    finally:
        await catalogue["pool"].execute(f'DROP SCHEMA "{other}" CASCADE')


# ------------------------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("catalogue-cli")
    made = {"clip": template_clip(folder / "Street Dance.mp4", seed=11, seconds=1.6, size=(288, 512)).path,
            "noface": folder / "noface.mp4", "bed": music_bed(folder / "bed.m4a", seed=2, seconds=1.5),
            "styles": folder / "styles.toml"}
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:d=0.5",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(made["noface"])], check=True)
    made["styles"].write_text('[styles.shout]\ncaptions = ["LOOK"]\nposition = "top"\n')
    yield made


def reelfab(args: list[str], env: dict[str, str]) -> Result:
    app = typer.Typer()
    register(app)
    get_settings.cache_clear()  # the commands read the settings of this environment
    try:
        return CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    finally:
        get_settings.cache_clear()


async def test_templates_and_music_by_command_end_to_end(catalogue: dict[str, Any], media: dict[str, Path],
                                                         tmp_path: Path) -> None:
    schema, store = catalogue["schema"], catalogue["store"]
    env = {"REELFAB_STORAGE_ROOT": (tmp_path / "objects").as_uri(), "REELFAB_PLANNER_TEMPLATE_MIN_S": "1",
           "REELFAB_PLANNER_TEMPLATE_MIN_SHORT_SIDE": "256", "REELFAB_FACE_BACKEND": "classical",
           "REELFAB_PLANNER_CAPTION_STYLES": str(media["styles"])}

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(reelfab, [*args, "--schema", schema] if args[0] != "styles" else list(args), env)

    added = await run("templates", "add", str(media["clip"]), "--tag", "Dance", "--tag", "#street", "--json")
    assert added.exit_code == 0, added.output + added.stderr
    body = json.loads(added.stdout)
    sha = sha256_file(media["clip"])
    assert (body["template_id"], body["tags"], body["sha256"], body["shot"]) == ("street-dance", ["dance", "street"], sha,
                                                                                "close-up")
    assert body["uri"] == (tmp_path / "objects" / "catalogue" / "templates" / f"{sha}.mp4").as_uri()
    assert (tmp_path / "objects" / "catalogue" / "templates" / f"{sha}.mp4").read_bytes() == media["clip"].read_bytes()
    assert body["recommended_model"] == "hyperswap_1a_256" and body["face_share"] >= 0.8
    row = await catalogue["pool"].fetchrow(f'SELECT * FROM "{schema}".templates WHERE template_id = $1', "street-dance")
    assert row["sha256"] == sha and row["recommended_model"] == "hyperswap_1a_256" and row["retired_at"] is None
    assert json.loads(row["qc"])["sampled_frames"] == 15

    refused = await run("templates", "add", str(media["noface"]), "--tag", "dance")
    assert refused.exit_code == 1
    assert "refused: template noface.mp4" in refused.stderr
    for reason in ("duration: it lasts 0.5 s", "resolution: 160x90 is too small", "no_face: no face in any"):
        assert reason in refused.stderr, refused.stderr
    again = await run("templates", "add", str(media["clip"]), "--tag", "dance", "--id", "copy")
    assert again.exit_code == 1 and "in the catalogue already as 'street-dance'" in again.stderr
    missing = await run("templates", "add", str(tmp_path / "gone.mp4"), "--tag", "dance")
    assert missing.exit_code == 1 and "gone.mp4: no such file" in missing.stderr
    assert [t.template_id for t in await store.templates(include_retired=True)] == ["street-dance"]

    listed = await run("templates", "list")
    assert listed.exit_code == 0 and "street-dance" in listed.stdout and "hyperswap_1a_256" in listed.stdout
    retired = await run("templates", "retire", "street-dance", "--reason", "licence ended")
    assert retired.exit_code == 0 and "retired" in retired.stdout and "licence ended" in retired.stdout
    assert json.loads((await run("templates", "list", "--json")).stdout) == []
    everything = json.loads((await run("templates", "list", "--all", "--json")).stdout)
    assert [(t["template_id"], t["retired"], t["retired_reason"]) for t in everything] == [
        ("street-dance", True, "licence ended")]
    unknown = await run("templates", "retire", "nobody", "--reason", "x")
    assert unknown.exit_code == 1 and "no template 'nobody'" in unknown.stderr

    bed = await run("music", "add", str(media["bed"]), "--tag", "pop", "--licence", "CC-BY-4.0", "--commercial")
    assert bed.exit_code == 0, bed.output + bed.stderr
    beds = json.loads((await run("music", "list", "--json")).stdout)
    assert [(m["music_id"], m["licence"], m["commercial"], m["tags"]) for m in beds] == [("bed", "CC-BY-4.0", True, ["pop"])]
    assert beds[0]["uri"].endswith(f"/catalogue/music/{sha256_file(media['bed'])}.m4a")
    not_audio = await run("music", "add", str(media["noface"]), "--tag", "pop", "--licence", "CC0")
    assert not_audio.exit_code == 1 and "has no audio stream" in not_audio.stderr

    styles = json.loads((await run("styles", "list", "--json")).stdout)
    assert styles["source"] == str(media["styles"])
    assert styles["styles"] == [{"style_id": "shout", "captions": ["LOOK"], "font_size": 10, "position": "top",
                                 "colour": "#FFFFFF"}]


async def test_every_refusal_by_command_exits_1_with_its_reasons_and_adds_nothing(
        catalogue: dict[str, Any], media: dict[str, Path], tmp_path: Path) -> None:
    """Each refusal names what is wrong in the same words for templates and music (a folder, an empty
    file, an empty --id), a non-commercial licence cannot be marked commercial, and none of them leaves
    a row or an object behind."""
    schema, store = catalogue["schema"], catalogue["store"]
    objects = tmp_path / "objects"
    env = {"REELFAB_STORAGE_ROOT": objects.as_uri(), "REELFAB_PLANNER_TEMPLATE_MIN_S": "1",
           "REELFAB_PLANNER_TEMPLATE_MIN_SHORT_SIDE": "256", "REELFAB_FACE_BACKEND": "classical"}
    folder = tmp_path / "a folder.mp4"
    folder.mkdir()
    empty_clip, empty_bed = tmp_path / "empty.mp4", tmp_path / "empty.m4a"
    empty_clip.write_bytes(b"")
    empty_bed.write_bytes(b"")

    async def refused(*args: str) -> str:
        r = await asyncio.to_thread(reelfab, [*args, "--schema", schema], env)
        assert r.exit_code == 1, (args, r.exit_code, r.output, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == "", (args, r.stdout)
        return " ".join(r.stderr.split())  # rich wraps long lines

    template = ("templates", "add", "--tag", "dance")
    music = ("music", "add", "--tag", "pop", "--licence", "CC0-1.0")
    for says in (await refused(*template, str(folder)), await refused(*music, str(folder))):
        assert f"not_a_file: {folder}: is a directory, not a file" in says, says
    for args, path in ((template, empty_clip), (music, empty_bed)):
        says = await refused(*args, str(path))
        assert f"{path}: the file is empty (0 bytes)" in says and "moov atom" not in says, says
    for args, path, kind in ((template, media["clip"], "template"), (music, media["bed"], "music")):
        for blank in ("", " "):
            says = await refused(*args, str(path), "--id", blank)
            assert f"{kind}_id {blank!r} is empty" in says and "leave --id out" in says, says
    for licence in ("CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-ND-4.0", "Attribution-NonCommercial 4.0"):
        says = await refused("music", "add", str(media["bed"]), "--tag", "pop", "--licence", licence, "--commercial")
        assert f"licence {licence!r} does not allow commercial use" in says, says

    assert await store.templates(include_retired=True) == [] and await store.music() == []
    assert not objects.exists() or [p for p in objects.rglob("*") if p.is_file()] == []
    listed = json.loads((await asyncio.to_thread(reelfab, ["music", "list", "--json", "--schema", schema], env)).stdout)
    assert listed == []
    # the same bed without --commercial is taken, and listed as not for commercial use
    bed = await asyncio.to_thread(reelfab, ["music", "add", str(media["bed"]), "--tag", "pop", "--licence",
                                            "CC-BY-NC-4.0", "--json", "--schema", schema], env)
    assert bed.exit_code == 0, bed.output + bed.stderr
    assert [(m.licence, m.commercial) for m in await store.music()] == [("CC-BY-NC-4.0", False)]
