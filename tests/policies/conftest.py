"""Fixtures for the policy tests: a real OPA server (session) and the engine under test.

The OPA server and the engines come from tests/opa_server.py (shared with tests/policies_app).
``engine`` is parametrised over the in-process regorus engine and that OPA server, so every test that
takes it runs on both.
"""

from __future__ import annotations

import pytest

from policies.engine import RegoEngine
from tests.opa_server import opa_engine, opa_server, regorus_engine

__all__ = ["opa_engine", "opa_server", "regorus_engine"]


@pytest.fixture(params=["regorus", "opa"])
def engine(request: pytest.FixtureRequest) -> RegoEngine:
    if request.param == "opa":
        return request.getfixturevalue("opa_engine")
    return request.getfixturevalue("regorus_engine")
