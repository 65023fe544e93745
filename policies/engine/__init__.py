"""Rego engines behind one protocol (:class:`RegoEngine`): in-process regorus or an OPA server.

Settings (``django.conf.settings``; ``fleet/settings.py`` reads them from the environment once):

* ``FLEETGATE_REGO_ENGINE``: ``regorus`` (default, in-process) or ``opa``;
* ``FLEETGATE_OPA_URL``: the OPA server, default ``http://127.0.0.1:8181``;
* ``FLEETGATE_REGO_TIMEOUT``: seconds per evaluation, default ``10``;
* ``FLEETGATE_REGO_WORKERS`` and ``FLEETGATE_REGO_MEMORY_MB``: regorus's worker processes and the memory each
  may add (``policies/engine/regorus_pool.py``).

Only :func:`engine_settings` reads them; :func:`parse_engine_settings`, :func:`create_engine` and the engines
take their values as arguments and need no Django.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from policies.engine.base import (
    CompileError,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    EvaluationSession,
    Module,
    PolicyCompileError,
    PolicyEvaluationError,
    PolicySet,
    PreparedPolicySet,
    RegoEngine,
    TestResult,
)

ENGINE_NAMES = ("regorus", "opa")

__all__ = [
    "ENGINE_NAMES",
    "CompileError",
    "EngineError",
    "EngineSettings",
    "EngineTimeout",
    "EngineUnavailable",
    "EvaluationSession",
    "Module",
    "PolicyCompileError",
    "PolicyEvaluationError",
    "PolicySet",
    "PreparedPolicySet",
    "RegoEngine",
    "TestResult",
    "create_engine",
    "engine_settings",
    "get_engine",
    "parse_engine_settings",
]


@dataclass(frozen=True)
class EngineSettings:
    engine: str = "regorus"
    opa_url: str = "http://127.0.0.1:8181"
    timeout: float = 10.0
    workers: int | None = None  # regorus worker processes; None: the CPU count
    memory_mb: int = 1024  # memory a regorus worker may add, in MiB; 0: no limit


def parse_engine_settings(
    engine: str | None = None,
    opa_url: str | None = None,
    timeout: float | str | None = None,
    workers: int | None = None,
    memory_mb: int | None = None,
) -> EngineSettings:
    """Engine settings from raw values (None or blank: the defaults); ValueError for a bad timeout."""
    defaults = EngineSettings()
    name = str(engine or "").strip().lower() or defaults.engine
    url = str(opa_url or "").strip() or defaults.opa_url
    raw_timeout = str(timeout if timeout is not None else "").strip() or str(defaults.timeout)
    try:
        seconds = float(raw_timeout)
    except ValueError as exc:
        raise ValueError(f"FLEETGATE_REGO_TIMEOUT must be a number of seconds, got {raw_timeout!r}") from exc
    if seconds <= 0:
        raise ValueError("FLEETGATE_REGO_TIMEOUT must be positive")
    return EngineSettings(
        name,
        url,
        seconds,
        workers=workers or defaults.workers,
        memory_mb=defaults.memory_mb if memory_mb is None else memory_mb,
    )


def engine_settings() -> EngineSettings:
    """The configured engine settings (FLEETGATE_REGO_ENGINE, FLEETGATE_OPA_URL, FLEETGATE_REGO_TIMEOUT of
    ``django.conf.settings``), with working defaults."""
    from django.conf import settings  # imported here: the engines themselves do not need Django

    return parse_engine_settings(
        getattr(settings, "FLEETGATE_REGO_ENGINE", None),
        getattr(settings, "FLEETGATE_OPA_URL", None),
        getattr(settings, "FLEETGATE_REGO_TIMEOUT", None),
        getattr(settings, "FLEETGATE_REGO_WORKERS", None),
        getattr(settings, "FLEETGATE_REGO_MEMORY_MB", None),
    )


def create_engine(
    name: str | None = None, *, opa_url: str | None = None, timeout: float | None = None
) -> RegoEngine:
    """A new engine; arguments left out come from :func:`engine_settings`."""
    settings = engine_settings()
    name = (name or settings.engine).lower()
    timeout = timeout if timeout is not None else settings.timeout
    if name == "regorus":
        from policies.engine.regorus_engine import RegorusEngine

        return RegorusEngine(timeout=timeout, workers=settings.workers, memory_mb=settings.memory_mb)
    if name == "opa":
        from policies.engine.opa_engine import OpaEngine

        return OpaEngine(opa_url or settings.opa_url, timeout=timeout)
    raise ValueError(f"unknown Rego engine {name!r}: choose one of {', '.join(ENGINE_NAMES)}")


_ENGINES: dict[tuple[str, str, float], RegoEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(
    name: str | None = None, *, opa_url: str | None = None, timeout: float | None = None
) -> RegoEngine:
    """The process-wide engine for these settings (engines cache prepared policy sets, so share them)."""
    settings = engine_settings()
    key = (
        (name or settings.engine).lower(),
        opa_url or settings.opa_url,
        timeout if timeout is not None else settings.timeout,
    )
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = create_engine(key[0], opa_url=key[1], timeout=key[2])
            _ENGINES[key] = engine
        return engine
