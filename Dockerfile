# Fleetgate application image: web (gunicorn), worker and beat run from it with different commands, and so
# does the pull-mode agent: `python -m clusters.agent --server https://fleetgate.example.com ...` (no database,
# no Django settings; probes on its --health-port, 8080: /healthz, /readyz; `manage.py agent_manifest`
# prints its Kubernetes Deployment, docs/clusters.md "Installing the agent").
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 FLEETGATE_VAR_DIR=/var/lib/fleetgate
RUN apt-get update && apt-get install -y --no-install-recommends git openssh-client gnupg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/fleetgate --create-home fleetgate
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/base.txt
COPY . .
# (The metrics directory of this build step stays out of /var/lib/fleetgate: made by root, the fleetgate user
# could not write its metrics there.)
RUN FLEETGATE_SECRET_KEY=build FLEETGATE_ENCRYPTION_KEYS=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    PROMETHEUS_MULTIPROC_DIR=/tmp/build-metrics python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-metrics
USER fleetgate
EXPOSE 8000
# Alive: the web process answers /healthz (no database or broker involved). Worker and beat containers
# override it (docker-compose.yml); Kubernetes: livenessProbe /healthz, readinessProbe /readyz.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["gunicorn", "fleet.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "64", "--keep-alive", "30"]
