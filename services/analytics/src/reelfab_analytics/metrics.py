"""The analytics service's own metrics (the common ones are reelfab.metrics')."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

OBSERVATIONS = Counter(
    "reelfab_analytics_observations_total",
    "Engagement readings, by outcome: counted (the post's reward now), stale (older than the post's newest), "
    "unattributed (kept until publish.completed names the post), no_reward (nothing seen yet), "
    "rejected (dead-lettered as impossible), duplicate (a redelivery).",
    ["outcome"],
)
POSTS_TRACKED = Gauge("reelfab_analytics_posts_tracked", "Posts analytics follows (with or without a lineage).")
POSTS_UNATTRIBUTED = Gauge(
    "reelfab_analytics_posts_unattributed", "Posts with readings but no lineage yet (publish.completed not seen).")
FLAGS = Counter("reelfab_analytics_flags_total", "SubjectFlagged announced, by kind and action.", ["kind", "action"])
STRIKES = Counter(
    "reelfab_analytics_strikes_total",
    "Moderation strikes (job.failed with a strike reason), by outcome: counted, or no_target (no subject known).",
    ["outcome"],
)
POLICY_PUBLICATIONS = Counter(
    "reelfab_analytics_policy_publications_total", "PolicyUpdated records published, by arm space.", ["space"])
POLICY_VERSION = Gauge("reelfab_analytics_policy_version", "Version of the last policy published, by arm space.", ["space"])
POLICY_ARMS_LEFT_OUT = Gauge(
    "reelfab_analytics_policy_arms_left_out",
    "Arms of a space left out of its last policy record because the whole space would not fit in one message "
    "(the fewest posts first; the planner samples them from the prior).", ["space"])


class Leaderboard:
    """The best arms of each space's last published policy, at scrape time: their posterior mean of the
    reward and their posts (``pulls``), the ``top`` of each space by mean (the dashboard's leaderboard;
    a bounded number of series however many arms a space has). Disabled arms are left out."""

    def __init__(self, top: int = 20) -> None:
        self.top = top
        self.spaces: dict[str, list[tuple[str, float, float]]] = {}

    def update(self, space: str, arms: Iterable[Any]) -> None:
        live = [(a.arm_id, float(a.mean), float(a.pulls)) for a in arms if not a.disabled]
        self.spaces[space] = sorted(live, key=lambda a: (-a[1], -a[2], a[0]))[: self.top]

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("reelfab_analytics_arm_posterior_mean",
                                  "Posterior mean of the reward of an arm in its space's last policy (the top arms).",
                                  labels=["space", "arm"]),
                GaugeMetricFamily("reelfab_analytics_arm_posts",
                                  "Posts behind an arm's posterior in its space's last policy (the top arms).",
                                  labels=["space", "arm"]))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mean, posts = self._families()
        for space, arms in sorted(self.spaces.items()):
            for arm_id, value, pulls in arms:
                mean.add_metric([space, arm_id], value)
                posts.add_metric([space, arm_id], pulls)
        yield from (mean, posts)


LEADERBOARD = Leaderboard()
REGISTRY.register(LEADERBOARD)
