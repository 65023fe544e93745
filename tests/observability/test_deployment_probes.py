"""The deployment files use the probes and prepare the metrics directory (compose cannot run here: read)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_checks_web_readiness_and_empties_the_metrics_directory_before_the_app_starts() -> None:
    assert "/readyz" in " ".join(SERVICES["web"]["healthcheck"]["test"])
    migrate = " ".join(SERVICES["migrate"]["command"])
    assert migrate.index("metrics_reset") < migrate.index("migrate --noinput")
    for name in ("web", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "fleetgate-var:/var/lib/fleetgate" in SERVICES[name]["volumes"]  # one metrics directory


def test_the_image_checks_liveness_with_healthz() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :]
    assert "/healthz" in healthcheck.split("\n\n")[0]


def test_gunicorn_exports_the_metrics_directory_before_forking() -> None:
    config = (ROOT / "gunicorn.conf.py").read_text()
    assert "multiproc.configure()" in config and "def child_exit" in config
