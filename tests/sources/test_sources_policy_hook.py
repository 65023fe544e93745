"""A commit's own policies apply to its manifests: a fetch syncs the repository's policy sources at the new
head before rendering, and the rollout of that commit is judged by them (real git, regorus, no mocks)."""

from __future__ import annotations

from typing import Any

from fleet.rollouts.models import Rollout
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from policies.models import Policy, PolicySource, Violation
from policies.services.evaluation import evaluate_mapping
from tests.sources.origin import configmap

NO_PLAIN_SECRETS = """\
package main

import rego.v1

deny contains msg if {
	input.kind == "ConfigMap"
	some key, _ in input.data
	contains(lower(key), "password")
	msg := sprintf("ConfigMap/%s holds a password in plain text (%s)", [input.metadata.name, key])
}
"""


def test_policies_committed_with_the_manifests_judge_them(
    origin: Any,
    make_repository: Any,
    make_mapping: Any,
    fleet: dict[str, Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sha = origin.commit(
        "policy and a config with a password",
        {
            "policies/no-plain-secrets.rego": NO_PLAIN_SECRETS,
            "apps/web/cm.yaml": configmap("web", "db_password: hunter2"),
        },
    )
    repo = make_repository(origin)
    PolicySource.objects.create(
        repository=repo, path="policies", name="repo-policies", bind_enforcement="deny"
    )
    mapping = make_mapping(repo, "web", "apps/web", fleet["staging"])

    with django_capture_on_commit_callbacks(execute=True):
        assert fetch_repository(repo).ok
    policy = Policy.objects.get(name__startswith="repo-policies")
    assert policy.current is not None and policy.current.commit_sha == sha
    # The rollout of that commit waits for its (queued) preparation; the gate it will run blocks it.
    assert Rollout.objects.filter(mapping=mapping, commit__sha=sha).exists()
    result = evaluate_mapping(Commit.objects.get(sha=sha), mapping)
    assert [c.name for c in result.blocked] == ["st-1"]
    violations = Violation.objects.filter(evaluation__mapping=mapping, evaluation__commit__sha=sha)
    assert any("password in plain text" in v.message for v in violations)
