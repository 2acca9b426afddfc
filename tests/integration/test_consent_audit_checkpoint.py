"""Signed audit checkpoints (docs/architecture.md "Consent"): the registry signs (entry count, head hash, time),
publishes it on the compacted checkpoint topic, and verification checks the chain against the newest
checkpoint read from Kafka. A cut tail, a rewritten and re-hashed chain and a forged checkpoint are
each named; the registry refuses to sign over a chain that no longer extends its last checkpoint."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reelfab.bus import new_event_id
from reelfab.bus.kafka import KafkaBus
from reelfab.bus.outbox import OutboxRelay
from reelfab.bus.unit_of_work import InMemoryUnitOfWork
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import BY_NAME
from reelfab.devtools.localstack import ensure_topics
from reelfab_consent_registry import audit, tokens
from reelfab_consent_registry.api import build_api
from reelfab_consent_registry.bootstrap import PRODUCES
from reelfab_consent_registry.config import RegistryConfig
from reelfab_consent_registry.domain import SERVICE
from reelfab_consent_registry.errors import Conflict
from reelfab_consent_registry.use_cases import Registry
from tests.conftest import eventually, unique
from tests.integration.consent_api_support import MASTER_KEY, drop_schema, make_registry, make_schema, pg

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]


@pytest.fixture
async def registry(pg_pool: Any, stack: Any, tmp_path: Path) -> Any:
    ensure_topics(stack, say=lambda _line: None)  # a stack started before this topic existed gets it
    schema = unique("consent_audit")
    await make_schema(pg_pool, schema)
    bus = KafkaBus(stack, SERVICE, default_codec())
    await bus.start()
    reg = make_registry(pg_pool, schema, stack, tmp_path, bus=bus,
                        config=RegistryConfig(checkpoint_every=3, checkpoint_interval_s=0.3))
    try:
        yield reg
    finally:
        await bus.stop()
        await drop_schema(pg_pool, schema)


async def publish(reg: Registry) -> None:
    relay = OutboxRelay(pg(reg).pool, pg(reg).schema, reg.trail.bus)
    while await relay.relay_once():
        pass


async def entries(reg: Registry, n: int, prefix: str = "s") -> None:
    for i in range(n):
        await reg.create_subject(f"{prefix}{i}", f"Person {i}", actor="test")  # one audit entry each


async def checkpoint_now(reg: Registry) -> audit.Checkpoint:
    cp = await reg.trail.issue_checkpoint("demand")
    assert cp is not None
    await publish(reg)
    return cp


async def rehash_from(reg: Registry, seq: int) -> None:
    """What someone with write access to the database and this module would do: recompute every
    hash from ``seq`` on so the chain is consistent in itself again."""
    rows = await pg(reg).pool.fetch(f'SELECT * FROM "{pg(reg).schema}".audit_log ORDER BY seq')
    prev = audit.GENESIS
    for r in rows:
        if r["seq"] >= seq:
            details = json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]
            h = audit.entry_hash(prev, r["seq"], r["at"], r["actor"], r["action"], r["subject_id"], details)
            await pg(reg).pool.execute(
                f'UPDATE "{pg(reg).schema}".audit_log SET prev_hash = $1, entry_hash = $2 WHERE seq = $3', prev, h, r["seq"]
            )
            prev = h
        else:
            prev = r["entry_hash"]


def test_the_checkpoint_topic_is_in_the_catalogue_compacted_and_keyed_by_log() -> None:
    t = BY_NAME["reelfab.audit.checkpoint.v1"]
    assert t.compacted and t.key_field == "event_id" and t.record == "reelfab.events.AuditCheckpoint"


async def test_the_newest_checkpoint_comes_from_the_topic_and_an_intact_chain_verifies(registry: Registry) -> None:
    assert await registry.trail.latest_checkpoint() is None
    await entries(registry, 4)
    cp = await checkpoint_now(registry)
    assert (cp.entry_count, cp.head_seq) == (4, 4)
    # the database is not asked: a fresh registry object (no memory) reads the topic
    found = await forgetful(registry).trail.latest_checkpoint()
    assert found is not None and (found.entry_count, found.head_hash, found.signature) == (4, cp.head_hash, cp.signature)
    result = await registry.trail.verify_audit()
    assert result.ok and result.entries == 4 and result.checkpoint and result.checkpoint["entry_count"] == 4
    await entries(registry, 2, prefix="t")  # entries after the checkpoint are fine
    assert (await registry.trail.verify_audit()).ok


async def test_a_cut_tail_is_named_with_its_entries(registry: Registry) -> None:
    await entries(registry, 5)
    cp = await checkpoint_now(registry)
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq > 2')
    # the chain alone still looks intact: that is the hole checkpoints close
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok
    result = await registry.trail.verify_audit()
    assert not result.ok
    assert result.problem.startswith(f"the newest 3 entries (seq 3..5) recorded by checkpoint of {cp.when} are gone")
    assert result.first_broken == 3
    # and the registry will not sign the shortened chain as if nothing happened
    with pytest.raises(Conflict, match="no longer extends the last signed checkpoint"):
        await registry.trail.issue_checkpoint("demand")


async def test_a_rewritten_and_rehashed_chain_is_named(registry: Registry) -> None:
    await entries(registry, 5)
    await checkpoint_now(registry)
    await pg(registry).pool.execute(
        f"""UPDATE "{pg(registry).schema}".audit_log SET details = '{{"forged": true}}' WHERE seq = 2"""
    )
    await rehash_from(registry, 2)
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok  # consistent in itself
    result = await registry.trail.verify_audit()
    assert not result.ok
    assert result.problem.startswith("re-hashed: entry 5's hash differs from the signed checkpoint of")
    assert result.first_broken == 5


async def test_a_deleted_middle_entry_with_the_whole_chain_rehashed_is_caught(registry: Registry) -> None:
    await entries(registry, 5)
    await checkpoint_now(registry)
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq = 2')
    await pg(registry).pool.execute(f'UPDATE "{pg(registry).schema}".audit_log SET seq = seq - 1 WHERE seq > 2')
    await rehash_from(registry, 1)
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok
    result = await registry.trail.verify_audit()
    assert not result.ok and "seq 5" in result.problem and "are gone" in result.problem
    # padding the chain back to length with a made-up entry does not help either
    await audit_append(registry)
    result = await registry.trail.verify_audit()
    assert not result.ok and result.problem.startswith("re-hashed: entry 5's hash differs")


async def audit_append(reg: Registry) -> None:
    async with pg(reg).pool.acquire() as conn, conn.transaction():
        await audit.append(conn, pg(reg).schema, actor="intruder", action="subject.created", subject_id="x", details={})


async def test_a_forged_checkpoint_is_refused(registry: Registry) -> None:
    await entries(registry, 5)
    real = await checkpoint_now(registry)
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq > 3')
    count, seq, head_hash = await audit.head(pg(registry).pool, pg(registry).schema)
    forger = Ed25519PrivateKey.generate()
    forged = audit.sign_checkpoint(forger, log_id=registry.log_id, entry_count=count, head_seq=seq,
                                   head_hash=head_hash, issued_at=real.issued_at + timedelta(seconds=1))
    # it claims the registry's key id, as a forger would
    doc = json.loads(forged.payload)
    doc["key_id"] = real.key_id
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    record = {**forged.record(new_event_id(), "intruder").model_dump(), "key_id": real.key_id, "payload": payload,
              "signature": forger.sign(payload)}
    async with pg(registry).pool.acquire() as conn, conn.transaction():
        await pg(registry).outbox.add(conn, audit.CHECKPOINT_TOPIC, record)
    await publish(registry)
    newest = await registry.trail.latest_checkpoint()
    assert newest is not None and newest.entry_count == 3
    result = await registry.trail.verify_audit()
    assert not result.ok
    assert "signature that does not verify under key" in result.problem and "forged" in result.problem


async def test_checkpoints_are_issued_after_n_entries_and_on_an_interval(registry: Registry) -> None:
    stop = asyncio.Event()
    relay = OutboxRelay(pg(registry).pool, pg(registry).schema, registry.trail.bus, poll_interval_s=0.05)
    tasks = [asyncio.create_task(relay.run(stop)),
             asyncio.create_task(registry.trail.run_checkpoints(stop, poll_s=0.05))]
    try:
        await entries(registry, 3)

        async def signed(n: int) -> bool:
            cp = await registry.trail.latest_checkpoint()
            return cp is not None and cp.entry_count == n

        await eventually(lambda: signed(3), timeout=20)
        await entries(registry, 1, prefix="late")  # under N, but the interval passes
        await eventually(lambda: signed(4), timeout=20)
        assert (await registry.trail.verify_audit()).ok
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_the_api_serves_issues_and_verifies_checkpoints(registry: Registry) -> None:
    pool, schema = pg(registry).pool, pg(registry).schema
    app = build_api(registry, pool, schema)
    admin = {"Authorization": f"Bearer {await tokens.create_token(pool, schema, 'ops', 'admin')}"}
    reader = {"Authorization": f"Bearer {await tokens.create_token(pool, schema, 'auditor', 'reader')}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/audit/checkpoint", headers=reader)
        assert r.status_code == 404 and r.json()["error"] == "NotFound"
        await entries(registry, 3)
        assert (await client.post("/audit/checkpoint", headers=reader)).status_code == 403
        r = await client.post("/audit/checkpoint", headers=admin)
        assert r.status_code == 201, r.text
        issued = r.json()
        assert issued["entry_count"] == 3 and issued["reason"] == "demand"
        await publish(registry)
        r = await client.get("/audit/checkpoint", headers=reader)
        assert r.status_code == 200 and r.json()["signature"] == issued["signature"]
        r = await client.get("/audit/verify", headers=reader)
        assert r.json()["ok"] and r.json()["checkpoint"]["entry_count"] == 3
        await pool.execute(f'DELETE FROM "{schema}".audit_log WHERE seq = 3')
        body = (await client.get("/audit/verify", headers=reader)).json()
        assert not body["ok"] and "the newest entry (seq 3)" in body["problem"] and body["first_broken"] == 3
        r = await client.post("/audit/checkpoint", headers=admin)
        assert r.status_code == 409 and "no longer extends" in r.json()["detail"]


async def run_cli(registry: Registry, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reelfab.cli", "consent", *args, "--schema", pg(registry).schema,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "250", "REELFAB_CONSENT_MASTER_KEY": base64.b64encode(MASTER_KEY).decode()},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_verify_audit_cli_checks_against_the_topic_and_names_a_cut_tail(registry: Registry) -> None:
    async def cli(*args: str) -> tuple[int, str]:
        return await run_cli(registry, *args)

    await entries(registry, 4)
    code, out = await cli("checkpoint")  # on demand, published at once
    assert code == 0 and "signed audit checkpoint: 4 entries" in out, out
    code, out = await cli("verify-audit")
    assert code == 0 and "4 entries" in out and "checkpoint of" in out, out
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq >= 3')
    code, out = await cli("verify-audit")
    assert code == 1 and "the newest 2 entries (seq 3..4)" in out and "are gone" in out, out


# -- a replayed older checkpoint -------------------------------------------------------------------


async def checkpoints_at_24_and_28(reg: Registry) -> tuple[audit.Checkpoint, audit.Checkpoint]:
    """24 entries, a checkpoint; a revocation, an erasure and two more entries, a checkpoint."""
    await entries(reg, 24)
    cp24 = await checkpoint_now(reg)
    async with pg(reg).pool.acquire() as conn, conn.transaction():
        for action in ("consent.revoked", "subject.erased", "consent.denied", "consent.denied.reported"):
            await audit.append(conn, pg(reg).schema, actor="test", action=action, subject_id="s3", details={})
    cp28 = await checkpoint_now(reg)
    assert (cp24.entry_count, cp28.entry_count) == (24, 28)
    return cp24, cp28


async def replay(reg: Registry, cp: audit.Checkpoint) -> None:
    """What someone with write access to Kafka does: the old record again, its signed payload and
    signature unchanged, under a new event id, so it is the newest message on the compacted topic."""
    async with pg(reg).pool.acquire() as conn, conn.transaction():
        await pg(reg).outbox.add(conn, audit.CHECKPOINT_TOPIC, cp.record(new_event_id(), "intruder"))
    await publish(reg)


def forgetful(reg: Registry) -> Registry:
    """The registry as `reelfab consent verify-audit` builds it: no memory of what it signed."""
    return dataclasses.replace(reg, trail=dataclasses.replace(reg.trail, last=None))


async def test_a_replayed_older_checkpoint_does_not_hide_a_cut_tail(registry: Registry) -> None:
    cp24, cp28 = await checkpoints_at_24_and_28(registry)
    await replay(registry, cp24)
    newest = await registry.trail.latest_checkpoint()
    assert newest is not None and newest.entry_count == 24 and newest.signature == cp24.signature
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq > 24')
    # checked against the newest message alone (as before), the cut chain passed
    assert (await audit.verify(pg(registry).pool, pg(registry).schema, newest, await keys_of(registry))).ok
    for reg in (registry, forgetful(registry)):
        result = await reg.trail.verify_audit()
        assert not result.ok and result.first_broken == 25, result
        assert result.problem.startswith(
            f"a checkpoint signed at {cp28.when} covers 28 entries but the newest message on the topic covers only 24 "
            f"(signed at {cp24.when}): an older checkpoint was replayed"), result.problem
        assert f"the newest 4 entries (seq 25..28) recorded by checkpoint of {cp28.when} are gone" in result.problem
        assert result.checkpoint is not None and result.checkpoint["entry_count"] == 28
    # nor will the registry sign the cut chain (the topic's newest message is not its reference)
    with pytest.raises(Conflict, match="no longer extends"):
        await forgetful(registry).trail.issue_checkpoint("demand")
    code, out = await run_cli(registry, "verify-audit")
    out = " ".join(out.split())  # the console wraps long lines
    assert code == 1 and "an older checkpoint was replayed" in out and "(seq 25..28)" in out, out


async def keys_of(reg: Registry) -> Any:
    from reelfab_consent_registry import keys

    return await keys.public_keys(pg(reg).pool, pg(reg).schema)


async def test_a_replayed_older_checkpoint_does_not_hide_a_rehashed_chain(registry: Registry) -> None:
    cp24, cp28 = await checkpoints_at_24_and_28(registry)
    await replay(registry, cp24)
    # the revocation (seq 25) removed, the rest moved up and re-hashed, padded back to 28 entries
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq = 25')
    await pg(registry).pool.execute(f'UPDATE "{pg(registry).schema}".audit_log SET seq = seq - 1 WHERE seq > 25')
    await rehash_from(registry, 25)
    await audit_append(registry)
    assert (await audit.verify(pg(registry).pool, pg(registry).schema)).ok  # consistent in itself, and extends cp24
    result = await forgetful(registry).trail.verify_audit()
    assert not result.ok and result.first_broken == 28, result
    assert "an older checkpoint was replayed" in result.problem
    assert f"re-hashed: entry 28's hash differs from the signed checkpoint of {cp28.when}" in result.problem


async def test_the_registrys_own_record_catches_a_replay_the_topic_no_longer_shows(registry: Registry) -> None:
    """Compaction may leave only the replayed message on the topic: the registry's record of the
    checkpoints it issued still holds the stronger one."""
    await entries(registry, 24)
    cp24 = await checkpoint_now(registry)
    await entries(registry, 4, prefix="t")
    cp28 = await registry.trail.issue_checkpoint("demand")
    assert cp28 is not None and cp28.entry_count == 28
    # its message never reached the topic (as if compacted away): only cp24 is there, replayed
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".outbox WHERE published_at IS NULL')
    await replay(registry, cp24)
    assert (await forgetful(registry).trail.verify_audit()).ok  # nothing cut: cp28 merely unpublished
    await pg(registry).pool.execute(f'DELETE FROM "{pg(registry).schema}".audit_log WHERE seq > 24')
    result = await forgetful(registry).trail.verify_audit()
    assert not result.ok and result.first_broken == 25
    assert result.problem.startswith(f"a checkpoint signed at {cp28.when} covers 28 entries but the newest message "
                                     "on the topic covers only 24"), result.problem
    assert "(seq 25..28)" in result.problem and "are gone" in result.problem


async def test_a_replay_is_named_even_when_nothing_was_cut_yet(registry: Registry) -> None:
    cp24, cp28 = await checkpoints_at_24_and_28(registry)
    await replay(registry, cp24)
    result = await forgetful(registry).trail.verify_audit()
    assert not result.ok and result.first_broken is None
    assert result.problem == (f"a checkpoint signed at {cp28.when} covers 28 entries but the newest message on the "
                              f"topic covers only 24 (signed at {cp24.when}): an older checkpoint was replayed")


def test_a_genuine_checkpoint_whose_signed_count_goes_backwards_is_not_trusted() -> None:
    private = Ed25519PrivateKey.generate()
    rows = [{"seq": i, "entry_hash": f"{i:064x}"} for i in range(1, 29)]
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    cp28 = audit.sign_checkpoint(private, log_id="log", entry_count=28, head_seq=28, head_hash=f"{28:064x}", issued_at=t0)
    cp24 = audit.sign_checkpoint(private, log_id="log", entry_count=24, head_seq=24, head_hash=f"{24:064x}",
                                 issued_at=t0 + timedelta(minutes=5))
    keys = {cp28.key_id: private.public_key()}
    seen = [audit.Seen(cp28, audit.TOPIC, (0, 1)), audit.Seen(cp24, audit.TOPIC, (0, 2))]
    assert audit.verify_seen(rows, [seen[0]], keys).ok
    result = audit.verify_seen(rows, seen, keys)
    assert not result.ok and result.checkpoint is not None and result.checkpoint["entry_count"] == 28
    assert f"the checkpoint signed at {cp24.when} covers 24 entries, fewer than the one signed earlier at {cp28.when} (28)" \
        in result.problem
    # the cut chain is named against the strongest one, not the later-signed weaker one
    result = audit.verify_seen(rows[:24], seen, keys)
    assert not result.ok and result.first_broken == 25 and "(seq 25..28)" in result.problem


async def test_every_checkpoint_has_a_key_of_its_own_so_compaction_cannot_erase_a_newer_one(
    registry: Registry,
) -> None:
    """With the database's record gone too, only the topic holds the stronger checkpoint: keyed by log,
    compaction would keep just the newest message (the replay) and erase it."""
    cp24, cp28 = await checkpoints_at_24_and_28(registry)
    await replay(registry, cp24)
    mine = [m for m in await registry.trail.bus.scan(audit.CHECKPOINT_TOPIC, datetime(1970, 1, 1, tzinfo=UTC))
            if default_codec().decode(m.value).value["log_id"] == registry.log_id]
    values = [default_codec().decode(m.value).value for m in mine]
    assert [v["entry_count"] for v in values] == [24, 28, 24]
    assert [m.key for m in mine] == [v["event_id"].encode() for v in values] and len({m.key for m in mine}) == 3


async def test_the_registry_raises_the_alarm_when_an_older_checkpoint_is_published_again(registry: Registry) -> None:
    from prometheus_client import REGISTRY

    from reelfab_consent_registry import handlers
    from tests.integration.media_handlers_support import event

    cp24, cp28 = await checkpoints_at_24_and_28(registry)
    registry.trail.last = cp28  # what the running registry signed last
    before = REGISTRY.get_sample_value("reelfab_audit_checkpoint_replays_total", {"log_id": registry.log_id}) or 0
    replayed = event("AuditCheckpoint", audit.CHECKPOINT_TOPIC, cp24.record(new_event_id(), "intruder").model_dump())
    await handlers.on_audit_checkpoint(registry, InMemoryUnitOfWork(registry.trail.bus, PRODUCES))(replayed)
    assert REGISTRY.get_sample_value("reelfab_audit_checkpoint_replays_total", {"log_id": registry.log_id}) == before + 1
    assert registry.trail.last is cp28  # the replay is not taken for the newest
