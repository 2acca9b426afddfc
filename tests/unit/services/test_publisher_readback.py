"""The read-back schedule: delays that grow with a post's age within [first_s, max_s], a horizon after
which a post is left alone, what is due (most overdue first) and Display API sized batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reelfab_publisher.readback import (
    MAX_BATCH,
    PollPlan,
    batches,
    due,
    next_poll,
    next_poll_delay,
    stop_polling,
)

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR, DAY = 3600.0, 86400.0


def test_the_first_delay_is_first_s() -> None:
    assert next_poll_delay(0.0) == 300.0
    assert next_poll_delay(0.0, first_s=60.0) == 60.0
    assert next_poll_delay(-5.0) == 300.0  # clock skew: a poll stamped before publication


def test_delays_grow_with_age_and_are_capped() -> None:
    ages = [i * 97.0 for i in range(40000)]  # 0 .. ~45 days
    delays = [next_poll_delay(a) for a in ages]
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert all(300.0 <= d <= DAY for d in delays)
    assert next_poll_delay(HOUR) == 900.0
    assert next_poll_delay(DAY) == 6 * HOUR
    assert next_poll_delay(10 * DAY) == DAY
    assert next_poll_delay(10 * DAY, max_s=2 * HOUR) == 2 * HOUR
    assert next_poll_delay(DAY) > 10 * next_poll_delay(0.0)  # old posts far more rarely than young ones


def test_a_post_is_polled_a_bounded_number_of_times_mostly_young() -> None:
    ages, age = [], 0.0
    while not stop_polling(age):
        ages.append(age)
        age += next_poll_delay(age)
    assert 40 <= len(ages) <= 70
    assert sum(a < DAY for a in ages) > sum(a >= 10 * DAY for a in ages)  # the first day beats the last 20


def test_bad_schedule_parameters_are_refused() -> None:
    for kwargs in ({"first_s": 0.0}, {"first_s": 10.0, "max_s": 5.0}, {"growth": -0.1}):
        with pytest.raises(ValueError):
            next_poll_delay(0.0, **kwargs)


def test_polling_stops_at_the_horizon() -> None:
    assert not stop_polling(0.0)
    assert not stop_polling(30 * DAY - 1)
    assert stop_polling(30 * DAY)
    assert stop_polling(2 * DAY, horizon_s=DAY)


def test_next_poll() -> None:
    assert next_poll("p", T0, None) == PollPlan("p", T0 + timedelta(seconds=300))
    assert next_poll("p", T0, T0 + timedelta(hours=1)) == PollPlan("p", T0 + timedelta(hours=1, minutes=15))
    assert next_poll("p", T0, T0 - timedelta(seconds=3)).due_at == T0 + timedelta(seconds=297)


def test_due_lists_what_is_due_most_overdue_first() -> None:
    now = T0 + timedelta(days=2)
    posts = [
        ("fresh", now - timedelta(seconds=100), None),  # published 100 s ago: first poll in 200 s
        ("young-late", now - timedelta(hours=1), now - timedelta(minutes=55)),  # due 50 min ago
        ("never-polled", now - timedelta(days=1), None),  # due for almost a day
        ("old-recent", now - timedelta(days=1), now - timedelta(hours=1)),  # next in 5 h
        ("just-due", T0, T0 + timedelta(hours=38.4)),  # polled at 38.4 h: next after 9.6 h, exactly now
        ("too-old", now - timedelta(days=31), now - timedelta(days=20)),  # past the horizon
    ]
    assert due(posts, now) == ["never-polled", "young-late", "just-due"]
    assert due(posts, now, limit=2) == ["never-polled", "young-late"]
    assert due(posts, now, horizon_s=40 * DAY)[0] == "too-old"
    assert due([], now) == []


def test_due_breaks_ties_by_id() -> None:
    posts = [(name, T0, None) for name in ("c", "a", "b")]
    assert due(posts, T0 + timedelta(hours=1)) == ["a", "b", "c"]


def test_batches_hold_at_most_twenty_ids_in_order_without_repeats() -> None:
    ids = [f"p{i}" for i in range(45)]
    cut = batches(ids)
    assert [len(b) for b in cut] == [20, 20, 5]
    assert [i for b in cut for i in b] == ids
    assert batches(ids, size=7)[0] == ids[:7]
    assert batches([]) == []
    assert batches(["a", "b", "a", "c"], size=2) == [["a", "b"], ["c"]]
    for size in (0, MAX_BATCH + 1):
        with pytest.raises(ValueError):
            batches(ids, size=size)
