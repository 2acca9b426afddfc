"""Bus benchmarks, each beside a baseline run in the same process (machines are noisy; ratios
hold, absolute figures drift).

1. Avro codec: encode+decode records/s for SwapRequested, Reelfab's codec (single-object framing,
   fingerprint lookup, schema resolution) vs bare fastavro schemaless write/read and vs stdlib json.
2. End-to-end produce->consume latency at a fixed rate (default 1000 msg/s) on the local broker:
   the producer in its own process, as an upstream service; Reelfab's KafkaBus on both ends
   (FastStream, Avro decode into typed records, delivery policy, commit after settling) vs bare
   aiokafka on both ends (the same Avro bytes, not decoded, auto-commit) at the same rate.

Needs the local stack for part 2 (`make up`); `make bench` starts and stops it.
    python bench/bus.py [--records 20000] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reelfab.bus import Event  # noqa: E402
from reelfab.bus.kafka import KafkaBus  # noqa: E402
from reelfab.contracts.codec import default_catalog, default_codec  # noqa: E402
from reelfab.contracts.topics import Topic  # noqa: E402
from reelfab.devtools.localstack import ensure_topics  # noqa: E402
from reelfab.settings import Settings  # noqa: E402
from tests.contract.records import swap_requested  # noqa: E402

RECORD = "reelfab.events.SwapRequested"


def bench_codec(n: int) -> dict[str, float]:
    codec = default_codec()
    values = [swap_requested(f"job-{i}") for i in range(n)]
    parsed = fastavro.parse_schema(default_catalog().schema_json(RECORD))

    def ours() -> None:
        for v in values:
            codec.decode(codec.encode(RECORD, v), expected=RECORD)

    def bare() -> None:
        for v in values:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, v)
            buf.seek(0)
            fastavro.schemaless_reader(buf, parsed, parsed)

    json_values = [{**v, "occurred_at": v["occurred_at"].isoformat()} for v in values]

    def stdlib_json() -> None:
        for v in json_values:
            json.loads(json.dumps(v))

    results = {}
    for name, fn in (("reelfab codec", ours), ("bare fastavro", bare), ("stdlib json", stdlib_json)):
        fn()  # warm up
        best = min(_timed(fn) for _ in range(3))
        results[name] = n / best
    return results


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


async def _create(settings: Settings, name: str) -> None:
    await asyncio.to_thread(ensure_topics, settings, [(name, 1, {}), (name + ".dlq", 1, {})], lambda _l: None)


SENT = "bench.sent-ns"


async def produce(kind: str, topic: str, rate: int, total: int) -> None:
    """Runs in its own process (as a real upstream service would), stamping each send time."""
    settings = Settings()
    records = [swap_requested(f"job-{i}") for i in range(total)]
    if kind == "reelfab":
        bus = KafkaBus(settings, "bench-producer", default_codec())
        await bus.start()
        t = Topic(topic, RECORD, "job_id", 1)

        async def send(r: dict[str, Any]) -> None:
            await bus.publish(t, r, headers=[(SENT, str(time.time_ns()).encode())])

        await _paced(records, send, rate)
        await bus.stop()
    else:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        codec = default_codec()

        async def send_bare(r: dict[str, Any]) -> None:
            payload = codec.encode(RECORD, r)
            await producer.send_and_wait(topic, payload, key=r["job_id"].encode(), headers=[(SENT, str(time.time_ns()).encode())])

        await _paced(records, send_bare, rate)
        await producer.stop()


async def _run_producer(kind: str, topic: str, rate: int, total: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--produce", kind, topic, "--rate", str(rate), "--records", str(total)
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"{kind} producer failed")


async def latency_reelfab(settings: Settings, rate: int, seconds: float) -> list[float]:
    topic = Topic(f"bench.bus.{uuid.uuid4().hex[:8]}", RECORD, "job_id", 1)
    await _create(settings, topic.name)
    lat: list[float] = []
    done = asyncio.Event()
    total = int(rate * seconds)

    async def on(event: Event[Any]) -> None:
        lat.append((time.time_ns() - int(dict(event.headers)[SENT])) / 1e6)
        if len(lat) >= total:
            done.set()

    consumer = KafkaBus(settings, "bench-consumer", default_codec())
    consumer.subscribe(topic, on)
    await consumer.start()
    await _await_assignment(consumer)
    try:
        await _run_producer("reelfab", topic.name, rate, total)
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await consumer.stop()
    return lat


async def latency_bare(settings: Settings, rate: int, seconds: float) -> list[float]:
    from aiokafka import AIOKafkaConsumer

    name = f"bench.bare.{uuid.uuid4().hex[:8]}"
    await _create(settings, name)
    total = int(rate * seconds)
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=settings.kafka_bootstrap, group_id=f"bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms, heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
    )
    await consumer.start()
    lat: list[float] = []

    async def consume() -> None:
        async for msg in consumer:
            lat.append((time.time_ns() - int(dict(msg.headers)[SENT])) / 1e6)
            if len(lat) >= total:
                return

    task = asyncio.create_task(consume())
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    try:
        await _run_producer("bare", name, rate, total)
        await asyncio.wait_for(task, timeout=60)
    finally:
        await consumer.stop()
    return lat


async def _paced(items: list[Any], send: Any, rate: int) -> None:
    start = time.perf_counter()
    tasks = []
    for i, item in enumerate(items):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(item)))
    await asyncio.gather(*tasks)


async def _await_assignment(bus: KafkaBus) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        subs = list(bus.broker.subscribers)
        if subs and all(getattr(s, "consumer", None) and s.consumer.assignment() for s in subs):
            return
        await asyncio.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--skip-kafka", action="store_true")
    ap.add_argument("--produce", nargs=2, metavar=("KIND", "TOPIC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.produce:
        asyncio.run(produce(args.produce[0], args.produce[1], args.rate, args.records))
        return

    codec = bench_codec(args.records)
    base = codec["bare fastavro"]
    print(f"Avro encode+decode, {RECORD.rsplit('.', 1)[1]}, {args.records} records (best of 3):")
    for name, rps in codec.items():
        print(f"  {name:15s} {rps:>10,.0f} records/s   ratio vs bare fastavro {rps / base:.2f}")

    if args.skip_kafka:
        return
    settings = Settings(consumer_fetch_max_wait_ms=10, consumer_session_timeout_ms=6000, consumer_heartbeat_interval_ms=300)
    ours = asyncio.run(latency_reelfab(settings, args.rate, args.seconds))
    bare = asyncio.run(latency_bare(settings, args.rate, args.seconds))
    print(f"End-to-end produce->consume latency at {args.rate} msg/s for {args.seconds:.0f} s on {settings.kafka_bootstrap}:")
    for name, lat in (("reelfab KafkaBus", ours), ("bare aiokafka", bare)):
        print(f"  {name:17s} n={len(lat):5d}  p50 {pct(lat, 50):7.2f} ms  p99 {pct(lat, 99):7.2f} ms")
    print(f"  ratio reelfab/bare: p50 {pct(ours, 50) / pct(bare, 50):.2f}  p99 {pct(ours, 99) / pct(bare, 99):.2f}")


if __name__ == "__main__":
    main()
