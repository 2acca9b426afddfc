"""The registry's Ed25519 signing keys. The private half is stored sealed under the master key and
used only inside this service; public keys (all of them, retired ones too, so old leases still
verify) are what other services load."""

from __future__ import annotations

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from reelfab.consent.lease import key_id_of
from reelfab.errors import PermanentError

from .crypto import KeyWrapper

_CONTEXT = b"reelfab.consent.signing-key"


class NoSigningKey(PermanentError):
    pass


async def generate(conn: asyncpg.Connection, schema: str, wrapper: KeyWrapper) -> str:
    """A new key becomes the signing key; the previous one retires (and keeps verifying)."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = key_id_of(private.public_key())
    await conn.execute(f'UPDATE "{schema}".signing_keys SET retired_at = now() WHERE retired_at IS NULL')
    await conn.execute(
        f'INSERT INTO "{schema}".signing_keys (key_id, public_key, private_key_enc) VALUES ($1, $2, $3)',
        key_id, public, wrapper.wrap(raw, _CONTEXT),
    )
    return key_id


async def signing_key(conn: asyncpg.Connection | asyncpg.Pool, schema: str, wrapper: KeyWrapper) -> Ed25519PrivateKey:
    row = await conn.fetchrow(
        f'SELECT private_key_enc FROM "{schema}".signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1'
    )
    if row is None:
        raise NoSigningKey("the registry has no signing key yet: run `reelfab consent keys rotate`")
    return Ed25519PrivateKey.from_private_bytes(wrapper.unwrap(bytes(row["private_key_enc"]), _CONTEXT))


async def public_keys(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, Ed25519PublicKey]:
    rows = await conn.fetch(f'SELECT key_id, public_key FROM "{schema}".signing_keys ORDER BY created_at')
    return {r["key_id"]: Ed25519PublicKey.from_public_bytes(bytes(r["public_key"])) for r in rows}


async def ensure_signing_key(pool: asyncpg.Pool, schema: str, wrapper: KeyWrapper) -> str | None:
    """On first start, the registry makes its first key; returns its id, or None if one exists."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{schema}.signing_keys")
        if await conn.fetchval(f'SELECT 1 FROM "{schema}".signing_keys WHERE retired_at IS NULL'):
            return None
        return await generate(conn, schema, wrapper)
