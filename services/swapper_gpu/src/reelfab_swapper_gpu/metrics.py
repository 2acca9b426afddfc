"""The swapper's own metrics (docs/architecture.md "Observability"): frames/s, batch size, queue lag, jobs by outcome,
the priority admission's jobs waiting for a run slot, admissions and time waited, by lane; and GPU
utilisation, memory and temperature through NVML where an NVIDIA GPU and its library are present
(absent: those gauges are simply not exported)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

FRAMES_PER_SECOND = Histogram(
    "reelfab_swap_frames_per_second", "Frames per second of each finished swap job.", ["backend", "model"],
    buckets=(1, 2, 5, 10, 20, 30, 50, 80, 120, 200, 400),
)
BATCH_SIZE = Gauge("reelfab_swap_batch_size", "Frames per batch through the swapper.")
QUEUE_LAG = Histogram(
    "reelfab_swap_queue_lag_seconds", "From the job's request to the start of its swap.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
JOBS = Counter("reelfab_swap_jobs_total", "Swap jobs by outcome.", ["outcome"])
# the priority admission (priority.py): lane = expedited (reelfab.swap.expedited.v1 or priority > 0) or normal
WAITING = Gauge("reelfab_swap_jobs_waiting", "Swap jobs waiting for a run slot, by lane.", ["lane"])
ADMISSIONS = Counter("reelfab_swap_admissions_total", "Swap jobs admitted to a run slot, by lane.", ["lane"])
SLOT_WAIT = Histogram(
    "reelfab_swap_slot_wait_seconds",
    "How long a swap job waited for a run slot, by lane.",
    ["lane"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
)
FRAMES = Counter(
    "reelfab_swap_frames_total",
    "Frames of finished swaps by status: swapped, held (a lost face held, then faded), lost, rejected "
    "(faces seen, none the performer).", ["status"],
)


class NvmlCollector:
    """Reads NVML at scrape time: nothing cached, nothing exported without a GPU."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily("reelfab_gpu_utilization_ratio", "GPU utilisation (0-1).", labels=["gpu"])
        mem = GaugeMetricFamily("reelfab_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        temp = GaugeMetricFamily("reelfab_gpu_temperature_celsius", "GPU temperature.", labels=["gpu"])
        for i in range(self.nvml.nvmlDeviceGetCount()):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
            util.add_metric([str(i)], self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            mem.add_metric([str(i)], float(self.nvml.nvmlDeviceGetMemoryInfo(handle).used))
            temp.add_metric([str(i)], float(self.nvml.nvmlDeviceGetTemperature(handle, self.nvml.NVML_TEMPERATURE_GPU)))
        yield from (util, mem, temp)


def register_gpu_metrics() -> bool:
    """True when NVML answered and the GPU gauges are exported."""
    try:
        import pynvml  # nvidia-ml-py, present on GPU images

        pynvml.nvmlInit()
    except Exception:
        return False
    REGISTRY.register(NvmlCollector(pynvml))
    return True
