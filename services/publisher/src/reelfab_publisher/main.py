"""publisher service: wiring only (the service shape: docs/architecture.md). bootstrap.py builds the
adapters; handlers.py takes rendered videos into the review queue and consent changes into stops and
takedowns; review.py is the operators' desk (web.py serves it at /review; `reelfab review` is its CLI);
poster.py posts approved videos at most once; worker.py runs the posting and the engagement read-back."""

from __future__ import annotations

from pathlib import Path

from reelfab.contracts.topics import (
    CONSENT_CHANGED,
    ENGAGEMENT_OBSERVED,
    JOB_FAILED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
)
from reelfab.errors import StackError
from reelfab.logging import get_logger
from reelfab.service import ServiceContext, ServiceSpec, entry_point

from . import handlers
from .accounts import key_file
from .bootstrap import bootstrap
from .review import ReviewDesk
from .web import review_app
from .worker import Worker

SPEC = ServiceSpec(
    name="publisher",
    package=__package__ or "reelfab_publisher",
    db_schema="publisher",
    default_port=8085,
    consumes=(
        CONSENT_CHANGED,
        RENDER_COMPLETED,
    ),
    produces=(
        PUBLISH_COMPLETED,
        ENGAGEMENT_OBSERVED,
        JOB_FAILED,
    ),
    description="Rendered video in; review, platform post and engagement read-back out.",
)


def review_secret(ctx: ServiceContext) -> bytes:
    configured = ctx.settings.publisher_review_secret
    if configured and len(configured.encode()) < 32:
        raise StackError("REELFAB_PUBLISHER_REVIEW_SECRET must be at least 32 bytes (it signs the review page's "
                         "sessions); e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return configured.encode() if configured else key_file(Path(ctx.settings.state_dir) / "publisher-review.key")


def wire(ctx: ServiceContext) -> None:
    p = bootstrap(ctx)
    desk = ReviewDesk(p)
    worker = Worker(p, desk)
    ctx.extras["publisher"] = p
    ctx.extras["desk"] = desk
    p.view.subscribe(ctx.bus)  # a group of its own: every instance reads every lease
    ctx.bus.subscribe(RENDER_COMPLETED, handlers.on_render_completed(p))
    ctx.bus.subscribe(CONSENT_CHANGED, handlers.on_consent_changed(p))
    ctx.extras.update(publisher=p, desk=desk, worker=worker, api=review_app(desk, secret=review_secret(ctx)))

    async def start() -> None:
        await p.view.catch_up(ctx.bus)  # judge nothing on an empty view
        worker.start()
        get_logger("reelfab.publisher").info(
            "review page", url=f"http://{ctx.settings.http_host}:{ctx.settings.http_port or SPEC.default_port}/review/",
            tiktok_client="configured" if p.client is not None else "not configured (dry-run accounts only)")

    async def stop() -> None:
        await worker.stop()
        if p.client is not None:
            await p.client.aclose()

    ctx.on_start.append(start)
    ctx.on_stop.append(stop)


main = entry_point(SPEC, wire)
