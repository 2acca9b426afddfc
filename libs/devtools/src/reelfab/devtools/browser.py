"""A headless browser for the review page's test: Debian's chromium and its chromedriver, found on PATH or
in /usr/bin, installed with apt-get (root) where missing. `reelfab setup` calls ensure_chromium, so `make
test` on a fresh machine has it; the browser test's fixture calls it too."""

from __future__ import annotations

import shutil
from pathlib import Path

from reelfab.devtools.localstack.procs import Say, apt_install
from reelfab.errors import StackError

PACKAGES = ("chromium", "chromium-driver")
_BROWSERS = ("chromium", "chromium-browser")
_DRIVERS = ("chromedriver",)
_FALLBACK_DIRS = (Path("/usr/bin"), Path("/usr/lib/chromium"))


def _which(names: tuple[str, ...]) -> Path | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
        for folder in _FALLBACK_DIRS:
            candidate = folder / name
            if candidate.is_file() and shutil.which(str(candidate)):  # exists and is executable
                return candidate
    return None


def find_chromium() -> tuple[Path, Path] | None:
    """(chromium, chromedriver) when both are there, else None."""
    browser, driver = _which(_BROWSERS), _which(_DRIVERS)
    if browser is None or driver is None:
        return None
    return browser, driver


def ensure_chromium(say: Say) -> tuple[Path, Path]:
    """(chromium, chromedriver); installs Debian's chromium and chromium-driver when either is missing
    (root with apt-get only), else StackError naming the packages."""
    found = find_chromium()
    if found is not None:
        return found
    apt_install(list(PACKAGES), "no chromium and chromedriver for the review page's browser test", say)
    found = find_chromium()
    if found is None:
        raise StackError(
            f"installed {' '.join(PACKAGES)} but found no chromium and chromedriver on PATH or /usr/bin"
        )
    return found
