"""The facefusion backend drives FaceFusion 3.x's headless CLI; here against a stand-in script that
checks the arguments as FaceFusion's parser would and copies the target to the output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from reelfab.faces.errors import ModelError
from reelfab.faces.facefusion import FaceFusionBackend
from reelfab.media.errors import MediaError
from reelfab.settings import Settings

STAND_IN = r'''
import argparse, json, shutil, sys
parser = argparse.ArgumentParser(prog="facefusion.py")
sub = parser.add_subparsers(dest="command", required=True)
run = sub.add_parser("headless-run")
run.add_argument("-s", "--source-paths", nargs="+", required=True)
run.add_argument("-t", "--target-path", required=True)
run.add_argument("-o", "--output-path", required=True)
run.add_argument("--processors", nargs="+", choices=["face_swapper", "face_enhancer"], required=True)
run.add_argument("--face-swapper-model", choices=["inswapper_128", "hyperswap_1a_256", "ghost_2_256"])
run.add_argument("--face-enhancer-model", choices=["gfpgan_1.4", "codeformer"])
run.add_argument("--execution-providers", nargs="+", choices=["cpu", "cuda", "tensorrt"])
args = parser.parse_args()
if "nsfw" in args.target_path:
    print("[FACEFUSION.CORE] NSFW content detected, processing aborted", file=sys.stderr)
    sys.exit(1)
shutil.copyfile(args.target_path, args.output_path)
print(json.dumps(vars(args)))
'''


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "facefusion"
    folder.mkdir()
    (folder / "facefusion.py").write_text(STAND_IN)
    return folder


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "face.png").write_bytes(b"png")
    (tmp_path / "clip.mp4").write_bytes(b"mp4 bytes")
    return tmp_path / "face.png", tmp_path / "clip.mp4"


def test_runs_headless_with_the_chosen_processors_and_model(home: Path, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    backend = FaceFusionBackend(home, python=sys.executable)
    out = tmp_path / "out.mp4"
    run = backend.swap_clip(*inputs, out, swapper_model="ghost_2_256", enhancer_model="gfpgan_1.4",
                            execution_providers=("cuda", "cpu"))
    assert out.read_bytes() == b"mp4 bytes"
    assert run.command[2:3] == ["headless-run"]
    assert '"processors": ["face_swapper", "face_enhancer"]' in run.log_tail
    assert '"execution_providers": ["cuda", "cpu"]' in run.log_tail


def test_failure_is_reported_with_facefusions_own_words(home: Path, tmp_path: Path) -> None:
    (tmp_path / "face.png").write_bytes(b"png")
    (tmp_path / "nsfw.mp4").write_bytes(b"x")
    with pytest.raises(MediaError, match="NSFW content detected"):
        FaceFusionBackend(home, python=sys.executable).swap_clip(tmp_path / "face.png", tmp_path / "nsfw.mp4", tmp_path / "o.mp4")


def test_an_unknown_model_is_refused_by_facefusion(home: Path, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="invalid choice"):
        FaceFusionBackend(home, python=sys.executable).swap_clip(*inputs, tmp_path / "o.mp4", swapper_model="nonexistent")


def test_clear_errors_without_an_installation(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    with pytest.raises(ModelError, match="REELFAB_FACEFUSION_HOME"):
        FaceFusionBackend.from_settings(Settings(facefusion_home=None))
    with pytest.raises(ModelError, match="holds no facefusion.py"):
        FaceFusionBackend(tmp_path)


def test_missing_inputs_are_named(home: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="missing.png: no such file"):
        FaceFusionBackend(home, python=sys.executable).swap_clip(tmp_path / "missing.png", tmp_path / "c.mp4", tmp_path / "o.mp4")
