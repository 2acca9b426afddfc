"""The publisher in a process of its own, on the test's schema and under the test's service name (a
consumer group of its own), with settings from the environment:
``python -m tests.integration.publisher_process SCHEMA NAME``. A test kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from reelfab.service import run_service
from reelfab.settings import get_settings
from reelfab_publisher import main

if __name__ == "__main__":
    spec = dataclasses.replace(main.SPEC, db_schema=sys.argv[1], name=sys.argv[2])
    asyncio.run(run_service(spec, get_settings(), main.wire))
