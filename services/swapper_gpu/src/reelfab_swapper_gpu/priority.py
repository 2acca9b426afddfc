"""Which swap job starts next. Kafka has no priorities, so priority is a route plus an admission:

* **Two topics.** The planner publishes a job with ``priority > 0`` (a trend's, carrying the trend's
  ``deadline``) to ``reelfab.swap.expedited.v1``, every other job to ``reelfab.swap.requested.v1``;
  both carry the same ``SwapRequested`` record. The swapper subscribes to each with a consumer of its
  own (main.py), and a consumer hands in one job at a time: an expedited job never sits behind the
  normal topic's backlog, however long, because that backlog stays in Kafka, on another consumer.
* **Shared run slots, expedited first.** Both consumers' jobs then pass this ``Admission`` before any
  work: N run slots (the jobs that fit this worker's memory budget, ``domain.jobs_that_fit``). A job
  takes a free slot at once unless jobs already wait; a freed slot goes to the longest-waiting
  expedited job, and to a normal job only when no expedited job waits, so a normal job that would
  start while an expedited one waits yields to it. Within a lane, first come first served. A running
  job is never pre-empted: an expedited job arriving while every slot is busy starts when the first
  one frees, before any normal job queued behind it. Slots are handed over, not raced for: nobody
  arriving later can take a slot that a waiting job was given.
* **The expedited lane keeps its slot a moment.** A consumer hands in one job at a time, so when an
  expedited job ends, the next one from its topic is not waiting yet (its consumer is still writing
  the outcome and fetching), while a normal job is: without a hold the slot would go to it, and a
  trend's jobs would alternate with the backlog. So a slot an expedited job frees while a normal job
  waits is held for the expedited lane for ``expedited_grace_s`` (1 s); an expedited job arriving in
  that time takes it, else it goes to the normal job. A normal job loses at most that second per
  expedited job; the burst limit below still applies.
* **No starvation.** At most ``expedited_burst`` expedited jobs are admitted in a row while a normal
  job waits; then the longest-waiting normal job gets the next slot. (In the swapper, each consumer
  has at most one job waiting, so normal jobs get a slot between expedited ones anyway; the cap keeps
  the admission fair on its own.)
* **Deadlines.** A job whose deadline has passed when it arrives, or when its slot comes, is not
  started: it fails with ``deadline_passed`` (job.failed, stage swapper-gpu, not retryable; workflow.py).
* A job may also be expedited on the normal topic (``priority > 0``: an older planner): ``lane_for``.

Pure asyncio: no I/O, no clock but the one passed in; metrics are the caller's (``watch``, ``admitted``:
bootstrap.py exports them as ``reelfab_swap_jobs_waiting`` and ``reelfab_swap_admissions_total``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from enum import StrEnum

from reelfab.contracts.topics import SWAP_EXPEDITED
from reelfab.errors import PermanentError


class Lane(StrEnum):
    EXPEDITED = "expedited"
    NORMAL = "normal"


LANES = (Lane.EXPEDITED, Lane.NORMAL)  # the order a freed slot looks for a waiting job in


class BadPriority(PermanentError):
    """A job's priority no lane means: 0 is normal, above 0 urgent; a negative one is refused."""


def lane_for(topic: str, priority: int) -> Lane:
    """The expedited topic's jobs, and a job with priority > 0 wherever it came from, are expedited;
    BadPriority for a negative priority (dead-lettered with its reason)."""
    if priority < 0:
        raise BadPriority(f"priority {priority} is negative: 0 is a normal job, above 0 an urgent one")
    return Lane.EXPEDITED if topic == SWAP_EXPEDITED or priority > 0 else Lane.NORMAL


def _ignore_waiting(lane: Lane, waiting: int) -> None:
    return None


def _ignore_admitted(lane: Lane, waited_s: float) -> None:
    return None


class Admission:
    """``slots`` jobs run at once; see the module's doc for who goes first (``expedited_burst``: how
    many expedited jobs may be admitted in a row while a normal one waits). ``watch(lane, n)`` hears
    every change of a lane's waiting count; ``admitted(lane, seconds waited)`` every admission."""

    def __init__(
        self,
        slots: int,
        *,
        expedited_burst: int = 8,
        expedited_grace_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        watch: Callable[[Lane, int], None] = _ignore_waiting,
        admitted: Callable[[Lane, float], None] = _ignore_admitted,
    ) -> None:
        if slots < 1:
            raise ValueError(f"an admission needs at least one run slot, not {slots}")
        if expedited_grace_s < 0:
            raise ValueError(f"expedited_grace_s must not be negative, not {expedited_grace_s}")
        if expedited_burst < 1:
            raise ValueError(f"expedited_burst must be at least 1, not {expedited_burst}")
        self.slots = slots
        self.expedited_burst = expedited_burst
        self.expedited_grace_s = expedited_grace_s
        self._holds: deque[float] = deque()  # when each freed slot held for the expedited lane is let go
        self._burst = 0  # expedited jobs admitted in a row while a normal job waited
        self.running = 0
        self.clock = clock
        self.watch = watch
        self.admitted = admitted
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}

    def waiting(self, lane: Lane | None = None) -> int:
        """Jobs waiting in ``lane`` (all lanes: None)."""
        lanes = LANES if lane is None else (lane,)
        return sum(1 for one in lanes for f in self._waiting[one] if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, lane: Lane) -> AsyncIterator[None]:
        """Run the body in a slot of ``lane``'s turn; the slot is free again when the body ends."""
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release(lane)

    async def acquire(self, lane: Lane) -> None:
        started = self.clock()
        if lane is Lane.EXPEDITED and self._holds and self.waiting(Lane.EXPEDITED) == 0:
            self._holds.popleft()  # the slot the last expedited job left, held for this one
            self.running += 1
            self.admitted(lane, 0.0)
            return
        if self.running + len(self._holds) < self.slots and self.waiting() == 0:
            self.running += 1
            self.admitted(lane, 0.0)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lane].append(turn)
        self.watch(lane, self.waiting(lane))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():  # still waiting: leave the queue
                with contextlib.suppress(ValueError):
                    self._waiting[lane].remove(turn)
                self.watch(lane, self.waiting(lane))
            else:  # given a slot as it was cancelled: hand it on
                self.release(None)
            raise
        self.admitted(lane, self.clock() - started)

    def release(self, lane: Lane | None = None) -> None:
        """A job of ``lane`` is done with its slot (None: a slot handed to a waiter that left)."""
        self.running -= 1
        if (lane is Lane.EXPEDITED and self.expedited_grace_s > 0 and self.waiting(Lane.EXPEDITED) == 0
                and self.waiting(Lane.NORMAL) > 0 and self._burst < self.expedited_burst):
            loop = asyncio.get_running_loop()
            self._holds.append(loop.time() + self.expedited_grace_s)
            loop.call_later(self.expedited_grace_s, self._let_go)
        self._hand_over()

    def _let_go(self) -> None:
        """Holds past their time are over: a normal job may have those slots now."""
        now = asyncio.get_running_loop().time()
        while self._holds and self._holds[0] <= now + 1e-6:
            self._holds.popleft()
        self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to waiting jobs, expedited ones first (``_next``), each lane in arrival order;
        a held slot only to an expedited job."""
        while self.running < self.slots:
            found = self._next(normal_allowed=self.running + len(self._holds) < self.slots)
            if found is None:
                return
            turn, lane = found
            if self.running + len(self._holds) >= self.slots:
                self._holds.popleft()  # an expedited job takes a held slot
            self.running += 1
            turn.set_result(None)
            self.watch(lane, self.waiting(lane))

    def _next(self, *, normal_allowed: bool = True) -> tuple[asyncio.Future[None], Lane] | None:
        """The waiter to hand a slot to: expedited first, but a normal one after ``expedited_burst``
        expedited ones in a row that it waited through (``normal_allowed``: False while the only free
        slots are held for the expedited lane)."""
        normal_waits = self._first(Lane.NORMAL, pop=False) is not None
        order: tuple[Lane, ...] = ((Lane.NORMAL, Lane.EXPEDITED) if normal_waits and self._burst >= self.expedited_burst
                                   else LANES)
        if not normal_allowed:
            order = (Lane.EXPEDITED,)
        for lane in order:
            if (turn := self._first(lane, pop=True)) is not None:
                self._burst = self._burst + 1 if lane is Lane.EXPEDITED and normal_waits else 0
                return turn, lane
        return None

    def _first(self, lane: Lane, *, pop: bool) -> asyncio.Future[None] | None:
        """The longest-waiting live waiter of ``lane`` (taken from the queue when ``pop``); cancelled
        waiters left behind are dropped on the way."""
        queue = self._waiting[lane]
        while queue:
            if queue[0].done():  # a cancelled waiter left its future behind
                queue.popleft()
                continue
            return queue.popleft() if pop else queue[0]
        return None
