"""Package discovery for DESIGN.md's layout: libs/ -> reelfab, services/ -> reelfab_services,
schemas/ -> reelfab_schemas (everything else lives in pyproject.toml)."""

from setuptools import find_packages, setup


def _mapped(prefix: str, folder: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(folder)]


setup(packages=_mapped("reelfab", "libs") + _mapped("reelfab_services", "services") + ["reelfab_schemas"])
