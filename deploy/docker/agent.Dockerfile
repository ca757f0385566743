# camfleet edge agent: capture, classify with ONNX Runtime, publish over MQTT. No torch.
#   docker build -f deploy/docker/agent.Dockerfile -t camfleet/agent .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 camfleet \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/camfleet --groups video camfleet

COPY contract /src/contract
COPY edge-agent /src/edge-agent
RUN pip install /src/contract /src/edge-agent && rm -rf /src

COPY deploy/config/agent.toml /etc/camfleet/agent.toml
# numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001:10001)
USER 10001:10001
WORKDIR /var/lib/camfleet
VOLUME ["/var/lib/camfleet"]
CMD ["python", "-m", "camfleet_agent", "run", "--config", "/etc/camfleet/agent.toml"]
