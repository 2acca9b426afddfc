"""`reelfab demo`: the whole factory on this machine. All six services run in this process over the
local Kafka and PostgreSQL (or, ``embedded``, an in-process bus), with generated people, templates and
music (no real person). The demo enrols the cast with consent, stocks the catalogue, and runs rounds of
plan → swap → render → review (approved by the demo as an operator, audited) → post (the dry-run
platform by default) → engagement read back → policy; mid-run a trend and a revocation, in round one a
job naming a person with no consent. It leaves the videos, report.json and index.html in ``out``.

Parts: cast (assets), factory (the services), tracker (the bus as the demo sees it), scenario (the
script), live (the terminal), report (checks and report.json), identity (whose face a video shows),
page (index.html)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from reelfab.settings import Settings
from reelfab.version import __version__

from .errors import DemoRefused
from .guard import Guard, endpoints, owning_signals, watch_services, watch_stack
from .jobs import SUBJECT, give_consent, swap_request
from .scenario import DRYRUN_ACCOUNT, plural

__all__ = ["SUBJECT", "DemoOptions", "DemoRefused", "give_consent", "run_demo", "swap_request"]
MARKER = ".reelfab-demo"  # in an output folder the demo made: only such a folder is emptied by a new run


@dataclass(frozen=True)
class DemoOptions:
    people: int = 4
    templates: int = 3
    rounds: int = 3
    batch: int = 3  # jobs planned per round
    backend: str = "classical"
    out: Path = Path("demo-out")
    publish_to: str = "dryrun"
    account: str | None = None
    embedded: bool = False

    def check(self) -> None:
        if self.backend not in ("classical", "onnx", "facefusion"):
            raise DemoRefused(f"--backend {self.backend!r}: one of classical, onnx, facefusion")
        if self.publish_to not in ("dryrun", "tiktok"):
            raise DemoRefused(f"--publish-to {self.publish_to!r}: one of dryrun, tiktok")
        if self.publish_to == "tiktok" and not self.account:
            raise DemoRefused("--publish-to tiktok needs --account NAME (`reelfab accounts add NAME …` first)")
        if not 1 <= self.rounds <= 10:
            raise DemoRefused(f"--rounds must be 1 to 10, not {self.rounds}")
        if not 1 <= self.batch <= 20:
            raise DemoRefused(f"--batch must be 1 to 20, not {self.batch}")
        from .cast import NAMES, TEMPLATE_TAGS

        if not 2 <= self.people <= len(NAMES):
            raise DemoRefused(f"--people must be 2 to {len(NAMES)} (one of them revokes consent mid-run), "
                              f"not {self.people}")
        if not 1 <= self.templates <= len(TEMPLATE_TAGS):
            raise DemoRefused(f"--templates must be 1 to {len(TEMPLATE_TAGS)}, not {self.templates}")


def prepare_out(out: Path) -> None:
    """An empty output folder: a folder an earlier demo made is emptied; any other non-empty one is
    refused (the demo never deletes what it did not make)."""
    if out.exists() and not out.is_dir():
        raise DemoRefused(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoRefused(f"--out {out}: the folder is not empty and was not made by the demo; choose another")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `reelfab demo`; the next run empties this folder\n")


def demo_settings(settings: Settings, options: DemoOptions, out: Path, people: list[Any]) -> tuple[Settings, Settings]:
    """(the registry's settings, the other services'): storage under ``out``, quick read-back, a
    simulator with each person's pinned rate, the planner limited to this run's people."""
    rates = ",".join(f"subject:{p.subject_id}={p.rate}" for p in people)
    common = {"consent_asset_kind": "synthetic", "log_level": "INFO", "log_format": "json",
              "face_backend": options.backend}
    workers = settings.model_copy(update={
        **common,
        "storage_root": (out / "objects").resolve().as_uri(),
        "publisher_dryrun_dir": out / "dryrun-posts",
        "planner_template_min_s": 5.0, "planner_max_share": max(0.5, 1.0 / options.templates), "planner_schedule_every_s": 0.0,
        "planner_subjects": ",".join(p.subject_id for p in people),
        "publisher_readback_first_s": 2.0, "publisher_readback_max_s": 10.0, "publisher_tick_s": 0.25,
        "publisher_simulator_views_per_hour": 360_000.0, "publisher_simulator_rates": rates,
        "analytics_policy_flush_s": 0.5,
    })
    return settings.model_copy(update=common), workers


async def run_demo(settings: Settings, options: DemoOptions, view: Any) -> dict[str, Any]:
    """Run the demo; the report (also written to ``out``/report.json). DemoRefused: why it stopped."""
    options.check()
    from .scenario import check_backend

    check_backend(settings, options.backend)
    if options.publish_to == "tiktok" and options.account:
        from .scenario import check_account

        await check_account(options.account, options.publish_to)
    out = options.out.resolve()
    if options.embedded:
        from reelfab.devtools.localstack import start_postgres

        await asyncio.to_thread(start_postgres, settings, lambda _line: None)
    from .lock import one_demo_at_a_time

    async with one_demo_at_a_time(settings, out):  # before the folder is emptied: it may be the other's
        return await _run_logged(settings, options, out, view)


async def _run_logged(settings: Settings, options: DemoOptions, out: Path, view: Any) -> dict[str, Any]:
    try:
        prepare_out(out)
    except OSError as exc:
        raise DemoRefused(f"--out {out}: {exc.strerror or exc}") from None
    log_path = out / "demo.log"
    me, before = asyncio.current_task(), asyncio.all_tasks()
    assert me is not None
    guard = Guard(me)
    with log_path.open("a", buffering=1) as log, contextlib.redirect_stderr(log), _logging_to(log), \
            owning_signals(guard):
        asyncio.get_running_loop().set_exception_handler(partial(_late_report, log_path))
        try:
            return await _run(settings, options, out, view, guard)
        except BaseException as exc:
            if guard.reason is None:
                raise
            if isinstance(exc, asyncio.CancelledError):
                me.uncancel()
            print(f"demo: stopped: {guard.reason} ({type(exc).__name__} in the run)", file=sys.stderr)
            hint = f" ({guard.hint})" if guard.hint else ""
            raise DemoRefused(f"{guard.reason}; the services were stopped{hint}; what it made so far is in {out}"
                              ) from None
        finally:
            await _settle(before)  # still inside the log: what is left of the services says its last there


def _late_report(log_path: Path, _loop: Any, context: dict[str, Any]) -> None:
    """The event loop's reports of what nobody awaited or closed (a Kafka client left open by a service
    cancelled mid-stop) go to the demo's log, for the rest of this loop's life, never to the terminal."""
    with contextlib.suppress(OSError), log_path.open("a") as log:
        log.write(f"late: {context.get('message')} {context.get('exception') or ''} "
                  f"{ {k: repr(v)[:200] for k, v in context.items() if k not in ('message', 'exception')} }\n")


async def _settle(before: set[asyncio.Task[Any]], timeout: float = 15.0) -> None:
    """Cancel and await what the run started and left running (a service that did not stop in time),
    then collect its garbage, so that its last words (an unclosed Kafka client) go to the log file."""
    import gc

    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]
    for task in left:
        task.cancel()
    if left:
        with contextlib.suppress(BaseException):
            await asyncio.wait(left, timeout=timeout)
    gc.collect()


@contextlib.contextmanager
def _logging_to(stream: Any) -> Any:
    """Library logs (aiokafka, uvicorn: the standard library's handlers, set up before the demo) into
    the demo's log file too, for the run; the services' own logs follow sys.stderr, redirected there."""
    import logging

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    before = [h.setStream(stream) for h in handlers]
    throttle = Throttle()
    for handler in handlers:
        handler.addFilter(throttle)
    try:
        yield
    finally:
        for handler, old in zip(handlers, before, strict=True):
            handler.removeFilter(throttle)
            if old is not None:
                handler.setStream(old)


class Throttle:
    """A logging filter: at most ``burst`` records of one message (logger and format string) per
    ``window_s``; the next one let through says how many were left out. A broker that went away makes
    its client log each reconnect attempt, tens of thousands a minute: the file stays readable."""

    def __init__(self, burst: int = 5, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self.seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count, left out]

    def filter(self, record: Any) -> bool:
        key, now = (record.name, str(record.msg)), self.clock()
        entry = self.seen.setdefault(key, [now, 0.0, 0.0])
        if now - entry[0] >= self.window_s:
            entry[0], entry[1] = now, 0.0
        entry[1] += 1
        if entry[1] > self.burst:
            entry[2] += 1
            return False
        if entry[2]:
            record.msg = f"{record.msg} [and {entry[2]:.0f} more like this left out of the log]"
            entry[2] = 0.0
        return True


async def _run(settings: Settings, options: DemoOptions, out: Path, view: Any, guard: Guard) -> dict[str, Any]:
    from reelfab import metrics as consent_metrics
    from reelfab.contracts.topics import TREND_DETECTED

    from . import scenario
    from .cast import make_cast
    from .factory import start_factory
    from .identity import IdentityCheck
    from .page import write_page
    from .report import build_report
    from .tracker import TOPICS, Tracker

    say = view.say
    started, started_at = time.perf_counter(), datetime.now(UTC)
    say(f"generating {options.people} virtual people (and one who never consents), "
        f"{plural(options.templates, 'template clip')} and 2 music beds — no real person in any of them")
    cast = await make_cast(out / "assets", people=options.people, templates=options.templates)
    say(f"cast ready in {time.perf_counter() - started:.0f} s; starting the six services")
    registry_settings, workers = demo_settings(settings, options, out, cast.people)
    refused_before = consent_metrics.CONSENT_DENIALS.labels("planner", "invalid_lease")._value.get()
    factory = await start_factory(registry_settings, workers, embedded=options.embedded,
                                  own_publisher=options.publish_to == "dryrun", say=say)
    tracker, timeline = Tracker(), scenario.Timeline()
    bus = factory.buses(workers, "demo")
    for topic in TOPICS:
        bus.subscribe(topic, tracker.handle, group=f"demo-view-{uuid.uuid4().hex[:8]}", from_beginning=False)
    bus.declare_publisher(TREND_DETECTED)
    stop_view, stop_review = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    watches: list[asyncio.Task[None]] = []
    try:
        await bus.start()
        tasks.append(asyncio.create_task(view.run(tracker, stop_view), name="demo-view"))
        watches = [asyncio.create_task(watch_stack(guard, endpoints(workers, embedded=options.embedded)),
                                       name="demo-stack-watch"),
                   asyncio.create_task(watch_services(guard, {s.spec.name: s.task for s in factory.services}),
                                       name="demo-service-watch")]
        await _enrol(factory, cast, say)
        planner: Any = factory.planner.extra("planner")
        await scenario.until(lambda: all(p.subject_id in planner.view.latest for p in cast.people), 60,
                             "the planner seeing every consent")
        refused = consent_metrics.CONSENT_DENIALS.labels("planner", "invalid_lease")._value.get() - refused_before
        if refused:
            say(f"{refused:.0f} consent events already on the topic could not be verified (signed by keys this "
                "registry does not hold: an earlier stack's); each service treats their subjects as not consented. "
                f"Details in {out.name}/demo.log")
        await scenario.stock_catalogue(factory, cast, workers, say)
        account = options.account or DRYRUN_ACCOUNT
        if options.publish_to == "dryrun" and options.account is None:
            await scenario.ensure_dryrun_account(factory)
        tasks.append(asyncio.create_task(scenario.reviewer(factory, account, timeline, stop_review), name="demo-review"))
        timeline.leaderboard.append(await scenario.leaderboard(factory, cast, 0))
        middle = (options.rounds + 1) // 2
        for round_ in range(1, options.rounds + 1):
            await scenario.plan_round(factory, tracker, round_, options.batch, say)
            if round_ == 1:
                await scenario.deny_stranger(bus, factory, cast, tracker, timeline, workers, say)
            if round_ == middle:
                await scenario.emit_trend(bus, tracker, timeline, round_, say)
                await scenario.until(partial(_posted_in, tracker, round_), scenario.ROUND_TIMEOUT_S,
                                     "the round's first post")
                person = scenario.pick_revoked(cast, tracker, round_)
                await scenario.revoke(factory, person, timeline, say,
                                      in_flight=scenario.has_work_in_flight(tracker, round_, person))
            await scenario.settle_round(factory, tracker, round_, workers, say)
            timeline.leaderboard.append(await scenario.leaderboard(factory, cast, round_))
            say(_leader_line(timeline.leaderboard[-1]))
            _check_tasks(tasks)
        stop_review.set()
        say("checking every video again: platform spec, C2PA credentials, whose face it shows")
        references = {p.subject_id: p.image for p in [*cast.people, cast.stranger]}
        references |= {f"performer:{t}": image for t, image in cast.performers.items()}  # a face left unswapped
        identity = await asyncio.to_thread(IdentityCheck, references)
        meta: dict[str, Any] = {"started_at": started_at.isoformat(), "finished_at": None, "seconds": None, "backend": options.backend,
                "bus": "embedded" if options.embedded else "kafka", "publish_to": options.publish_to, "account": account,
                "rounds": options.rounds, "people": options.people, "templates": options.templates,
                "version": __version__}
        report = await build_report(out, cast, tracker, timeline, workers, meta, identity)
        _revoked_person(report, timeline)
        meta["finished_at"], meta["seconds"] = datetime.now(UTC).isoformat(), round(time.perf_counter() - started, 1)
        import json

        (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
        await asyncio.to_thread(write_page, report, out)
        return report
    finally:
        if guard.reason is not None:
            say(f"{guard.reason} — stopping the services")
        stop_review.set()
        stop_view.set()
        for watch in watches:
            watch.cancel()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.stop(), 20)
        patience = 30.0 if guard.reason is None else 8.0  # a stack that went away: their clean stop would hang
        cancelled = await factory.stop(timeout=patience)
        if cancelled:
            print(f"demo: cancelled {', '.join(cancelled)} (not stopped within {patience:.0f} s)", file=sys.stderr)


async def _enrol(factory: Any, cast: Any, say: Any) -> None:
    import httpx

    from .scenario import enrol

    async with httpx.AsyncClient(base_url=factory.registry.url, timeout=120,
                                 headers={"Authorization": f"Bearer {factory.admin_token}"}) as api:
        for person in cast.people:
            await enrol(api, person, cast.allowed_tags)
            say(f"{person.display_name} ({person.subject_id}): face enrolled, consent granted with a signed document")
        await enrol(api, cast.stranger, cast.allowed_tags)
        say(f"{cast.stranger.display_name} ({cast.stranger.subject_id}): face enrolled, no consent")


def _posted_in(tracker: Any, round_: int) -> bool:
    return any(j.published for j in tracker.of_round(round_))


def _leader_line(board: dict[str, Any]) -> str:
    people = sorted((a for a in board["arms"] if a["space"] == "subject"), key=lambda a: -a["mean"])
    return "leaderboard (expected completion): " + ", ".join(
        f"{a['label']} {a['mean']:.2f} ({plural(a['posts'], 'post')})" for a in people[:4])



def _revoked_person(report: dict[str, Any], timeline: Any) -> None:
    if timeline.revoked is None:
        return
    for person in report["people"]:
        if person["subject_id"] == timeline.revoked[0]:
            person["consent"] = "revoked"


def _check_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def main_exit_code(report: dict[str, Any]) -> int:
    checks = report["checks"]
    return 0 if not checks["problems"] else 1


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
