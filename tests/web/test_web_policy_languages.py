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
