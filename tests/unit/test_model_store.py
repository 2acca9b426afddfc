"""The model manifest and store: the manifest's entries are complete, files are verified against every
hash there is, downloads resume and fail with a message that says how to place the file by hand, and
commercial mode refuses what its licence forbids. No test touches the internet: downloads go to an
httpx MockTransport or to a closed port on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import socket
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from reelfab.faces.errors import ModelError
from reelfab.faces.onnx import geometry
from reelfab.faces.onnx.manifest import KINDS, Manifest, ModelSpec, default_manifest, load_manifest
from reelfab.faces.onnx.store import ModelStore, file_digests

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: a "model"
GH = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"
REQUIRED = {
    "yolo_face_8n": ("detector", True), "scrfd_2.5g": ("detector", False), "2dfan4": ("landmarker", True),
    "arcface_w600k_r50": ("embedder", False), "inswapper_128": ("swapper", False),
    "inswapper_128_fp16": ("swapper", False), "hyperswap_1a_256": ("swapper", False),
    "hyperswap_1b_256": ("swapper", False), "hyperswap_1c_256": ("swapper", False),
    "ghost_1_256": ("swapper", True), "ghost_2_256": ("swapper", True), "ghost_3_256": ("swapper", True),
    "simswap_256": ("swapper", False), "gfpgan_1.4": ("enhancer", True), "codeformer": ("enhancer", False),
}  # fmt: skip


def spec(name: str = "toy", **changes: object) -> ModelSpec:
    base = ModelSpec(
        name=name, kind="converter", file=f"{name}.onnx", input_size=(512,), licence="MIT", commercial_use=True,
        urls=(f"https://example.invalid/{name}.onnx",), hash_urls=(f"https://example.invalid/{name}.hash",),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def store_of(
    tmp_path: Path, *specs: ModelSpec, handler: Callable[[httpx.Request], httpx.Response] | None = None
) -> ModelStore:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    return ModelStore(
        tmp_path, Manifest(specs or (spec(),)), transport=httpx.MockTransport(handler or refuse)
    )


def serving(files: dict[str, bytes], log: list[httpx.Request] | None = None, *, ranges: bool = True):  # type: ignore[no-untyped-def]
    """A handler serving ``files`` by URL path, honouring Range when ``ranges``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if log is not None:
            log.append(request)
        body = files.get(request.url.path)
        if body is None:
            return httpx.Response(404)
        wanted = request.headers.get("range")
        if ranges and wanted:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))  # type: ignore[union-attr]
            return httpx.Response(
                206, content=body[start:], headers={"content-length": str(len(body) - start)}
            )
        return httpx.Response(200, content=body, headers={"content-length": str(len(body))})

    return handle


# the manifest


def test_the_manifest_has_every_model_with_what_the_store_and_the_cli_need() -> None:
    manifest = default_manifest()
    for name, (kind, commercial) in REQUIRED.items():
        s = manifest.get(name)
        assert (s.kind, s.commercial_use) == (kind, commercial), name
    for s in manifest:
        assert s.kind in KINDS and s.licence and isinstance(s.commercial_use, bool), s.name
        assert s.file.endswith(".onnx") and s.input_size and all(v > 0 for v in s.input_size), s.name
        assert any(
            u.startswith("https://github.com/facefusion/facefusion-assets/releases/download/models-3.")
            for u in s.urls
        )
        assert any(u.startswith("https://huggingface.co/facefusion/models-3.") for u in s.urls), s.name
        assert [u.removesuffix(".hash") for u in s.hash_urls] == [u.removesuffix(".onnx") for u in s.urls], (
            s.name
        )
        assert s.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", s.sha256), s.name
        assert s.crc32 is None or re.fullmatch(r"[0-9a-f]{8}", s.crc32), s.name
        assert s.sha256 is None or "third-party" in s.hash_source, s.name  # where a value came from is said
        assert s.inputs, s.name
        manifest.closure([s.name])  # every requirement exists
        if s.kind in ("swapper", "enhancer"):
            assert s.template in geometry.TEMPLATES and s.preprocess["output"] in ("unit", "denormalise"), (
                s.name
            )
        if s.kind == "swapper":
            assert set(s.inputs) == {"target", "source"}, s.name
            assert s.source_embedding["kind"] in ("emap", "normed", "converter"), s.name
    assert manifest.get("inswapper_128").source_embedding["kind"] == "emap"
    assert manifest.get("ghost_2_256").requires == ("arcface_w600k_r50", "crossface_ghost")
    assert "weight" in manifest.get("codeformer").inputs


def test_a_manifest_entry_with_an_unknown_field_or_kind_is_refused(tmp_path: Path) -> None:
    entry = {"name": "x", "kind": "swapper", "file": "x.onnx", "input_size": [1], "licence": "MIT",
             "commercial_use": True, "urls": [], "colour": "red"}  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps({"models": [entry]}))
    with pytest.raises(ModelError, match="unknown fields"):
        load_manifest(tmp_path / "m.json")
    good = {k: v for k, v in entry.items() if k != "colour"}
    with pytest.raises(ModelError, match="kind 'painter'"):
        ModelSpec.from_dict({**good, "kind": "painter"})


def test_an_unknown_model_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'gfpgan_9'.*gfpgan_1.4"):
        ModelStore(tmp_path).path("gfpgan_9")


# where and whether


def test_paths_and_rows_for_the_cli(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.path("yolo_face_8n") == tmp_path / "yoloface_8n.onnx"  # FaceFusion's file name
    assert store.hash_path("yolo_face_8n") == tmp_path / "yoloface_8n.hash"
    (tmp_path / "yoloface_8n.onnx").write_bytes(b"x")
    rows = {r["name"]: r for r in store.list()}
    assert set(rows) >= set(REQUIRED)
    assert rows["yolo_face_8n"]["installed"] and not rows["2dfan4"]["installed"]
    assert rows["inswapper_128"]["commercial"] is False and rows["ghost_2_256"]["commercial"] is True
    assert set(rows["ghost_2_256"]) == {"name", "kind", "licence", "commercial", "installed", "path"}


def test_the_default_root_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from reelfab.settings import get_settings

    monkeypatch.setenv("REELFAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("REELFAB_MODELS_DIR", raising=False)
    get_settings.cache_clear()
    try:
        assert ModelStore().root == tmp_path / "models"
    finally:
        get_settings.cache_clear()


# verification


def test_verify_passes_an_intact_file(tmp_path: Path) -> None:
    store = store_of(tmp_path, spec(crc32=format(zlib.crc32(PAYLOAD), "08x"), size_bytes=len(PAYLOAD)))
    (tmp_path / "toy.onnx").write_bytes(PAYLOAD)
    assert store.verify("toy") == tmp_path / "toy.onnx"


def test_a_hash_mismatch_names_the_file_expected_and_actual(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    (tmp_path / "toy.onnx").write_bytes(PAYLOAD + b"!")
    with pytest.raises(ModelError) as err:
        store.verify("toy")
    message = str(err.value)
    assert str(tmp_path / "toy.onnx") in message
    assert f"expected {hashlib.sha256(PAYLOAD).hexdigest()}" in message
    assert f"actual {hashlib.sha256(PAYLOAD + b'!').hexdigest()}" in message


def test_a_size_mismatch_is_reported_before_hashing(tmp_path: Path) -> None:
    store = store_of(tmp_path, spec(size_bytes=len(PAYLOAD)))
    (tmp_path / "toy.onnx").write_bytes(PAYLOAD[:10])
    with pytest.raises(ModelError, match=f"size mismatch: expected {len(PAYLOAD)} bytes, actual 10"):
        store.verify("toy")


def test_facefusions_hash_file_is_checked_when_the_manifest_has_none(tmp_path: Path) -> None:
    store = store_of(tmp_path, spec(sha256=None))
    (tmp_path / "toy.onnx").write_bytes(PAYLOAD)
    with pytest.raises(ModelError, match="nothing to verify"):
        store.verify("toy")
    (tmp_path / "toy.hash").write_text(format(zlib.crc32(PAYLOAD), "08x"))
    store.verify("toy")
    (tmp_path / "toy.hash").write_text("deadbeef")
    with pytest.raises(
        ModelError, match=f"crc32 mismatch: expected deadbeef, actual {zlib.crc32(PAYLOAD):08x}"
    ):
        store.verify("toy")


def test_digests_match_the_standard_ones(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert file_digests(tmp_path / "f") == {
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(), "crc32": format(zlib.crc32(PAYLOAD), "08x"),
    }  # fmt: skip


# downloads


def test_pull_downloads_verifies_and_installs(tmp_path: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    store = store_of(tmp_path, handler=serving({"/toy.onnx": PAYLOAD}))
    path = store.pull(
        "toy", commercial_mode=True, progress=lambda done, total: progress.append((done, total))
    )
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "toy.onnx.part").exists()
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_pull_resumes_a_partial_download(tmp_path: Path) -> None:
    log: list[httpx.Request] = []
    (tmp_path / "toy.onnx.part").write_bytes(PAYLOAD[:1000])
    store_of(tmp_path, handler=serving({"/toy.onnx": PAYLOAD}, log)).pull("toy", commercial_mode=True)
    assert log[0].headers["range"] == "bytes=1000-"
    assert (tmp_path / "toy.onnx").read_bytes() == PAYLOAD


def test_pull_starts_over_when_the_server_ignores_ranges(tmp_path: Path) -> None:
    (tmp_path / "toy.onnx.part").write_bytes(b"stale bytes")
    store_of(tmp_path, handler=serving({"/toy.onnx": PAYLOAD}, ranges=False)).pull(
        "toy", commercial_mode=True
    )
    assert (tmp_path / "toy.onnx").read_bytes() == PAYLOAD


def test_pull_tries_the_next_url(tmp_path: Path) -> None:
    two = spec(urls=("https://a.invalid/toy.onnx", "https://b.invalid/mirror/toy.onnx"))
    store = store_of(tmp_path, two, handler=serving({"/mirror/toy.onnx": PAYLOAD}))
    assert store.pull("toy", commercial_mode=True).read_bytes() == PAYLOAD


def test_a_corrupt_download_is_discarded_and_named(tmp_path: Path) -> None:
    store = store_of(tmp_path, handler=serving({"/toy.onnx": PAYLOAD[:-1] + b"?"}))
    with pytest.raises(ModelError, match="sha256 mismatch: expected"):
        store.pull("toy", commercial_mode=True)
    assert not (tmp_path / "toy.onnx").exists() and not (tmp_path / "toy.onnx.part").exists()


def test_pull_fetches_facefusions_hash_when_the_manifest_has_none(tmp_path: Path) -> None:
    files = {"/toy.onnx": PAYLOAD, "/toy.hash": format(zlib.crc32(PAYLOAD), "08x").encode()}
    store = store_of(tmp_path, spec(sha256=None), handler=serving(files))
    store.pull("toy", commercial_mode=True)
    assert (tmp_path / "toy.hash").read_text() == format(zlib.crc32(PAYLOAD), "08x")
    store.verify("toy")


def test_offline_pull_names_the_urls_and_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/toy.onnx"
    store = ModelStore(tmp_path, Manifest([spec(urls=(url,))]), timeout_s=2)
    with pytest.raises(ModelError) as err:
        store.pull("toy", commercial_mode=True)
    message = str(err.value)
    assert f"tried {url} (ConnectError" in message
    assert f"download {url} and save it as {tmp_path / 'toy.onnx'}" in message


def test_offline_pull_of_a_real_entry_lists_github_and_hugging_face(tmp_path: Path) -> None:
    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no network", request=request)

    store = ModelStore(tmp_path, transport=httpx.MockTransport(offline))
    with pytest.raises(ModelError) as err:
        store.pull("gfpgan_1.4", commercial_mode=True)
    message = str(err.value)
    assert f"{GH}gfpgan_1.4.onnx (ConnectError: no network)" in message
    assert f"{HF}gfpgan_1.4.onnx (ConnectError: no network)" in message
    assert f"download {GH}gfpgan_1.4.onnx and save it as {tmp_path / 'gfpgan_1.4.onnx'}" in message


def test_http_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"toy.onnx \(HTTP 404\)"):
        store_of(tmp_path, handler=serving({})).pull("toy", commercial_mode=True)


def test_without_any_hash_nothing_is_downloaded(tmp_path: Path) -> None:
    store = store_of(tmp_path, spec(sha256=None), handler=serving({"/toy.onnx": PAYLOAD}))
    with pytest.raises(ModelError, match="no expected hash for toy.*save it as"):
        store.pull("toy", commercial_mode=True)
    assert not (tmp_path / "toy.onnx").exists()


def test_commercial_mode_refuses_inswapper_before_any_download(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, transport=httpx.MockTransport(lambda r: pytest.fail(f"requested {r.url}")))
    with pytest.raises(ModelError) as err:
        store.pull("inswapper_128", commercial_mode=True)
    assert "inswapper_128 is licensed InsightFace non-commercial research" in str(err.value)
    assert "REELFAB_COMMERCIAL_MODE=false" in str(err.value)


def test_pull_brings_what_a_model_requires(tmp_path: Path) -> None:
    needs = spec("swap", kind="swapper", requires=("toy",))
    store = store_of(tmp_path, spec(), needs, handler=serving({"/toy.onnx": PAYLOAD, "/swap.onnx": PAYLOAD}))
    store.pull("swap", commercial_mode=True)
    assert store.is_installed("toy") and store.is_installed("swap")


def test_an_installed_file_is_kept_if_intact_and_reported_if_not(tmp_path: Path) -> None:
    (tmp_path / "toy.onnx").write_bytes(PAYLOAD)
    store_of(tmp_path).pull("toy", commercial_mode=True)  # no request: the refusing transport would fail
    (tmp_path / "toy.onnx").write_bytes(b"broken")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        store_of(tmp_path).pull("toy", commercial_mode=True)
    assert (tmp_path / "toy.onnx").read_bytes() == b"broken"  # left for the user to look at
