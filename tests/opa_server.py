"""Shared fixtures: a real OPA server (session) and engines on it, for every test package that needs them.

``opa_server`` builds OPA with scripts/build-opa.sh when the pinned binary is missing (minutes, once; cached
in $FLEETGATE_CACHE_DIR/opa or .cache/bin) and runs it on a free 127.0.0.1 port for the whole session.
Import the fixtures into a conftest: ``from tests.opa_server import opa_engine, opa_server, regorus_engine``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policies.engine.opa_engine import OpaEngine
from policies.engine.opa_server import OpaServer, build_opa
from policies.engine.regorus_engine import RegorusEngine


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaServer]:
    binary = build_opa()
    with OpaServer(binary) as server:
        yield server


@pytest.fixture(scope="session")
def opa_engine(opa_server: OpaServer) -> Iterator[OpaEngine]:
    engine = OpaEngine(opa_server.url, timeout=30)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def regorus_engine() -> RegorusEngine:
    return RegorusEngine()
