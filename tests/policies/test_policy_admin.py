"""Admin pages for every policy model load, and a waiver saved in the admin is audited with its author."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from fleet.audit.models import AuditEvent
from policies.models import Evaluation, PolicySource, Waiver
from policies.services.evaluation import evaluate
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db


def test_admin_pages_load_and_waivers_saved_there_are_audited(
    fleet: dict[str, Any], make_policy: Any, bind: Any, make_user: Any
) -> None:
    policy = make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    binding = bind(policy)
    evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("x", image="a:latest")])
    source = PolicySource.objects.create(repository=fleet["repo"], path="policies", name="team")
    client = Client()
    client.force_login(make_user("boss", superuser=True))
    evaluation = Evaluation.objects.get()
    pages = [
        "/admin/policies/policy/",
        f"/admin/policies/policy/{policy.pk}/change/",
        "/admin/policies/policyversion/",
        f"/admin/policies/policyversion/{policy.current_id}/change/",
        "/admin/policies/policybinding/",
        f"/admin/policies/policybinding/{binding.pk}/change/",
        "/admin/policies/waiver/",
        "/admin/policies/waiver/add/",
        "/admin/policies/evaluation/",
        f"/admin/policies/evaluation/{evaluation.pk}/change/",
        "/admin/policies/violation/",
        "/admin/policies/policysource/",
        f"/admin/policies/policysource/{source.pk}/change/",
    ]
    for url in pages:
        assert client.get(url).status_code == 200, url
    assert client.get("/admin/policies/policy/add/").status_code == 403  # policies are created via the API

    expires = timezone.localtime(timezone.now() + timedelta(days=5))
    response = client.post(
        "/admin/policies/waiver/add/",
        {
            "policy": policy.pk,
            "kind": "Deployment",
            "namespace": "",
            "name_pattern": "x",
            "labels": "{}",
            "cluster_group": "",
            "cluster_pattern": "",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
            "justification": "legacy",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    waiver = Waiver.objects.get()
    assert waiver.author_name == "boss"
    assert AuditEvent.objects.filter(action="waiver.create", target_id=str(waiver.pk)).exists()
