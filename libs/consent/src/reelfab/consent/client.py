"""Asking the consent registry over HTTP: the full check (identity match, daily cap) that only the
registry can make, its public keys for local lease verification, and an enrolled image's bytes
(fetched at the point of use, never carried by a job)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab.consent.decision import ConsentRequest, Decision
from reelfab.consent.images import ImageFetchRefused, ImageFetchRejected, check_sha256
from reelfab.consent.lease import public_key_from_text
from reelfab.errors import DependencyUnavailable, PermanentError, TransientError
from reelfab.identifiers import check_identifier
from reelfab.settings import Settings

_IMAGE_REFUSALS = frozenset({403, 404, 409, 410})  # consent not active, no such image, tampered, erased
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024  # the registry's default upload limit: nothing larger is enrolled
_ERROR_BODY_BYTES = 64 * 1024  # of an error answer, only this much is read


class RegistryClient:
    """``timeout_s`` bounds each step of a request (connect, each read, ...); an image fetch must also
    end within ``fetch_timeout_s`` and is refused beyond ``max_image_bytes``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        fetch_timeout_s: float = 60.0,
    ) -> None:
        if not token:
            raise PermanentError(
                "no consent registry token: set REELFAB_CONSENT_TOKEN (create one with `reelfab consent tokens create NAME`)"
            )
        if max_image_bytes < 1 or fetch_timeout_s <= 0:
            raise ValueError(f"max_image_bytes ({max_image_bytes}) and fetch_timeout_s ({fetch_timeout_s}) must be positive")
        self.url = url.rstrip("/")
        self.max_image_bytes, self.fetch_timeout_s = max_image_bytes, fetch_timeout_s
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s,
                                 transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        return cls(settings.consent_registry_url, settings.consent_token,
                   max_image_bytes=max(settings.consent_max_upload_bytes, DEFAULT_MAX_IMAGE_BYTES))

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

    @contextmanager
    def _transport(self, method: str, path: str) -> Iterator[None]:
        """httpx's failures as ours: no answer is the registry's outage, another HTTP error transient."""
        try:
            yield
        except httpx.TransportError as exc:  # an outage of the registry, not the fault of the job asking
            raise DependencyUnavailable(
                "consent registry", f"{self.url} does not answer ({type(exc).__name__}: {exc}); is it running?"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(f"consent registry {method} {path}: {exc}") from None

    def ping(self) -> None:
        """The registry answers its health check (DependencyUnavailable when it does not): the health
        probe that clears its outage (reelfab.service.ServiceContext.probes)."""
        self._call("GET", "/healthz")

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k: public_key_from_text(v) for k, v in self._call("GET", "/keys").items()}

    def fetch_image(self, subject_id: str, sha256: str) -> bytes:
        """The bytes of ``subject_id``'s enrolled image ``sha256`` (what ``images.image_ref`` names),
        checked against that hash. Both parts are validated before anything is asked.

        ImageFetchRefused (a PermanentError) when the registry will not hand them over: 403 the
        subject's consent is not active, 404 no such subject or image, 409 the stored image failed the
        registry's integrity check, 410 the subject was erased. ImageFetchRejected (permanent too) for
        an answer over ``max_image_bytes`` or of other bytes than the hash names. An outage (no answer,
        a timeout, 502/503/504, or no whole answer within ``fetch_timeout_s``) is DependencyUnavailable
        and another 5xx TransientError: the client does not retry itself, the bus retries the message
        (``reelfab.errors``). Blocking: call it in a worker thread from async code."""
        check_identifier(subject_id, "subject_id")
        check_sha256(sha256)
        path = f"/subjects/{subject_id}/images/{sha256}"
        limit, deadline = self.max_image_bytes, time.monotonic() + self.fetch_timeout_s
        with self._transport("GET", path), self.http.stream("GET", path, headers={"Accept-Encoding": "identity"}) as response:
            # streamed: an oversized answer is cut off at the limit, never held whole
            if response.status_code != 200:
                body, _ = _read_at_most(response, _ERROR_BODY_BYTES, deadline)
                self._raise_for("GET", path, response.status_code, body, refusals=_IMAGE_REFUSALS)
                raise PermanentError(f"consent registry GET {path} answered {response.status_code}, not 200 with the image")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ImageFetchRejected(
                    f"consent registry GET {path} announced {declared} bytes, over the {limit}-byte image limit"
                )
            data, over = _read_at_most(response, limit, deadline)
        if over:
            raise ImageFetchRejected(f"consent registry GET {path} answered more than the {limit}-byte image limit")
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:  # a registry (or proxy) answering other bytes must not put another face in a job
            raise ImageFetchRejected(
                f"consent registry GET {path} answered {len(data)} bytes whose sha256 is {actual}, not the one asked for"
            )
        return data

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._transport(method, path):
            response = self.http.request(method, path, **kwargs)
        self._raise_for(method, path, response.status_code, response.content)
        return response.json()

    @staticmethod
    def _raise_for(method: str, path: str, status: int, body: bytes, *, refusals: frozenset[int] = frozenset()) -> None:
        """Nothing for a 2xx or 3xx; an outage is DependencyUnavailable, other server errors
        TransientError, a 4xx PermanentError (ImageFetchRefused for a status in ``refusals``)."""
        text = body[:300].decode("utf-8", "replace")
        if status in (502, 503, 504):  # behind a proxy, or its database away
            raise DependencyUnavailable("consent registry", f"{method} {path} answered {status} {text}")
        if status >= 500:
            raise TransientError(f"consent registry {method} {path}: {status} {text}")
        if status in refusals:
            error, reason, detail = _refusal(body)
            raise ImageFetchRefused(
                f"consent registry {method} {path}: {status} {error}" + (f" ({reason})" if reason else "") + f": {detail[:300]}",
                status=status,
                reason=reason,
            )
        if status >= 400:
            raise PermanentError(f"consent registry {method} {path}: {status} {text}")


def _read_at_most(response: httpx.Response, limit: int, deadline: float) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a streamed body, and whether there was more (the rest is not read).
    A body still arriving at ``deadline`` (a server trickling it out) is an outage."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            return bytes(data[:limit]), True
        if time.monotonic() > deadline:
            raise DependencyUnavailable(
                "consent registry", f"{response.request.url.path} did not answer whole within its time limit"
            )
    return bytes(data), False


def _refusal(body: bytes) -> tuple[str, str | None, str]:
    """Error class, reason code and detail of a registry error body (``{"error", "detail", "reason"?}``;
    a body of another shape, from a proxy say, is its text)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return "", None, body.decode("utf-8", "replace")
    reason = parsed.get("reason")
    return str(parsed.get("error", "")), reason if isinstance(reason, str) else None, str(parsed.get("detail", ""))


def now_request(subject: str, *, purpose: str, platform: str, tags: tuple[str, ...] = (), commercial: bool = True) -> ConsentRequest:
    return ConsentRequest(subject, purpose, platform, datetime.now(UTC), tags, commercial=commercial)
