"""Bearer tokens for the registry's HTTP API. A token is shown once, when it is made; only its
sha256 is stored, so a leaked database does not leak working tokens. Two roles: ``admin`` writes
and reads, ``reader`` reads and asks for consent checks."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from reelfab.db import check_schema_name

ROLES = ("admin", "reader")
TOKEN_PREFIX = "rfc_"  # recognisable in logs and secret scanners; not part of any lookup


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the token's name (the audit's actor) and its role."""

    name: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def create_token(conn: asyncpg.Connection | asyncpg.Pool, schema: str, name: str, role: str) -> str:
    """A new token for ``name`` with ``role``; the returned text is the only copy of it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    name = name.strip()
    if not name or "\x00" in name or len(name) > 100:
        raise ValueError("a token needs a name of 1–100 characters (it is the audit's actor)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        f'INSERT INTO "{check_schema_name(schema)}".api_tokens (token_id, name, role, token_sha256) VALUES ($1, $2, $3, $4)',
        secrets.token_hex(8),
        name,
        role,
        token_sha256(token),
    )
    return token


async def authenticate(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, token: str | None
) -> Principal | None:
    """The principal a token stands for; None for no token, an unknown one or a revoked one.
    The lookup is by hash, so timing reveals nothing about stored tokens."""
    if not token:
        return None
    row = await conn.fetchrow(
        f'SELECT name, role FROM "{check_schema_name(schema)}".api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL',
        token_sha256(token),
    )
    return Principal(row["name"], row["role"]) if row else None


async def revoke_token(conn: asyncpg.Connection | asyncpg.Pool, schema: str, token_id: str) -> bool:
    """Revoke by id (as ``list_tokens`` shows it); False if no live token has that id."""
    status: str = await conn.execute(
        f'UPDATE "{check_schema_name(schema)}".api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL',
        token_id,
    )
    return status.endswith(" 1")


async def list_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, *, include_revoked: bool = False
) -> list[TokenInfo]:
    rows = await conn.fetch(
        f'SELECT token_id, name, role, created_at, revoked_at FROM "{check_schema_name(schema)}".api_tokens '
        + ("" if include_revoked else "WHERE revoked_at IS NULL ")
        + "ORDER BY created_at, token_id"
    )
    return [TokenInfo(**dict(r)) for r in rows]
