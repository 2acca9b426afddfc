"""The hash-chained audit log. Every consent decision appends an entry whose hash covers its content
and the previous entry's hash; verification recomputes the chain and names the first entry that does
not match. Entries hold ids and hashes, never biometrics, so erasure leaves the chain intact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

GENESIS = "0" * 64
_LOCK = 0x5EEDA0D17  # serialises appends: the chain is a single line


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, subject_id: str | None, details: dict[str, Any]) -> str:
    body = json.dumps(
        {"prev": prev_hash, "seq": seq, "at": at.astimezone(UTC).isoformat(), "actor": actor, "action": action,
         "subject": subject_id, "details": details},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


async def append(conn: asyncpg.Connection, schema: str, *, actor: str, action: str, subject_id: str | None,
                 details: dict[str, Any]) -> int:
    """Append inside the caller's transaction (the entry commits with the change it records)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
    last = await conn.fetchrow(f'SELECT seq, entry_hash FROM "{schema}".audit_log ORDER BY seq DESC LIMIT 1')
    prev = last["entry_hash"] if last else GENESIS
    seq = int(await conn.fetchval(f"SELECT nextval(pg_get_serial_sequence('\"{schema}\".audit_log', 'seq'))"))
    at = datetime.now(UTC)
    clean = json.loads(json.dumps(details, default=str))  # what jsonb will give back on verification
    await conn.execute(
        f'INSERT INTO "{schema}".audit_log (seq, at, actor, action, subject_id, details, prev_hash, entry_hash) '
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        seq, at, actor, action, subject_id, json.dumps(clean), prev, entry_hash(prev, seq, at, actor, action, subject_id, clean),
    )
    return seq


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    entries: int
    first_broken: int | None = None
    problem: str = ""


async def verify(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> AuditVerification:
    rows = await conn.fetch(
        f'SELECT seq, at, actor, action, subject_id, details, prev_hash, entry_hash FROM "{schema}".audit_log ORDER BY seq'
    )
    prev = GENESIS
    for n, r in enumerate(rows):
        if r["prev_hash"] != prev:
            what = "an entry before it was removed or altered" if n else "the first entry does not start the chain"
            return AuditVerification(False, n, r["seq"], f"entry {r['seq']}: previous hash does not match ({what})")
        details = json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]
        expected = entry_hash(prev, r["seq"], r["at"], r["actor"], r["action"], r["subject_id"], details)
        if r["entry_hash"] != expected:
            return AuditVerification(False, n, r["seq"], f"entry {r['seq']}: content does not match its hash (edited)")
        prev = r["entry_hash"]
    return AuditVerification(True, len(rows))
