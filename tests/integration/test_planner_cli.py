"""`reelfab plan` refuses in one line, naming the cause, what would otherwise plan nothing or crash:
no way to verify consent leases, Kafka not answering, a count beyond the batch limit."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from reelfab.consent.lease import public_key_text
from reelfab_planner import cli_plan
from tests.integration.media_handlers_support import KEY, KEY_ID

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def app() -> typer.Typer:
    made = typer.Typer()
    cli_plan.register(made)
    return made


def _plan(app: typer.Typer, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from reelfab.settings import get_settings

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["plan", *args])
    finally:
        get_settings.cache_clear()


def test_no_token_and_no_keys_is_refused_naming_what_to_set(app: typer.Typer, stack: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result = _plan(app, monkeypatch, "--count", "1", REELFAB_CONSENT_TOKEN="", REELFAB_CONSENT_PUBLIC_KEYS="")
    assert result.exit_code == 1, result.output
    assert "cannot verify consent leases" in result.output and "REELFAB_CONSENT_TOKEN" in result.output
    assert "Traceback" not in result.output


def test_kafka_not_answering_is_one_line(app: typer.Typer, stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from reelfab.devtools.embedded import free_port

    keys = f"{KEY_ID}={public_key_text(KEY.public_key())}"
    result = _plan(app, monkeypatch, "--count", "1", REELFAB_CONSENT_PUBLIC_KEYS=keys,
                   REELFAB_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert result.exit_code == 1, result.output
    assert "does not answer" in result.output and "make up" in result.output and "Traceback" not in result.output


def test_a_count_beyond_the_batch_limit_is_refused_before_anything_runs(app: typer.Typer,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = _plan(app, monkeypatch, "--count", "3000000000")
    assert result.exit_code == 2 and "100000" in result.output.replace(",", "")
