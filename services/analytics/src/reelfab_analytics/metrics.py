"""The analytics service's own metrics (the common ones are reelfab.metrics')."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
