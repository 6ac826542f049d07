# syntax=docker/dockerfile:1
# Worker images. Build from the repository root:
#   docker build -f deploy/worker.Dockerfile --target gpu -t identity-body-worker:gpu .
#   docker build -f deploy/worker.Dockerfile --target cpu -t identity-body-worker:cpu .
# `gpu`: official CUDA 12.8 runtime (with cuDNN 9, which onnxruntime-gpu loads) + torch built for
# CUDA 12.8 + onnxruntime-gpu. `cpu`: python slim + the CPU torch build + onnxruntime, for the
# tiny profile. Model weights are never in an image: they live in the `models` volume.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_VERSION=2.9.1
ARG TORCH_CUDA=cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl

# ---- gpu: build the virtualenv (compilers only here: insightface ships a C extension) ----
FROM ${CUDA_IMAGE} AS gpu-build
ARG TORCH_VERSION
ARG TORCH_CUDA
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir pip==25.3 setuptools==80.9.0 wheel==0.45.1
# torch from the PyTorch wheel index named by the CUDA version of the base image
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}/${TORCH_CUDA}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY deploy/constraints.txt deploy/constraints.txt
COPY pyproject.toml LICENSE ./
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
RUN pip install --no-cache-dir --constraint deploy/constraints.txt ".[ml,gpu]"

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody \
 && mkdir -p /models /var/cache/idbody/tiny-models \
 && chown -R 10001:10001 /models /var/cache/idbody
COPY --from=gpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    IDBODY_MODEL_DIR=/models \
    IDBODY_TINY_MODEL_DIR=/var/cache/idbody/tiny-models
WORKDIR /home/idbody
USER 10001:10001
CMD ["idbody", "worker", "--queues", "gpu"]

# ---- cpu: the tiny profile on machines without a GPU ----
FROM ${PYTHON_IMAGE} AS cpu-build
ARG TORCH_VERSION
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir pip==25.3 setuptools==80.9.0 wheel==0.45.1
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}/cpu" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY deploy/constraints.txt deploy/constraints.txt
COPY pyproject.toml LICENSE ./
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
RUN pip install --no-cache-dir --constraint deploy/constraints.txt ".[ml,cpu]"

FROM ${PYTHON_IMAGE} AS cpu
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody \
 && mkdir -p /models /var/cache/idbody/tiny-models \
 && chown -R 10001:10001 /models /var/cache/idbody
COPY --from=cpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDBODY_MODEL_DIR=/models \
    IDBODY_TINY_MODEL_DIR=/var/cache/idbody/tiny-models \
    IDBODY_MODEL_PROFILE=tiny \
    IDBODY_DEVICE=cpu
WORKDIR /home/idbody
USER 10001:10001
CMD ["idbody", "worker", "--queues", "gpu"]
