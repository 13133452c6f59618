# csd-sr: the load-adaptive super-resolution service, CPU-only (OpenVINO runtime, torch as reference).
#
#   docker build -t csd-sr .
#   docker run --rm -p 8000:8000 csd-sr
#
# Build arguments:
#   BASE_IMAGE       a Debian-based Python 3.11 image (default: the public slim one).
#   TORCH_INDEX_URL  where the CPU torch wheel comes from (default: PyTorch's CPU index, so pip
#                    never picks PyPI's multi-GB CUDA build). Set it empty to use only PyPI plus
#                    the wheels put in docker/wheels/ (offline / air-gapped builds, the tests).
# All runtime configuration is through CSD_SR_* environment variables (see the README).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- requirements: the dependency list alone, so that only a change to it reinstalls them ----
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /requirements.txt

# ---- builder: a virtual environment with the CPU torch, the dependencies and the package ----
FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils for `strip` (builder only).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
COPY docker/wheels/ /wheels/
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# The dependencies, in a layer that only a change to them rebuilds; then what serving never
# uses goes: C++ headers, CMake files, static libraries, the C++ test programs and protoc the
# wheel ships (about 150 MB; torch_shm_manager stays), and the symbol tables of torch's shared
# libraries (about 90 MB; their dynamic symbols stay). From OpenVINO, the GPU and NPU plugins
# and the model readers other than PyTorch's and its own IR (about 75 MB): the service only
# converts torch modules and runs them on the CPU.
RUN /opt/venv/bin/pip install --find-links /wheels \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements.txt \
    && cd /opt/venv/lib/python3.11/site-packages/torch \
    && rm -rf include share test lib/*.a \
    && find bin -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
    && strip --strip-unneeded lib/*.so* \
    && cd ../openvino/libs \
    && rm -f cache.json libopenvino_intel_gpu_plugin.so libopenvino_intel_npu_plugin.so \
        libopenvino_gguf_frontend.so.* libopenvino_jax_frontend.so.* libopenvino_onnx_frontend.so.* \
        libopenvino_paddle_frontend.so.* libopenvino_tensorflow_frontend.so.* \
        libopenvino_tensorflow_lite_frontend.so.* \
    && rm -rf ../include
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model/ model/
COPY service/ service/
COPY csd_sr/ csd_sr/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/csd-sr --help >/dev/null
# Readable by the runtime user whatever the modes in the build context were.
COPY weights/ /opt/csd-sr/weights/
RUN chmod -R u=rwX,go=rX /opt/csd-sr/weights

# ---- runtime: the environment, the shipped weights and a non-root user, nothing else ----
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 csdsr \
    && useradd --system --uid 10001 --gid csdsr --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin csdsr \
    && mkdir -p /var/lib/csd-sr/jobs && chown csdsr:csdsr /var/lib/csd-sr/jobs
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/csd-sr/weights /opt/csd-sr/weights
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CSD_SR_WEIGHTS=/opt/csd-sr/weights \
    CSD_SR_JOBS_DIR=/var/lib/csd-sr/jobs \
    CSD_SR_HOST=0.0.0.0 \
    CSD_SR_PORT=8000
# The jobs' database, inputs and results (POST /v1/jobs): a volume, writable under a read-only root and
# kept when the container is replaced.
VOLUME /var/lib/csd-sr/jobs
WORKDIR /opt/csd-sr
USER 10001:10001
EXPOSE 8000
# No curl in slim images: the check is a few lines of the image's own Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CSD_SR_PORT', '8000'), timeout=4)"]
CMD ["csd-sr", "serve"]
