"""Fixtures for the policy tests: both engines (regorus in-process, the real OPA server from
tests/opa_server.py), a fleet with a group of two clusters (prod and staging), and helpers that save policies
and bind them through the services. ``engine`` is parametrised over both engines, so every test that takes it
runs on both."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from fleet.sources.models import MappingRender, RenderedManifest
from policies.engine import RegoEngine
from policies.models import Policy, PolicyBinding, Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    RepositoryFactory,
)
from tests.opa_server import opa_engine, opa_server, regorus_engine
from tests.policies import policy_library as lib

__all__ = ["opa_engine", "opa_server", "regorus_engine"]


@pytest.fixture(params=["regorus", "opa"])
def engine(request: pytest.FixtureRequest) -> RegoEngine:
    if request.param == "opa":
        return request.getfixturevalue("opa_engine")
    return request.getfixturevalue("regorus_engine")


@pytest.fixture
def fleet(db: Any) -> dict[str, Any]:
    web = ClusterGroupFactory(name="web", selector={"matchLabels": {"team": "web"}})
    other = ClusterGroupFactory(name="other", selector={"matchLabels": {"team": "other"}})
    prod = ClusterFactory(name="prod-eu-1", labels={"team": "web", "env": "prod"})
    staging = ClusterFactory(name="staging-eu-1", labels={"team": "web", "env": "staging"})
    lonely = ClusterFactory(name="other-1", labels={"team": "other", "env": "prod"})
    repo = RepositoryFactory(name="apps")
    mapping = PathMappingFactory(repository=repo, name="web", path="apps/web", cluster_group=web)
    other_mapping = PathMappingFactory(repository=repo, name="other", path="apps/other", cluster_group=other)
    commit = CommitFactory(repository=repo, author_email="dev@example.com")
    return {
        "web": web,
        "other": other,
        "prod": prod,
        "staging": staging,
        "lonely": lonely,
        "repo": repo,
        "mapping": mapping,
        "other_mapping": other_mapping,
        "commit": commit,
    }


@pytest.fixture
def make_policy(db: Any) -> Callable[..., Policy]:
    def make(name: str, engine: RegoEngine | None = None, **content: Any) -> Policy:
        definition = PolicyDefinition.from_content(content)
        return save_policy(name, definition, engine=engine).policy

    return make


@pytest.fixture
def bind(db: Any) -> Callable[..., PolicyBinding]:
    def make(policy: Policy, group: Any = None, enforcement: str = "deny") -> PolicyBinding:
        return PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement=enforcement)

    return make


@pytest.fixture
def library(
    make_policy: Callable[..., Policy], bind: Callable[..., PolicyBinding], engine: RegoEngine
) -> dict[str, Policy]:
    """Every Must-show policy, saved (compiled, tested) on the engine under test and bound to all clusters."""
    policies = {
        "no-latest": make_policy(
            "no-latest",
            engine,
            **lib.spec("no-latest"),
            test_modules=[{"path": "latest_test.rego", "source": lib.NO_LATEST_TEST}],
        ),
        "prod-replicas": make_policy(
            "prod-replicas",
            engine,
            style="conftest",
            modules=[{"path": "replicas.rego", "source": lib.PROD_REPLICAS}],
        ),
        "host-network": make_policy("host-network", engine, **lib.spec("host-network")),
        "required-labels": make_policy("required-labels", engine, **lib.spec("required-labels")),
        "privileged": make_policy(
            "privileged",
            engine,
            style="gatekeeper",
            template=lib.PRIVILEGED_TEMPLATE,
            constraints=[lib.constraint("K8sPrivileged", "no-privileged")],
        ),
        "limits": make_policy(
            "limits",
            engine,
            style="gatekeeper",
            template=lib.LIMITS_TEMPLATE,
            constraints=[lib.constraint("K8sLimits", "memory-limits")],
        ),
    }
    for policy in policies.values():
        bind(policy)
    return policies


@pytest.fixture
def waive_legacy(make_user: Callable[..., Any]) -> Callable[[Policy, Any], Waiver]:
    """Waives a policy for the group's Deployments named legacy-* for a week, as alice (a policy admin)."""

    def waive(policy: Policy, group: Any) -> Waiver:
        return Waiver.objects.create(
            policy=policy,
            kind="Deployment",
            name_pattern="legacy-*",
            cluster_group=group,
            expires_at=timezone.now() + timedelta(days=7),
            justification="vendor chart; OPS-12",
            author=make_user("alice", role="policy-admin"),
            author_name="alice",
        )

    return waive


@pytest.fixture
def store_render(db: Any) -> Callable[..., list[dict[str, Any]]]:
    """Stores a mapping's render at a commit: the same objects (from one file) in each cluster's
    RenderedManifest, namespace apps. Returns the manifests' resources."""

    def store(
        commit: Any, mapping: Any, clusters: list[Any], objects: list[dict[str, Any]], source: str
    ) -> list[dict[str, Any]]:
        render = MappingRender.objects.create(commit=commit, mapping=mapping, status="rendered")
        resources = lib.resources(objects, source)
        for cluster in clusters:
            RenderedManifest.objects.create(
                commit=commit,
                mapping=mapping,
                cluster=cluster,
                mapping_render=render,
                namespace="apps",
                resources=resources,
                object_count=len(objects),
            )
        return resources

    return store
