"""The registry's HTTP API (FastAPI): ``build_api`` makes the app; one router per area (subjects
and enrolment, enrolled images by reference, consent, checks, keys, audit) under ``routers``, each route one use case of
``use_cases.Registry``, which routes get as a dependency (``deps``)."""

from .app import build_api

__all__ = ["build_api"]
