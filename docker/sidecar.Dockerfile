# syntax=docker/dockerfile:1
# The modelroute router sidecar image (entry point `modelroute-sidecar`), injected into application pods.
#
# Written, not built here: this machine has no Docker engine, so nothing builds or runs this file in the
# test suite (tests/chart/test_dockerfiles.py only checks its shape). Build from the repository root:
#   docker build -f docker/sidecar.Dockerfile -t modelroute/sidecar:0.1.0 .
# docker/sidecar.Dockerfile.dockerignore keeps the build context to the package sources.
#
# The sidecar runs in every application pod, so the image carries only what the data plane imports:
# our wheel without its dependencies, then the sidecar's own dependencies (not kopf or the Kubernetes
# client). tests/chart/test_dockerfiles.py fails when the sidecar imports a package missing here.

ARG PYTHON_IMAGE=python:3.11-slim

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
    pip install --no-deps /wheels/*.whl \
 && pip install "aiohttp>=3.9" "pydantic>=2.11" "prometheus-client>=0.20" "pyyaml>=6" "uvloop>=0.19" "httptools>=0.6" "orjson>=3.9" "google-re2>=1.1" \
 && python -m compileall -q /usr/local/lib/python3.11/site-packages \
 && groupadd --system --gid 65532 modelroute \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modelroute
USER 65532:65532
WORKDIR /tmp
# 8080: the OpenAI-compatible API on loopback (the injector moves it to 15080; the app in the pod calls it);
# 9901: admin port (config pushes from the operator, /metrics, /healthz).
EXPOSE 8080 9901
ENTRYPOINT ["modelroute-sidecar"]
