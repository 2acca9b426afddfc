# syntax=docker/dockerfile:1
# One image per service. Each service is a build target named like the service:
#
#   docker build --target planner -t reelfab/planner .
#   (consent-registry, planner, swapper-gpu, post-producer, publisher, analytics)
#
# A target holds only its service's distribution (reelfab-<name>) and what that depends on, as uv.lock
# pins it: `uv sync --frozen --no-dev --package reelfab-<name> --no-editable` into /opt/reelfab. The
# distributions are installed as wheels, so the image carries no source tree; the dev tools
# (reelfab-devtools: `reelfab up`, `demo`, codegen) are in none of them. `bench/sizes.py` builds the same
# environments locally and reports their sizes; tests/packaging checks this file's shape.

ARG PYTHON_IMAGE=python:3.11-slim

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

# ---------------------------------------------------------------------------------------------------
# Runtime bases: the same Python image (the environment's python links to its /usr/local/bin/python3.11),
# no uv, no sources; a non-root user (numeric, so Kubernetes' runAsNonRoot can verify it) whose home is
# the state directory.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 reelfab \
 && useradd --system --uid 10001 --gid reelfab --home-dir /var/lib/reelfab --create-home --shell /usr/sbin/nologin reelfab
ENV PATH=/opt/reelfab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REELFAB_HTTP_HOST=0.0.0.0 \
    REELFAB_LOG_FORMAT=json \
    REELFAB_STATE_DIR=/var/lib/reelfab
WORKDIR /var/lib/reelfab

# the media services run ffmpeg/ffprobe (reelfab.media.tools finds them on PATH); Debian's ffmpeg of the
# base image's release (its version follows the release's security updates, so it is not pinned)
FROM runtime AS runtime-media
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------
# The service targets. HEALTHCHECK asks /healthz on REELFAB_HTTP_PORT, or the service's default port when
# it is unset or 0 (as the service itself does).

FROM runtime AS consent-registry
COPY --from=env-consent-registry /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8081; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "consent-registry"]

FROM runtime AS planner
COPY --from=env-planner /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8082; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "planner"]

# CPU only: uv.lock pins onnxruntime (CPU), and that is what this target installs. A GPU image would
# start from an nvidia/cuda runtime base (CUDA 12 + cuDNN 9, Python 3.11 added) and replace onnxruntime
# with onnxruntime-gpu at the same version; onnxruntime-gpu is not in the lock, so that is a lock change
# first (a dependency group or an index for the GPU wheel), then REELFAB_EXECUTION_PROVIDERS=CUDAExecutionProvider.
FROM runtime-media AS swapper-gpu
COPY --from=env-swapper-gpu /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8083; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "swapper-gpu"]

FROM runtime-media AS post-producer
COPY --from=env-post-producer /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8084
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8084; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "post-producer"]

FROM runtime AS publisher
COPY --from=env-publisher /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8085
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8085; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "publisher"]

FROM runtime AS analytics
COPY --from=env-analytics /opt/reelfab /opt/reelfab
USER 10001:10001
EXPOSE 8086
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = int(os.environ.get('REELFAB_HTTP_PORT') or 0) or 8086; u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
ENTRYPOINT ["reelfab", "serve", "analytics"]
