# syntax=docker/dockerfile:1
# The gateway image, also used by worker-io: base dependencies only (no torch, no CUDA, no
# onnxruntime). Build from the repository root:
#   docker build -f deploy/api.Dockerfile -t identity-body-api .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir pip==25.3 setuptools==80.9.0 wheel==0.45.1
WORKDIR /src
COPY deploy/constraints.txt deploy/constraints.txt
COPY pyproject.toml LICENSE ./
COPY shared shared
COPY api api
COPY worker worker
COPY idbody idbody
# the project with no extras; versions held to the ones CI tested
RUN pip install --no-cache-dir --constraint deploy/constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDBODY_API_HOST=0.0.0.0
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin idbody
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/idbody
USER 10001:10001
EXPOSE 8000
CMD ["idbody", "api", "--host", "0.0.0.0", "--port", "8000"]
