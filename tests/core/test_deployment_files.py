"""docker-compose.yml cannot run here (no Docker engine): read it and hold it to what the settings expect.
Also: every environment variable the settings read is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_service_with_a_healthcheck() -> None:
    assert {"postgres", "redis", "opa", "web", "worker", "beat"} <= set(SERVICES)
    for name in ("postgres", "redis", "opa", "web", "worker", "beat"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
        assert SERVICES[name]["healthcheck"]["test"], name


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} names no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (
            f"{name}: {image} is not pinned"
        )


def test_app_services_are_wired_to_the_backing_services() -> None:
    for name in ("web", "worker", "beat", "migrate"):
        env = SERVICES[name]["environment"]
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert env["FLEETGATE_OPA_URL"] == "http://opa:8181"
        assert env["FLEETGATE_REGO_ENGINE"] == "opa"
        assert "FLEETGATE_SECRET_KEY" in env and "FLEETGATE_ENCRYPTION_KEYS" in env
        needs = SERVICES[name]["depends_on"]
        assert needs["postgres" if name == "migrate" else "redis"]["condition"] == "service_healthy"
    assert "gunicorn" in SERVICES["web"]["command"]
    assert SERVICES["worker"]["command"][:4] == ["celery", "-A", "fleet", "worker"]
    assert SERVICES["beat"]["command"][:4] == ["celery", "-A", "fleet", "beat"]
    assert SERVICES["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_setting_variable_is_documented_and_compose_uses_only_known_ones() -> None:
    source = (ROOT / "fleet" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|list)\("([A-Z_]+)"', source))
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "no variables found in settings"
    assert read - documented == set(), f"undocumented: {sorted(read - documented)}"
    used = set(SERVICES["web"]["environment"])
    assert used <= read, f"compose sets variables the settings do not read: {sorted(used - read)}"
