"""The KRaft cluster id handed to Kafka's storage tool never reads as an option."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from reelfab.devtools.localstack import kafka
from reelfab.settings import Settings


def test_an_id_starting_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 as the first byte encodes to "-" in URL-safe base64: the first draw would start with it
    draws = iter([uuid.UUID(bytes=bytes([0xF8]) + bytes(15)), uuid.UUID(bytes=bytes([0x10]) + bytes(15))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka._new_cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22


def test_format_passes_the_id_joined_to_its_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], what: str, **_: Any) -> None:
        seen.append(cmd)

    monkeypatch.setattr(kafka.procs, "run", fake_run)
    settings = Settings(state_dir=tmp_path)
    kafka.ensure_formatted(settings, "/usr/bin/java", tmp_path, lambda _line: None)
    (cmd,) = seen
    flags = [part for part in cmd if part.startswith("--cluster-id")]
    assert len(flags) == 1 and flags[0].startswith("--cluster-id=")
    assert "--cluster-id" not in cmd
