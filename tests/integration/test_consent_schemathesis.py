"""Schemathesis against the consent registry's API, in process, on the real PostgreSQL: generated
requests for every operation, valid and invalid, with an admin token. No input may cause a 5xx,
and every answer must be documented: its status, its content type and its body's schema.

Hypothesis drives the cases (fixed seed, no example database). The app, its pool and the httpx
client live on one private event loop: asyncpg pools are bound to the loop that made them, and
schemathesis's own ASGI client would run the app on a thread of its own."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from reelfab.consent.lease import Scope
from reelfab.db import create_pool
from reelfab.settings import Settings
from reelfab_consent_registry import tokens
from reelfab_consent_registry.api import build_api
from tests.conftest import unique
from tests.integration.consent_api_support import drop_schema, make_registry, make_schema, portrait_png

pytestmark = pytest.mark.postgres

EXAMPLES_PER_OPERATION = 20  # per generation mode: 600 cases over 15 operations, well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]  # schema-violating input must be refused
SEEDED = ("seed-granted", "seed-enrolled", "seed-bare")  # known subjects the generated cases sometimes target


@dataclass
class Target:
    runner: asyncio.Runner
    app: Any
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    schema: str
    auth: dict[str, str]


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsendable: int = 0


async def _setup(runner: asyncio.Runner, settings: Settings, objects: Path) -> Target:
    pool = await create_pool(settings)
    schema = unique("consent_fuzz")
    await make_schema(pool, schema)
    registry = make_registry(pool, schema, settings, objects)
    actor = "fuzzer"
    for n, subject_id in enumerate(SEEDED):
        await registry.create_subject(subject_id, f"Seed {n}", actor=actor)
    for n, subject_id in enumerate(SEEDED[:2]):
        await registry.enrol(subject_id, portrait_png(7000 + n), actor=actor)
    await registry.grant(
        SEEDED[0],
        document=b"signed",
        scope=Scope(("tiktok",), (), (), True),
        valid_from=None,
        valid_until=None,
        daily_cap=None,
        actor=actor,
    )
    token = await tokens.create_token(pool, schema, actor, "admin")
    app = build_api(registry, pool, schema)
    # raise_app_exceptions=False: an app error comes back as the 500 it is, for the checks to report
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test"
    )
    return Target(runner, app, client, pool, schema, {"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def target(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)  # not the tests' loop, not made current
    t = runner.run(_setup(runner, stack, tmp_path_factory.mktemp("consent-fuzz")))
    try:
        yield t
    finally:
        runner.run(t.client.aclose())
        runner.run(drop_schema(t.pool, t.schema))
        runner.run(t.pool.close())
        runner.close()


def _send(t: Target, case: schemathesis.Case) -> httpx.Response | None:
    """The case as schemathesis would send it (its requests-style serialisation), through httpx on our
    loop. None when the generated request cannot be put on the wire at all."""
    try:
        kw = case.as_transport_kwargs(base_url="http://test", headers=t.auth)
        prepared = requests.Request(
            method=kw["method"],
            url=kw["url"],
            headers=kw.get("headers"),
            params=kw.get("params"),
            cookies=kw.get("cookies"),
            data=kw.get("data"),
            files=kw.get("files"),
            json=kw.get("json"),
        ).prepare()
        request = t.client.build_request(
            prepared.method or "GET",
            prepared.url or "",
            headers={
                k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in prepared.headers.items()
            },
            content=prepared.body,  # type: ignore[arg-type]  # bytes or str here: no streams were given
        )
    except Exception:
        return None
    return t.runner.run(t.client.send(request))


def _run_operation(t: Target, operation: Any, mode: GenerationMode, tally: Tally) -> None:
    label = f"{operation.label} [{mode.value}]"
    checks = NEGATIVE_CHECKS if mode == GenerationMode.NEGATIVE else CHECKS

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode), seeded=st.sampled_from((None, None, *SEEDED)))
    def run(case: schemathesis.Case, seeded: str | None) -> None:
        if seeded is not None and mode == GenerationMode.POSITIVE:  # now and then, a subject that exists
            if case.path_parameters and "subject_id" in case.path_parameters:
                case.path_parameters["subject_id"] = seeded
            elif isinstance(case.body, dict) and "subject" in case.body:
                case.body["subject"] = seeded
        response = _send(t, case)
        if response is None:
            tally.unsendable += 1
            return
        tally.statuses[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=checks, headers=t.auth)
        # collected, not raised: no shrinking, and every operation still runs
        except (Exception, FailureGroup) as exc:
            tally.failures.append(
                f"{label} -> {response.status_code}: {response.text[:300]}\n{str(exc)[:1500]}"
            )

    run()


def test_no_generated_request_breaks_the_api(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 15
    tally = Tally()
    started = time.monotonic()
    for operation in operations:
        # negative cases break one part of a request each; removing the bearer header is one of them (401)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(target, operation, mode, tally)
    elapsed = time.monotonic() - started

    sent = sum(tally.statuses.values())
    by_status = Counter(status for (_, status) in tally.statuses.elements())
    print(
        f"\n{sent} requests in {elapsed:.1f}s ({tally.unsendable} unsendable); statuses {dict(sorted(by_status.items()))}"
    )
    for label in sorted({label for label, _ in tally.statuses}):
        print(f"  {label}: {dict(sorted((s, n) for (lb, s), n in tally.statuses.items() if lb == label))}")
    assert not tally.failures, f"{len(tally.failures)} failing cases:\n\n" + "\n\n".join(tally.failures[:10])
    assert sent >= 400
    assert not any(status >= 500 for status in by_status)
    # the generated traffic reached the registry, not only the validators
    assert {200, 201, 404, 409, 422} <= set(by_status), by_status


def test_the_conformance_checks_are_live(target: Target) -> None:
    """The checks above really judge answers: an undocumented status, a plain-text body and a body
    off its schema each fail them (so a passing run means conforming answers, not idle checks)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operation = schema["/subjects/{subject_id}"]["GET"]
    case = operation.Case(path_parameters={"subject_id": "seed-bare"})
    request = httpx.Request("GET", "http://test/subjects/seed-bare")
    bad = [
        (status_code_conformance, httpx.Response(418, json={"error": "x", "detail": "y"}, request=request)),
        (content_type_conformance, httpx.Response(404, text="Not Found", request=request)),
        (response_schema_conformance, httpx.Response(200, json={"subject_id": 1}, request=request)),
        (not_a_server_error, httpx.Response(500, json={"error": "x", "detail": "y"}, request=request)),
    ]
    for check, response in bad:
        with pytest.raises((AssertionError, FailureGroup, Exception)):
            case.validate_response(response, checks=[check], headers=target.auth)
    good = target.runner.run(target.client.get("/subjects/seed-bare", headers=target.auth))
    case.validate_response(good, checks=CHECKS, headers=target.auth)  # a real answer passes them all
