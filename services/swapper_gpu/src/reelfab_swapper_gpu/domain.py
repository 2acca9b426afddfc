"""Pure decisions of the swapper: which backend and model a job runs with (and whether its licence
allows the job), and how many jobs fit the memory budget."""

from __future__ import annotations

from dataclasses import dataclass

from reelfab.errors import PermanentError

# What the classical backend is, licence-wise: dlib's code is Boost-licensed, but its 68-point
# predictor was trained on iBUG 300-W, whose terms exclude commercial use.
CLASSICAL_MODEL = "classical"
CLASSICAL_LICENCE = "dlib models (68-point predictor trained on iBUG 300-W: non-commercial)"


class ModelRefused(PermanentError):
    """The job names a model this worker lacks, or one whose licence does not allow the job."""


@dataclass(frozen=True)
class ModelChoice:
    backend: str
    model: str
    licence: str
    commercial_use: bool


def choose_model(
    *,
    backend: str | None,
    model: str,
    default_backend: str,
    commercial_job: bool,
    commercial_mode: bool,
    manifest: dict[str, tuple[str, bool]],
    installed: set[str],
) -> ModelChoice:
    """``manifest``: model name -> (licence, commercial use allowed); ``installed``: model files here."""
    chosen_backend = backend or ("classical" if model == CLASSICAL_MODEL else default_backend)
    if chosen_backend == "classical":
        choice = ModelChoice("classical", CLASSICAL_MODEL, CLASSICAL_LICENCE, False)
    elif chosen_backend == "onnx":
        if model not in manifest:
            raise ModelRefused(f"swapper model {model!r} is not in the model manifest")
        if model not in installed:
            raise ModelRefused(f"swapper model {model!r} is not installed on this worker (reelfab models pull {model})")
        licence, commercial = manifest[model]
        choice = ModelChoice("onnx", model, licence, commercial)
    else:
        raise ModelRefused(f"backend {chosen_backend!r} cannot serve swap jobs (classical or onnx)")
    if (commercial_job or commercial_mode) and not choice.commercial_use:
        why = "the job is commercial" if commercial_job else "this worker runs in commercial mode"
        raise ModelRefused(f"{choice.model} ({choice.licence}) may not be used: {why}")
    return choice


def jobs_that_fit(budget_bytes: int, per_job_bytes: int, hard_max: int = 8) -> int:
    """Concurrent jobs within the memory budget (GPU memory on GPU, RAM on CPU); at least one."""
    return max(1, min(hard_max, budget_bytes // max(per_job_bytes, 1)))


def per_job_bytes(width: int, height: int, batch_size: int, overhead_bytes: int = 300 * 2**20) -> int:
    """A job holds about three copies of a batch (decoded, swapped, queued for the encoder) plus the
    engine's working set."""
    return 3 * batch_size * width * height * 3 + overhead_bytes
