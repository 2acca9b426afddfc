# syntax=docker/dockerfile:1
# One image per service. Each service is a build target named like the service:
#
#   docker build --target planner -t reelfab/planner .
#   (consent-registry, planner, swapper-gpu, post-producer, publisher, analytics)
#
# and one more for the swapper on an NVIDIA GPU, `swapper-gpu-cuda` (the same service, CUDA base, below).
# `swapper-gpu` stays the CPU build of the swapper: the target is named like the service, as every other
# one is, and that name is what tests/packaging, bench/sizes.py, docker-compose.yml and k8s/ build.
#
# A target holds only its service's distribution (reelfab-<name>) and what that depends on, as uv.lock
# pins it: `uv sync --frozen --no-dev --package reelfab-<name> --no-editable` into /opt/reelfab. The
# distributions are installed as wheels, so the image carries no source tree; the dev tools
# (reelfab-devtools: `reelfab up`, `demo`, codegen) are in none of them. `bench/sizes.py` builds the same
# environments locally and reports their sizes; tests/packaging checks this file's shape.

ARG PYTHON_IMAGE=python:3.11-slim
# The GPU swapper's base, pinned: onnxruntime-gpu's PyPI wheels (1.31) are built against CUDA 13.0 and
# cuDNN 9 (their build_and_package_info says cuda_version 13.0; libonnxruntime_providers_cuda.so needs
# libcudart.so.13 and libcublas.so.13), and the -runtime image carries cuBLAS, cuFFT and cuRAND. Ubuntu
# 22.04, because its archive has python3.11 (the lock wants 3.11; 24.04 has only 3.12). Host: an NVIDIA
# driver new enough for CUDA 13 and the NVIDIA container toolkit.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04
# OCI labels of every service image (org.opencontainers.image.*): a release build passes the version it
# tags, the repository's address and its licence (the workspace declares none yet, so NOASSERTION, the
# SPDX word for "not stated"; .invalid is a placeholder that can never resolve to someone else's).
ARG IMAGE_VERSION=0.1.0
ARG IMAGE_SOURCE=https://reelfab.invalid/reelfab.git
ARG IMAGE_LICENSES=NOASSERTION

# ---------------------------------------------------------------------------------------------------
# Build stages: uv (pinned, from PyPI) and the workspace files it needs, then one environment per service.
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# the image's own python3.11, never a downloaded one; copies (not links) out of the cache mount;
# bytecode compiled at install, so a container does not write it at start
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/reelfab
WORKDIR /src
# what uv reads: the workspace root, the lock, and every member (it resolves the workspace from all of
# them even when it installs one); .dockerignore keeps caches and tests out
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services

FROM build AS env-consent-registry
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-consent-registry --no-editable

FROM build AS env-planner
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-planner --no-editable

FROM build AS env-swapper-gpu
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-swapper-gpu --no-editable

FROM build AS env-post-producer
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-post-producer --no-editable

FROM build AS env-publisher
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-publisher --no-editable

FROM build AS env-analytics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-analytics --no-editable

# the retention worker: reelfab-retention's `reelfab storage` commands on reelfab-runtime's `reelfab`
FROM build AS env-retention
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-retention --package reelfab-runtime --no-editable

# ---------------------------------------------------------------------------------------------------
# Runtime bases: the same Python image (the environment's python links to its /usr/local/bin/python3.11),
# no uv, no sources; a non-root user (numeric, so Kubernetes' runAsNonRoot can verify it) whose home is
# the state directory.
# The mount points of docker-compose.yml's named volumes (the shared object store, the model files) exist
# here, owned by the user: a new volume takes its first owner from the image's directory.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 reelfab \
 && useradd --system --uid 10001 --gid reelfab --home-dir /var/lib/reelfab --create-home --shell /usr/sbin/nologin reelfab \
 && install -d -o reelfab -g reelfab -m 0750 /var/lib/reelfab/objects /var/lib/reelfab/models
# declared after the RUN, so that a new version relabels the image without rebuilding the layer
ARG IMAGE_VERSION
ARG IMAGE_SOURCE
ARG IMAGE_LICENSES
LABEL org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.licenses="${IMAGE_LICENSES}" \
      org.opencontainers.image.vendor="Reelfab"
ENV PATH=/opt/reelfab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REELFAB_HTTP_HOST=0.0.0.0 \
    REELFAB_LOG_FORMAT=json \
    REELFAB_STATE_DIR=/var/lib/reelfab
WORKDIR /var/lib/reelfab

# The media services, and only they, run ffmpeg/ffprobe (reelfab.media.tools finds them on PATH): the
# swapper (frames in and out, the fused render) and the post-producer (the platform render, its spec
# check). The consent registry reads still images with the face engine, the planner's service plans
# without its clip QC (an extra its image leaves out), so neither carries ffmpeg (tests/deploy finds which
# services run it from their imports). With ffmpeg, DejaVu: the font of the render's label and captions
# (RenderSpec.fonts_dir).
FROM runtime AS runtime-media
ARG DEBIAN_FRONTEND=noninteractive
# Debian's packages of the base image's release, unpinned: their versions follow the release's security
# updates, and a pinned one leaves the archive with the next
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------
# The service targets. HEALTHCHECK asks /healthz on REELFAB_HTTP_PORT, or the service's default port when
# it is unset or 0 (as the service itself does).

FROM runtime AS consent-registry
COPY --from=env-consent-registry /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-consent-registry" \
      org.opencontainers.image.description="Reelfab consent registry: enrolment, leases, revocation, audit trail"
USER 10001:10001
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8081; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "consent-registry"]

FROM runtime AS planner
COPY --from=env-planner /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-planner" \
      org.opencontainers.image.description="Reelfab planner: face x template x music x caption combinations"
USER 10001:10001
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8082; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "planner"]

# CPU only: uv.lock pins onnxruntime (CPU), and that is what this target installs. The GPU build of the
# same service is `swapper-gpu-cuda`, at the end of this file.
FROM runtime-media AS swapper-gpu
COPY --from=env-swapper-gpu /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-swapper-gpu" \
      org.opencontainers.image.description="Reelfab swapper, CPU build (onnxruntime as uv.lock pins it)"
USER 10001:10001
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8083; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "swapper-gpu"]

FROM runtime-media AS post-producer
COPY --from=env-post-producer /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-post-producer" \
      org.opencontainers.image.description="Reelfab post-producer: platform-spec render, captions, music, C2PA"
USER 10001:10001
EXPOSE 8084
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8084; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "post-producer"]

FROM runtime AS publisher
COPY --from=env-publisher /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-publisher" \
      org.opencontainers.image.description="Reelfab publisher: review queue, TikTok Content Posting API, engagement read-back"
USER 10001:10001
EXPOSE 8085
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8085; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "publisher"]

FROM runtime AS analytics
COPY --from=env-analytics /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-analytics" \
      org.opencontainers.image.description="Reelfab analytics: engagement read back and fed to the planner"
USER 10001:10001
EXPOSE 8086
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8086; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "analytics"]

# Not a service: the retention worker, which deletes what the retention policy lets go from the shared
# object store (finished jobs' intermediates, finals past their age; README "Storage retention") and
# published outbox rows, once an hour, and serves reelfab_storage_bytes/objects{kind} on /metrics (8087).
FROM runtime AS retention
COPY --from=env-retention /opt/reelfab /opt/reelfab
LABEL org.opencontainers.image.title="reelfab-retention" \
      org.opencontainers.image.description="Reelfab retention worker: prunes the object store and delivery tables"
USER 10001:10001
EXPOSE 8087
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8087/metrics', timeout=4)"]
ENTRYPOINT ["reelfab", "storage", "prune"]
CMD ["--apply", "--every", "3600", "--metrics-port", "8087"]

# ---------------------------------------------------------------------------------------------------
# The swapper on an NVIDIA GPU: `docker build --target swapper-gpu-cuda .` (docker-compose.yml's `gpu`
# profile). The same service (`reelfab serve swapper-gpu`: its consumer group, metrics, port 8083) and the
# same locked environment as `swapper-gpu`, on the CUDA base, with one package exchanged: onnxruntime
# (CPU, as uv.lock pins it) for onnxruntime-gpu, which ships the same `onnxruntime` module with the CUDA
# execution provider. The lock cannot hold both (they install the same files), so the exchange happens
# after `uv sync --frozen`: uninstall onnxruntime, install onnxruntime-gpu pinned here with --no-deps (its
# requirements, flatbuffers, numpy, packaging and protobuf, are onnxruntime's, already installed at the
# locked versions, so nothing else moves).

# Python 3.11 from Ubuntu's archive (never a downloaded one): the build stage and the runtime share this
# stage, so the environment's python links to the same /usr/bin/python3.11 in both.
FROM ${CUDA_IMAGE} AS cuda-python
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's packages, unpinned like Debian's above: a pinned version leaves the archive with the next
# security update, and the build breaks on the fix it should take
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# uv as the build stage installed it (the pinned UV_VERSION; a static-enough manylinux binary) and the
# workspace files it copied
FROM cuda-python AS build-cuda
COPY --from=build /usr/local/bin/uv /usr/local/bin/uv
COPY --from=build /src /src
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/reelfab
WORKDIR /src

# The pin: onnxruntime-gpu at uv.lock's onnxruntime version. onnxruntime-gpu is published after
# onnxruntime, and the lock's 1.32.0 has no onnxruntime-gpu release yet, so this is the newest one,
# 1.31.1 (the Python API the swapper uses is the same); move it to the lock's version once that is out
# (tests/deploy checks it trails the lock by at most one minor release).
# nvidia-ml-py (the `pynvml` module, pure Python over the driver's libnvidia-ml) lets the swapper export
# GPU utilisation, memory and temperature (reelfab_gpu_*; the swapper dashboard and the temperature alert).
FROM build-cuda AS env-swapper-gpu-cuda
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG NVIDIA_ML_PY_VERSION=13.615.71
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package reelfab-swapper-gpu --no-editable \
 && uv pip uninstall --python /opt/reelfab/bin/python onnxruntime \
 && uv pip install --python /opt/reelfab/bin/python --no-deps "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    "nvidia-ml-py==${NVIDIA_ML_PY_VERSION}"

# The runtime: the user, settings and volume mount points of `runtime`, ffmpeg and DejaVu of
# `runtime-media` (Ubuntu's, as the CPU images have Debian's), and the execution providers: CUDA first,
# the CPU provider for whatever CUDA cannot run (REELFAB_EXECUTION_PROVIDERS, read by reelfab.faces).
FROM cuda-python AS swapper-gpu-cuda
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's ffmpeg (4.4 on 22.04), unpinned for the same reason as above
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reelfab \
 && useradd --system --uid 10001 --gid reelfab --home-dir /var/lib/reelfab --create-home --shell /usr/sbin/nologin reelfab \
 && install -d -o reelfab -g reelfab -m 0750 /var/lib/reelfab/objects /var/lib/reelfab/models
ENV PATH=/opt/reelfab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REELFAB_HTTP_HOST=0.0.0.0 \
    REELFAB_LOG_FORMAT=json \
    REELFAB_STATE_DIR=/var/lib/reelfab \
    REELFAB_EXECUTION_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
WORKDIR /var/lib/reelfab
COPY --from=env-swapper-gpu-cuda /opt/reelfab /opt/reelfab
ARG IMAGE_VERSION
ARG IMAGE_SOURCE
ARG IMAGE_LICENSES
LABEL org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.licenses="${IMAGE_LICENSES}" \
      org.opencontainers.image.vendor="Reelfab" \
      org.opencontainers.image.title="reelfab-swapper-gpu-cuda" \
      org.opencontainers.image.description="Reelfab swapper, NVIDIA GPU build (onnxruntime-gpu, CUDA 13, cuDNN 9)"
USER 10001:10001
EXPOSE 8083
# a longer start period than the CPU build's: the CUDA provider initialises on the first session
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8083; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "swapper-gpu"]
