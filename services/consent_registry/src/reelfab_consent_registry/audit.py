"""The hash-chained audit log. Every consent decision appends an entry whose hash covers its content
and the previous entry's hash; verification recomputes the chain and names the first entry that does
not match. Entries hold ids and hashes, never biometrics, so erasure leaves the chain intact.

A chain alone cannot show that its newest entries were cut off, nor that the whole of it was rewritten
and re-hashed with this module's own function. So the registry signs checkpoints (in the manner of
Certificate Transparency's signed tree heads): the entry count, the newest entry's hash and the time,
signed with its Ed25519 key and published outside its database (a compacted Kafka topic). ``verify``
checks the chain against a checkpoint: its signature, that the chain still holds at least
``entry_count`` entries, and that the entry at that position still carries ``head_hash``.

The newest message on the topic is not necessarily the strongest evidence: whoever can write to
Kafka can republish an older genuine checkpoint (its signed payload unchanged) and then cut the
chain back to it. So ``verify_seen`` takes every checkpoint it can find (each message on the topic,
the registry's own record of what it signed, the running registry's memory), keeps those whose
signature verifies, refuses any whose signed count goes backwards in signed time, checks the chain
against the one with the highest signed count (ties: the latest signed time) and every other, and
names a replay: a newest message weaker than one published before it. The count and the time are
inside the signed payload, so a replay cannot pretend to be newer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reelfab.consent.lease import key_id_of
from reelfab.contracts.generated.records import AuditCheckpoint
from reelfab.contracts.topics import AUDIT_CHECKPOINT
from reelfab.identifiers import check_identifier

GENESIS = "0" * 64
_LOCK = 0x5EEDA0D17  # serialises appends (and checkpoints): the chain is a single line
CHECKPOINT_TOPIC = AUDIT_CHECKPOINT
CHECKPOINT_RECORD = "reelfab.events.AuditCheckpoint"
CHECKPOINT_FORMAT = 1


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, subject_id: str | None, details: dict[str, Any]) -> str:
    body = json.dumps(
        {"prev": prev_hash, "seq": seq, "at": at.astimezone(UTC).isoformat(), "actor": actor, "action": action,
         "subject": subject_id, "details": details},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


async def lock(conn: asyncpg.Connection) -> None:
    """Hold the chain still until the caller's transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)


async def append(conn: asyncpg.Connection, schema: str, *, actor: str, action: str, subject_id: str | None,
                 details: dict[str, Any]) -> int:
    """Append inside the caller's transaction (the entry commits with the change it records)."""
    await lock(conn)
    last = await conn.fetchrow(f'SELECT seq, entry_hash FROM "{schema}".audit_log ORDER BY seq DESC LIMIT 1')
    prev = last["entry_hash"] if last else GENESIS
    # the next number under the lock, not a sequence value: a rolled-back append leaves no gap, so
    # entry n of the chain is seq n and a checkpoint's missing entries can be named by number
    seq = (int(last["seq"]) if last else 0) + 1
    at = datetime.now(UTC)
    clean = json.loads(json.dumps(details, default=str))  # what jsonb will give back on verification
    await conn.execute(
        f'INSERT INTO "{schema}".audit_log (seq, at, actor, action, subject_id, details, prev_hash, entry_hash) '
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        seq, at, actor, action, subject_id, json.dumps(clean), prev, entry_hash(prev, seq, at, actor, action, subject_id, clean),
    )
    return seq


async def head(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> tuple[int, int, str]:
    """(entry count, newest seq, newest hash) of the chain as it stands; (0, 0, GENESIS) when empty."""
    row = await conn.fetchrow(
        f'SELECT (SELECT count(*) FROM "{schema}".audit_log) AS n, seq, entry_hash FROM "{schema}".audit_log ORDER BY seq DESC LIMIT 1'
    )
    if row is None:
        return 0, 0, GENESIS
    return int(row["n"]), int(row["seq"]), row["entry_hash"]


# -- signed checkpoints ----------------------------------------------------------------------------


class CheckpointInvalid(ValueError):
    """A checkpoint whose signature does not verify, by an unknown key, or malformed."""


@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    entry_count: int
    head_seq: int
    head_hash: str
    issued_at: datetime
    key_id: str
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    reason: str = "demand"

    def record(self, event_id: str, producer: str) -> AuditCheckpoint:
        """The AuditCheckpoint record published on CHECKPOINT_TOPIC."""
        return AuditCheckpoint.model_validate({
            "event_id": event_id, "occurred_at": self.issued_at, "producer": producer, "log_id": self.log_id,
            "entry_count": self.entry_count, "head_seq": self.head_seq, "head_hash": self.head_hash,
            "issued_at": self.issued_at, "reason": self.reason, "key_id": self.key_id,
            "payload": self.payload, "signature": self.signature,
        })

    def summary(self) -> dict[str, Any]:
        return {"log_id": self.log_id, "entry_count": self.entry_count, "head_seq": self.head_seq,
                "head_hash": self.head_hash, "issued_at": self.issued_at, "key_id": self.key_id, "reason": self.reason}

    @property
    def when(self) -> str:
        return self.issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _ms(moment: datetime) -> datetime:
    """Milliseconds, as Avro's timestamp-millis keeps them: what is signed must survive the topic."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _canonical(log_id: str, count: int, seq: int, head_hash: str, issued_at: datetime, key_id: str) -> bytes:
    doc = {"format": CHECKPOINT_FORMAT, "log_id": log_id, "entry_count": count, "head_seq": seq,
           "head_hash": head_hash, "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "key_id": key_id}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_checkpoint(private: Ed25519PrivateKey, *, log_id: str, entry_count: int, head_seq: int, head_hash: str,
                    issued_at: datetime, reason: str = "demand") -> Checkpoint:
    check_identifier(log_id, "log_id")
    key_id = key_id_of(private.public_key())
    at = _ms(issued_at)
    payload = _canonical(log_id, entry_count, head_seq, head_hash, at, key_id)
    return Checkpoint(log_id, entry_count, head_seq, head_hash, at, key_id, payload, private.sign(payload), reason)


def signing_time(now: datetime, previous: Checkpoint | None) -> datetime:
    """When a checkpoint is signed: now (to the millisecond), but always after the checkpoint it
    extends (a clock stepped back would look like a rollback)."""
    at = _ms(now)
    if previous is not None and at <= previous.issued_at:
        return previous.issued_at + timedelta(milliseconds=1)
    return at


def checkpoint_from_record(value: Any) -> Checkpoint:
    """A checkpoint as read from the topic, its values taken from the signed payload (not verified
    yet: see ``verify_checkpoint``)."""
    v = value.to_avro() if hasattr(value, "to_avro") else dict(value)
    payload = bytes(v["payload"])
    try:
        d = json.loads(payload)
        at = datetime.strptime(d["issued_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        cp = Checkpoint(str(d["log_id"]), int(d["entry_count"]), int(d["head_seq"]), str(d["head_hash"]), at,
                        str(d["key_id"]), payload, bytes(v["signature"]), str(v.get("reason") or ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(f"checkpoint payload is malformed: {exc}") from None
    if (cp.log_id, cp.entry_count, cp.head_hash, cp.key_id) != (v["log_id"], v["entry_count"], v["head_hash"], v["key_id"]):
        raise CheckpointInvalid("the checkpoint's fields differ from its signed payload (altered)")
    return cp


def verify_checkpoint(cp: Checkpoint, public_keys: dict[str, Ed25519PublicKey]) -> None:
    key = public_keys.get(cp.key_id)
    if key is None:
        raise CheckpointInvalid(
            f"checkpoint of {cp.when} is signed by unknown key {cp.key_id!r} (known: {', '.join(public_keys) or 'none'}): forged"
        )
    try:
        key.verify(cp.signature, cp.payload)
    except InvalidSignature:
        raise CheckpointInvalid(
            f"checkpoint of {cp.when} (entry {cp.entry_count}) has a signature that does not verify under key {cp.key_id}: "
            "forged or altered"
        ) from None


# -- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    entries: int
    first_broken: int | None = None
    problem: str = ""
    checkpoint: dict[str, Any] | None = None  # the checkpoint checked against (its summary)
    note: str = ""


async def chain_rows(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> list[asyncpg.Record]:
    """The chain's entries, in order."""
    return list(await conn.fetch(
        f'SELECT seq, at, actor, action, subject_id, details, prev_hash, entry_hash FROM "{schema}".audit_log ORDER BY seq'
    ))


def _chain(rows: list[Any]) -> AuditVerification | None:
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
    return None


def against(rows: list[Any], cp: Checkpoint, public_keys: dict[str, Ed25519PublicKey]) -> AuditVerification:
    """The chain (already consistent in itself) against a signed checkpoint."""
    n, summary = len(rows), cp.summary()
    try:
        verify_checkpoint(cp, public_keys)
    except CheckpointInvalid as exc:
        return AuditVerification(False, n, None, str(exc), summary)
    if n < cp.entry_count:
        missing = cp.entry_count - n
        first = cp.head_seq - missing + 1
        span = f"seq {first}" if missing == 1 else f"seq {first}..{cp.head_seq}"
        newest = "newest entry" if missing == 1 else f"newest {missing} entries"
        return AuditVerification(
            False, n, first,
            f"the {newest} ({span}) recorded by checkpoint of {cp.when} are gone: the chain holds {n} entries, "
            f"the signed checkpoint {cp.entry_count}", summary)
    entry = rows[cp.entry_count - 1] if cp.entry_count else None
    if entry is not None and (entry["entry_hash"] != cp.head_hash or int(entry["seq"]) != cp.head_seq):
        return AuditVerification(
            False, n, int(entry["seq"]),
            f"re-hashed: entry {entry['seq']}'s hash differs from the signed checkpoint of {cp.when} "
            f"({entry['entry_hash'][:16]}… here, {cp.head_hash[:16]}… signed): the chain was rewritten", summary)
    return AuditVerification(True, n, None, "", summary)


async def verify(conn: asyncpg.Connection | asyncpg.Pool, schema: str, checkpoint: Checkpoint | None = None,
                 public_keys: dict[str, Ed25519PublicKey] | None = None) -> AuditVerification:
    """Recompute the chain; with ``checkpoint`` (the newest one, read from the topic), check it too."""
    found = await chain_rows(conn, schema)
    broken = _chain(found)
    if broken is not None:
        return broken
    if checkpoint is None:
        return AuditVerification(True, len(found), note="no signed checkpoint to check against: a cut tail or a re-hashed "
                                                       "chain cannot be detected")
    return against(found, checkpoint, public_keys or {})


def extends(rows: list[Any], previous: Checkpoint) -> AuditVerification:
    """Whether the chain (its rows, in order) still extends ``previous`` (its signature is not
    rechecked: we made it)."""
    return _chain(rows) or against(rows, previous, {previous.key_id: _Trusted()})  # type: ignore[dict-item]


class _Trusted:
    def verify(self, _signature: bytes, _data: bytes) -> None:
        return None


# -- verification against every checkpoint found -----------------------------------------------------

TOPIC, RECORD, MEMORY = "topic", "record", "memory"
_WHERE = {TOPIC: "on the checkpoint topic", RECORD: "in the registry's record of issued checkpoints",
          MEMORY: "in the running registry's memory"}


@dataclass(frozen=True)
class Seen:
    """A checkpoint as found: on the topic (``position``: its place there, later is newer), in the
    registry's own record of the checkpoints it issued, or in the running registry's memory."""

    cp: Checkpoint
    source: str
    position: tuple[int, int] | None = None


def strength(cp: Checkpoint) -> tuple[int, datetime]:
    """How much a checkpoint proves: its signed entry count, then its signed time."""
    return cp.entry_count, cp.issued_at


def verify_seen(rows: list[Any], seen: list[Seen], public_keys: dict[str, Ed25519PublicKey]) -> AuditVerification:
    """The chain (already consistent in itself) against every checkpoint found (see the module's doc)."""
    n = len(rows)
    problems: list[str] = []
    notes: list[str] = []
    topic = [s for s in seen if s.source == TOPIC]
    newest = max(topic, key=lambda s: s.position or (0, 0)) if topic else None
    genuine: dict[bytes, tuple[Checkpoint, set[str]]] = {}
    ignored = 0
    for s in seen:
        try:
            verify_checkpoint(s.cp, public_keys)
        except CheckpointInvalid as exc:
            if s is newest or s.source != TOPIC:
                # the newest word on the topic, or the registry's own record, must be genuine
                problems.append(str(exc) if s is newest else f"{exc} ({_WHERE[s.source]})")
            else:
                ignored += 1  # an older message that does not verify (an unknown, retired key; junk): not evidence
            continue
        genuine.setdefault(s.cp.signature + s.cp.payload, (s.cp, set()))[1].add(s.source)
    if ignored:
        notes.append(f"{ignored} older message(s) on the checkpoint topic do not verify and were not used")
    if not genuine:
        if problems:
            return AuditVerification(False, n, None, "; ".join(problems), newest.cp.summary() if newest else None)
        return AuditVerification(True, n, note="no signed checkpoint to check against: a cut tail or a re-hashed "
                                               "chain cannot be detected")
    # a genuine registry's signed count never goes backwards in signed time: one that does is not trusted
    by_time = sorted(genuine.values(), key=lambda g: g[0].issued_at)
    trusted: list[tuple[Checkpoint, set[str]]] = []
    for i, (cp, sources) in enumerate(by_time):
        earlier = [e for e, _ in by_time[:i] if e.issued_at < cp.issued_at and e.entry_count > cp.entry_count]
        if earlier:
            top = max(earlier, key=strength)
            problems.append(f"the checkpoint signed at {cp.when} covers {cp.entry_count} entries, fewer than the one "
                            f"signed earlier at {top.when} ({top.entry_count}): its signed count goes backwards, so it "
                            "is not trusted")
        else:
            trusted.append((cp, sources))
    trusted.sort(key=lambda g: strength(g[0]), reverse=True)
    strongest, where = trusted[0]
    # a replay: the newest message on the topic proves less than one the registry signed before it
    replay = ""
    if newest is not None and newest.cp.signature + newest.cp.payload in genuine \
            and newest.cp.entry_count < strongest.entry_count:
        replay = (f"a checkpoint signed at {strongest.when} covers {strongest.entry_count} entries but the newest "
                  f"message on the topic covers only {newest.cp.entry_count} (signed at {newest.cp.when}): ")
        if TOPIC in where:
            problems.append(replay + "an older checkpoint was replayed")
            replay = ""
        else:  # ours alone: it may not be published yet, which is only a problem if the chain fell short of it
            replay += (f"an older checkpoint was replayed (the stronger one is {_WHERE[sorted(where)[0]]}, "
                       "not on the topic)")
    # the chain must extend the strongest checkpoint, and every other one trusted
    broken: AuditVerification | None = None
    for cp, _ in trusted:
        found = against(rows, cp, public_keys)
        if not found.ok:
            broken = found
            break
    if broken is not None:
        if replay:
            problems.append(replay)
        problems.append(broken.problem)
    if len(trusted) > 1:
        notes.append(f"checked against {len(trusted)} signed checkpoints; the strongest covers {strongest.entry_count} "
                     f"entries, signed at {strongest.when}")
    return AuditVerification(not problems, n, broken.first_broken if broken else None, "; ".join(problems),
                             strongest.summary(), "; ".join(notes))


def verify_rows(rows: list[Any], seen: list[Seen], public_keys: dict[str, Ed25519PublicKey]) -> AuditVerification:
    """Recompute the chain (its rows, in order), then check it against every checkpoint found
    (``verify_seen``)."""
    return _chain(rows) or verify_seen(rows, seen, public_keys)
