"""Where the catalogue is kept (migrations/0001): templates and music beds, by id and by the sha256 of
their bytes. The same bytes twice are refused naming the first (a retired one too: retiring keeps the row
for the lineage of the jobs made on it); an id in use is refused. The in-memory twin keeps the same
rules for the broker-free tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from reelfab.db import check_schema_name

from .catalogue import (
    SHOTS,
    CatalogueError,
    Duplicate,
    IdTaken,
    MusicBed,
    Template,
    check_catalogue_id,
    check_licence,
)

TEMPLATE, MUSIC = "template", "music bed"


class CatalogueStore(Protocol):
    async def add_template(self, t: Template) -> Template: ...
    async def templates(self, include_retired: bool = False) -> list[Template]: ...
    async def template(self, template_id: str) -> Template | None: ...
    async def retire_template(self, template_id: str, reason: str) -> Template: ...
    async def add_music(self, m: MusicBed) -> MusicBed: ...
    async def music(self) -> list[MusicBed]: ...


def check_template(t: Template) -> Template:
    """What the store refuses to keep, whoever built the template: a bad id, no tags, an unknown shot."""
    check_catalogue_id(t.template_id, "template")
    if not t.tags:
        raise CatalogueError(f"template {t.template_id!r} has no tags")
    if t.shot not in SHOTS:
        raise CatalogueError(f"template {t.template_id!r}: shot {t.shot!r} is not one of {', '.join(SHOTS)}")
    if not t.uri or not t.sha256:
        raise CatalogueError(f"template {t.template_id!r} needs the uri and sha256 of its clip")
    return t


def check_music(m: MusicBed) -> MusicBed:
    """What the store refuses to keep: a bad id, no tags, no licence, commercial use under a licence
    that forbids it (whoever built the bed: the CLI checks the same before its QC)."""
    check_catalogue_id(m.music_id, "music")
    if not m.tags:
        raise CatalogueError(f"music bed {m.music_id!r} has no tags")
    try:
        check_licence(m.licence, commercial=m.commercial)
    except CatalogueError as exc:
        raise CatalogueError(f"music bed {m.music_id!r}: {exc}") from None
    if not m.uri or not m.sha256:
        raise CatalogueError(f"music bed {m.music_id!r} needs the uri and sha256 of its file")
    return m


def _reason(template_id: str, reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise CatalogueError(f"retiring template {template_id!r} needs a reason (--reason)")
    return reason


def _unknown(template_id: str) -> CatalogueError:
    return CatalogueError(f"no template {template_id!r} in the catalogue (`reelfab templates list --all` lists them)")


# ------------------------------------------------------------------------------------------- PostgreSQL

_TEMPLATE_COLUMNS = ("template_id", "uri", "sha256", "tags", "duration_s", "width", "height", "shot", "face_share",
                     "face_height_share", "recommended_model", "qc", "added_at")
_MUSIC_COLUMNS = ("music_id", "uri", "sha256", "tags", "licence", "commercial", "duration_s", "added_at")


class PostgresCatalogueStore:
    """The catalogue in the planner's schema; every query names its tables with the schema."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    async def add_template(self, t: Template) -> Template:
        check_template(t)
        values = [getattr(t, c) for c in _TEMPLATE_COLUMNS]
        values[_TEMPLATE_COLUMNS.index("tags")] = list(t.tags)
        values[_TEMPLATE_COLUMNS.index("qc")] = json.dumps(dict(t.qc), default=str)
        placeholders = ", ".join(f"${i + 1}" + ("::jsonb" if c == "qc" else "") for i, c in enumerate(_TEMPLATE_COLUMNS))
        sql = f"INSERT INTO {self._t('templates')} ({', '.join(_TEMPLATE_COLUMNS)}) VALUES ({placeholders}) RETURNING *"
        return _template(await self._insert("templates", "template_id", TEMPLATE, t.template_id, t.sha256, sql, values))

    async def templates(self, include_retired: bool = False) -> list[Template]:
        rows = await self.pool.fetch(
            f"SELECT * FROM {self._t('templates')} WHERE $1 OR retired_at IS NULL ORDER BY added_at, template_id",
            include_retired)
        return [_template(r) for r in rows]

    async def template(self, template_id: str) -> Template | None:
        row = await self.pool.fetchrow(f"SELECT * FROM {self._t('templates')} WHERE template_id = $1", template_id)
        return _template(row) if row else None

    async def retire_template(self, template_id: str, reason: str) -> Template:
        reason = _reason(template_id, reason)
        row = await self.pool.fetchrow(
            f"UPDATE {self._t('templates')} SET retired_at = COALESCE(retired_at, now()), "
            "retired_reason = COALESCE(retired_reason, $2) WHERE template_id = $1 RETURNING *", template_id, reason)
        if row is None:
            raise _unknown(template_id)
        return _template(row)

    async def add_music(self, m: MusicBed) -> MusicBed:
        check_music(m)
        values = [list(m.tags) if c == "tags" else getattr(m, c) for c in _MUSIC_COLUMNS]
        placeholders = ", ".join(f"${i + 1}" for i in range(len(_MUSIC_COLUMNS)))
        sql = f"INSERT INTO {self._t('music_beds')} ({', '.join(_MUSIC_COLUMNS)}) VALUES ({placeholders}) RETURNING *"
        return _music(await self._insert("music_beds", "music_id", MUSIC, m.music_id, m.sha256, sql, values))

    async def music(self) -> list[MusicBed]:
        rows = await self.pool.fetch(f"SELECT * FROM {self._t('music_beds')} ORDER BY added_at, music_id")
        return [_music(r) for r in rows]

    async def _insert(self, table: str, key: str, kind: str, item_id: str, sha256: str, sql: str,
                      values: list[Any]) -> Mapping[str, Any]:
        await self._refuse_taken(self.pool, table, key, kind, item_id, sha256)
        try:
            row: Mapping[str, Any] = await self.pool.fetchrow(sql, *values)
            return row
        except asyncpg.UniqueViolationError:  # another writer got there between the check and the insert
            await self._refuse_taken(self.pool, table, key, kind, item_id, sha256)
            raise CatalogueError(f"{kind} {item_id!r} could not be added (a concurrent change); try again") from None

    async def _refuse_taken(self, conn: Any, table: str, key: str, kind: str, item_id: str, sha256: str) -> None:
        """Duplicate when the bytes are there already (whatever the id), else IdTaken when the id is."""
        retired = "retired_at IS NOT NULL" if table == "templates" else "false"
        same = await conn.fetchrow(f"SELECT {key} AS id, {retired} AS retired FROM {self._t(table)} WHERE sha256 = $1",
                                   sha256)
        if same is not None:
            raise Duplicate(kind, same["id"], sha256, retired=same["retired"])
        if await conn.fetchval(f"SELECT 1 FROM {self._t(table)} WHERE {key} = $1", item_id):
            raise IdTaken(kind, item_id)


def _template(r: Mapping[str, Any]) -> Template:
    qc = r["qc"]
    return Template(
        template_id=r["template_id"], uri=r["uri"], sha256=r["sha256"], tags=tuple(r["tags"]),
        duration_s=r["duration_s"], width=r["width"], height=r["height"], shot=r["shot"], face_share=r["face_share"],
        recommended_model=r["recommended_model"], retired=r["retired_at"] is not None, added_at=r["added_at"],
        face_height_share=r["face_height_share"], retired_reason=r["retired_reason"] or "",
        retired_at=r["retired_at"], qc=json.loads(qc) if isinstance(qc, str) else dict(qc or {}),
    )


def _music(r: Mapping[str, Any]) -> MusicBed:
    return MusicBed(music_id=r["music_id"], uri=r["uri"], sha256=r["sha256"], tags=tuple(r["tags"]),
                    licence=r["licence"], commercial=r["commercial"], duration_s=r["duration_s"],
                    added_at=r["added_at"])


# --------------------------------------------------------------------------------------------- in memory


@dataclass
class InMemoryCatalogueStore:
    """The same rules in a dict, for tests and a planner without PostgreSQL."""

    items: dict[str, Template] = field(default_factory=dict)
    beds: dict[str, MusicBed] = field(default_factory=dict)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def add_template(self, t: Template) -> Template:
        check_template(t)
        same = next((x for x in self.items.values() if x.sha256 == t.sha256), None)
        if same is not None:
            raise Duplicate(TEMPLATE, same.template_id, t.sha256, retired=same.retired)
        if t.template_id in self.items:
            raise IdTaken(TEMPLATE, t.template_id)
        stored = replace(t, retired=False, retired_reason="", retired_at=None, qc=dict(t.qc))
        self.items[t.template_id] = stored
        return stored

    async def templates(self, include_retired: bool = False) -> list[Template]:
        kept = [t for t in self.items.values() if include_retired or not t.retired]
        return sorted(kept, key=lambda t: (t.added_at, t.template_id))

    async def template(self, template_id: str) -> Template | None:
        return self.items.get(template_id)

    async def retire_template(self, template_id: str, reason: str) -> Template:
        reason = _reason(template_id, reason)
        t = self.items.get(template_id)
        if t is None:
            raise _unknown(template_id)
        if not t.retired:  # retiring twice keeps the first retirement
            t = self.items[template_id] = replace(t, retired=True, retired_reason=reason, retired_at=self.clock())
        return t

    async def add_music(self, m: MusicBed) -> MusicBed:
        check_music(m)
        same = next((x for x in self.beds.values() if x.sha256 == m.sha256), None)
        if same is not None:
            raise Duplicate(MUSIC, same.music_id, m.sha256)
        if m.music_id in self.beds:
            raise IdTaken(MUSIC, m.music_id)
        self.beds[m.music_id] = m
        return m

    async def music(self) -> list[MusicBed]:
        return sorted(self.beds.values(), key=lambda m: (m.added_at, m.music_id))
