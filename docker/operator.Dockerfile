# syntax=docker/dockerfile:1
# The modelroute operator image (entry point `modelroute-operator`).
#
# Written for Docker users, not built here: this machine has no Docker engine, so the suite checks this
# file's shape (tests/chart/test_dockerfiles.py). The images the tests run come from `scripts/images`
# (Debian trixie's Python 3.13, buildah, no daemon), which installs the same wheel with the same extra.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t modelroute/operator:0.1.0 .
# docker/operator.Dockerfile.dockerignore keeps the build context to the package sources (BuildKit reads
# a <Dockerfile>.dockerignore next to the Dockerfile).
#
# The chart runs it as UID 65532 with a read-only root filesystem, all capabilities dropped and /tmp as
# an emptyDir; nothing here writes outside /tmp at run time.

ARG PYTHON_IMAGE=python:3.13-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY sidecar/ sidecar/
# One wheel for our code; its dependencies are resolved in the runtime stage.
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelroute-operator" \
      org.opencontainers.image.description="Kopf operator compiling ModelEndpoint, RoutingPolicy and Canary into router configs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/modelroute-*.whl)[operator]" \
 && python -m compileall -q /usr/local/lib/python3.13/site-packages \
 && groupadd --system --gid 65532 modelroute \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modelroute
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 9443: admission webhooks (HTTPS); 8081: health and metrics (when enabled in the chart).
EXPOSE 9443 8081
ENTRYPOINT ["modelroute-operator"]
