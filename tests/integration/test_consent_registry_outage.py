"""The registry's own outage reads as an outage to its callers (a 503, then DependencyUnavailable), so a
swap job waits for the registry instead of being dead-lettered or refused (docs/architecture.md "Delivery rules")."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from reelfab.bus.outage import outage_of
from reelfab.consent.client import RegistryClient
from reelfab.consent.decision import ConsentRequest
from reelfab.errors import DependencyUnavailable, PermanentError
from reelfab.settings import Settings
from reelfab_consent_registry.api import build_api
from tests.integration.consent_api_support import make_registry

REQUEST = ConsentRequest("ada-01", "swap", "tiktok", datetime(2026, 12, 1, tzinfo=UTC), ())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_api_answers_503_with_retry_after_while_its_database_is_away(tmp_path: Path) -> None:
    settings = Settings(postgres_port=_closed_port())
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=0, max_size=2)
    try:
        app = build_api(make_registry(pool, "consent_down", settings, tmp_path), pool, "consent_down")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            r = await client.post("/check", json={"subject": "ada-01", "purpose": "swap", "platform": "tiktok"},
                                  headers={"Authorization": "Bearer whatever"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5" and r.headers["content-type"] == "application/json"
        assert "postgresql is unavailable" in r.json()["detail"]
    finally:
        await pool.close()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_the_client_reads_a_gateway_or_unavailable_answer_as_an_outage(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={"detail": "database away"}))
    client = RegistryClient("http://registry", "token", transport=transport)
    with pytest.raises(DependencyUnavailable) as caught:
        client.check(REQUEST)
    assert outage_of(caught.value) == "consent registry" and str(status) in str(caught.value)


def test_the_client_reads_a_registry_that_does_not_answer_as_an_outage() -> None:
    client = RegistryClient(f"http://127.0.0.1:{_closed_port()}", "token", timeout_s=2)
    with pytest.raises(DependencyUnavailable, match="does not answer"):
        client.check(REQUEST)


def test_a_refusal_of_the_request_itself_stays_permanent() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(422, json={"detail": "bad"}))
    with pytest.raises(PermanentError) as caught:
        RegistryClient("http://registry", "token", transport=transport).check(REQUEST)
    assert outage_of(caught.value) is None
