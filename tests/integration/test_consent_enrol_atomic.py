"""`reelfab consent enrol NEW IMAGE --name N` creates the subject and enrols its first image as one
transaction: an enrolment refused (one person, one subject; a failed quality check) leaves nothing
behind, no empty subject in `consent list` and no audit entry for a subject that never was."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reelfab.db import create_pool
from reelfab.settings import Settings
from reelfab_consent_registry import cli
from reelfab_consent_registry.errors import Conflict, Refused
from tests.conftest import unique
from tests.integration.consent_api_support import (
    drop_schema,
    make_registry,
    make_schema,
    portrait_png,
    text_bytes,
)

pytestmark = pytest.mark.postgres


async def _subjects_and_audit(settings: Settings, schema: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    pool = await create_pool(settings)
    try:
        subjects = [r[0] for r in await pool.fetch(f'SELECT subject_id FROM "{schema}".subjects ORDER BY subject_id')]
        log = [(r[0], r[1]) for r in await pool.fetch(f'SELECT action, subject_id FROM "{schema}".audit_log ORDER BY seq')]
        return subjects, log
    finally:
        await pool.close()


@pytest.fixture
def cli_schema(stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI's commands, run against a registry in a fresh schema with the stand-in face engine."""
    schema = unique("consent_enrol")

    async def setup() -> None:
        pool = await create_pool(stack)
        try:
            await make_schema(pool, schema)
        finally:
            await pool.close()

    asyncio.run(setup())

    @asynccontextmanager
    async def session(_schema: str | None = None) -> AsyncIterator[Any]:
        pool = await create_pool(stack)
        try:
            yield make_registry(pool, schema, stack, tmp_path / "objects")
        finally:
            await pool.close()

    monkeypatch.setattr(cli, "_session", session)
    yield schema

    async def teardown() -> None:
        pool = await create_pool(stack)
        try:
            await drop_schema(pool, schema)
        finally:
            await pool.close()

    asyncio.run(teardown())


def test_a_refused_enrolment_of_a_new_subject_creates_nothing(cli_schema: str, stack: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    ada = tmp_path / "ada.png"
    ada.write_bytes(portrait_png(7))
    r = runner.invoke(cli.app, ["enrol", "ada", str(ada), "--name", "Ada"])
    assert r.exit_code == 0, r.output
    before = asyncio.run(_subjects_and_audit(stack, cli_schema))
    assert before[0] == ["ada"] and before[1] == [("subject.created", "ada"), ("image.enrolled", "ada")]

    # the same face under another name: one person, one subject
    r = runner.invoke(cli.app, ["enrol", "vera", str(ada), "--name", "Vera"])
    assert r.exit_code != 0 and isinstance(r.exception, Refused), r.output
    assert "matches another enrolled subject (ada" in str(r.exception)
    # a picture that is not an image at all
    junk = tmp_path / "junk.png"
    junk.write_bytes(text_bytes(2000))
    r = runner.invoke(cli.app, ["enrol", "vera", str(junk), "--name", "Vera"])
    assert r.exit_code != 0 and isinstance(r.exception, Refused), r.output

    assert asyncio.run(_subjects_and_audit(stack, cli_schema)) == before  # no vera, no entry about her
    r = runner.invoke(cli.app, ["list"])
    assert r.exit_code == 0 and "vera" not in r.output and "ada" in r.output, r.output

    # vera's own face enrols, and creates her, in one go
    vera = tmp_path / "vera.png"
    vera.write_bytes(portrait_png(8))
    r = runner.invoke(cli.app, ["enrol", "vera", str(vera), "--name", "Vera"])
    assert r.exit_code == 0, r.output
    subjects, log = asyncio.run(_subjects_and_audit(stack, cli_schema))
    assert subjects == ["ada", "vera"] and log[-2:] == [("subject.created", "vera"), ("image.enrolled", "vera")]


async def test_enrol_with_create_name_is_one_transaction(pg_pool: Any, stack: Settings, tmp_path: Path) -> None:
    schema = unique("consent_enrol")
    await make_schema(pg_pool, schema)
    registry = make_registry(pg_pool, schema, stack, tmp_path)
    try:
        await registry.enrol("ada", portrait_png(7), "test", create_name="Ada")
        with pytest.raises(Refused, match="matches another enrolled subject"):
            await registry.enrol("vera", portrait_png(7), "test", create_name="Vera")
        with pytest.raises(Conflict, match="already exists"):  # an existing subject is not created again
            await registry.enrol("ada", portrait_png(9), "test", create_name="Ada again")
        with pytest.raises(Refused, match="subject id"):
            await registry.enrol("no/such", portrait_png(9), "test", create_name="Bad")
        assert [s["subject_id"] for s in await registry.list_subjects()] == ["ada"]
        actions = [r[0] for r in await pg_pool.fetch(f'SELECT action FROM "{schema}".audit_log ORDER BY seq')]
        assert actions == ["subject.created", "image.enrolled"]
    finally:
        await drop_schema(pg_pool, schema)


def test_consent_is_amended_from_the_command_line(cli_schema: str, stack: Settings, tmp_path: Path) -> None:
    """`reelfab consent amend`: a new version with the changes given, the rest kept; nothing to amend,
    or contradictory flags, refused before anything is written."""
    runner = CliRunner()
    ada = tmp_path / "ada.png"
    ada.write_bytes(portrait_png(7))
    doc = tmp_path / "consent.pdf"
    doc.write_bytes(b"%PDF-1.4 signed consent")
    assert runner.invoke(cli.app, ["enrol", "ada", str(ada), "--name", "Ada"]).exit_code == 0
    r = runner.invoke(cli.app, ["grant", "ada", "--document", str(doc), "--tag", "dance", "--daily-cap", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["grant", "ada", "--document", str(doc)])
    assert r.exit_code != 0 and "reelfab consent amend ada" in str(r.exception), r.output

    r = runner.invoke(cli.app, ["amend", "ada", "--tag", "dance", "--tag", "comedy", "--commercial", "--reason", "wider"])
    assert r.exit_code == 0 and "consent v2" in r.output, r.output
    r = runner.invoke(cli.app, ["show", "ada"])
    assert r.exit_code == 0, r.output
    latest = json.loads(r.output[r.output.index("{"):])["versions"][-1]
    assert (latest["version"], latest["status"], latest["reason"]) == (2, "AMENDED", "wider")
    assert latest["scope"]["allowed_tags"] == ["comedy", "dance"] and latest["scope"]["commercial_use"] is True
    assert latest["scope"]["platforms"] == ["tiktok"] and latest["daily_cap"] == 5  # what was not given stays
    for nothing in (["amend", "ada"], ["amend", "ada", "--tag", "x", "--any-tag"]):
        r = runner.invoke(cli.app, nothing)
        assert r.exit_code == 2, r.output
    _subjects, log = asyncio.run(_subjects_and_audit(stack, cli_schema))
    assert [a for a, _ in log].count("consent.amended") == 1, log
