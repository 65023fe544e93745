"""The policy pages name each policy's language (Rego/conftest, Rego/Gatekeeper, VAP (CEL), Kyverno) and show
a VAP's policy and binding, a Kyverno policy, and the waivers an exception made with their rule (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from policies.models import Policy
from policies.services.importing import import_files
from tests.policies import language_library as ll

pytestmark = pytest.mark.django_db


@pytest.fixture
def imported(admin_user: Any) -> dict[str, Policy]:
    result = import_files(
        {
            "vap.yaml": ll.REPLICA_LIMIT_VAP
            + "---\n"
            + ll.vap_binding("replica-limit", "replica-limit.example.com", ["Deny"]),
            "kyverno.yaml": ll.REQUIRE_TEAM_KYVERNO,
            "exception.yaml": ll.legacy_exception(["legacy-*"], ["check-team"]),
        },
        user=admin_user,
    )
    return {r.policy.name: r.policy for r in result.saved}


def test_the_policy_list_and_pages_name_the_language_and_show_the_documents(
    admin_user: Any, imported: dict[str, Policy]
) -> None:
    client = Client()
    client.force_login(admin_user)
    listing = client.get("/policies/").content.decode()
    assert '<span class="badge language">VAP (CEL)</span>' in listing
    assert '<span class="badge language">Kyverno</span>' in listing

    vap = client.get(f"/policies/{imported['replica-limit'].pk}/").content.decode()
    assert '<span class="badge language">VAP (CEL)</span> <code>ValidatingAdmissionPolicy</code>' in vap
    assert "<h3>ValidatingAdmissionPolicyBinding</h3>" in vap
    assert "object.spec.replicas &lt;= 5" in vap

    kyverno = client.get(f"/policies/{imported['require-team-label'].pk}/").content.decode()
    assert '<span class="badge language">Kyverno</span> <code>ClusterPolicy</code>' in kyverno
    assert "<h3>Kyverno ClusterPolicy</h3>" in kyverno
    assert (
        'rule <code>check-team</code> <span class="muted">(kyverno PolicyException apps/legacy-apps)</span>'
        in kyverno
    )


def test_the_commit_and_rollout_pages_name_each_findings_language(
    admin_user: Any, imported: dict[str, Policy]
) -> None:
    from clusters.models import Cluster
    from fleet.rollouts.models import ClusterSync, Rollout
    from policies import gate
    from policies.services.definitions import definition_of
    from tests.factories import ClusterGroupFactory, CommitFactory, PathMappingFactory
    from tests.policies import policy_library as lib

    bound = [
        b
        for p in imported.values()
        for b in definition_of(p.current).bound(p.pk, p.name, None)  # type: ignore[arg-type]
    ]
    decision = gate.evaluate_target([lib.deployment("big", replicas=8, labels={})], bound)
    assert {v.language for v in decision.violations} == {"VAP (CEL)", "Kyverno"}
    mapping = PathMappingFactory(name="web", cluster_group=ClusterGroupFactory(name="web"))
    commit = CommitFactory(repository=mapping.repository)
    rollout = Rollout.objects.create(mapping=mapping, commit=commit, state="blocked")
    ClusterSync.objects.create(
        rollout=rollout,
        cluster=Cluster.objects.create(name="c-a", api_url="https://x:6443", token="t"),
        state="blocked",
        evaluation=decision.as_dict(),
    )
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/commits/{commit.pk}/").content.decode()
    assert '<h3>replica-limit <span class="badge language">VAP (CEL)</span>' in page
    assert '<h3>require-team-label <span class="badge language">Kyverno</span>' in page
    assert "<td>check-team</td>" in page
    rollout_page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert '<td><span class="badge language">VAP (CEL)</span></td>' in rollout_page
    kyverno_row = (
        'require-team-label <span class="muted">[check-team]</span></td><td><span class="badge language">'
    )
    assert kyverno_row + "Kyverno" in rollout_page
