# syntax=docker/dockerfile:1
# The gateway image, also used by worker-io: base dependencies only (no torch, no CUDA, no
# onnxruntime). Build from the repository root:
#   docker build -f deploy/api.Dockerfile -t identity-body-api .
# Dependencies are a layer of their own, before the sources (deploy/install-python-env.sh).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/install-python-env.sh deploy/pyproject_requirements.py deploy/constraints.txt deploy/requirements-no-deps.txt deploy/
COPY pyproject.toml LICENSE ./
RUN python -m venv /opt/venv && sh deploy/install-python-env.sh tools
# the project's base dependencies, no extras; versions held to the ones CI tested
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install-python-env.sh deps
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
RUN sh deploy/install-python-env.sh project

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDBODY_DEPLOYMENT=container \
    IDBODY_API_HOST=0.0.0.0
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/idbody
USER 10001:10001
EXPOSE 8000
# the gateway's liveness; worker-io, run from this image too, replaces it (docker-compose.yml)
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["idbody", "api", "--host", "0.0.0.0", "--port", "8000"]
