"""Storage retention (README "Storage retention"): a pure policy deciding which objects of the
store may go and why (``policy``), its settings (``settings``), and the adapters that read the
jobs' ends from the topics, delete objects and prune the delivery tables (``adapters``)."""

from .policy import (
    KINDS,
    Deletion,
    JobState,
    Kind,
    ListedObject,
    RetentionPlan,
    RetentionPolicy,
    StoreObject,
    TerminalEvent,
    Usage,
    classify,
    fold_terminal_events,
    measure,
    plan_retention,
)
from .settings import RetentionSettings

__all__ = [
    "KINDS",
    "Deletion",
    "JobState",
    "Kind",
    "ListedObject",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionSettings",
    "StoreObject",
    "TerminalEvent",
    "Usage",
    "classify",
    "fold_terminal_events",
    "measure",
    "plan_retention",
]
