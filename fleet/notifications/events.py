"""Which audit events are notifications, and what each says: an audit event in, an ``Event`` out.

Every event worth notifying is already an audit event (the gate's decision, a rollout's state change, a
drift check); the two that have no moment of their own in the flow (a sync window opening, a waiver about to
expire) are recorded by the periodic scan (services.scan) first. So the notifier reads one thing, the audit
log, and nothing else in Fleetgate calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import models

from fleet.audit.models import AuditEvent
from fleet.audit.redact import redact
from fleet.notifications.choices import EventType

if TYPE_CHECKING:
    from fleet.sources.models import PathMapping

# Audit action -> event type. ``policy.decision`` is a notification only when a cluster was blocked;
# ``rollout.blocked`` (every cluster blocked) says it too, also when the gate failed closed on an engine error
# and recorded no decision: a subscription hears of one commit's block in one mapping once (services.fan_out).
ACTIONS: dict[str, EventType] = {
    "policy.decision": EventType.COMMIT_BLOCKED,
    "rollout.blocked": EventType.COMMIT_BLOCKED,
    "rollout.awaiting_approval": EventType.APPROVAL_NEEDED,
    "rollout.failed": EventType.ROLLOUT_FAILED,
    "rollout.halted": EventType.ROLLOUT_HALTED,
    "drift.detected": EventType.DRIFT_DETECTED,
    "syncwindow.opened": EventType.SYNC_WINDOW_OPENED,
    "waiver.expiring": EventType.WAIVER_EXPIRING,
}


def notifiable(action: str, after: Any) -> bool:
    """Cheap test on the audit row alone (no query), made for every audit event."""
    if action not in ACTIONS:
        return False
    if action == "policy.decision":
        counts = (after or {}).get("counts") or {}
        return bool(counts.get("blocked"))
    return True


@dataclass
class Event:
    """A notification, before it is shaped for a channel. ``target`` is the object whose visibility to a
    subscription's owner decides whether it is delivered; ``clusters`` the cluster names the details name
    (each is dropped from a delivery whose owner may not see that cluster)."""

    type: EventType
    title: str
    summary: str
    audit_event: AuditEvent
    target: models.Model | None
    group_id: int | None
    group: str = ""
    mapping_id: int | None = None
    mapping: str = ""
    repository_id: int | None = None
    repository: str = ""
    commit: str = ""
    link: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    per_cluster: dict[str, Any] = field(default_factory=dict)
    all_groups: bool = False  # a global waiver: every group's subscriptions


def _mapping_event(audit: AuditEvent, mapping: PathMapping, **fields: Any) -> Event:
    """An event about a path mapping: its group and repository named, the audit row's message as summary."""
    return Event(
        summary=audit.message[:1000],
        audit_event=audit,
        group_id=mapping.cluster_group_id,
        group=mapping.cluster_group.name,
        mapping_id=mapping.pk,
        mapping=mapping.name,
        repository_id=mapping.repository_id,
        repository=mapping.repository.name,
        **fields,
    )


def _rollout_event(audit: AuditEvent, kind: EventType) -> Event | None:
    from fleet.rollouts.models import ClusterSync, Rollout

    rollout = (
        Rollout.objects.select_related("mapping__cluster_group", "mapping__repository", "commit")
        .filter(pk=audit.target_id or 0)
        .first()
    )
    if rollout is None:
        return None
    mapping = rollout.mapping
    if kind is EventType.COMMIT_BLOCKED:
        return _mapping_event(
            audit,
            mapping,
            type=kind,
            title=f"Commit {rollout.commit.sha[:10]} blocked by policy in {mapping.name}",
            target=rollout,
            commit=rollout.commit.sha,
            link=f"/rollouts/{rollout.pk}/",
            details={"rollout": rollout.pk, "state": rollout.state, "reason": audit.message[:1000]},
        )
    verb = {
        EventType.APPROVAL_NEEDED: "needs approval",
        EventType.ROLLOUT_FAILED: "failed",
        EventType.ROLLOUT_HALTED: "halted",
    }[kind]
    per_cluster: dict[str, Any] = {}
    if kind is not EventType.APPROVAL_NEEDED:
        for name, state, error in ClusterSync.objects.filter(rollout=rollout).values_list(
            "cluster__name", "state", "error"
        ):
            per_cluster[name] = {"state": state, "error": error[:300]}
    details: dict[str, Any] = {"rollout": rollout.pk, "state": rollout.state, "reason": audit.message[:1000]}
    if kind is EventType.APPROVAL_NEEDED:
        details["approvals_required"] = rollout.approvals_required
    return _mapping_event(
        audit,
        mapping,
        type=kind,
        title=f"Rollout {rollout.pk} of {mapping.name} at {rollout.commit.sha[:10]} {verb}",
        target=rollout,
        commit=rollout.commit.sha,
        link=f"/rollouts/{rollout.pk}/",
        details=details,
        per_cluster=per_cluster,
    )


def _blocked(audit: AuditEvent) -> Event | None:
    from fleet.sources.models import Commit, PathMapping

    after = audit.after or {}
    mapping = (
        PathMapping.objects.select_related("cluster_group", "repository")
        .filter(repository__name=audit.repository_name, name=after.get("mapping", ""))
        .first()
    )
    commit = Commit.objects.filter(pk=audit.target_id or 0).first() if audit.target_type == "commit" else None
    if mapping is None:
        return None
    sha = after.get("commit", "")
    per_cluster = {
        name: {"decision": info.get("decision"), "deny": info.get("deny"), "reasons": info.get("reasons", [])}
        for name, info in (after.get("clusters") or {}).items()
        if info.get("decision") == "blocked"
    }
    if commit is not None:
        _add_violations(per_cluster, commit.pk, mapping.pk)
    return _mapping_event(
        audit,
        mapping,
        type=EventType.COMMIT_BLOCKED,
        title=f"Commit {sha[:10]} blocked by policy in {mapping.name}",
        target=commit or mapping,
        commit=sha,
        link=f"/commits/{commit.pk}/" if commit else f"/repositories/{mapping.repository_id}/",
        details={"counts": after.get("counts", {}), "policies": after.get("policies", [])},
        per_cluster=per_cluster,
    )


def _add_violations(per_cluster: dict[str, Any], commit_id: int, mapping_id: int, limit: int = 5) -> None:
    """The deny violations of each blocked cluster's latest evaluation: policy, object and message."""
    from policies.models import Violation

    latest: dict[str, int] = {}
    rows = (
        Violation.objects.filter(
            evaluation__commit_id=commit_id,
            evaluation__mapping_id=mapping_id,
            enforcement="deny",
            waived_by__isnull=True,
            evaluation__cluster__name__in=list(per_cluster),
        )
        .order_by("-evaluation_id", "id")
        .values_list(
            "evaluation_id",
            "evaluation__cluster__name",
            "policy_name",
            "kind",
            "namespace",
            "name",
            "message",
        )
    )
    for evaluation_id, cluster, policy, kind, namespace, name, message in rows[:500]:
        if latest.setdefault(cluster, evaluation_id) != evaluation_id:
            continue
        found = per_cluster[cluster].setdefault("violations", [])
        if len(found) < limit:
            found.append(
                {
                    "policy": policy,
                    "object": "/".join(x for x in (kind, namespace, name) if x),
                    "message": message[:500],
                }
            )


def _drift(audit: AuditEvent) -> Event | None:
    from fleet.rollouts.models import SyncedState

    state = (
        SyncedState.objects.select_related("mapping__cluster_group", "mapping__repository", "cluster")
        .filter(pk=audit.target_id or 0)
        .first()
    )
    if state is None:
        return None
    mapping = state.mapping
    objects = [
        {
            "ref": o.get("ref"),
            "state": o.get("state"),
            "fields": [f.get("path") for f in o.get("fields") or []],
        }
        for o in ((audit.after or {}).get("objects") or [])[:20]
    ]
    return _mapping_event(
        audit,
        mapping,
        type=EventType.DRIFT_DETECTED,
        title=f"Drift in {mapping.name} on {state.cluster.name}",
        target=state,
        link=f"/clusters/{state.cluster_id}/",
        per_cluster={state.cluster.name: {"objects": objects}},
    )


def _window(audit: AuditEvent) -> Event | None:
    from clusters.models import ClusterGroup

    group = ClusterGroup.objects.filter(pk=audit.target_id or 0).first()
    if group is None:
        return None
    return Event(
        type=EventType.SYNC_WINDOW_OPENED,
        title=f"Sync window opened for {group.name}",
        summary=audit.message[:1000],
        audit_event=audit,
        target=group,
        group_id=group.pk,
        group=group.name,
        link=f"/groups/{group.pk}/",
        details=dict(audit.after or {}),
    )


def _waiver(audit: AuditEvent) -> Event | None:
    from policies.models import Waiver

    waiver = Waiver.objects.select_related("policy", "cluster_group").filter(pk=audit.target_id or 0).first()
    if waiver is None:
        return None
    return Event(
        type=EventType.WAIVER_EXPIRING,
        title=f"Waiver #{waiver.pk} of {waiver.policy.name} expires {waiver.expires_at:%Y-%m-%d %H:%M} UTC",
        summary=audit.message[:1000],
        audit_event=audit,
        target=waiver,
        group_id=waiver.cluster_group_id,
        group=waiver.cluster_group.name if waiver.cluster_group else "",
        link="/waivers/",
        details={
            "waiver": waiver.pk,
            "policy": waiver.policy.name,
            "expires_at": waiver.expires_at.isoformat(),
            "objects": str(waiver),
            "author": waiver.author_name,
        },
        all_groups=waiver.cluster_group_id is None,
    )


_BUILDERS: dict[str, Callable[[AuditEvent], Event | None]] = {
    "policy.decision": _blocked,
    "rollout.blocked": lambda a: _rollout_event(a, EventType.COMMIT_BLOCKED),
    "rollout.awaiting_approval": lambda a: _rollout_event(a, EventType.APPROVAL_NEEDED),
    "rollout.failed": lambda a: _rollout_event(a, EventType.ROLLOUT_FAILED),
    "rollout.halted": lambda a: _rollout_event(a, EventType.ROLLOUT_HALTED),
    "drift.detected": _drift,
    "syncwindow.opened": _window,
    "waiver.expiring": _waiver,
}


def from_audit(audit: AuditEvent) -> Event | None:
    """The notification an audit event makes, or None (not notifiable, or its object is gone). Texts go
    through the audit log's redaction once more: no credential in a URL reaches a payload."""
    if not notifiable(audit.action, audit.after):
        return None
    event = _BUILDERS[audit.action](audit)
    if event is not None:
        event.summary = redact(event.summary)
        event.details = redact(event.details)
        event.per_cluster = redact(event.per_cluster)
    return event
