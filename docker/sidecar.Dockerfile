# syntax=docker/dockerfile:1
# The modelroute router sidecar image (entry point `modelroute-sidecar`), injected into application pods.
#
# Written for Docker users, not built here: this machine has no Docker engine, so the suite checks this
# file's shape (tests/chart/test_dockerfiles.py). The images the tests run come from `scripts/images`
# (Debian trixie's Python 3.13, buildah, no daemon), which installs the same wheel with the same extra.
# Build from the repository root:
#   docker build -f docker/sidecar.Dockerfile -t modelroute/sidecar:0.1.0 .
# docker/sidecar.Dockerfile.dockerignore keeps the build context to the package sources.
#
# The sidecar runs in every application pod, so the image installs our wheel with its `sidecar` extra
# only: what the data plane imports, not kopf or the Kubernetes client. pyproject names those
# dependencies; tests/unit/test_packaging.py fails when the sidecar imports one the extra lacks.

ARG PYTHON_IMAGE=python:3.13-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY sidecar/ sidecar/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelroute-sidecar" \
      org.opencontainers.image.description="OpenAI-compatible LLM router sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/modelroute-*.whl)[sidecar]" \
 && python -m compileall -q /usr/local/lib/python3.13/site-packages \
 && groupadd --system --gid 65532 modelroute \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modelroute
USER 65532:65532
WORKDIR /tmp
# 8080: the OpenAI-compatible API on loopback (the injector moves it to 15080; the app in the pod calls it);
# 9901: admin port (config pushes from the operator, /metrics, /healthz).
EXPOSE 8080 9901
ENTRYPOINT ["modelroute-sidecar"]
