# syntax=docker/dockerfile:1
# Worker images. Build from the repository root:
#   docker build -f deploy/worker.Dockerfile --target gpu -t identity-body-worker:gpu .
#   docker build -f deploy/worker.Dockerfile --target cpu -t identity-body-worker:cpu .
# Both start from the same python slim base as the api image. `gpu`: torch ${TORCH_VERSION} (CI's
# version) as its default wheel, which is built for CUDA 13 and brings the CUDA runtime and the one
# cuDNN of the image as wheels, + onnxruntime-gpu built for CUDA 13, which loads those same
# libraries. The host's NVIDIA driver comes in through the NVIDIA Container Toolkit. `cpu`: the
# CPU torch build + onnxruntime, for the tiny profile. Model weights are never in an image.
# Layers: tools, torch, dependencies (from pyproject.toml + constraints), and the sources last,
# so a code edit rebuilds only the last, small layer (deploy/install-python-env.sh).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---- gpu: build the virtualenv ----
FROM ${PYTHON_IMAGE} AS gpu-build
ARG TORCH_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH TORCH_VERSION=${TORCH_VERSION}
WORKDIR /src
COPY deploy/install-python-env.sh deploy/pyproject_requirements.py deploy/constraints.txt deploy/requirements-no-deps.txt deploy/
COPY pyproject.toml LICENSE ./
RUN python -m venv /opt/venv && sh deploy/install-python-env.sh tools
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install-python-env.sh torch
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install-python-env.sh deps ml,gpu
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
RUN sh deploy/install-python-env.sh project

FROM ${PYTHON_IMAGE} AS gpu
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody \
 && mkdir -p /models /var/cache/idbody/tiny-models \
 && chown -R 10001:10001 /models /var/cache/idbody
COPY --from=gpu-build /opt/venv /opt/venv
# NVIDIA_*: what the NVIDIA Container Toolkit reads to mount the driver's compute libraries
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    IDBODY_DEPLOYMENT=container \
    IDBODY_MODEL_DIR=/models \
    IDBODY_TINY_MODEL_DIR=/var/cache/idbody/tiny-models
WORKDIR /home/idbody
USER 10001:10001
# liveness only: the process runs and is not wedged (compose and k8s add readiness themselves)
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=4 CMD ["idbody", "worker", "alive"]
CMD ["idbody", "worker", "--queues", "gpu"]

# ---- cpu: the tiny profile on machines without a GPU ----
FROM ${PYTHON_IMAGE} AS cpu-build
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH \
    TORCH_VERSION=${TORCH_VERSION} TORCH_INDEX_URL=${TORCH_CPU_INDEX}
WORKDIR /src
COPY deploy/install-python-env.sh deploy/pyproject_requirements.py deploy/constraints.txt deploy/requirements-no-deps.txt deploy/
COPY pyproject.toml LICENSE ./
RUN python -m venv /opt/venv && sh deploy/install-python-env.sh tools
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install-python-env.sh torch
RUN --mount=type=cache,target=/root/.cache/pip sh deploy/install-python-env.sh deps ml,cpu
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
RUN sh deploy/install-python-env.sh project

FROM ${PYTHON_IMAGE} AS cpu
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody \
 && mkdir -p /models /var/cache/idbody/tiny-models \
 && chown -R 10001:10001 /models /var/cache/idbody
COPY --from=cpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDBODY_DEPLOYMENT=container \
    IDBODY_MODEL_DIR=/models \
    IDBODY_TINY_MODEL_DIR=/var/cache/idbody/tiny-models \
    IDBODY_MODEL_PROFILE=tiny \
    IDBODY_DEVICE=cpu
WORKDIR /home/idbody
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=4 CMD ["idbody", "worker", "alive"]
CMD ["idbody", "worker", "--queues", "gpu"]
