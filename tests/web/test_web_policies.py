"""Policy pages: the list with violations over time, a policy's source and tests, and waivers created by
policy-admins in their scope only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from fleet.audit.models import AuditEvent
from policies.models import Evaluation, Policy, Violation, Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.factories import ClusterFactory, ClusterGroupFactory, CommitFactory, PathMappingFactory

pytestmark = pytest.mark.django_db

NO_LATEST = """package main

deny[msg] {
    endswith(input.spec.template.spec.containers[_].image, ":latest")
    msg := "no latest"
}

test_latest_denied {
    deny["no latest"] with input as {"spec": {"template": {"spec": {"containers": [{"image": "a:latest"}]}}}}
}
"""


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def policy() -> Any:
    return save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("latest.rego", NO_LATEST),))
    ).policy


def test_policy_pages_show_source_tests_and_a_violations_chart(admin_user: Any, policy: Any) -> None:
    group = ClusterGroupFactory(name="prod")
    mapping = PathMappingFactory(cluster_group=group)
    evaluation = Evaluation.objects.create(
        commit=CommitFactory(repository=mapping.repository),
        mapping=mapping,
        cluster=ClusterFactory(name="p-1"),
        decision="blocked",
    )
    Violation.objects.create(
        evaluation=evaluation,
        policy=policy,
        policy_name="no-latest",
        enforcement="deny",
        message="no latest",
        kind="Deployment",
        name="web",
    )
    client = client_for(admin_user)
    listing = client.get("/policies/").content.decode()
    assert "no-latest" in listing and "<rect" in listing and "1 × no-latest" in listing
    detail = client.get(f"/policies/{policy.pk}/").content.decode()
    assert "latest.rego" in detail and "test_latest_denied" in detail and "pass" in detail


def test_policy_admin_adds_a_waiver_in_scope_and_not_outside(make_user: Any, policy: Any) -> None:
    staging = ClusterGroupFactory(name="staging")
    prod = ClusterGroupFactory(name="prod")
    admin = make_user("pam", role="policy-admin", scope=staging)
    client = client_for(admin)
    expires = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    form = {
        "policy": policy.pk,
        "kind": "Deployment",
        "name_pattern": "web-*",
        "cluster_group": staging.pk,
        "expires_at": expires,
        "justification": "vendor image, pinned next sprint",
    }
    assert client.post("/waivers/", form).status_code == 302
    waiver = Waiver.objects.get()
    assert waiver.author == admin and waiver.cluster_group == staging
    assert AuditEvent.objects.filter(action="waiver.create", target_id=str(waiver.pk)).exists()
    refused = client.post("/waivers/", {**form, "cluster_group": prod.pk})
    assert refused.status_code == 200 and Waiver.objects.count() == 1
    no_reason = client.post("/waivers/", {**form, "justification": ""})
    assert no_reason.status_code == 200 and Waiver.objects.count() == 1


def test_viewers_cannot_add_waivers(make_user: Any, policy: Any) -> None:
    client = client_for(make_user("vic", role="viewer"))
    page = client.get("/waivers/").content.decode()
    assert 'id="waiver-form"' not in page
    assert client.post("/waivers/", {"policy": policy.pk}).status_code == 403


@pytest.mark.parametrize("violations", [10, 300])
def test_policy_list_runs_constant_queries(
    violations: int, admin_user: Any, policy: Any, django_assert_max_num_queries: Any
) -> None:
    mapping = PathMappingFactory()
    evaluation = Evaluation.objects.create(
        commit=CommitFactory(repository=mapping.repository),
        mapping=mapping,
        cluster=ClusterFactory(),
        decision="blocked",
    )
    Violation.objects.bulk_create(
        [
            Violation(
                evaluation=evaluation, policy=policy, policy_name=f"p{i % 5}", enforcement="deny", message="m"
            )
            for i in range(violations)
        ]
    )
    client = client_for(admin_user)
    with django_assert_max_num_queries(12):
        assert client.get("/policies/").status_code == 200


BROKEN = """package main

deny[msg] {
    input.kind == "Deployment"
    msg := sprintf("broken %v", [input.metadata.name]
}
"""

FAILING_TEST = NO_LATEST.replace('"a:latest"', '"a:1.0"')


def test_editor_shows_compile_errors_with_their_line_and_failing_tests(make_user: Any) -> None:
    client = client_for(make_user("pa", role="policy-admin"))
    page = client.post("/policies/new/", {"name": "broken", "module_path": "broken.rego", "source": BROKEN})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="compile-errors"' in html
    assert "broken.rego:5" in html or "broken.rego:6" in html
    failing = client.post(
        "/policies/new/", {"name": "latest", "module_path": "l.rego", "source": FAILING_TEST}
    )
    assert 'id="test-results"' in failing.content.decode() and "fail" in failing.content.decode()
    saved = client.post("/policies/new/", {"name": "latest", "module_path": "l.rego", "source": NO_LATEST})
    assert saved.status_code == 302
    policy = Policy.objects.get(name="latest")
    edited = client.post(
        f"/policies/{policy.pk}/edit/",
        {"name": "latest", "module_path": "l.rego", "source": NO_LATEST + "\n# a comment\n"},
    )
    assert edited.status_code == 302
    policy.refresh_from_db()
    assert policy.current.number == 2


def test_viewers_cannot_open_the_editor(make_user: Any, policy: Any) -> None:
    client = client_for(make_user("vw", role="viewer"))
    assert client.get("/policies/new/").status_code == 403
    assert client.post(f"/policies/{policy.pk}/edit/", {"name": "x"}).status_code == 403
    assert "New policy" not in client.get("/policies/").content.decode()
