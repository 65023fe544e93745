"""Rollout pages: progress at a glance, buttons only for those allowed, the server refusing the rest."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from clusters.models import Cluster
from fleet.rollouts.models import Approval, ClusterSync, Rollout
from tests.factories import ClusterGroupFactory, CommitFactory, PathMappingFactory

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_rollout(clusters: int, state: str = "awaiting_approval", group: Any = None) -> Rollout:
    group = group or ClusterGroupFactory(
        name="prod", selector={"matchLabels": {"env": "prod"}}, approval_required=True, approvals_required=2
    )
    mapping = PathMappingFactory(cluster_group=group)
    commit = CommitFactory(repository=mapping.repository, author_email="author@example.com")
    rollout = Rollout.objects.create(
        mapping=mapping,
        commit=commit,
        state=state,
        approval_required=True,
        approvals_required=2,
        batch_count=2,
    )
    made = Cluster.objects.bulk_create(
        [
            Cluster(name=f"{group.name}-{i}", api_url="https://x:6443", token="t", labels={"env": "prod"})
            for i in range(clusters)
        ]
    )
    states = ["synced", "syncing", "failed", "queued"]
    ClusterSync.objects.bulk_create(
        [
            ClusterSync(
                rollout=rollout,
                cluster=c,
                batch=i % 2,
                state=states[i % 4],
                plan={
                    "counts": {"create": 1},
                    "items": [
                        {
                            "action": "create",
                            "ref": {"kind": "ConfigMap", "namespace": "apps", "name": "web"},
                            "diff": "+data:\n+  a: b\n",
                        }
                    ],
                },
                evaluation={
                    "violations": [
                        {
                            "policy_name": "no-latest",
                            "enforcement": "deny",
                            "message": "uses :latest",
                            "object": {"kind": "Deployment", "name": "web"},
                            "waived_by": None,
                        }
                    ]
                },
            )
            for i, c in enumerate(made)
        ]
    )
    return rollout


def test_list_shows_progress_bar_and_counts(admin_user: Any) -> None:
    rollout = make_rollout(8, state="syncing")
    html = client_for(admin_user).get("/rollouts/").content.decode()
    assert f'href="/rollouts/{rollout.pk}/"' in html
    assert 'class="seg synced" style="width: 25.0%"' in html
    assert "2/8" in html


def test_detail_shows_batches_policy_results_and_plan(admin_user: Any) -> None:
    rollout = make_rollout(4)
    html = client_for(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Batch 1" in html and "Batch 2" in html
    assert "uses :latest" in html and "+  a: b" in html
    assert 'id="approve"' in html


def test_viewer_sees_no_approve_button_and_is_refused(make_user: Any) -> None:
    rollout = make_rollout(2)
    viewer = make_user("val", role="viewer")
    client = client_for(viewer)
    assert 'id="approve"' not in client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert client.post(f"/rollouts/{rollout.pk}/approve/").status_code == 403
    assert not Approval.objects.exists()


def test_approver_in_scope_approves_and_the_author_cannot(make_user: Any) -> None:
    rollout = make_rollout(2)
    group = rollout.mapping.cluster_group
    approver = make_user("ann", role="approver", scope=group)
    client = client_for(approver)
    assert 'id="approve"' in client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert client.post(f"/rollouts/{rollout.pk}/approve/").status_code == 302
    assert Approval.objects.filter(rollout=rollout, user=approver, decision="approve").exists()

    author = make_user("auth", role="approver", scope=group)
    author.email = "author@example.com"
    author.save()
    response = client_for(author).post(f"/rollouts/{rollout.pk}/approve/")
    assert response.status_code in (302, 403)
    assert not Approval.objects.filter(user=author).exists()


def test_out_of_scope_approver_gets_404(make_user: Any) -> None:
    rollout = make_rollout(2)
    other = ClusterGroupFactory(name="staging")
    client = client_for(make_user("sue", role="approver", scope=other))
    assert client.get(f"/rollouts/{rollout.pk}/").status_code == 404
    assert client.post(f"/rollouts/{rollout.pk}/approve/").status_code == 404


def test_reject_needs_a_reason(make_user: Any) -> None:
    rollout = make_rollout(2)
    client = client_for(make_user("rex", role="approver"))
    client.post(f"/rollouts/{rollout.pk}/reject/", {"reason": ""})
    assert not Approval.objects.exists()
    client.post(f"/rollouts/{rollout.pk}/reject/", {"reason": "not during the freeze"})
    assert Approval.objects.get().reason == "not during the freeze"


@pytest.mark.parametrize("clusters", [10, 500])
@pytest.mark.parametrize("page", ["list", "detail"])
def test_rollout_pages_run_constant_queries(
    clusters: int, page: str, admin_user: Any, django_assert_max_num_queries: Any
) -> None:
    rollout = make_rollout(clusters, state="syncing")
    client = client_for(admin_user)
    url = "/rollouts/" if page == "list" else f"/rollouts/{rollout.pk}/"
    # 18: the detail page also reads what the mapping depends on and who waits for it (two queries).
    with django_assert_max_num_queries(18):
        assert client.get(url).status_code == 200


def test_detail_draws_a_timeline_per_cluster(admin_user: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    rollout = make_rollout(3, state="synced")
    start = timezone.now() - timedelta(minutes=5)
    for i, cs in enumerate(rollout.syncs.order_by("cluster__name")):
        cs.state = "synced"
        cs.queued_at = start
        cs.started_at = start + timedelta(seconds=10 * i)
        cs.finished_at = start + timedelta(seconds=10 * i + 8)
        cs.save()
    html = client_for(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert html.count('class="span"') == 3
    assert "left: 0.0%" in html and "synced, 8.0 s" in html


def test_deployer_rolls_back_to_an_earlier_synced_commit(make_user: Any) -> None:
    current = make_rollout(2, state="synced")
    mapping = current.mapping
    current.commit.sequence = 1000
    current.commit.save()
    earlier_commit = CommitFactory(repository=mapping.repository, sequence=10)
    Rollout.objects.create(mapping=mapping, commit=earlier_commit, state="synced")
    viewer = client_for(make_user("vv", role="viewer"))
    assert 'id="rollback"' not in viewer.get(f"/rollouts/{current.pk}/").content.decode()
    assert viewer.post(f"/rollouts/{current.pk}/rollback/", {"commit": earlier_commit.pk}).status_code == 403
    deployer = client_for(make_user("dd", role="deployer", scope=mapping.cluster_group))
    assert 'id="rollback"' in deployer.get(f"/rollouts/{current.pk}/").content.decode()
    response = deployer.post(f"/rollouts/{current.pk}/rollback/", {"commit": earlier_commit.pk})
    assert response.status_code == 302
    rollback = Rollout.objects.get(rollback_of=current)
    assert rollback.commit == earlier_commit and rollback.trigger == "rollback"
