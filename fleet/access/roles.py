"""The built-in roles and the permissions each grants.

A permission is `<resource>.<action>`. Resources are lower-case model names; actions are `view`, `add`,
`change`, `delete` and the domain actions below. A RoleBinding grants a role's permissions either on all
clusters or within one ClusterGroup; `restrict()` turns that into a queryset filter.
"""

from __future__ import annotations

from fleet.access.choices import Role

CRUD = ("view", "add", "change", "delete")

# Every resource a viewer may read.
VIEWABLE = (
    "cluster",
    "clustergroup",
    "repository",
    "pathmapping",
    "chartrepository",
    "commit",
    "policy",
    "policybinding",
    "policypreview",
    "waiver",
    "evaluation",
    "rollout",
    "clustersync",
    "syncedstate",
    "auditevent",
)

DOMAIN_ACTIONS = {
    "cluster": ("test",),  # test the connection
    "repository": ("fetch",),  # trigger a fetch
    "rollout": ("sync", "rollback", "approve", "control"),  # control = pause, resume, cancel
    "auditevent": ("export",),
}

_VIEW = {f"{resource}.view" for resource in VIEWABLE} | {"auditevent.export"}


def _all(*resources: str) -> set[str]:
    perms: set[str] = set()
    for resource in resources:
        perms |= {f"{resource}.{action}" for action in CRUD}
        perms |= {f"{resource}.{action}" for action in DOMAIN_ACTIONS.get(resource, ())}
    return perms


ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.DEPLOYER: frozenset(
        _VIEW
        | {
            "rollout.add",
            "rollout.sync",
            "rollout.rollback",
            "rollout.control",
            "repository.fetch",
            "cluster.test",
        }
    ),
    Role.APPROVER: frozenset(_VIEW | {"rollout.approve"}),
    # policypreview.add: start an impact preview (docs/policies.md#impact-preview)
    Role.POLICY_ADMIN: frozenset(_VIEW | _all("policy", "policybinding", "waiver") | {"policypreview.add"}),
    Role.CLUSTER_ADMIN: frozenset(
        _VIEW | _all("cluster", "clustergroup", "repository", "pathmapping", "chartrepository")
        | {"repository.fetch"}
    ),
    Role.ADMIN: frozenset(
        _VIEW
        | _all(
            "cluster",
            "clustergroup",
            "repository",
            "pathmapping",
            "chartrepository",
            "commit",
            "policy",
            "policybinding",
            "waiver",
            "rollout",
            "rolebinding",
            "user",
        )
        | {"rolebinding.view", "user.view", "policypreview.add"}
    ),
}


def describe() -> list[dict[str, object]]:
    """The role table, for docs and the API."""
    return [
        {"role": role.value, "label": role.label, "permissions": sorted(ROLE_PERMISSIONS[role])}
        for role in Role
    ]
