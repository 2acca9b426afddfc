"""The point-of-use consent check every stage runs before touching a face: first the local view
(lease signature, revocation, validity, scope, the image's hashes), then — where the stage holds the
face's image — the registry's full check (identity match, daily cap). A stage that cannot reach the
registry does not proceed: that is a transient failure, retried, never a silent pass."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab.consent.client import RegistryClient
from reelfab.consent.decision import ConsentRequest, Decision
from reelfab.consent.lease import public_key_from_text
from reelfab.consent.view import ConsentView
from reelfab.errors import PermanentError, TransientError
from reelfab.settings import Settings


def load_public_keys(settings: Settings, client: RegistryClient | None = None) -> dict[str, Ed25519PublicKey]:
    """REELFAB_CONSENT_PUBLIC_KEYS ("keyid=base64,..."), else the registry's /keys."""
    text = settings.consent_public_keys.strip()
    if text:
        keys = {}
        for item in text.split(","):
            key_id, sep, value = item.strip().partition("=")
            if not sep:
                raise PermanentError(f"REELFAB_CONSENT_PUBLIC_KEYS item {item!r} is not keyid=base64")
            keys[key_id] = public_key_from_text(value)
        return keys
    return (client or RegistryClient.from_settings(settings)).public_keys()


class ConsentGate:
    def __init__(self, view: ConsentView, registry: RegistryClient | None, *, catch_up_s: float = 10.0) -> None:
        self.view = view
        self.registry = registry
        self.catch_up_s = catch_up_s  # how long a denial the registry contradicts waits for the view

    async def check(
        self,
        *,
        subject: str,
        purpose: str,
        platform: str,
        tags: tuple[str, ...] = (),
        commercial: bool = True,
        image_sha256: str | None = None,
        image_bytes: bytes | None = None,
        consume: bool = False,
        ask_registry: bool = False,
        job_id: str | None = None,
    ) -> Decision:
        """The local view first; then the registry where the stage holds the face's image
        (``image_bytes``) or asks for the registry's authoritative answer anyway (``ask_registry``:
        the registry's /check needs no image, and answers at once for a revocation the local view
        has not consumed yet). ``job_id`` goes with a consuming check, so a redelivered job does not
        count against the subject's daily cap twice."""
        request = ConsentRequest(subject, purpose, platform, datetime.now(UTC), tags, commercial=commercial,
                                 image_sha256=image_sha256)
        local = self.view.check(request)
        if not local.allowed and self.registry is not None:
            local = await self._unless_view_is_behind(request, local, job_id)
        if not local.allowed or self.registry is None or (image_bytes is None and not ask_registry):
            return local
        return await asyncio.to_thread(self.registry.check, request, image_bytes=image_bytes, consume=consume,
                                       job_id=job_id)

    async def _unless_view_is_behind(self, request: ConsentRequest, local: Decision, job_id: str | None) -> Decision:
        """A local denial the registry contradicts means the view has not read the newest lease yet (a
        job right after a grant or a re-grant): wait for it, then decide on the view, as always. A
        denial the registry confirms stands at once."""
        assert self.registry is not None
        authoritative = await asyncio.to_thread(self.registry.check, request, job_id=job_id)
        if not authoritative.allowed or (authoritative.consent_version or 0) <= self._known_version(request.subject):
            return local  # the registry agrees, or the view already holds that version: the denial stands
        deadline = time.monotonic() + self.catch_up_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            local = self.view.check(request)
            if local.allowed:
                return local
        raise TransientError(
            f"the registry allows {request.subject} (consent v{authoritative.consent_version}) but this service's "
            f"consent view still says {local.reason} after {self.catch_up_s:.0f} s: it is behind the consent topic"
        )

    def _known_version(self, subject: str) -> int:
        terms = self.view.terms(subject)
        return int(terms.consent_version) if terms is not None else 0
