"""Prepare's render lookup a chunk of legs at a time (issue 19: worker memory flat in N): a rollout with more
legs than ``lifecycle.RENDER_CHUNK`` writes every leg's objects, moves to rendered once, and stops writing
when the rollout leaves pending between chunks. Real parts: git, the stored renders of a fetch, sandbox
clusters over HTTP; the queued tasks run in this process (the ``tasks`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from clusters.models import ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch, ports, services
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services import lifecycle
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import NAMESPACE, deployment, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def _rollout(git_repo: Any, make_fleet: Any, env: str, clusters: int) -> Rollout:
    make_fleet({f"c{i}": {"env": env} for i in range(clusters)})
    group = ClusterGroup.objects.create(name=env, selector={"matchLabels": {"env": env}})
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    files = {"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:1.27")}
    git_repo.commit(files, "web")
    assert fetch_repository(mapping.repository).ok
    return Rollout.objects.get(mapping=mapping)


def _counting_renders(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> list[int]:
    """The number of clusters of each render lookup prepare makes (the real lookup runs); ``then(call)``
    runs before the lookup of that call number."""
    sizes: list[int] = []
    real = ports.render_mapping

    def counted(commit: Any, mapping: Any, clusters: Any) -> Any:
        sizes.append(len(clusters))
        if then is not None:
            then(len(sizes))
        return real(commit, mapping, clusters)

    monkeypatch.setattr(ports, "render_mapping", counted)
    return sizes


def _prepare(tasks: Any, rollout: Rollout) -> None:
    item = next(q for q in tasks.items if q.name == dispatch.PREPARE and q.args == [rollout.pk])
    tasks.items.remove(item)
    services.prepare(rollout.pk)


def test_the_render_writes_every_leg_a_chunk_at_a_time(
    git_repo: Any, make_fleet: Any, tasks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout = _rollout(git_repo, make_fleet, "chunks", 5)
    monkeypatch.setattr(lifecycle, "RENDER_CHUNK", 2)
    sizes = _counting_renders(monkeypatch)
    _prepare(tasks, rollout)

    rollout.refresh_from_db()
    assert rollout.state == "queued", rollout.reason
    assert sizes[:3] == [2, 2, 1]  # three lookups of at most two legs; none of the whole fleet
    legs = list(ClusterSync.objects.filter(rollout=rollout).select_related("cluster"))
    assert len(legs) == 5
    for cs in legs:  # each leg holds what the lookup gives for its cluster alone
        expected = ports.render_mapping(rollout.commit, rollout.mapping, [cs.cluster])[cs.cluster_id]
        assert cs.desired == expected
        assert [o["kind"] for o in cs.desired] == ["Namespace", "Deployment"]
    rendered = AuditEvent.objects.filter(action="rollout.rendered", target_id=str(rollout.pk))
    assert [e.message for e in rendered] == ["10 object(s) for 5 cluster(s)"]


def test_a_rollout_cancelled_between_chunks_is_not_rendered(
    git_repo: Any, make_fleet: Any, tasks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout = _rollout(git_repo, make_fleet, "gone", 5)
    monkeypatch.setattr(lifecycle, "RENDER_CHUNK", 2)

    user = get_user_model().objects.create_user("ops")

    def cancel_before_the_second(call: int) -> None:
        if call == 2:
            services.cancel(Rollout.objects.get(pk=rollout.pk), user)

    sizes = _counting_renders(monkeypatch, cancel_before_the_second)
    _prepare(tasks, rollout)

    rollout.refresh_from_db()
    assert rollout.state == "cancelled"
    assert sizes == [2, 2]  # the third chunk is not looked up
    written = sorted(bool(cs.desired) for cs in ClusterSync.objects.filter(rollout=rollout))
    assert written == [False, False, False, True, True]  # the first chunk only
    assert not AuditEvent.objects.filter(action="rollout.rendered", target_id=str(rollout.pk)).exists()
