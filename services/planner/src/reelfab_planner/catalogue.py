"""The planner's catalogue, pure: what a template clip, a music bed and a caption style are, how their
ids and tags are checked, how a template's shot is told from its QC, and the caption styles' TOML.
No I/O but reading the styles file: the store (catalogue_store.py) keeps them, the QC adapter
(template_qc.py) measures the clips, the CLI (cli.py) puts the two together."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reelfab.contracts.arms import NO_MUSIC, SEPARATOR
from reelfab.errors import PermanentError
from reelfab.identifiers import InvalidIdentifier, check_identifier

CLOSE_UP, WIDE = "close-up", "wide"
SHOTS: tuple[str, ...] = (CLOSE_UP, WIDE)
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")  # hashtag-like: consent scopes and trends name them
_SLUG_JUNK = re.compile(r"[^a-z0-9_.-]+")


class CatalogueError(PermanentError):
    """Input the catalogue cannot take (a bad id, tag, file or style); the message says which."""


class Refused(CatalogueError):
    """A clip or bed refused by the catalogue's rules, with every reason found (``codes``: one stable
    word per reason, for programs and tests: missing, not_video, duration, resolution, no_face, ...)."""

    def __init__(self, what: str, reasons: Iterable[str], codes: Iterable[str] = ()) -> None:
        self.what = what
        self.reasons = list(reasons)
        self.codes = list(codes)
        super().__init__(f"{what} refused: " + "; ".join(self.reasons))


class Duplicate(CatalogueError):
    """The same bytes (sha256) are in the catalogue already, under ``existing_id``."""

    def __init__(self, kind: str, existing_id: str, sha256: str, *, retired: bool = False) -> None:
        self.existing_id = existing_id
        state = " (retired)" if retired else ""
        super().__init__(f"this {kind} is in the catalogue already as {existing_id!r}{state} (sha256 {sha256[:16]}…)")


class IdTaken(CatalogueError):
    """Another item of the same kind has this id."""

    def __init__(self, kind: str, item_id: str) -> None:
        self.item_id = item_id
        super().__init__(f"{kind} id {item_id!r} is taken by another {kind}; choose another with --id")


@dataclass(frozen=True)
class Template:
    template_id: str
    uri: str
    sha256: str
    tags: tuple[str, ...]
    duration_s: float
    width: int
    height: int
    shot: str  # CLOSE_UP | WIDE, from the face's height against the frame's (classify_shot)
    face_share: float  # share of sampled frames with a face
    recommended_model: str | None  # the model rules' pick for its shot when added (jobs pick again at plan time)
    retired: bool
    added_at: datetime
    face_height_share: float = 0.0  # median face height / frame height over the frames with a face
    retired_reason: str = ""
    retired_at: datetime | None = None
    qc: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the QC's metrics, as measured


@dataclass(frozen=True)
class MusicBed:
    music_id: str
    uri: str
    sha256: str
    tags: tuple[str, ...]
    licence: str
    commercial: bool  # the licence allows commercial use
    duration_s: float
    added_at: datetime


@dataclass(frozen=True)
class TemplateLimits:
    """What a template must be to enter the catalogue (settings.planner_template_*, CLI overrides)."""

    min_seconds: float = 15.0
    max_seconds: float = 30.0
    min_short_side: int = 540
    min_face_share: float = 0.8
    samples: int = 15  # frames sampled evenly over the clip for the face check

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise CatalogueError(
                f"template duration limits {self.min_seconds}..{self.max_seconds} s: need 0 < min <= max"
            )
        if self.min_short_side < 1 or not 0.0 <= self.min_face_share <= 1.0 or self.samples < 1:
            raise CatalogueError(
                f"template limits: short side {self.min_short_side} px and samples {self.samples} must be >= 1, "
                f"face share {self.min_face_share} within 0..1"
            )


def check_catalogue_id(value: str, kind: str = "template") -> str:
    """A catalogue id: an opaque identifier that can also be part of an arm id (no ``~``, not ``-``)."""
    field_name = f"{kind}_id"
    try:
        check_identifier(value, field_name)
    except InvalidIdentifier as exc:
        raise CatalogueError(str(exc)) from None
    if SEPARATOR in value:
        raise CatalogueError(f"{field_name} {value!r} contains {SEPARATOR!r}, which separates the parts of an arm id")
    if value == NO_MUSIC:
        raise CatalogueError(f"{field_name} {value!r} is reserved: an arm id writes a missing music bed so")
    return value


def id_from_name(name: str, kind: str = "template") -> str:
    """A readable id from a file name (its stem, lower-cased, anything else turned into ``-``)."""
    stem = Path(name).stem.lower()
    slug = _SLUG_JUNK.sub("-", stem).strip("-.")[:64].rstrip("-.")
    if not slug:
        raise CatalogueError(f"cannot make a {kind} id from the file name {name!r}; pass --id")
    return check_catalogue_id(slug, kind)


def chosen_id(given: str | None, file_name: str, kind: str = "template") -> str:
    """The id given with --id, checked; none given: one from the file name. An empty or blank id is
    refused (it is a mistake, not a request for the file name's)."""
    if given is None:
        return id_from_name(file_name, kind)
    if not given.strip():
        raise CatalogueError(f"{kind}_id {given!r} is empty: give an id with --id, or leave --id out to take it "
                             f"from the file name")
    return check_catalogue_id(given, kind)


def normalise_tags(tags: Iterable[str], kind: str = "template") -> tuple[str, ...]:
    """Tags lower-cased, stripped of a leading ``#``, each once, in the order given; at least one."""
    out: list[str] = []
    bad: list[str] = []
    for raw in tags:
        tag = raw.strip().lower().removeprefix("#")
        if not _TAG.fullmatch(tag):
            bad.append(repr(raw))
        elif tag not in out:
            out.append(tag)
    if bad:
        raise CatalogueError(
            f"{kind} tag(s) {', '.join(bad)} not allowed: 1 to 64 of a-z 0-9 _ . + -, starting with a letter or digit"
        )
    if not out:
        raise CatalogueError(f"a {kind} needs at least one tag (--tag)")
    return tuple(out)


def classify_shot(face_height_share: float, closeup_face_share: float) -> str:
    """A close-up when the face fills at least ``closeup_face_share`` of the frame's height."""
    return CLOSE_UP if face_height_share >= closeup_face_share else WIDE


# ------------------------------------------------------------------------------------------- licences

_NC_TOKEN = re.compile(r"[^a-z0-9]+")  # SPDX-like ids: CC-BY-NC-4.0, CC BY-NC-SA 4.0 -> ..., "nc", ...
_NC_TEXT = re.compile(r"(?<![a-z])(non[\s_-]?commercial|not?\s+(for\s+)?commercial)")


def non_commercial(licence: str) -> bool:
    """Whether ``licence`` says it forbids commercial use: an SPDX-like id with an ``NC`` part
    (CC-BY-NC-4.0, CC-BY-NC-SA-*, CC-BY-NC-ND-*) or text saying NonCommercial, non-commercial, not for
    commercial use, no commercial use. Any other licence is taken at the word of whoever adds it."""
    text = licence.lower()
    return "nc" in _NC_TOKEN.split(text) or _NC_TEXT.search(text) is not None


def check_licence(text: str, *, commercial: bool) -> str:
    """The licence named (stripped); refused when it is blank or too long, or when it is a known
    non-commercial licence and the bed is said to allow commercial use. Not saying a commercial
    licence allows it is allowed: the bed then goes to non-commercial jobs only."""
    licence = text.strip()
    if not licence or len(licence) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in licence):
        raise CatalogueError(f"licence {text!r}: name it in 1 to 200 printable characters (e.g. CC-BY-4.0)")
    if commercial and non_commercial(licence):
        raise CatalogueError(f"licence {licence!r} does not allow commercial use (it is a non-commercial licence): "
                             "add the bed without --commercial, or under a licence that allows it")
    return licence


# ------------------------------------------------------------------------------------ caption styles

_POSITIONS = ("top", "middle", "bottom")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_STYLE_FIELDS = {"captions", "font_size", "position", "colour"}


@dataclass(frozen=True)
class CaptionStyle:
    style_id: str
    captions: tuple[str, ...]  # plain texts to burn in, one picked per job
    font_size: int = 10  # subtitle units against 288 lines, as the renderer's (10: ~67 px on 1920)
    position: str = "bottom"  # top | middle | bottom
    colour: str = "#FFFFFF"

    def caption_for(self, seed: int) -> str:
        """The caption of a job with this ``seed``: the same seed always picks the same text."""
        return self.captions[seed % len(self.captions)]


BUILT_IN_STYLES: tuple[CaptionStyle, ...] = (
    CaptionStyle("clean", ("Wait for it", "Had to try this one", "New look, same energy"), 10, "bottom", "#FFFFFF"),
    CaptionStyle("bold", ("Which one is real?", "Plot twist", "Did not see that coming"), 14, "middle", "#FFE14D"),
    CaptionStyle("minimal", ("just vibes", "one take", "no caption needed"), 8, "top", "#F2F2F2"),
)


def caption_styles(path: Path | None) -> list[CaptionStyle]:
    """The styles of the TOML file at ``path`` (``[styles.<id>]`` tables; see parse_caption_styles),
    or the built-in ones when ``path`` is None. A bad file: CatalogueError naming the line or field."""
    if path is None:
        return list(BUILT_IN_STYLES)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"caption styles {path}: cannot read it ({exc})") from None
    return parse_caption_styles(text, str(path))


def parse_caption_styles(text: str, source: str = "caption styles") -> list[CaptionStyle]:
    """``[styles.<id>]`` with ``captions`` (non-empty list of texts) and optionally ``font_size``
    (4..40), ``position`` (top | middle | bottom) and ``colour`` (#RRGGBB)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise CatalogueError(f"{source}: not valid TOML: {exc}") from None
    extra = set(doc) - {"styles"}
    if extra:
        raise CatalogueError(f"{source}: unknown top-level key(s) {sorted(extra)}; styles go in [styles.<id>] tables")
    tables = doc.get("styles")
    if not isinstance(tables, dict) or not tables:
        raise CatalogueError(f"{source}: no styles: add at least one [styles.<id>] table")
    return [_style(source, style_id, body) for style_id, body in tables.items()]


def _style(source: str, style_id: str, body: Any) -> CaptionStyle:
    where = f"{source}: styles.{style_id}"
    if not isinstance(body, dict):
        raise CatalogueError(f"{where}: must be a table ([styles.{style_id}])")
    try:
        check_catalogue_id(style_id, "style")
    except CatalogueError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    unknown = set(body) - _STYLE_FIELDS
    if unknown:
        raise CatalogueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_STYLE_FIELDS)}")
    captions = body.get("captions")
    if (not isinstance(captions, list) or not captions
            or not all(isinstance(c, str) and c.strip() and len(c) <= 200 for c in captions)):
        raise CatalogueError(f"{where}.captions: must be a non-empty list of texts (each 1..200 characters)")
    font_size = body.get("font_size", 10)
    if isinstance(font_size, bool) or not isinstance(font_size, int) or not 4 <= font_size <= 40:
        raise CatalogueError(f"{where}.font_size: {font_size!r} must be a whole number 4..40")
    position = body.get("position", "bottom")
    if position not in _POSITIONS:
        raise CatalogueError(f"{where}.position: {position!r} must be one of {', '.join(_POSITIONS)}")
    colour = body.get("colour", "#FFFFFF")
    if not isinstance(colour, str) or not _COLOUR.fullmatch(colour):
        raise CatalogueError(f"{where}.colour: {colour!r} must be #RRGGBB")
    return CaptionStyle(style_id, tuple(c.strip() for c in captions), font_size, position, colour.upper())
