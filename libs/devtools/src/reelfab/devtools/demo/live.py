"""The demo's terminal view: on a terminal, a live panel (rich) with the count of jobs per stage, the
swapper's frames/s, a bar per running job and the latest things that happened; elsewhere (a pipe, CI,
a test) plain lines. The services' own logs never reach the terminal (they go to demo-out/demo.log)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .tracker import STAGES, Tracker

STAGE_STEP = {"queued": 0, "swapping": 1, "rendering": 3, "in review": 4, "publishing": 5, "published": 6, "stopped": 6}


class View:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.lines: deque[str] = deque(maxlen=8)
        self.tracker: Tracker | None = None
        self.live: Live | None = None
        self._rate: deque[tuple[float, float]] = deque(maxlen=20)  # (time, frames made so far)

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.live is None:
            self.console.print(f"· {escape(line)}", highlight=False)

    def frames_per_second(self) -> float:
        from reelfab_swapper_gpu import progress

        now, made = time.perf_counter(), progress.FRAMES_MADE._value.get()
        self._rate.append((now, made))
        (t0, f0), (t1, f1) = self._rate[0], self._rate[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0

    def render(self) -> Any:
        from reelfab_swapper_gpu import progress

        tracker = self.tracker
        assert tracker is not None
        running = progress.running()
        counts = tracker.counts()
        for job_id, frames in running.items():
            if job_id in tracker.jobs:
                tracker.jobs[job_id].frames = frames
        head = Table.grid(padding=(0, 2))
        head.add_row(*[Text(f"{stage} {counts[stage]}", style="bold" if counts[stage] else "dim") for stage in STAGES])
        fps = self.frames_per_second()
        summary = Text(f"swapper {fps:5.1f} frames/s   elapsed {time.perf_counter() - tracker.started:5.0f} s   "
                       f"round {tracker.round or '-'}")
        jobs = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for name in ("job", "person", "template", "stage", "", ""):
            jobs.add_column(name)
        active = [j for j in tracker.jobs.values() if not j.done][-8:]
        for job in active:
            step = STAGE_STEP[job.stage]
            done, total = job.frames or (0, 0)
            fraction = (step + (done / total if total else 0.0) * 2) / 6 if job.stage == "swapping" else step / 6
            lane = " ⚡" if (job.requested.get("priority") or 0) > 0 else ""
            detail = f"{done}/{total} frames" if job.stage == "swapping" and total else ""
            jobs.add_row(job.job_id[-10:], job.subject.removeprefix("demo-"), str(job.requested["template_id"]),
                         job.stage + lane, ProgressBar(total=1.0, completed=fraction, width=24), detail)
        recent = Text("\n".join(self.lines), style="cyan")
        return Panel(Group(head, summary, jobs, recent), title="reelfab demo", border_style="blue")

    async def run(self, tracker: Tracker, stop: asyncio.Event) -> None:
        """Refresh the panel until ``stop`` (on a terminal); elsewhere only ``say`` prints."""
        self.tracker = tracker
        if not self.interactive:
            await stop.wait()
            return
        with Live(self.render(), console=self.console, refresh_per_second=4, transient=False) as live:
            self.live = live
            try:
                while not stop.is_set():
                    live.update(self.render())
                    try:
                        await asyncio.wait_for(stop.wait(), 0.25)
                    except TimeoutError:
                        pass
                live.update(self.render())
            finally:
                self.live = None
