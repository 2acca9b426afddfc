"""The planner's metrics (beside the common ones every service exports)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLANS = Counter("reelfab_planner_plans_total", "Plans made, by trigger and outcome (planned, empty).", ["trigger", "outcome"])
JOBS_PLANNED = Counter("reelfab_planner_jobs_planned_total", "Swap jobs planned, by lane (normal, expedited).", ["lane"])
PLAN_SECONDS = Histogram("reelfab_planner_plan_seconds", "Time to plan a batch: read, score, select, build the jobs.",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0))
CANDIDATES = Gauge("reelfab_planner_candidates", "Candidates in the space the last plan scored.")
TRENDS_UNMATCHED = Counter("reelfab_planner_trends_unmatched_total",
                           "Trends that planned nothing, by reason (no_template, past_deadline, no_candidate).", ["reason"])
POLICY_UNKNOWN_ARMS = Counter("reelfab_planner_policy_unknown_arms_total",
                              "Policy arms the planner has nothing for (ignored), by arm space.", ["space"])
LEDGER_JOBS = Gauge("reelfab_planner_jobs", "Jobs in the ledger, by status.", ["status"])
OLDEST_UNFINISHED = Gauge("reelfab_planner_oldest_unfinished_job_seconds",
                          "Age of the oldest job neither published nor failed (0 when none).")
