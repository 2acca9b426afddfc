"""onnxruntime sessions: which execution providers, one session per (file, providers) per process, and
running a batch through a model whatever batch size it was exported with."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from reelfab.faces.errors import ModelError

# fastest first; CPU is always last so any node the GPU providers cannot run still runs
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ALIASES = {
    "tensorrt": PROVIDER_ORDER[0],
    "trt": PROVIDER_ORDER[0],
    "cuda": PROVIDER_ORDER[1],
    "cpu": PROVIDER_ORDER[2],
}
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The providers to run on, best first. ``requested`` (names or the aliases tensorrt/cuda/cpu) are
    used in the order given and must be available; none requested: every available one of
    TensorRT, CUDA, CPU."""
    available = ort.get_available_providers()
    if not requested:
        return [p for p in PROVIDER_ORDER if p in available] or [PROVIDER_ORDER[-1]]
    chosen = [ALIASES.get(p.strip().lower(), p.strip()) for p in requested if p.strip()]
    absent = [p for p in chosen if p not in available]
    if absent:
        raise ModelError(
            f"execution provider(s) {', '.join(absent)} not available in this onnxruntime "
            f"({ort.__version__}): available are {', '.join(available)}"
        )
    if PROVIDER_ORDER[-1] not in chosen:
        chosen.append(PROVIDER_ORDER[-1])
    return list(dict.fromkeys(chosen))


class Model:
    """One loaded ONNX model. ``fixed_batch``: the batch size the model was exported with, or ``None``
    for a dynamic batch axis."""

    def __init__(self, session: ort.InferenceSession, path: Path) -> None:
        self.session = session
        self.path = path
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]
        self.fixed_batch = _fixed_batch(session)
        # I/O binding: outputs land in device memory and are copied out once; only worth it on a GPU
        self.bind_device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else None

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
        feeds = {
            k: np.ascontiguousarray(v, dtype=ONNX_TYPES.get(self.inputs[k].type, v.dtype))
            for k, v in feeds.items()
        }
        try:
            if self.bind_device is None:
                return list(self.session.run(None, feeds))
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for name in self.output_names:
                binding.bind_output(name, self.bind_device)
            self.session.run_with_iobinding(binding)
            return list(binding.copy_outputs_to_cpu())
        except Exception as exc:  # onnxruntime raises its own exception types, not exported stably
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
            raise ModelError(f"{self.path.name}: inference failed on {shapes}: {exc}") from exc

    def run_batched(
        self,
        feeds: Mapping[str, NDArray[Any]],
        batch_size: int,
        *,
        shared: Mapping[str, NDArray[Any]] | None = None,
    ) -> list[NDArray[Any]]:
        """``feeds`` share a first axis of N items; ``shared`` inputs are fed as they are to every chunk.
        Runs chunks of ``batch_size``, or of the model's own fixed batch (the last chunk padded by
        repeating its last item), and returns every output with N along its first axis."""
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or max(batch_size, 1)
        parts: list[list[NDArray[Any]]] = []
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in feeds.items()}
            real = len(next(iter(chunk.values())))
            if self.fixed_batch and real < step:
                chunk = {
                    k: np.concatenate([v, np.repeat(v[-1:], step - real, axis=0)]) for k, v in chunk.items()
                }
            outputs = self.run({**chunk, **(shared or {})})
            parts.append([o[:real] for o in outputs])
        if not parts:
            return []
        return [np.concatenate(column) for column in zip(*parts, strict=True)]


def _fixed_batch(session: ort.InferenceSession) -> int | None:
    # rank-1 inputs (CodeFormer's weight) are parameters, not batches
    dims = [i.shape[0] for i in session.get_inputs() if len(i.shape) >= 2]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return min(fixed) if fixed else None


_cache: dict[tuple[str, tuple[str, ...], int], Model] = {}
_lock = threading.Lock()


def load(path: Path, providers: Sequence[str], *, threads: int = 0, cache_dir: Path | None = None) -> Model:
    """The session for ``path`` on ``providers``, created once per process. ``threads``: intra-op
    threads (0: onnxruntime's default, one per core); ``cache_dir``: where TensorRT keeps built engines."""
    key = (str(Path(path).resolve()), tuple(providers), threads)
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = _cache[key] = Model(_session(Path(path), providers, threads, cache_dir), Path(path))
        return model


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _session(
    path: Path, providers: Sequence[str], threads: int, cache_dir: Path | None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    try:
        return ort.InferenceSession(
            str(path), options, providers=[_with_options(p, cache_dir) for p in providers]
        )
    except Exception as exc:
        raise ModelError(
            f"{path}: onnxruntime cannot load it on {', '.join(providers)}: {exc} (a truncated or corrupt file? "
            f"check it with `reelfab models pull {path.stem}`)"
        ) from exc


def _with_options(provider: str, cache_dir: Path | None) -> str | tuple[str, dict[str, Any]]:
    if provider == "TensorrtExecutionProvider" and cache_dir is not None:
        # building a TensorRT engine takes minutes; keep it across processes
        cache_dir.mkdir(parents=True, exist_ok=True)
        return provider, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}
    return provider
