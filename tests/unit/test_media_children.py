"""Children die with their parent: a process killed with SIGKILL leaves no ffmpeg running; and a
restarted service cleans the work folders a dead process left (reelfab.media.children, .workroot)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reelfab.media import workroot
from reelfab.media.tools import tool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
ROOT = Path(__file__).resolve().parents[2]

# a parent that starts a long, file-less ffmpeg (it reads no pipe from us, so only the signal can stop it)
PARENT = """
import subprocess, sys, time
from reelfab.media import children
cmd = [sys.argv[1], "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "anullsrc", "-t", "120", "-f", "null", "-"]
if sys.argv[2] == "helper":
    child = children.popen(cmd, stdin=subprocess.DEVNULL)
else:
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _child_after_parent_killed(how: str) -> tuple[int, bool]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, tool("ffmpeg"), how], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()  # SIGKILL: no handler, no cleanup in the parent
    parent.wait()
    deadline = time.monotonic() + 2.0
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    return child, _alive(child)


def test_an_ffmpeg_started_through_the_helper_dies_with_its_killed_parent() -> None:
    child, alive = _child_after_parent_killed("helper")
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, f"ffmpeg {child} outlived its parent"


def test_without_the_helper_the_ffmpeg_is_orphaned() -> None:
    """The control: what the helper prevents does happen without it (so the test above can fail)."""
    child, alive = _child_after_parent_killed("plain")
    try:
        assert alive
    finally:
        if alive:
            os.kill(child, signal.SIGKILL)


def test_every_media_child_process_is_started_through_the_helper() -> None:
    spawning = re.compile(r"\bsubprocess\.(Popen|run|call|check_call|check_output)\(|\bos\.(system|popen|spawn\w*)\(")
    files = [*(ROOT / "libs" / "media").rglob("*.py"), *(ROOT / "services" / "swapper_gpu").rglob("*.py"),
             *(ROOT / "services" / "post_producer").rglob("*.py"),
             ROOT / "libs" / "faces" / "src" / "reelfab" / "faces" / "qc.py",
             ROOT / "libs" / "faces" / "src" / "reelfab" / "faces" / "clip.py"]
    assert len(files) > 15 and all(f.is_file() for f in files), "the scan must see the media code (layout moved?)"
    offenders = [f"{f.relative_to(ROOT)}:{n}" for f in files if f.name != "children.py"
                 for n, line in enumerate(f.read_text().splitlines(), 1) if spawning.search(line)]
    assert not offenders, f"spawn through reelfab.media.children instead: {offenders}"


# ------------------------------------------------------------------------------------ work roots

CLAIMER = """
import sys, time
from pathlib import Path
from reelfab.media.workroot import claim_work_root
mine = claim_work_root(Path(sys.argv[1]))
(mine / "job-1.abc").mkdir()
(mine / "job-1.abc" / "render.mp4").write_bytes(b"half a render")
print(mine, flush=True)
time.sleep(120)
"""


def _claimer(root: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_restarted_service_removes_what_dead_processes_left_and_spares_live_replicas(tmp_path: Path) -> None:
    root = tmp_path / "post-work"
    dead, dead_folder = _claimer(root)
    live, live_folder = _claimer(root)
    try:
        dead.kill()  # kill -9 mid-job: its folder and half a render stay behind
        dead.wait()
        legacy = root / "job-old.x1y2"  # a job folder from before owner folders, older than us
        legacy.mkdir()
        os.utime(legacy, (time.time() - 3600, time.time() - 3600))
        assert dead_folder.is_dir() and live_folder.is_dir()

        mine = workroot.claim_work_root(root)
        try:
            assert not dead_folder.exists(), "the dead process's work was left behind"
            assert not legacy.exists()
            assert (live_folder / "job-1.abc" / "render.mp4").is_file(), "a live replica's work was deleted"
            assert mine.is_dir() and mine.parent == root and mine.name.startswith(f"owner-{os.getpid()}-")
            # a later start (another replica) sees us alive too
            assert workroot.clean_stale(root, older_than=time.time()) == 0
        finally:
            workroot.release(mine)
    finally:
        live.kill()
        live.wait()
    assert workroot.clean_stale(root, older_than=time.time()) == 1  # now the replica is dead as well
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("service", "folder"), [("swapper_gpu", "swapper-work"), ("post_producer", "post-work")])
async def test_a_started_service_cleans_its_work_root_first(tmp_path: Path, service: str, folder: str) -> None:
    import importlib

    from reelfab.bus.memory import InMemoryBus
    from reelfab.contracts.codec import default_codec
    from reelfab.service import build_context
    from tests.conftest import make_settings

    main = importlib.import_module(f"reelfab_{service}.main")
    root = tmp_path / folder
    stale = root / "owner-999999-deadbeef" / "job-1.abc"  # a killed process's half-done job
    stale.mkdir(parents=True)
    old = time.time() - 600
    os.utime(stale.parent, (old, old))
    settings = make_settings(state_dir=tmp_path, storage_root=(tmp_path / "objects").as_uri(), face_backend="classical")
    ctx = build_context(main.SPEC, settings, InMemoryBus(settings, main.SPEC.name, default_codec()), None, main.wire)
    for hook in ctx.on_start:
        await hook()
    worker = ctx.extras["swapper" if service == "swapper_gpu" else "post"]
    try:
        assert not stale.parent.exists()
        assert worker.workdir.parent == root and worker.workdir.name.startswith(f"owner-{os.getpid()}-")  # type: ignore[attr-defined]
    finally:
        workroot.release(worker.workdir)  # type: ignore[attr-defined]
