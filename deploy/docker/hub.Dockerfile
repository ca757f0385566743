# camfleet hub: REST API + web UI + MQTT ingest. Build from the repository root:
#   docker build -f deploy/docker/hub.Dockerfile -t camfleet/hub .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# libglib2.0-0: needed by opencv-python-headless (image decoding in the contract package)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 camfleet \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/camfleet camfleet \
    && install -d -o 10001 -g 1883 -m 0750 /camfleet/mqtt
# /camfleet/mqtt: where `mqtt export-mosquitto` writes for Mosquitto (gid 1883 = the mosquitto group of
# eclipse-mosquitto); a new compose volume mounted there takes this owner and mode

COPY contract /src/contract
COPY hub /src/hub
RUN pip install /src/contract /src/hub && rm -rf /src

COPY deploy/config/hub.toml /etc/camfleet/hub.toml
# numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001:10001)
USER 10001:10001
WORKDIR /var/lib/camfleet
VOLUME ["/var/lib/camfleet"]
EXPOSE 8600
CMD ["python", "-m", "camfleet_hub", "serve", "--config", "/etc/camfleet/hub.toml"]
