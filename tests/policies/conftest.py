"""Fixtures for the policy tests: a real OPA server (session) and the engine under test.

``opa_server`` builds OPA with scripts/build-opa.sh when the pinned binary is missing (minutes, once;
the result is cached in .cache/bin) and runs it on a free 127.0.0.1 port for the whole session.
``engine`` is parametrised over the in-process regorus engine and that OPA server, so every test that
takes it runs on both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policies.engine import RegoEngine
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


@pytest.fixture(params=["regorus", "opa"])
def engine(request: pytest.FixtureRequest) -> RegoEngine:
    if request.param == "opa":
        return request.getfixturevalue("opa_engine")
    return request.getfixturevalue("regorus_engine")
