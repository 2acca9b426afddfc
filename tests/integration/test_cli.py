"""The `reelfab` command against the real stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reelfab.cli import app
from reelfab.contracts.topics import TOPICS

runner = CliRunner()


@pytest.mark.kafka
def test_topics_lists_every_topic_of_the_design_with_partitions_and_cleanup(stack: Any) -> None:
    result = runner.invoke(app, ["topics"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:]]
        for line in result.output.splitlines()
        if line.count("│") >= 5
    }
    for t in TOPICS:
        assert rows[t.name][0] == str(t.partitions), rows.get(t.name)
        assert rows[t.name][1] == ("compact" if t.compacted else "delete")
        assert rows[t.dlq][1] == "delete"


def test_serve_refuses_an_unknown_service() -> None:
    result = runner.invoke(app, ["serve", "renderer"])
    assert result.exit_code == 2
    assert "unknown service 'renderer'" in result.output and "planner" in result.output


def test_asyncapi_writes_the_generated_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    result = runner.invoke(app, ["asyncapi", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["asyncapi"].startswith("3.") and {c["address"] for c in doc["channels"].values()} == {
        t.name for t in TOPICS
    }


def test_serve_without_a_database_says_so_in_one_line() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "reelfab.cli", "serve", "planner"],
        env={**__import__("os").environ, "REELFAB_POSTGRES_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "PostgreSQL is not answering on 127.0.0.1:1" in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["consent", "list"], ["storage", "prune"], ["serve", "planner"]])
def test_a_database_that_does_not_answer_is_named_with_what_to_do(command: list[str]) -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "reelfab.cli", *command],
                          env={**os.environ, "REELFAB_POSTGRES_PORT": "1", "COLUMNS": "300"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "PostgreSQL is not answering on 127.0.0.1:1" in proc.stderr
    assert "make up" in proc.stderr and "Traceback" not in proc.stderr


def test_a_taken_http_port_is_named_with_what_to_do() -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "reelfab.cli", "serve", "planner"],
                              env={**os.environ, "REELFAB_HTTP_PORT": str(port), "COLUMNS": "300"},
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "REELFAB_HTTP_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
