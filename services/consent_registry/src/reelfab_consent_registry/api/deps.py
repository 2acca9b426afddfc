"""What routes depend on besides who calls them (``gate.Reader``, ``gate.Admin``): the registry's use
cases, as ``build_api`` put them on the app."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

from typing import Annotated, cast

from fastapi import Depends, Request

from ..use_cases import Registry


def registry(request: Request) -> Registry:
    return cast(Registry, request.app.state.registry)


UseCases = Annotated[Registry, Depends(registry)]
