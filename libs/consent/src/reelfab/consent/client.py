"""Asking the consent registry over HTTP: the full check (identity match, daily cap) that only the
registry can make, and its public keys for local lease verification."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab.consent.decision import ConsentRequest, Decision
from reelfab.consent.lease import public_key_from_text
from reelfab.errors import DependencyUnavailable, PermanentError, TransientError
from reelfab.identifiers import check_identifier
from reelfab.settings import Settings


class RegistryClient:
    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        if not token:
            raise PermanentError(
                "no consent registry token: set REELFAB_CONSENT_TOKEN (create one with `reelfab consent tokens create NAME`)"
            )
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s,
                                 transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        return cls(settings.consent_registry_url, settings.consent_token)

    def check(
        self,
        request: ConsentRequest,
        *,
        image_bytes: bytes | None = None,
        consume: bool = False,
        job_id: str | None = None,
    ) -> Decision:
        """The registry's full check. With ``consume``, an allowed use counts toward the daily cap
        once per ``job_id``: a redelivered job asking again is not counted again."""
        if consume and job_id is None:  # the registry refuses it too: a use is counted once per job
            raise PermanentError("a consuming consent check must name its job (job_id)")
        if job_id is not None:
            check_identifier(job_id, "job_id")
        body: dict[str, Any] = {
            "subject": request.subject, "purpose": request.purpose, "platform": request.platform,
            "template_tags": list(request.template_tags), "territory": request.territory,
            "commercial": request.commercial, "at": request.at.astimezone(UTC).isoformat(), "consume": consume,
        }
        if job_id is not None:
            body["job_id"] = job_id
        if image_bytes is not None:
            body["image_base64"] = base64.b64encode(image_bytes).decode()
        data = self._call("POST", "/check", json=body)
        return Decision(bool(data["allowed"]), data["reason"], data["detail"], data.get("consent_version"))

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k: public_key_from_text(v) for k, v in self._call("GET", "/keys").items()}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # an outage of the registry, not the fault of the job asking
            raise DependencyUnavailable(
                "consent registry", f"{self.url} does not answer ({type(exc).__name__}: {exc}); is it running?"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(f"consent registry {method} {path}: {exc}") from None
        if response.status_code in (502, 503, 504):  # behind a proxy, or its database away
            raise DependencyUnavailable(
                "consent registry", f"{method} {path} answered {response.status_code} {response.text[:300]}"
            )
        if response.status_code >= 500:
            raise TransientError(f"consent registry {method} {path}: {response.status_code} {response.text[:300]}")
        if response.status_code >= 400:
            raise PermanentError(f"consent registry {method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()


def now_request(subject: str, *, purpose: str, platform: str, tags: tuple[str, ...] = (), commercial: bool = True) -> ConsentRequest:
    return ConsentRequest(subject, purpose, platform, datetime.now(UTC), tags, commercial=commercial)
