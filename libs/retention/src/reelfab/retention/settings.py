"""Retention settings from the environment, ``REELFAB_RETENTION_*``. Durations take seconds or
ISO 8601 (``REELFAB_RETENTION_INTERMEDIATE_GRACE=PT6H``, ``REELFAB_RETENTION_FINAL_MAX_AGE=P30D``).

Kept apart from ``reelfab.settings.Settings`` so that only the operator tool (and a service that
runs retention later) reads them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .policy import RetentionPolicy


class RetentionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REELFAB_RETENTION_", env_file=None, extra="ignore")

    # a finished job's intermediates (mezzanine, face track) and per-job inputs stay this long
    intermediate_grace: timedelta = timedelta(hours=6)
    # a job with no terminal event seen keeps its intermediates until they are this old; also how
    # far back the terminal topics are read (an older end means older objects, gone by this rule)
    orphan_age: timedelta = timedelta(days=7)
    input_max_age: timedelta = timedelta(days=7)
    final_max_age: timedelta = timedelta(days=30)
    partial_max_age: timedelta = timedelta(days=1)
    # True until the publisher service lands: render.completed is the last event a job gets, so it
    # counts as finished; set False once publish.completed is emitted for every published job
    rendered_is_finished: bool = True
    # published outbox rows and processed-event marks older than this go; a redelivery of an
    # event older than this would be handled again, so keep it above the topics' retention
    redelivery_horizon: timedelta = timedelta(days=7)

    @field_validator(
        "intermediate_grace", "orphan_age", "input_max_age", "final_max_age", "partial_max_age",
        "redelivery_horizon", mode="before",
    )
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """A plain number in the environment is seconds (pydantic alone reads '86400' as a clock time)."""
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            intermediate_grace=self.intermediate_grace,
            orphan_age=self.orphan_age,
            input_max_age=self.input_max_age,
            final_max_age=self.final_max_age,
            partial_max_age=self.partial_max_age,
            rendered_is_finished=self.rendered_is_finished,
        )
