"""Resident memory of the consent registry under large face images.

Starts the registry as its own process (``.venv/bin/reelfab serve consent-registry``) on a fresh
PostgreSQL database, a fresh state dir and a consumer group of its own (nobody else's registry is
touched), then reports its RSS (VmRSS from /proc, the process and its children) at idle, at its
peak while six concurrent /check requests each carry a large image, and after they finished:

* 6 x 7000x7000 PNG (~62 KB each, 49 MP): refused from the header (over the 16 MP limit), never decoded
* 6 x 4000x4000 PNG (16 MP, at the limit): accepted, decoded reduced (1/2 a side), face work two at a
  time, memory handed back to the system afterwards (malloc_trim)

    .venv/bin/python -m bench.registry_memory
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import cv2
import httpx
import numpy as np

from reelfab.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONCURRENT = 6


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, MiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def flat_png(side: int, seed: int) -> bytes:
    image = np.full((side, side, 3), 100 + seed, np.uint8)
    cv2.circle(image, (side // 2, side // 2), side // 5, (200, 180, 160), -1)  # something to look at
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return encoded.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(client: httpx.AsyncClient, pid: int, pngs: list[bytes]) -> tuple[float, list[int], float]:
    peak = rss_mib(pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    body = {"subject": "nobody", "purpose": "swap", "platform": "tiktok", "commercial": True}
    answers = await asyncio.gather(*(
        client.post("/check", json={**body, "image_base64": base64.b64encode(p).decode()}) for p in pngs
    ))
    elapsed = time.monotonic() - started
    done.set()
    await sampler
    return peak, [a.status_code for a in answers], elapsed


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as err:
        return subprocess.Popen([str(ROOT / ".venv/bin/reelfab"), "serve", "consent-registry"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)


async def main() -> int:
    base = Settings()
    db = f"reelfab_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base.postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    state = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "REELFAB_POSTGRES_DB": db,
        "REELFAB_STATE_DIR": str(state),
        "REELFAB_STORAGE_ROOT": (state / "objects").as_uri(),
        "REELFAB_HTTP_PORT": str(port),
        "REELFAB_CONSENT_CONSUMER_GROUP": f"bench-registry-{uuid.uuid4().hex[:8]}",
        "REELFAB_LOG_LEVEL": "WARNING",
    }
    proc = start(env, state / "registry.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    print((state / "registry.log").read_text()[-3000:], file=sys.stderr)
                    return 1
                await asyncio.sleep(0.2)
            from reelfab_consent_registry import tokens

            pool = await asyncpg.create_pool(Settings(postgres_db=db).postgres_dsn, min_size=1, max_size=1)
            token = await tokens.create_token(pool, "consent_registry", "bench", "reader")
            await pool.close()
            client.headers["Authorization"] = f"Bearer {token}"
            # warm: the face engine loads on the first image (its models are not what this measures)
            warm = await client.post("/check", json={"subject": "nobody", "purpose": "swap", "platform": "tiktok",
                                                     "commercial": True,
                                                     "image_base64": base64.b64encode(flat_png(800, 0)).decode()})
            assert warm.status_code == 200, warm.text
            await asyncio.sleep(2)
            idle = rss_mib(proc.pid)
            print(f"registry pid {proc.pid}, database {db}; RSS at idle (engine loaded): {idle:.0f} MiB")
            for side in (7000, 4000):
                pngs = [flat_png(side, i) for i in range(CONCURRENT)]
                size = sum(map(len, pngs)) // len(pngs)
                peak, statuses, elapsed = await load(client, proc.pid, pngs)
                await asyncio.sleep(2)
                after = rss_mib(proc.pid)
                print(f"{CONCURRENT} x {side}x{side} PNG (~{size // 1024} KB each): answers {sorted(set(statuses))} "
                      f"in {elapsed:.1f}s; RSS peak {peak:.0f} MiB (+{peak - idle:.0f}), after {after:.0f} MiB "
                      f"(+{after - idle:.0f})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
