"""A scheduled enforcement switch is cancelled by every door that sets a binding's enforcement by hand
(review of issue 21): the Django admin and a plain model save, not only the API. Before, only the API's
update cancelled it, so a binding set to warn in the admin was flipped to deny by the beat task later."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from clusters.models import ClusterGroup
from fleet.audit.models import AuditEvent
from policies import tasks as policy_tasks
from policies.models import PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy

pytestmark = pytest.mark.django_db(transaction=True)

RULE = 'package main\n\ndeny[msg] {\n  input.kind == "Secret"\n  msg := "no secrets"\n}\n'


def scheduled_binding(name: str) -> PolicyBinding:
    policy = save_policy(name, PolicyDefinition(style="conftest", modules=(("p.rego", RULE),))).policy
    group = ClusterGroup.objects.create(name=f"g-{name}")
    binding = PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement="dryrun")
    # what schedule_enforcement leaves: dryrun now, deny in a week (the preview is not needed here)
    PolicyBinding.objects.filter(pk=binding.pk).update(enforce_as="deny",
                                                      enforce_at=timezone.now() + timedelta(days=7))
    binding.refresh_from_db()
    return binding


def admin_form(binding: PolicyBinding, **changes: Any) -> dict[str, Any]:
    return {"policy": binding.policy_id, "cluster_group": binding.cluster_group_id or "",
            "enforcement": binding.enforcement, "pinned_version": "", "enabled": "on", **changes}


def test_the_admin_setting_the_enforcement_cancels_the_scheduled_switch(make_user: Any) -> None:
    admin_user = make_user("root", superuser=True)
    binding = scheduled_binding("no-secrets")
    page = Client()
    page.force_login(admin_user)
    url = f"/admin/policies/policybinding/{binding.pk}/change/"

    kept = page.post(url, admin_form(binding))  # saved unchanged: the schedule stays
    assert kept.status_code == 302 and kept["Location"] == "/admin/policies/policybinding/", kept
    binding.refresh_from_db()
    assert (binding.enforcement, binding.enforce_as) == ("dryrun", "deny") and binding.enforce_at is not None

    changed = page.post(url, admin_form(binding, enforcement="warn"))
    assert changed.status_code == 302 and changed["Location"] == "/admin/policies/policybinding/"
    binding.refresh_from_db()
    assert (binding.enforcement, binding.enforce_as, binding.enforce_at) == ("warn", "", None)
    event = AuditEvent.objects.filter(action="policybinding.unschedule", target_id=str(binding.pk)).get()
    assert event.before["enforce_as"] == "deny" and event.after["enforce_at"] is None
    assert event.change_context == "web" and event.actor_name == admin_user.username

    # the switch's time comes: the beat task leaves the enforcement chosen by hand alone
    assert policy_tasks.enforce_scheduled_bindings() == []
    binding.refresh_from_db()
    assert binding.enforcement == "warn"


def test_a_model_save_that_changes_the_enforcement_cancels_it_and_the_scheduler_s_own_saves_do_not() -> None:
    binding = scheduled_binding("no-secrets-2")
    binding.enabled = False
    binding.save(update_fields=["enabled", "updated"])  # the enforcement untouched: still scheduled
    binding.refresh_from_db()
    assert binding.enforce_at is not None

    binding.enforcement = "deny"
    binding.save(update_fields=["enforcement", "updated"])
    binding.refresh_from_db()
    assert (binding.enforcement, binding.enforce_as, binding.enforce_at) == ("deny", "", None)
    cancelled = AuditEvent.objects.filter(action="policybinding.unschedule", target_id=str(binding.pk))
    assert cancelled.count() == 1

    again = scheduled_binding("no-secrets-3")  # the switch itself (update_fields with enforce_at) is kept
    PolicyBinding.objects.filter(pk=again.pk).update(enforce_at=timezone.now() - timedelta(minutes=1))
    assert policy_tasks.enforce_scheduled_bindings() == [again.pk]
    again.refresh_from_db()
    assert again.enforcement == "deny"
    assert not AuditEvent.objects.filter(action="policybinding.unschedule", target_id=str(again.pk)).exists()
