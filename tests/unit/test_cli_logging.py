"""The ``reelfab`` command's logs go to stderr, so what a command prints on stdout (``--json``) parses."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from reelfab.cli import configure_cli_logging
from reelfab.logging import get_logger


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level


def test_command_logs_go_to_stderr_and_only_warnings_by_default(
        restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REELFAB_LOG_LEVEL", raising=False)
    configure_cli_logging()
    log = get_logger("reelfab.test")
    log.info("routine detail")
    log.warning("planned nothing", why="no templates")
    out, err = capsys.readouterr()
    assert out == ""
    assert "planned nothing" in err and "no templates" in err and "routine detail" not in err


def test_the_level_follows_reelfab_log_level(
        restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFAB_LOG_LEVEL", "info")
    configure_cli_logging()
    get_logger("reelfab.test").info("routine detail")
    out, err = capsys.readouterr()
    assert out == "" and "routine detail" in err
