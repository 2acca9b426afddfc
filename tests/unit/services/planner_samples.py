"""Catalogue items, consent terms and plan inputs for the planner's broker-free tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope
from reelfab_planner.catalogue import CaptionStyle, MusicBed, Template
from reelfab_planner.model_rules import manifest_licences, parse_rules
from reelfab_planner.plan import Inputs, PlanConfig
from reelfab_planner.policy import Policy

NOW = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
RULES = "close-up:hyperswap_1a_256,ghost_2_256;wide:inswapper_128,ghost_1_256"


def template(template_id: str, *tags: str, shot: str = "close-up", retired: bool = False) -> Template:
    return Template(template_id=template_id, uri=f"file:///store/templates/{template_id}.mp4", sha256="1" * 64,
                    tags=tuple(tags) or ("dance",), duration_s=16.0, width=720, height=1280, shot=shot,
                    face_share=1.0, recommended_model=None, retired=retired, added_at=NOW)


def music(music_id: str, *, commercial: bool = True) -> MusicBed:
    return MusicBed(music_id=music_id, uri=f"file:///store/music/{music_id}.m4a", sha256="2" * 64, tags=("pop",),
                    licence="CC-BY-4.0" if commercial else "CC-BY-NC-4.0", commercial=commercial, duration_s=30.0,
                    added_at=NOW)


def style(style_id: str) -> CaptionStyle:
    return CaptionStyle(style_id=style_id, captions=(f"caption of {style_id}",))


def terms(subject: str, *, version: int = 1, status: str = "GRANTED", platforms: tuple[str, ...] = ("tiktok",),
          tags: tuple[str, ...] = (), commercial: bool = False, daily_cap: int | None = None,
          valid_until: datetime | None = None, valid_from: datetime | None = None) -> LeaseTerms:
    return LeaseTerms(subject=subject, consent_version=version, status=status,
                      scope=Scope(platforms, tags, (), commercial), valid_from=valid_from or NOW - timedelta(days=1),
                      valid_until=valid_until or NOW + timedelta(days=30), daily_cap=daily_cap,
                      images=(EnrolledImageRef(subject_sha(subject), "f0f0f0f0f0f0f0f0", "dlib_resnet_v1"),),
                      embedding_digest="d" * 64, document_sha256="e" * 64, issued_at=NOW)


def subject_sha(subject: str) -> str:
    return (subject.encode().hex() * 64)[:64]


def config(*, commercial: bool = False, max_share: float = 1.0, backend: str = "classical") -> PlanConfig:
    return PlanConfig(platform="tiktok", commercial=commercial, max_share=max_share, backend=backend,
                      model_rules=parse_rules(RULES), licences=manifest_licences(), trend_priority=10, trend_max_jobs=20)


def inputs(subjects: Iterable[LeaseTerms], templates: Iterable[Template], *, beds: Iterable[MusicBed] = (),
           styles: Iterable[CaptionStyle] = (), policy: Policy | None = None, produced: Iterable[str] = (),
           disabled: Iterable[tuple[str, str]] = (), planned_today: Mapping[str, int] | None = None,
           suspect: Mapping[str, str] | None = None) -> Inputs:
    return Inputs(terms={t.subject: t for t in subjects}, suspect=dict(suspect or {}), templates=list(templates),
                  music=list(beds), styles=list(styles) or [style("plain")], policy=policy or Policy(),
                  produced=frozenset(produced), disabled=frozenset(disabled), planned_today=dict(planned_today or {}))


def arms(**posteriors: Any) -> list[dict[str, Any]]:
    """[{arm_id, alpha, beta, pulls, mean, disabled}] from arm=(alpha, beta[, disabled])."""
    out = []
    for arm_id, value in posteriors.items():
        alpha, beta, *rest = value
        out.append({"arm_id": arm_id, "alpha": alpha, "beta": beta, "pulls": int(alpha + beta - 2),
                    "mean": alpha / (alpha + beta), "disabled": bool(rest and rest[0])})
    return out
