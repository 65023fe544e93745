"""Fixtures of the agent tests: a sandbox cluster the agent manages (with a kubeconfig file for
``--kubeconfig``), a stand-in Fleetgate (tests/agent/fleetgate_stub.py) and a state directory.

For the real Fleetgate, see test_agent_live_fleetgate.py (pytest-django ``live_server``, with the rollout
fixtures of tests/rollouts/conftest.py registered here: ``git_repo``, ``make_fleet``, ``tasks``,
``sandbox_server``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusters.sandbox import SandboxCluster, SandboxServer
from tests.agent.fleetgate_stub import StubFleetgate
from tests.kube_backends import (  # noqa: F401 - fixtures and the marker hook are registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    kube_namespace,
    pytest_collection_modifyitems,
)
from tests.rollouts.conftest import (  # noqa: F401 - the rollout fixtures, for the live Fleetgate tests
    _fast_retries,
    git_repo,
    make_fleet,
    sandbox_server,
    tasks,
)

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def agent_sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@dataclass
class AgentCluster:
    sandbox: SandboxCluster
    kubeconfig: Path
    state_dir: Path


@pytest.fixture
def agent_cluster(agent_sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[AgentCluster]:
    """A fresh sandbox cluster, a kubeconfig for it (mode 0600, inline token) and an empty state dir."""
    name = f"agent-{next(_ids)}"
    box = agent_sandbox_server.add_cluster(name, token=f"tok-{name}-secret", rollout_delay=0)
    kubeconfig = Path(agent_sandbox_server.write_kubeconfig(str(tmp_path / "kubeconfig"), [name]))
    try:
        yield AgentCluster(box, kubeconfig, tmp_path / "state")
    finally:
        agent_sandbox_server.remove_cluster(name)


@pytest.fixture
def fleetgate_stub() -> Iterator[StubFleetgate]:
    with StubFleetgate() as stub:
        yield stub
