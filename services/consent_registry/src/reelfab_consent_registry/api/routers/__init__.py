"""One APIRouter per area of the registry's API, included by ``api.app.build_api`` in this order."""

from . import audit, checks, consent, images, keys, subjects

ROUTERS = (subjects.router, images.router, consent.router, checks.router, keys.router, audit.router)

__all__ = ["ROUTERS"]
