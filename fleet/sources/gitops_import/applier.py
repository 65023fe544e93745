"""Apply a Plan for a user: create what is missing, reuse what exists, in one transaction.

Every object goes through the doors the API uses: repositories and mappings through the one audited save
(``fleet.access.writes.save_in_scope``: the user must hold ``repository.add`` on all clusters, or
``pathmapping.add`` in the mapping's group), groups through ``clusters.membership_guard.save_group``,
mappings through ``PathMapping.full_clean`` (the tenant allow-list: ``clusters.tenancy.check_mapping_source``)
and ``fleet.sources.services.dependencies.check_dependencies``. A refusal anywhere rolls everything back.
A dry run does all of it, then rolls back: it shows exactly what an import would create, and refuses what
it would refuse. Importing the same documents again finds everything and creates nothing."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from clusters import membership_guard
from clusters.models import Cluster, ClusterGroup
from fleet.access.restrict import groups_where, restrict
from fleet.access.writes import save_in_scope
from fleet.audit.services import record
from fleet.core.errors import ErrorKind
from fleet.sources.models import PathMapping, Repository
from fleet.sources.services.dependencies import check_dependencies, lock_dependency_graph

from .environment import ClusterInfo, Environment, HomeRepository, RemoteTrees
from .model import GroupSpec, ImportError_, MappingSpec, Plan, RepositorySpec, same_url, unique
from .planner import make_plan, option_field

COMPARED = ("path", "renderer", "values", "target_namespace", "enabled", "postbuild")


@dataclass
class Outcome:
    dry_run: bool
    plan: Plan
    created: dict[str, list[str]] = field(
        default_factory=lambda: {"repositories": [], "groups": [], "mappings": []})
    existing: dict[str, list[str]] = field(
        default_factory=lambda: {"repositories": [], "groups": [], "mappings": []})
    conflicts: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return not any(self.created.values())

    def message(self) -> str:
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.created.items())
        verb = "would create" if self.dry_run else "created"
        if self.nothing_new:
            return "nothing new: everything in these documents is already imported" + (
                f" ({len(self.conflicts)} conflict(s))" if self.conflicts else "")
        return f"{verb} {counts}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "message": self.message(),
            "nothing_new": self.nothing_new,
            "created": self.created,
            "existing": self.existing,
            "conflicts": self.conflicts,
            **self.plan.to_dict(),
        }


def environment(user: Any, target_group: str = "", *, trees: Any = None, repository: str = "") -> Environment:
    """The clusters and groups the user can see (an import never names what it cannot), the target group
    and the repository for the mappings of charts that name no Git repository (one the user can see)."""
    clusters = [ClusterInfo(c.name, c.api_url, dict(c.labels or {}))
                for c in _visible(Cluster.objects.order_by("name"), user)]
    visible_groups = list(_visible(ClusterGroup.objects.prefetch_related("members"), user))
    groups = {g.name: [m.name for m in g.members.all()] for g in visible_groups}
    group_labels = {g.name: dict(g.labels or {}) for g in visible_groups}
    if target_group and target_group not in groups:
        raise ImportError_(f"no cluster group named {target_group!r} (or not one you can see)", field="group")
    home = None
    if repository:
        repo = _visible(Repository.objects.filter(name=repository), user).first()
        if repo is None:
            raise ImportError_(f"no repository named {repository!r} (or not one you can see)",
                               field="repository")
        home = HomeRepository(repo.name, repo.url, repo.branch)
    return Environment(clusters=clusters, groups=groups, group_labels=group_labels, target_group=target_group,
                       tree=trees, home=home)


def _visible(queryset: Any, user: Any) -> Any:
    return queryset if user is None else restrict(queryset, user, "view")


def import_gitops(user: Any, files: Sequence[tuple[str, str | bytes]], *, target_group: str = "",
                  dry_run: bool = False, repository: str = "") -> Outcome:
    """Plan and apply (see the module docstring). ``files``: (name, YAML text) pairs. ``user`` None: a
    system import (``manage.py import_gitops`` without ``--user``), recorded but not scope-checked."""
    if user is not None and groups_where(user, PathMapping, "add").nowhere:
        raise ImportError_("You may not create path mappings in any cluster group.", kind=ErrorKind.FORBIDDEN)
    trees = RemoteTrees(user)  # checks each URL, and the user's right to have it read, before fetching
    try:
        plan = make_plan(files, environment(user, target_group, trees=trees, repository=repository))
    finally:
        trees.close()
    outcome = Outcome(dry_run=dry_run, plan=plan)
    with transaction.atomic():
        _Applier(user, plan, outcome).run()
        record("gitops.import", after={
            "dry_run": dry_run, "files": [name for name, _ in files],
            "created": outcome.created, "conflicts": outcome.conflicts,
            "unsupported": len(plan.unsupported), "secrets": [s.name for s in plan.secrets],
        }, message=("dry run: " if dry_run else "") + outcome.message())
        if dry_run:
            transaction.set_rollback(True)
    return outcome


class _Applier:
    def __init__(self, user: Any, plan: Plan, outcome: Outcome) -> None:
        self.user, self.plan, self.outcome = user, plan, outcome
        self.repos: dict[str, Repository] = {}
        self.groups: dict[str, ClusterGroup] = {}
        self.mappings: dict[tuple[str, str], PathMapping] = {}  # (plan repo name, plan mapping name)

    def run(self) -> None:
        for spec in self.plan.repositories:
            self.repos[spec.name] = self._repository(spec)
        for g in self.plan.groups:
            self.groups[g.name] = self._group(g)
        for m in self._ordered(self.plan.mappings):
            self._mapping(m)

    # ------------------------------------------------------------- repositories

    def _repository(self, spec: RepositorySpec) -> Repository:
        for repo in Repository.objects.all():
            if same_url(repo.url, spec.url) and repo.branch == spec.branch:
                self.outcome.existing["repositories"].append(repo.name)
                return repo
        name = unique(spec.name, set(Repository.objects.values_list("name", flat=True)))
        repo = Repository(name=name, url=spec.url, branch=spec.branch)
        if spec.poll_interval is not None:
            repo.poll_interval = spec.poll_interval
        _clean(repo, f"repository {name}")

        def save() -> Repository:
            repo.save()
            return repo

        save_in_scope(self.user, save, before=None)
        self.outcome.created["repositories"].append(name)
        return repo

    # ------------------------------------------------------------- groups

    def _group(self, spec: GroupSpec) -> ClusterGroup:
        if spec.existing:
            group = _visible(ClusterGroup.objects.filter(name=spec.name), self.user).first()
            if group is None:
                raise ImportError_(f"no cluster group named {spec.name!r}", field="group")
            self.outcome.existing["groups"].append(group.name)
            return group
        include = list(Cluster.objects.filter(name__in=spec.include))
        wanted = (spec.selector or {}, sorted(spec.include))
        for group in ClusterGroup.objects.prefetch_related("include", "exclude"):
            if (group.selector or {}, sorted(c.name for c in group.include.all())) == wanted \
                    and not group.exclude.all() and spec.prune in (None, group.prune) \
                    and spec.self_heal in (None, group.self_heal):
                self.outcome.existing["groups"].append(group.name)
                return group
        name = unique(spec.name, set(ClusterGroup.objects.values_list("name", flat=True)))
        group = ClusterGroup(name=name, selector=spec.selector or {},
                             description=f"imported from {spec.source}"[:200])
        if spec.prune is not None:
            group.prune = spec.prune
        if spec.self_heal is not None:
            group.self_heal = spec.self_heal
        _clean(group, f"cluster group {name}")

        def save() -> ClusterGroup:
            group.save()
            group.include.set(include)
            return group

        if self.user is None:  # a system import: recorded, not scope-checked
            saved = save_in_scope(None, save, before=None)
        else:
            saved = membership_guard.save_group(self.user, None, save, name=name, selector=group.selector,
                                                include=include, exclude=[])
        self.outcome.created["groups"].append(name)
        return saved

    # ------------------------------------------------------------- mappings

    def _ordered(self, specs: list[MappingSpec]) -> list[MappingSpec]:
        """Dependencies first (within one repository), so that each mapping is saved with its depends_on."""
        by_name = {(m.repository, m.name): m for m in specs}
        graph = {(m.repository, m.name): {(m.repository, d) for d in m.depends_on
                                          if (m.repository, d) in by_name} for m in specs}
        try:
            order = list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = " -> ".join(f"{r}/{n}" for r, n in reversed(exc.args[1]))
            raise ImportError_(f"dependency cycle: {cycle}", field="documents") from None
        return [by_name[k] for k in order]

    def _mapping(self, spec: MappingSpec) -> None:
        repo = self.repos[spec.repository]
        group = self.groups[spec.group]
        fields: dict[str, Any] = {
            "path": spec.path, "renderer": spec.renderer, "values": spec.values,
            "target_namespace": spec.target_namespace, "enabled": spec.enabled, "postbuild": spec.postbuild,
        }
        for option, value in spec.options.items():
            name = option_field(option)
            if name:
                fields[name] = value
        # the same chart (or none) of the same repository path and group; charts of one repository's path
        # are told apart by their chart, repository and release name
        same = PathMapping.objects.filter(
            repository=repo, path=spec.path, cluster_group=group, helm_chart=fields.get("helm_chart", ""),
            helm_repo=fields.get("helm_repo", ""),
            **({"helm_release_name": fields["helm_release_name"]} if fields.get("helm_chart") else {}),
        ).first()
        found = same or PathMapping.objects.filter(repository=repo, name=spec.name).first()
        if found is not None:
            differs = [f for f in fields if getattr(found, f) != fields[f]] + (
                ["cluster_group"] if found.cluster_group_id != group.pk else [])
            self.mappings[(spec.repository, spec.name)] = found
            if differs:
                self.outcome.conflicts.append(
                    f"mapping {repo.name}/{found.name} exists with other settings ({', '.join(differs)}): "
                    "left as it is")
            else:
                self.outcome.existing["mappings"].append(f"{repo.name}/{found.name}")
            return
        mapping = PathMapping(repository=repo, name=spec.name, cluster_group=group, **fields)
        _clean(mapping, f"mapping {repo.name}/{spec.name}")
        deps = self._dependencies(spec, repo)
        lock_dependency_graph()
        try:
            check_dependencies(user=self.user, mapping=None, repository_name=repo.name, name=spec.name,
                               cluster_group_id=group.pk, depends_on=deps)
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise ImportError_(f"mapping {repo.name}/{spec.name}: dependsOn: {message}",
                               kind=getattr(exc, "kind", ErrorKind.INVALID), field="documents") from None

        def save() -> PathMapping:
            mapping.save()
            if deps:
                mapping.depends_on.set(deps)
            return mapping

        save_in_scope(self.user, save, before=None)
        self.mappings[(spec.repository, spec.name)] = mapping
        self.outcome.created["mappings"].append(f"{repo.name}/{spec.name}")

    def _dependencies(self, spec: MappingSpec, repo: Repository) -> list[PathMapping]:
        deps: list[PathMapping] = []
        for name in spec.depends_on:
            dep = self.mappings.get((spec.repository, name))
            if dep is None:
                repo_name, _, mname = name.rpartition("/")
                dep = PathMapping.objects.filter(repository__name=repo_name or repo.name, name=mname).first()
            if dep is None:
                self.plan.unsupported_(spec.source, f"dependsOn {name}",
                                       "no such mapping among the imported ones or in Fleetgate")
                continue
            deps.append(dep)
        return deps


def _clean(obj: Any, what: str) -> None:
    try:
        obj.full_clean()
    except ValidationError as exc:
        details = "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in exc.message_dict.items()) \
            if hasattr(exc, "error_dict") else " ".join(exc.messages)
        raise ImportError_(f"{what}: {details}", field="documents") from None
