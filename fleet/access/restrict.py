"""The one enforcement point: `restrict(queryset, user, action)`.

Every API viewset, UI view, management command and Celery task that acts for a user narrows its queryset
through here. A model opts in with `objects = RestrictedQuerySet.as_manager()` and says how it relates to a
ClusterGroup with `scope_path`:
- `""`: the model is the ClusterGroup itself;
- a lookup such as `"cluster_group"` or `"groups"`: objects are in scope when that lookup hits a group the
  user
  holds the permission in;
- `None`: only a binding on all clusters grants the permission.
A model may set `write_scope_path` for every action but `view` (a repository is seen by the groups it maps
to, but only changed by someone whose role covers all clusters, since a change reaches every group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models

from fleet.access.roles import ROLE_PERMISSIONS


@dataclass(frozen=True)
class Scope:
    everywhere: bool
    groups: frozenset[int]

    @property
    def nowhere(self) -> bool:
        return not self.everywhere and not self.groups

    def covers(self, group_id: int | None) -> bool:
        """Whether the scope reaches this group; ``None`` (all clusters) only a scope on all clusters."""
        return self.everywhere or (group_id is not None and group_id in self.groups)


NOWHERE = Scope(False, frozenset())
EVERYWHERE = Scope(True, frozenset())


def _bindings(user: Any) -> list[tuple[str, int | None]]:
    """The (role, scope id) pairs a user holds directly or through groups; cached on the user object."""
    cached = getattr(user, "_fleet_bindings", None)
    if cached is not None:
        return cached
    from fleet.access.models import RoleBinding

    rows: list[tuple[str, int | None]] = list(
        RoleBinding.objects.filter(models.Q(user=user) | models.Q(group__in=user.groups.all())).values_list(
            "role", "scope_id"
        )
    )
    user._fleet_bindings = rows
    return rows


def scope_for(user: Any, permission: str) -> Scope:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NOWHERE
    if user.is_superuser:
        return EVERYWHERE
    groups: set[int] = set()
    for role, scope_id in _bindings(user):
        if permission in ROLE_PERMISSIONS.get(role, ()):
            if scope_id is None:
                return EVERYWHERE
            groups.add(scope_id)
    return Scope(False, frozenset(groups))


def permission_name(model: type[models.Model], action: str) -> str:
    return f"{model._meta.model_name}.{action}"


def groups_where(user: Any, model: type[models.Model], action: str) -> Scope:
    """Where the user may do ``action`` on ``model``: all clusters, some groups, or nowhere. For checks
    that compare sets of groups (membership changes, approval groups) rather than narrow a queryset."""
    return scope_for(user, permission_name(model, action))


def restrict(queryset: models.QuerySet, user: Any, action: str = "view") -> models.QuerySet:
    """The one entry point. A model whose queryset class defines its own ``restrict`` (policies seen by
    everyone who may view policies anywhere, say) is asked through it; every other model by scope."""
    custom = getattr(type(queryset), "restrict", None)
    if custom is not None and custom is not RestrictedQuerySet.restrict:
        return custom(queryset, user, action)
    return restrict_by_scope(queryset, user, action)


def restrict_by_scope(queryset: models.QuerySet, user: Any, action: str = "view") -> models.QuerySet:
    """Narrow by the user's bindings and the model's ``scope_path`` (see the module docstring)."""
    model = queryset.model
    scope = scope_for(user, permission_name(model, action))
    if scope.everywhere:
        return queryset
    if scope.nowhere:
        return queryset.none()
    path = getattr(model, "scope_path", None)
    if action != "view" and hasattr(model, "write_scope_path"):
        path = model.write_scope_path
    if path is None:
        return queryset.none()
    if path == "":
        return queryset.filter(pk__in=scope.groups)
    inner = model._default_manager.filter(**{f"{path}__in": scope.groups}).values("pk")
    return queryset.filter(pk__in=inner)


def has_permission(
    user: Any, model: type[models.Model], action: str, obj: models.Model | None = None
) -> bool:
    """Whether the user holds the permission anywhere (no obj) or for this object."""
    if obj is None:
        return not scope_for(user, permission_name(model, action)).nowhere
    return restrict(model._default_manager.filter(pk=obj.pk), user, action).exists()


class RestrictedQuerySet(models.QuerySet):
    def restrict(self, user: Any, action: str = "view") -> models.QuerySet:
        return restrict_by_scope(self, user, action)
