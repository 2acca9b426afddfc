"""The folder of model files: where each one lives, whether it is there and intact, and downloading it.

The layout is FaceFusion's (``<name>.onnx`` with its ``<name>.hash`` beside it, flat), so the store can
point at an existing FaceFusion ``.assets/models`` folder."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from reelfab.faces.errors import ModelError
from reelfab.faces.onnx.manifest import Manifest, ModelSpec, default_manifest
from reelfab.settings import Settings

Progress = Callable[[int, int | None], None]  # bytes so far, total bytes when the server says
CHUNK = 1 << 20


def models_dir(settings: Settings) -> Path:
    """Where the model files live: ``REELFAB_MODELS_DIR``, else ``<state_dir>/models``."""
    return Path(settings.models_dir) if settings.models_dir else Path(settings.state_dir) / "models"


class ModelStore:
    """Model files under ``root`` (default: ``REELFAB_MODELS_DIR``, else ``<state_dir>/models``).
    ``transport`` replaces httpx's network transport (tests)."""

    def __init__(
        self,
        root: Path | None = None,
        manifest: Manifest | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if root is None:
            from reelfab.settings import get_settings

            root = models_dir(get_settings())
        self.root = Path(root)
        self.manifest = manifest or default_manifest()
        self.transport = transport
        self.timeout_s = timeout_s

    # where and whether

    def spec(self, name: str) -> ModelSpec:
        return self.manifest.get(name)

    def path(self, name: str) -> Path:
        return self.root / self.spec(name).file

    def hash_path(self, name: str) -> Path:
        return self.root / f"{self.spec(name).stem}.hash"

    def is_installed(self, name: str) -> bool:
        return self.path(name).is_file()

    def list(self) -> list[dict[str, Any]]:
        """One row per manifest entry, for ``reelfab models list``."""
        return [
            {
                "name": s.name,
                "kind": s.kind,
                "licence": s.licence,
                "commercial": s.commercial_use,
                "installed": self.is_installed(s.name),
                "path": str(self.path(s.name)),
            }
            for s in self.manifest
        ]

    def require(self, names: Sequence[str], *, commercial_mode: bool) -> None:
        """The named models and what they need, all allowed and installed; else one ``ModelError``
        naming every missing file and the command that fetches it."""
        specs = self.manifest.closure(names)
        check_licences(specs, commercial_mode)
        missing = [s for s in specs if not self.is_installed(s.name)]
        if missing:
            lines = "; ".join(f"{s.name} (run `reelfab models pull {s.name}`)" for s in missing)
            raise ModelError(f"models not installed under {self.root}: {lines}")

    # integrity

    def verify(self, name: str) -> Path:
        """Check the installed file against every expectation there is: the manifest's size, sha256
        and crc32, and FaceFusion's ``.hash`` file beside it. Raises ``ModelError`` on any mismatch, or
        when there is nothing to check against."""
        path = self.path(name)
        if not path.is_file():
            raise ModelError(f"{name}: {path} does not exist (run `reelfab models pull {name}`)")
        self._check(self.spec(name), path, shown=path)
        return path

    def _expectations(self, spec: ModelSpec) -> dict[str, str]:
        expected: dict[str, str] = {}
        if spec.sha256:
            expected["sha256"] = spec.sha256.lower()
        if spec.crc32:
            expected["crc32"] = spec.crc32.lower()
        sidecar = self.root / f"{spec.stem}.hash"
        if "crc32" not in expected and sidecar.is_file():
            expected["crc32"] = sidecar.read_text().strip().lower()
        return expected

    def _check(self, spec: ModelSpec, path: Path, *, shown: Path) -> None:
        expected = self._expectations(spec)
        if not expected:
            raise ModelError(
                f"{spec.name}: nothing to verify {shown} against: the manifest has no hash and there is no "
                f"{spec.stem}.hash beside it (download one of {', '.join(spec.hash_urls) or 'none listed'})"
            )
        size = path.stat().st_size
        if spec.size_bytes is not None and size != spec.size_bytes:
            raise ModelError(f"{shown}: size mismatch: expected {spec.size_bytes} bytes, actual {size}")
        actual = file_digests(path)
        for algorithm, value in expected.items():
            if actual[algorithm] != value:
                source = spec.hash_source if algorithm == "sha256" else "FaceFusion's .hash"
                raise ModelError(
                    f"{shown}: {algorithm} mismatch: expected {value}, actual {actual[algorithm]} "
                    f"(expected value from: {source})"
                )

    # download

    def pull(self, name: str, *, commercial_mode: bool, progress: Progress | None = None) -> Path:
        """Download ``name`` and whatever it requires, verify each, and install it atomically; what is
        installed and intact already is kept. Returns the path of ``name``."""
        specs = self.manifest.closure([name])
        check_licences(specs, commercial_mode)
        self.root.mkdir(parents=True, exist_ok=True)
        with httpx.Client(transport=self.transport, timeout=self.timeout_s, follow_redirects=True) as client:
            for spec in specs:
                self._pull_one(client, spec, progress)
        return self.path(name)

    def _pull_one(self, client: httpx.Client, spec: ModelSpec, progress: Progress | None) -> None:
        target = self.root / spec.file
        if target.is_file():
            self._check(spec, target, shown=target)  # a bad file stays for the user to look at
            return
        if not self._expectations(spec):
            self._fetch_hash(client, spec)
        part = target.with_name(target.name + ".part")
        failures: list[str] = []
        for url in spec.urls:
            try:
                _download(client, url, part, progress)
                break
            except (httpx.HTTPError, OSError) as exc:
                failures.append(f"{url} ({_reason(exc)})")
        else:
            raise ModelError(
                f"could not download {spec.name}: tried {'; '.join(failures) or 'no URL listed'}. "
                f"To install it by hand, download {spec.urls[0] if spec.urls else spec.file} and save it as {target}"
            )
        try:
            self._check(spec, part, shown=part)
        except ModelError:
            part.unlink(missing_ok=True)  # resuming onto bad bytes would never succeed
            raise
        os.replace(part, target)

    def _fetch_hash(self, client: httpx.Client, spec: ModelSpec) -> None:
        sidecar = self.root / f"{spec.stem}.hash"
        failures: list[str] = []
        for url in spec.hash_urls:
            try:
                response = client.get(url)
                response.raise_for_status()
                value = response.text.strip().lower()
                if len(value) != 8 or any(c not in "0123456789abcdef" for c in value):
                    raise httpx.DecodingError(f"not a CRC32: {value[:40]!r}")
                sidecar.write_text(value)
                return
            except httpx.HTTPError as exc:
                failures.append(f"{url} ({_reason(exc)})")
        raise ModelError(
            f"no expected hash for {spec.name}: the manifest has none and fetching it failed: "
            f"{'; '.join(failures) or 'no hash URL listed'}. To install it by hand, download "
            f"{spec.urls[0] if spec.urls else spec.file} and save it as {self.root / spec.file}, and "
            f"{spec.hash_urls[0] if spec.hash_urls else 'its .hash'} as {sidecar}"
        )


def check_licences(specs: Sequence[ModelSpec], commercial_mode: bool) -> None:
    """In commercial mode, one ``ModelError`` naming every model whose licence forbids commercial use."""
    refused = [s for s in specs if commercial_mode and not s.commercial_use]
    if refused:
        reasons = "; ".join(
            f"{s.name} is licensed {s.licence}" + (f" ({s.licence_note})" if s.licence_note else "")
            for s in refused
        )
        raise ModelError(
            f"commercial mode refuses models whose licence does not allow commercial use: {reasons}. "
            "Set REELFAB_COMMERCIAL_MODE=false for non-commercial work"
        )


def file_digests(path: Path) -> dict[str, str]:
    """sha256 and FaceFusion's crc32 of a file, in one pass."""
    sha = hashlib.sha256()
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            crc = zlib.crc32(chunk, crc)
    return {"sha256": sha.hexdigest(), "crc32": format(crc, "08x")}


def _download(client: httpx.Client, url: str, part: Path, progress: Progress | None) -> None:
    """Into ``part``, resuming from its current length where the server honours ranges."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # the part is already whole (or stale): start again next time
            part.unlink()
            response.raise_for_status()
        response.raise_for_status()
        resumed = response.status_code == 206
        done = have if resumed else 0
        length = response.headers.get("content-length")
        total = done + int(length) if length is not None else None
        with part.open("ab" if resumed else "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
