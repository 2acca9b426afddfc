"""The catalogue's QC on real files made here with ffmpeg (short, small clips; the limits are set to fit
them): a synthetic performer's clip passes and is classified by how much of the frame the face fills;
a clip too short, one with no face, one where the face shows in half the samples, a text file named
.mp4, an audio file, an empty and a missing file are each refused with their reasons, every reason at
once. Then the music QC, and the add workflow (store by content, recommend a model, catalogue) on the
in-memory catalogue and a file store."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reelfab.devtools.synthetic import music_bed, template_clip
from reelfab.errors import DependencyUnavailable
from reelfab.faces.types import FaceEngine
from reelfab.media.tools import tool
from reelfab.settings import Settings
from reelfab.storage import FileStore, sha256_file
from reelfab_planner.catalogue import (
    CLOSE_UP,
    WIDE,
    CatalogueError,
    Duplicate,
    IdTaken,
    Refused,
    TemplateLimits,
    classify_shot,
)
from reelfab_planner.catalogue_store import InMemoryCatalogueStore
from reelfab_planner.cli import add_music_file, add_template_file, content_key
from reelfab_planner.template_qc import measure_template, music_qc, qc_engine, template_limits, template_qc

LIMITS = TemplateLimits(min_seconds=1.0, max_seconds=30.0, min_short_side=256, min_face_share=0.8, samples=8)
CLOSEUP = 0.2  # settings.planner_closeup_face_share's default
NOW = datetime(2030, 1, 2, tzinfo=UTC)


def ffmpeg(*args: str) -> None:
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", *args], check=True)


def x264(path: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("template-qc")
    face = template_clip(folder / "performer.mp4", seed=3, seconds=2.0, size=(288, 512), with_audio=False).path
    made = {"face": face}
    made["wide"] = folder / "wide.mp4"  # the same performer in a frame half as large again: the face fills less of it
    ffmpeg("-i", str(face), "-vf", "pad=432:768:0:0:color=gray", *x264(made["wide"]))
    made["short"] = folder / "short.mp4"
    ffmpeg("-i", str(face), "-t", "0.6", *x264(made["short"]))
    made["half"] = folder / "half.mp4"  # one second of the performer, one of black
    ffmpeg("-i", str(face), "-f", "lavfi", "-i", "color=c=black:s=288x512:r=25:d=1", "-filter_complex",
           "[0:v]trim=0:1,setpts=PTS-STARTPTS[a];[a][1:v]concat=n=2:v=1[v]", "-map", "[v]", *x264(made["half"]))
    made["noface"] = folder / "noface.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=288x512:rate=25:d=2", *x264(made["noface"]))
    made["tiny"] = folder / "tiny.mp4"  # wrong in every way: short, small, no face
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:d=0.5", *x264(made["tiny"]))
    made["text"] = folder / "notes.mp4"
    made["text"].write_text("this is not a video\n" * 20)
    made["empty"] = folder / "empty.mp4"
    made["empty"].write_bytes(b"")
    made["audio"] = music_bed(folder / "bed.m4a", seed=5, seconds=2.0)
    made["short_audio"] = folder / "blip.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.3", str(made["short_audio"]))
    yield made


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return qc_engine(Settings(face_backend="facefusion"))  # a whole-clip backend: the QC falls back to classical


def refusal(path: Path, engine: FaceEngine, limits: TemplateLimits = LIMITS) -> Refused:
    with pytest.raises(Refused) as caught:
        template_qc(path, engine, limits, closeup_face_share=CLOSEUP)
    return caught.value


def test_the_qc_engine_is_the_face_engines_detector(engine: FaceEngine) -> None:
    assert engine.name == "classical"


def test_a_clip_with_the_performer_in_every_sample_passes_as_a_close_up(clips: dict[str, Path], engine: FaceEngine) -> None:
    qc = template_qc(clips["face"], engine, LIMITS, closeup_face_share=CLOSEUP)
    assert qc.passed and qc.reasons == ()
    assert (qc.width, qc.height, round(qc.duration_s, 1)) == (288, 512, 2.0)
    assert (qc.sampled, qc.with_face, qc.face_share) == (8, 8, 1.0)
    assert 0.2 <= qc.face_height_share <= 0.3 and qc.shot == CLOSE_UP
    assert qc.metrics["sampled_frames"] == 8 and qc.metrics["shot"] == CLOSE_UP and qc.metrics["detector"] == "classical"
    print(f"\nclose-up: face height {qc.face_height_share:.3f} of the frame in {qc.with_face}/{qc.sampled} samples")


def test_the_same_performer_smaller_in_the_frame_is_a_wide_shot(clips: dict[str, Path], engine: FaceEngine) -> None:
    close = template_qc(clips["face"], engine, LIMITS, closeup_face_share=CLOSEUP)
    wide = template_qc(clips["wide"], engine, LIMITS, closeup_face_share=CLOSEUP)
    assert wide.shot == WIDE and wide.face_share == 1.0
    assert wide.face_height_share == pytest.approx(close.face_height_share * 512 / 768, rel=0.1)
    # the threshold is the setting's: at 0.15 the same measure makes a close-up
    assert classify_shot(wide.face_height_share, 0.15) == CLOSE_UP


def test_the_default_limits_refuse_a_short_small_clip_for_both_reasons(clips: dict[str, Path], engine: FaceEngine) -> None:
    limits = template_limits(Settings())
    assert (limits.min_seconds, limits.max_seconds, limits.min_short_side, limits.min_face_share) == (15.0, 30.0, 540, 0.8)
    refused = refusal(clips["face"], engine, limits)
    assert refused.codes == ["duration", "resolution"]
    assert "it lasts 2.0 s, templates must last 15 to 30 s" in str(refused)
    assert "288x512 is too small: its short side must be at least 540 px" in str(refused)


def test_the_limits_come_from_the_settings() -> None:
    limits = template_limits(Settings(planner_template_min_s=3, planner_template_max_s=9, planner_template_min_short_side=100,
                                      planner_template_min_face_share=0.5))
    assert (limits.min_seconds, limits.max_seconds, limits.min_short_side, limits.min_face_share) == (3, 9, 100, 0.5)


def test_a_too_short_clip_is_refused_for_its_duration(clips: dict[str, Path], engine: FaceEngine) -> None:
    refused = refusal(clips["short"], engine)
    assert refused.codes == ["duration"] and refused.what == "template short.mp4"
    assert "it lasts 0.6 s, templates must last 1 to 30 s" in refused.reasons[0]


def test_a_too_long_clip_is_refused_for_its_duration(clips: dict[str, Path], engine: FaceEngine) -> None:
    limits = TemplateLimits(min_seconds=0.5, max_seconds=1.5, min_short_side=256, samples=4)
    assert refusal(clips["face"], engine, limits).codes == ["duration"]


def test_a_clip_without_a_face_is_refused(clips: dict[str, Path], engine: FaceEngine) -> None:
    refused = refusal(clips["noface"], engine)
    assert refused.codes == ["no_face"] and refused.reasons == ["no face in any of the 8 sampled frames"]


def test_a_face_in_half_the_samples_is_not_enough(clips: dict[str, Path], engine: FaceEngine) -> None:
    qc = measure_template(clips["half"], engine, LIMITS, closeup_face_share=CLOSEUP)
    assert (qc.sampled, qc.with_face, qc.face_share) == (8, 4, 0.5)
    assert [r.code for r in qc.reasons] == ["face_hidden"]
    assert "a face shows in 4 of 8 sampled frames (50%), at least 80% needed" in qc.reasons[0].message
    lenient = TemplateLimits(min_seconds=1.0, min_short_side=256, min_face_share=0.5, samples=8)
    assert template_qc(clips["half"], engine, lenient, closeup_face_share=CLOSEUP).passed


def test_every_failing_rule_is_reported_at_once(clips: dict[str, Path], engine: FaceEngine) -> None:
    refused = refusal(clips["tiny"], engine)
    assert refused.codes == ["duration", "resolution", "no_face"]
    assert len(refused.reasons) == 3 and "160x90 is too small" in str(refused)


@pytest.mark.parametrize(("name", "code", "says"), [
    ("text", "not_video", "not a readable video"),
    ("empty", "not_video", "the file is empty"),
    ("audio", "not_video", "has no video stream"),
])
def test_a_file_that_is_not_a_video_is_refused_with_the_reason(clips: dict[str, Path], engine: FaceEngine, name: str,
                                                               code: str, says: str) -> None:
    refused = refusal(clips[name], engine)
    assert refused.codes == [code] and says in refused.reasons[0] and str(clips[name]) in refused.reasons[0]


def test_a_missing_file_is_refused(tmp_path: Path, engine: FaceEngine) -> None:
    refused = refusal(tmp_path / "nowhere.mp4", engine)
    assert refused.codes == ["missing"] and refused.reasons == [f"{tmp_path / 'nowhere.mp4'}: no such file"]


def test_a_folder_is_refused_as_a_folder_for_templates_and_music_alike(tmp_path: Path, engine: FaceEngine) -> None:
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    for_template = refusal(folder, engine)
    with pytest.raises(Refused) as for_music:
        music_qc(folder)
    for refused in (for_template, for_music.value):
        assert refused.codes == ["not_a_file"] and refused.reasons == [f"{folder}: is a directory, not a file"]


def test_an_empty_file_is_refused_in_the_same_words_for_templates_and_music(clips: dict[str, Path],
                                                                          engine: FaceEngine) -> None:
    with pytest.raises(Refused) as for_music:
        music_qc(clips["empty"])
    assert for_music.value.codes == ["not_audio"]
    assert for_music.value.reasons == refusal(clips["empty"], engine).reasons == [
        f"{clips['empty']}: the file is empty (0 bytes)"]


# ------------------------------------------------------------------------------------------------- music


def test_a_music_bed_passes_with_its_duration(clips: dict[str, Path]) -> None:
    qc = music_qc(clips["audio"])
    assert qc.duration_s == pytest.approx(2.0, abs=0.1) and qc.codec == "aac" and qc.channels == 2


@pytest.mark.parametrize(("name", "code", "says"), [
    ("noface", "no_audio", "has no audio stream"),
    ("text", "not_audio", "not a readable audio file"),
    ("short_audio", "duration", "it lasts 0.30 s, a music bed must last at least 1 s"),
])
def test_a_bad_music_bed_is_refused_with_the_reason(clips: dict[str, Path], name: str, code: str, says: str) -> None:
    with pytest.raises(Refused) as caught:
        music_qc(clips[name])
    assert caught.value.codes == [code] and says in str(caught.value)


def test_a_missing_music_bed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Refused, match="music bed gone.m4a refused: .*gone.m4a: no such file"):
        music_qc(tmp_path / "gone.m4a")


# ---------------------------------------------------------------------------------------- the workflows


async def add(catalogue: InMemoryCatalogueStore, objects: FileStore, path: Path, engine: FaceEngine, **kw: Any) -> Any:
    values: dict[str, Any] = dict(template_id=None, limits=LIMITS, engine=engine, closeup_face_share=CLOSEUP,
                                  commercial=False, backend="classical", rules_text=Settings().planner_model_rules,
                                  now=NOW)
    values.update(kw)
    tags = values.pop("tags", ["Dance", "#pop"])
    return await add_template_file(catalogue, objects, path, tags, **values)


async def test_a_passing_clip_is_stored_by_content_and_catalogued(clips: dict[str, Path], engine: FaceEngine,
                                                                  tmp_path: Path) -> None:
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")
    added = await add(catalogue, objects, clips["face"], engine)
    t = added.template
    sha = sha256_file(clips["face"])
    assert (t.template_id, t.tags, t.sha256, t.shot) == ("performer", ("dance", "pop"), sha, CLOSE_UP)
    assert t.uri == (tmp_path / "objects" / "catalogue" / "templates" / f"{sha}.mp4").as_uri()
    assert sha256_file(objects.local_path(t.uri)) == sha
    assert t.recommended_model == "hyperswap_1a_256" and added.model.model == "hyperswap_1a_256"
    assert t.qc["face_share"] == 1.0 and t.face_share == 1.0
    assert t.face_height_share == pytest.approx(added.qc["face_height_share"], abs=1e-4)
    assert [x.template_id for x in await catalogue.templates()] == ["performer"]

    wide = await add(catalogue, objects, clips["wide"], engine, template_id="far-away", commercial=True)
    assert (wide.template.shot, wide.template.recommended_model) == (WIDE, "ghost_1_256")  # licence-aware

    with pytest.raises(Duplicate, match="as 'performer'"):  # the same bytes, before any QC
        await add(catalogue, objects, clips["face"], engine, template_id="other")
    with pytest.raises(IdTaken, match="'far-away'"):
        await add(catalogue, objects, clips["half"], engine, template_id="far-away")


async def test_a_refused_clip_leaves_nothing_behind(clips: dict[str, Path], engine: FaceEngine, tmp_path: Path) -> None:
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")
    for name in ("noface", "text", "short"):
        with pytest.raises(Refused):
            await add(catalogue, objects, clips[name], engine)
    with pytest.raises(Refused, match="no such file"):
        await add(catalogue, objects, tmp_path / "gone.mp4", engine)
    with pytest.raises(CatalogueError, match="tag"):
        await add(catalogue, objects, clips["face"], engine, tags=["two words"])
    assert await catalogue.templates(include_retired=True) == []
    assert list((tmp_path / "objects").rglob("*")) == []


async def test_a_refusal_before_the_qc_leaves_nothing_behind_either(clips: dict[str, Path], engine: FaceEngine,
                                                                     tmp_path: Path) -> None:
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")
    with pytest.raises(CatalogueError, match="template_id '' is empty"):  # not the file name's id instead
        await add(catalogue, objects, clips["face"], engine, template_id="")
    with pytest.raises(CatalogueError, match="template_id '  ' is empty"):
        await add(catalogue, objects, clips["face"], engine, template_id="  ")
    with pytest.raises(Refused, match="is a directory, not a file") as folder:
        await add(catalogue, objects, tmp_path, engine)
    assert folder.value.codes == ["not_a_file"]
    with pytest.raises(Refused, match="the file is empty") as empty:
        await add(catalogue, objects, clips["empty"], engine)
    assert empty.value.codes == ["not_video"]
    assert await catalogue.templates(include_retired=True) == []
    assert list((tmp_path / "objects").rglob("*")) == []


async def test_a_file_that_cannot_be_read_is_refused_naming_why(clips: dict[str, Path], engine: FaceEngine,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("reelfab.storage.sha256_file", denied)
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")
    with pytest.raises(Refused, match="cannot read it: Permission denied") as template_refused:
        await add(catalogue, objects, clips["face"], engine)
    with pytest.raises(Refused, match="cannot read it: Permission denied") as music_refused:
        await add_music_file(catalogue, objects, clips["audio"], ["pop"], music_id=None, licence="CC0", commercial=False,
                             now=NOW)
    assert template_refused.value.codes == music_refused.value.codes == ["unreadable"]
    assert await catalogue.templates(include_retired=True) == [] and await catalogue.music() == []
    assert list((tmp_path / "objects").rglob("*")) == []


class FailingCatalogue(InMemoryCatalogueStore):
    """A catalogue whose add fails after the clip was stored (an outage, or a writer that won a race)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def add_template(self, t: Any) -> Any:
        raise self.error

    async def add_music(self, m: Any) -> Any:
        raise self.error


async def test_a_failed_add_takes_back_the_object_it_stored(clips: dict[str, Path], engine: FaceEngine,
                                                            tmp_path: Path) -> None:
    objects = FileStore(tmp_path / "objects")
    outage = FailingCatalogue(DependencyUnavailable("postgresql", "connection refused"))
    with pytest.raises(DependencyUnavailable):
        await add(outage, objects, clips["face"], engine)
    with pytest.raises(DependencyUnavailable):
        await add_music_file(outage, objects, clips["audio"], ["pop"], music_id=None, licence="CC0", commercial=False,
                             now=NOW)
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


async def test_a_failed_add_keeps_an_object_that_was_there_before(clips: dict[str, Path], engine: FaceEngine,
                                                                  tmp_path: Path) -> None:
    """The same bytes added twice at once: the loser's Duplicate must not delete the winner's clip."""
    objects = FileStore(tmp_path / "objects")
    sha = sha256_file(clips["face"])
    first = objects.put_file(content_key("catalogue/templates", sha, clips["face"]), clips["face"])
    with pytest.raises(Duplicate):
        await add(FailingCatalogue(Duplicate("template", "performer", sha)), objects, clips["face"], engine)
    with pytest.raises(CatalogueError, match="concurrent"):  # not a Duplicate: still not ours to delete
        await add(FailingCatalogue(CatalogueError("could not be added (a concurrent change)")), objects, clips["face"],
                  engine)
    assert objects.exists(first.uri) and sha256_file(objects.local_path(first.uri)) == sha


async def test_no_fitting_model_still_adds_the_template_and_says_why(clips: dict[str, Path], engine: FaceEngine,
                                                                      tmp_path: Path) -> None:
    added = await add(InMemoryCatalogueStore(), FileStore(tmp_path / "o"), clips["face"], engine, commercial=True,
                      rules_text="close-up:hyperswap_1a_256;wide:inswapper_128")
    assert added.template.recommended_model is None and added.model is None
    assert "no swap model for a commercial job on close-up template 'performer'" in added.note


async def test_a_music_bed_is_stored_by_content_with_its_licence(clips: dict[str, Path], tmp_path: Path) -> None:
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")
    bed = await add_music_file(catalogue, objects, clips["audio"], ["Pop"], music_id=None, licence=" CC-BY-4.0 ",
                               commercial=True, now=NOW)
    sha = sha256_file(clips["audio"])
    assert (bed.music_id, bed.tags, bed.licence, bed.commercial, bed.sha256) == ("bed", ("pop",), "CC-BY-4.0", True, sha)
    assert bed.uri.endswith(f"/catalogue/music/{sha}.m4a") and objects.exists(bed.uri)
    with pytest.raises(Duplicate, match="as 'bed'"):
        await add_music_file(catalogue, objects, clips["audio"], ["pop"], music_id="again", licence="x", commercial=False,
                             now=NOW)
    with pytest.raises(CatalogueError, match="licence ''"):
        await add_music_file(catalogue, objects, clips["audio"], ["pop"], music_id="x", licence="", commercial=False, now=NOW)


async def test_a_music_bed_refused_before_its_qc_leaves_nothing_behind(clips: dict[str, Path], tmp_path: Path) -> None:
    catalogue, objects = InMemoryCatalogueStore(), FileStore(tmp_path / "objects")

    async def add_bed(path: Path, **kw: Any) -> Any:
        values: dict[str, Any] = dict(music_id=None, licence="CC-BY-4.0", commercial=False, now=NOW)
        values.update(kw)
        return await add_music_file(catalogue, objects, path, ["pop"], **values)

    with pytest.raises(CatalogueError, match="licence 'CC-BY-NC-4.0' does not allow commercial use"):
        await add_bed(clips["audio"], licence="CC-BY-NC-4.0", commercial=True)
    with pytest.raises(CatalogueError, match="music_id '' is empty"):
        await add_bed(clips["audio"], music_id="")
    with pytest.raises(Refused, match="is a directory, not a file"):
        await add_bed(tmp_path)
    with pytest.raises(Refused, match="the file is empty"):
        await add_bed(clips["empty"])
    assert await catalogue.music() == [] and list((tmp_path / "objects").rglob("*")) == []
    bed = await add_bed(clips["audio"], licence="CC-BY-NC-4.0")  # a non-commercial bed, said so: taken
    assert (bed.licence, bed.commercial) == ("CC-BY-NC-4.0", False)


def test_content_keys_keep_only_a_plain_extension() -> None:
    sha = "a" * 64
    assert content_key("catalogue/templates", sha, Path("Clip.MP4")) == f"catalogue/templates/{sha}.mp4"
    assert content_key("catalogue/templates", sha, Path("clip")) == f"catalogue/templates/{sha}"
    assert content_key("catalogue/templates", sha, Path("clip.we ird")) == f"catalogue/templates/{sha}"
