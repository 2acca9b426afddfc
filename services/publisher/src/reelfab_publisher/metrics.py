"""The publisher's own metrics (the common ones are reelfab.metrics')."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REVIEW_QUEUE = Gauge("reelfab_publisher_review_jobs", "Jobs in the review queue, by status.", ["status"])
REVIEW_OLDEST = Gauge("reelfab_publisher_review_oldest_waiting_seconds",
                      "Age of the oldest video waiting for an operator's decision (0: none waiting).")
STALLED = Gauge("reelfab_publisher_posts_stalled",
                "Approved posts that cannot move, by why (no valid token, paused account, ...): alert on > 0.",
                ["why"])
ACCOUNTS_WITHOUT_TOKEN = Gauge("reelfab_publisher_accounts_without_valid_token",
                               "TikTok accounts whose tokens cannot be used or refreshed: alert on > 0.")
TAKEDOWN_BACKLOG = Gauge("reelfab_publisher_takedown_backlog",
                         "Posts a revocation listed for takedown that no operator has marked done.")
POSTS = Counter("reelfab_publisher_posts_total", "Posts published, by platform (tiktok, dryrun).", ["platform"])
FAILURES = Counter("reelfab_publisher_failures_total", "Jobs the publisher ended, by reason code.", ["reason"])
CONSENT_STOPS = Counter("reelfab_publisher_consent_stops_total",
                        "Posts stopped by the last consent check before upload, by reason.", ["reason"])
ACCOUNT_PAUSES = Counter("reelfab_publisher_account_pauses_total", "Accounts paused after a spam-risk answer.")
UPLOADED_BYTES = Counter("reelfab_publisher_uploaded_bytes_total", "Video bytes uploaded to the platform.")
READINGS = Counter("reelfab_publisher_engagement_readings_total",
                   "Engagement readings announced, by source (tiktok, simulator).", ["source"])
DECISIONS = Counter("reelfab_publisher_review_decisions_total", "Operators' decisions, by action.", ["action"])
POSTED_DESPITE_WITHDRAWAL = Counter(
    "reelfab_publisher_posted_despite_withdrawal_total",
    "Posts the platform made although their consent was withdrawn while the last bytes were in flight "
    "(each queued for takedown): alert on any.")
