# The image the Helm chart runs: `canary-worker` and `canary-api` from one small, non-root image.
# Build: docker build -t ghcr.io/canary-delivery/canary-delivery:0.1.0 .
# (Not built in this repository's CI or tests: the development machines have no container runtime.)

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md worker.py worker_health.py ./
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
COPY devenv/ devenv/
RUN python -m venv /opt/canary \
 && /opt/canary/bin/pip install . \
 && find /opt/canary -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 canary \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin canary
COPY --from=build /opt/canary /opt/canary
ENV PATH=/opt/canary/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
# API (8080), worker probes (8081), Prometheus /metrics (9464).
EXPOSE 8080 8081 9464
CMD ["canary-worker"]
