"""Insecure production defaults.

Attack class: a deployment that follows the documented set-up but serves sessions over plain http, without
HSTS or Secure cookies, so that a network attacker can strip TLS or read a session cookie. Argo CD, Rancher
and Kargo advisories of 2022-2025 include cookies without Secure or a too-wide scope and insecure defaults
left on in shipped manifests; the fix in each was to make the shipped configuration secure by default and
the development mode the explicit exception.

Fleetgate's settings are secure unless DEBUG is on or a variable turns a part off; `make run` and the test
settings turn them off explicitly. The docker-compose stack's environment must pass `check --deploy` with
no warnings, checked here in a subprocess with exactly that environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS_SCRIPT = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SECURE_SSL_REDIRECT": s.SECURE_SSL_REDIRECT,
    "SECURE_HSTS_SECONDS": s.SECURE_HSTS_SECONDS,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
    "SECURE_PROXY_SSL_HEADER": s.SECURE_PROXY_SSL_HEADER,
    "CACHE": s.CACHES["default"]["BACKEND"],
}))
"""


def _expand(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message} with the given variables."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if name in variables and variables[name] != "":
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose requires {name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


def compose_environment(service: str, variables: dict[str, str]) -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"][service]["environment"]
    return {name: _expand(str(value), variables) for name, value in env.items()}


def base_environment(tmp_path: Path) -> dict[str, str]:
    """What the image has besides compose's variables (Dockerfile ENV), and nothing from the test process."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "FLEETGATE_VAR_DIR": str(tmp_path / "var"),  # the image's /var/lib/fleetgate
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "PYTHONPATH": str(ROOT),
    }


def production_env(tmp_path: Path) -> dict[str, str]:
    required = {
        "FLEETGATE_SECRET_KEY": "k" * 20 + Fernet.generate_key().decode() + "-x9!Q",
        "FLEETGATE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "FLEETGATE_ALLOWED_HOSTS": "fleet.example.com",
    }
    return {**base_environment(tmp_path), **compose_environment("web", required)}


def settings_under(env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=99
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_compose_environment_passes_check_deploy_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "System check identified no issues" in output, output[-4000:]


def test_check_deploy_fails_when_https_is_turned_off(tmp_path: Path) -> None:
    """The check above can fail: the same environment with the dev overrides warns."""
    env = {**production_env(tmp_path), "FLEETGATE_SSL_REDIRECT": "0", "FLEETGATE_SECURE_COOKIES": "0"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "security.W008" in output and "security.W012" in output and "security.W016" in output


def test_production_defaults_are_secure_and_debug_or_make_run_turn_them_off(tmp_path: Path) -> None:
    plain = base_environment(tmp_path)
    production = settings_under(plain)
    assert production["DEBUG"] is False
    assert production["SECURE_SSL_REDIRECT"] is True
    assert production["SECURE_HSTS_SECONDS"] >= 31536000
    assert production["SESSION_COOKIE_SECURE"] is True and production["CSRF_COOKIE_SECURE"] is True
    assert production["SECURE_PROXY_SSL_HEADER"] is None
    assert production["CACHE"].endswith("FileBasedCache")

    debug = settings_under({**plain, "FLEETGATE_DEBUG": "1"})
    assert not debug["SECURE_SSL_REDIRECT"] and debug["SECURE_HSTS_SECONDS"] == 0
    assert not debug["SESSION_COOKIE_SECURE"] and not debug["CSRF_COOKIE_SECURE"]

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from run import DEV_OVERRIDES  # the overrides `make run` sets
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    dev = settings_under({**plain, **DEV_OVERRIDES})
    assert not dev["SECURE_SSL_REDIRECT"] and dev["SECURE_HSTS_SECONDS"] == 0
    assert not dev["SESSION_COOKIE_SECURE"] and not dev["CSRF_COOKIE_SECURE"]

    proxied = settings_under({**plain, "FLEETGATE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO=https"})
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    redis = settings_under({**plain, "FLEETGATE_CACHE_URL": "redis://127.0.0.1:6379/1"})
    assert redis["CACHE"] == "django.core.cache.backends.redis.RedisCache"


def test_a_bad_cache_url_is_refused_at_start(tmp_path: Path) -> None:
    env = {**base_environment(tmp_path), "FLEETGATE_CACHE_URL": "memcached://x"}
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=99
    )
    assert result.returncode != 0 and "FLEETGATE_CACHE_URL must be" in result.stderr


@pytest.mark.django_db
def test_with_the_production_defaults_http_is_redirected_and_https_gets_hsts_and_secure_cookies(
    settings: Any,
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    client = Client()
    response = client.get("/login/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/login/"
    assert client.get("/healthz").status_code == 200  # health checks stay on http
    response = client.get("/login/", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response.cookies["csrftoken"]["secure"] is True
