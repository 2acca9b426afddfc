"""A minimal synchronous client for the Confluent Schema Registry REST API: register a schema under a
subject, look a schema up by id. Subjects follow TopicNameStrategy (``<topic>-value``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from reelfab.errors import PermanentError, TransientError

REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryClient:
    """Register a schema under a subject, look a schema up by id. Both directions are cached."""

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, transport=transport)
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent on the registry) and return its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        body = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": text})
        schema_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(schema_id, int):
            raise PermanentError(
                f"schema registry at {self.url}: no schema id in the answer to registering {subject}: {body!r:.200}"
            )
        self._ids[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, text)
        return schema_id

    def get_schema(self, schema_id: int) -> str:
        """The schema (JSON text) registered under ``schema_id``."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        body = self._request("GET", f"/schemas/ids/{schema_id}", None)
        text = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise PermanentError(
                f"schema registry at {self.url}: no schema in the answer for id {schema_id}: {body!r:.200}"
            )
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise PermanentError(f"schema registry at {self.url}: schema id {schema_id} is {kind}, not AVRO")
        self._schemas[schema_id] = text
        return text

    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        url = self.url + path
        try:
            resp = self._client.request(
                method,
                url,
                content=None if payload is None else json.dumps(payload).encode(),
                headers={"Content-Type": REGISTRY_CONTENT_TYPE, "Accept": REGISTRY_CONTENT_TYPE},
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"schema registry {method} {url} timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(
                f"schema registry {method} {url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            detail = _registry_message(resp)
            cls = TransientError if resp.status_code >= 500 or resp.status_code == 429 else PermanentError
            raise cls(f"schema registry {method} {url} answered {resp.status_code}: {detail}")
        try:
            return resp.json()
        except ValueError as exc:
            raise PermanentError(
                f"schema registry {method} {url} answered with something that is not JSON: {resp.text[:200]!r}"
            ) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _registry_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(body, dict) and "message" in body:
        code = body.get("error_code")
        return f"{body['message']}" + (f" (error_code {code})" if code is not None else "")
    return str(body)[:300]
