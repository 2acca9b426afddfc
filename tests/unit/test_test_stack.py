"""The tests run against a stack of their own (tests/stack.env), never the one `make up` / `make demo` use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reelfab.settings import Settings
from tests.conftest import REPO, stack_environment


def test_the_test_stack_differs_from_the_users_in_every_address() -> None:
    env = stack_environment()
    fields = (
        Settings.model_fields
    )  # the defaults `make up` starts with, whatever this process's environment says
    tests = {name.removeprefix("REELFAB_").lower(): value for name, value in env.items()}
    assert set(tests) == {"state_dir", "kafka_bootstrap", "kafka_controller_port", "postgres_port"}
    state = Path(tests["state_dir"])
    assert state.is_absolute() and REPO in state.parents and state != REPO / ".reelfab"
    for name in ("kafka_bootstrap", "kafka_controller_port", "postgres_port"):
        assert str(fields[name].default) != tests[name], name


def test_settings_made_in_a_test_point_at_the_test_stack() -> None:
    env = stack_environment()
    for name, value in env.items():
        if os.environ.get(name) != value:
            pytest.fail(f"{name} is {os.environ.get(name)!r} in the tests, not tests/stack.env's {value!r}")
    assert Settings().state_dir.resolve() == REPO / ".reelfab" / "test-stack"
