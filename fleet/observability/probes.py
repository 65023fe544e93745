"""Readiness checks for ``/readyz``: the database, the Celery broker and the policy engine, each answering
within a few seconds. A check returns nothing when it passes and raises when it does not; the answer names
each check and its result, never an address, a password or an error message (they are logged)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # seconds per check


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    from fleet.celery import app

    with app.connection_for_read(connect_timeout=TIMEOUT) as broker:
        broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=TIMEOUT)
        broker.default_channel  # noqa: B018 - opening the channel talks to the broker (Redis: PING)


def check_policy_engine() -> None:
    """OPA: its /health answers 200. regorus (in-process): the engine compiles a module."""
    from policies.engine import Module, engine_settings, get_engine

    settings = engine_settings()
    if settings.engine == "opa":
        import requests

        response = requests.get(settings.opa_url.rstrip("/") + "/health", timeout=TIMEOUT)
        response.raise_for_status()
        return
    errors = get_engine().check([Module("readyz.rego", "package fleetgate.readyz\n\nready := true\n")])
    if errors:
        raise RuntimeError(f"the engine refused a trivial module: {errors[0]}")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "policy_engine": check_policy_engine,
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    error: str = ""  # the exception's class name only


def run_checks() -> list[CheckResult]:
    results = []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            results.append(CheckResult(name, False, type(exc).__name__))
        else:
            results.append(CheckResult(name, True))
    return results
