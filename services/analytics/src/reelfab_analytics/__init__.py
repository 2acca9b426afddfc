"""analytics: Engagement in; per-arm posteriors (policy) and flags out."""
