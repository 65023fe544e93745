"""Tenant allow-lists, the Django side: who may change them, the audited save, and the checks every entry
point calls (the rules themselves: clusters/allowlist.py; docs/roles.md "Tenant allow-lists").

Entry points and the function each calls:

- mapping create/change (API, admin, ``fleet.demo.setup``): ``PathMapping.clean`` ->
  :func:`check_mapping_source`;
- render (``fleet.sources.services.rendering``): :func:`rules_for` once per mapping, then
  ``allowlist.source_refusal`` and ``allowlist.object_refusals`` per cluster result;
- sync, plan, live reads, drift (``fleet.rollouts.ports``): :func:`impersonation_for`; sync and plan also
  pass :func:`rules_for` to the connector, which refuses kinds its discovery says are cluster-scoped;
- future entry points — the pull-mode agent (issue 18) and ``import_gitops`` (issue 15) — must call
  :func:`check_mapping_source` before creating or changing a mapping and must not apply anything that did
  not pass the render check (they apply RenderedManifest rows, which passed it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError
from django.db import models, transaction
from rest_framework.exceptions import PermissionDenied

from clusters import allowlist
from clusters.models import AllowList, ClusterGroup
from fleet.access.choices import Role
from fleet.audit.redact import snapshot
from fleet.audit.services import record_change

FIELDS = (
    "sources",
    "namespaces",
    "cluster_resources_allow",
    "cluster_resources_deny",
    "namespace_resources_allow",
    "namespace_resources_deny",
    "service_account_namespace",
    "service_account_name",
)


class AllowListRefused(PermissionDenied, DjangoPermissionDenied):
    """403 in the API and in Django views: only the admin role on all clusters changes allow-lists."""


def may_change_allow_lists(user: Any) -> bool:
    """The admin role on all clusters (directly or through a group), or a superuser."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    from fleet.access.models import RoleBinding

    return RoleBinding.objects.filter(
        models.Q(user=user) | models.Q(group__in=user.groups.all()), role=Role.ADMIN, scope__isnull=True
    ).exists()


def rules_for(group: ClusterGroup) -> allowlist.Rules | None:
    """The group's allow-list rules, or None for an unrestricted group (one query unless
    ``select_related("allow_list")`` loaded it)."""
    try:
        row = group.allow_list
    except AllowList.DoesNotExist:
        return None
    return row.rules()


def fingerprint_of(group: ClusterGroup) -> Any:
    """What of the allow-list goes into a mapping's configuration fingerprint (a change re-renders)."""
    rules = rules_for(group)
    return None if rules is None else [list(v) if isinstance(v, tuple) else v for v in vars(rules).values()]


def check_mapping_source(group: ClusterGroup, repository: Any, path: str,
                         values_files: Sequence[str] = ()) -> None:
    """Refuse (ValidationError on ``path``, or on ``helm_values_files``) a mapping of ``repository`` at
    ``path``, with these Helm values files, to a restricted group that does not allow it. Every door that
    creates or changes a mapping calls this."""
    rules = rules_for(group)
    if rules is None:
        return
    refusal = allowlist.source_refusal(rules, repository=repository.name, url=repository.url, path=path)
    if refusal:
        raise ValidationError({"path": refusal}, code="not_allowed")
    refusal = allowlist.values_files_refusal(rules, repository=repository.name, url=repository.url,
                                             values_files=list(values_files or ()))
    if refusal:
        raise ValidationError({"helm_values_files": refusal}, code="not_allowed")


def impersonation_for(group: ClusterGroup) -> str:
    """The user name the group's syncs impersonate ('' for none)."""
    rules = rules_for(group)
    return rules.impersonate if rules is not None else ""


def _ensure_allowed(user: Any) -> None:
    if not may_change_allow_lists(user):
        raise AllowListRefused("Only the admin role on all clusters may change a cluster group's allow-list.")


def save_allow_list(user: Any, group: ClusterGroup, fields: dict[str, Any]) -> AllowList:
    """Create or replace the group's allow-list with ``fields`` (fields not given get their defaults;
    validated here: ValidationError with field messages), audited as allowlist.create/allowlist.update
    with before/after."""
    _ensure_allowed(user)
    with transaction.atomic():
        existing = AllowList.objects.select_for_update().filter(cluster_group=group).first()
        before = snapshot(existing) if existing is not None else None
        row = existing or AllowList(cluster_group=group)
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValidationError({name: "Unknown allow-list field." for name in sorted(unknown)})
        for name in FIELDS:  # a replacement: what is not given is reset to its default
            model_field = AllowList._meta.get_field(name)
            default = model_field.get_default() if isinstance(model_field, models.Field) else None
            setattr(row, name, fields.get(name, default))
        row.full_clean(exclude=["cluster_group"])
        row.save()
        record_change("allowlist.update" if existing else "allowlist.create", row, before,
                      message=f"allow-list of {group.name} {'changed' if existing else 'created'}")
    return row


def delete_allow_list(user: Any, group: ClusterGroup) -> bool:
    """Remove the group's allow-list (the group becomes unrestricted), audited; False if it had none."""
    _ensure_allowed(user)
    with transaction.atomic():
        row = AllowList.objects.select_for_update().filter(cluster_group=group).first()
        if row is None:
            return False
        record_change("allowlist.delete", row, snapshot(row),
                      message=f"allow-list of {group.name} removed")
        row.delete()
    return True
