"""The planner's and analytics' wiring, broker-free on the in-memory bus: every declared topic is
consumed, once. (The publisher needs its PostgreSQL tables: tests/integration/test_publisher_dryrun.py
checks its wiring.)"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.contracts.codec import default_codec
from reelfab.service import ServiceContext, build_context
from reelfab.settings import Settings

DECIDING = ["reelfab_planner", "reelfab_analytics"]


def _context(package: str) -> tuple[Any, ServiceContext]:
    main = importlib.import_module(f"{package}.main")
    settings = Settings()
    ctx = build_context(main.SPEC, settings, InMemoryBus(settings, main.SPEC.name, default_codec()), None, main.wire)
    return main, ctx


@pytest.mark.parametrize("package", DECIDING)
def test_every_declared_topic_is_consumed_once(package: str) -> None:
    main, ctx = _context(package)
    assert sorted(s.topic.name for s in ctx.bus.subscriptions) == sorted(main.SPEC.consumes)
