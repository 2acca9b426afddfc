"""Bounds on what one request may ask of the planner (a CLI flag, a trend): beyond them the request is
refused with its reason rather than planned."""

MAX_BATCH = 100_000  # jobs one plan may ask for: far beyond a day's GPU work, well inside the ledger's columns
MAX_TREND_TAGS = 64  # a trend names a handful of hashtags; thousands are a detector's bug
