# camfleet trainer: claims jobs from the hub, fine-tunes with torch on the GPU, uploads signed ONNX bundles.
#   docker build -f deploy/docker/trainer.Dockerfile -t camfleet/trainer .
# PyPI's Linux torch wheels bundle CUDA; run with a GPU (--gpus all / nvidia.com/gpu) or it falls back to the CPU.
FROM python:3.11.14-slim-bookworm

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 camfleet \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/camfleet camfleet

# torch first and pinned, so the trainer's own dependencies cannot pick another build
RUN pip install "torch==${TORCH_VERSION}"
COPY contract /src/contract
COPY trainer /src/trainer
RUN pip install /src/contract /src/trainer && rm -rf /src

COPY deploy/config/trainer.toml /etc/camfleet/trainer.toml
# numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001:10001)
USER 10001:10001
WORKDIR /var/lib/camfleet
VOLUME ["/var/lib/camfleet"]
CMD ["python", "-m", "camfleet_trainer", "worker", "--config", "/etc/camfleet/trainer.toml"]
