"""Rancher Fleet ``GitRepo`` (fleet.cattle.io/v1alpha1) -> a repository, cluster groups and mappings.

Fleet's semantics, as its documentation and API types give them: ``branch`` defaults to ``master``;
``paths`` default to the repository root; each path is a bundle, deployed to every cluster one of the
``targets`` selects, the fields of one target applying together; no targets means Fleet's default target,
the cluster group ``default``. A bundle's own ``fleet.yaml`` (targetCustomizations, helm, kustomize,
dependsOn...) is read by the renderer at each commit, not here."""

from __future__ import annotations

from typing import Any

from .environment import Environment, TreeRefused, TreeUnavailable
from .model import GroupSpec, MappingSpec, Plan, RepositorySpec, Source, refuse_password, slug, walk_unknown

HANDLED_SPEC = {
    "repo", "branch", "revision", "paths", "targets", "paused", "pollingInterval", "disablePolling",
    "clientSecretName", "helmSecretName", "helmSecretNameForPaths", "webhookSecret", "correctDrift",
}
TARGET_KEYS = {"name", "clusterSelector", "clusterGroup", "clusterName", "clusterGroupSelector"}


def parse_gitrepo(doc: dict[str, Any], src: Source, env: Environment, plan: Plan) -> None:
    spec = doc.get("spec") or {}
    name = src.name
    url = spec.get("repo")
    if not isinstance(url, str) or not url:
        plan.skip(src, "spec.repo", "a GitRepo needs spec.repo")
        return
    refuse_password(url, src)
    branch = spec.get("branch") or "master"
    if spec.get("revision"):
        plan.unsupported_(src, "spec.revision", f"pinned to {spec['revision']!r}: Fleetgate follows the head "
                          f"of a branch; imported as branch {branch!r}")
    for key in ("clientSecretName", "helmSecretName", "helmSecretNameForPaths", "webhookSecret"):
        if spec.get(key):
            use = {"clientSecretName": "git credentials (set token or SSH key on the repository)",
                   "helmSecretName": "Helm repository credentials",
                   "helmSecretNameForPaths": "Helm repository credentials per path",
                   "webhookSecret": "webhook secret (rotate one on the repository)"}[key]
            plan.secret(src, f"spec.{key}", str(spec[key]), use)
    walk_unknown(plan, src, spec, HANDLED_SPEC, "spec")
    poll: int | None = None
    if spec.get("disablePolling"):
        poll = 0
    elif spec.get("pollingInterval"):
        poll = _seconds(spec["pollingInterval"])
        if poll is None:
            plan.unsupported_(src, "spec.pollingInterval",
                              f"cannot read duration {spec['pollingInterval']!r}")
    repo = plan.add_repository(RepositorySpec(slug(name), url, branch, poll, str(src)))
    paths = spec.get("paths") or ["."]
    if not isinstance(paths, list):
        plan.skip(src, "spec.paths", "must be a list of paths")
        return
    correct = spec.get("correctDrift") or {}
    heal = True if isinstance(correct, dict) and correct.get("enabled") else None
    groups = _targets(spec, src, env, plan, heal)
    if heal and any(g.existing for g in groups):
        plan.note(src, "spec.correctDrift",
                  "self-heal is a setting of the group: existing groups keep theirs")
    for raw in paths:
        for path in _bundles(env, url, branch, str(raw).strip().strip("/") or ".", src, plan):
            for i, group in enumerate(groups):
                mname = slug(name, "" if path == "." else path, str(i + 1) if len(groups) > 1 else "")
                plan.add_mapping(MappingSpec(mname, repo.name, path, group.name,
                                             enabled=not spec.get("paused"), source=str(src)))
    if spec.get("paused"):
        plan.note(src, "spec.paused", "imported as disabled mappings (nothing is rendered or synced "
                  "until enabled)")
    if len(groups) > 1:
        plan.note(src, "spec.targets", "one mapping per path and target: a cluster two targets select "
                  "receives the bundle from both mappings (Fleet deploys it once)")


BUNDLE_FILES = ("fleet.yaml", "fleet.yml")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _bundles(env: Environment, url: str, branch: str, path: str, src: Source, plan: Plan) -> list[str]:
    """The bundles Fleet makes of one GitRepo path: every directory under it holding a ``fleet.yaml`` (or a
    chart not inside another one) is a bundle of its own, left out of its parent's; the path itself is one
    when it holds a fleet.yaml or files of its own (or nothing else is found)."""
    if env.tree is None:
        return [path]
    try:
        _, tree = env.tree(url, branch)
    except TreeRefused as exc:
        raise TreeRefused(f"{src.at()}: spec.repo: {exc.message}", kind=exc.kind, field="documents") from None
    except TreeUnavailable as exc:
        plan.note(src, "spec.paths", f"the repository could not be read ({exc}): nested bundles (directories "
                  "with their own fleet.yaml) were not looked for")
        return [path]
    root = tree / path if path != "." else tree
    if not root.is_dir():
        plan.skip(src, "spec.paths", f"{path!r} is not a directory on branch {branch!r}")
        return []
    found: list[str] = []
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        rel = d.relative_to(tree)
        if any(part.startswith(".") for part in rel.parts):
            continue
        inside = [d.relative_to(root).parents[i] for i in range(len(d.relative_to(root).parts) - 1)]
        in_chart = (root / "Chart.yaml").is_file() or any((root / a / "Chart.yaml").is_file() for a in inside)
        if any((d / f).is_file() for f in BUNDLE_FILES) or ((d / "Chart.yaml").is_file() and not in_chart):
            found.append(str(rel))
    own = any((root / f).is_file() for f in BUNDLE_FILES) or (root / "Chart.yaml").is_file() or any(
        f.is_file() and f.suffix in MANIFEST_SUFFIXES and not any(
            str(f.relative_to(tree)).startswith(b + "/") for b in found)
        for f in root.rglob("*") if not any(part.startswith(".") for part in f.relative_to(tree).parts))
    if found:
        plan.note(src, "spec.paths", f"{path}: bundles of their own (own fleet.yaml or chart): "
                  + ", ".join(found))
    return ([path] if own or not found else []) + found


def _targets(spec: dict[str, Any], src: Source, env: Environment, plan: Plan, heal: bool | None
             ) -> list[GroupSpec]:
    targets = spec.get("targets")
    if not targets:
        targets = [{"name": "default", "clusterGroup": "default"}]
        plan.note(src, "spec.targets", "none given: Fleet's default target, the cluster group 'default'")
    groups: list[GroupSpec] = []
    for i, target in enumerate(targets):
        where = f"spec.targets[{i}]"
        if not isinstance(target, dict):
            plan.skip(src, where, "a target must be an object")
            continue
        walk_unknown(plan, src, target, TARGET_KEYS, where)
        tname = str(target.get("name") or f"target-{i + 1}")
        keys = {k for k in ("clusterSelector", "clusterGroup", "clusterName", "clusterGroupSelector")
                if target.get(k) is not None}
        if "clusterGroupSelector" in keys:
            groups.extend(_group_selector(target["clusterGroupSelector"], keys, where, src, env, plan))
            continue
        if "clusterGroup" in keys:
            if keys != {"clusterGroup"}:
                plan.skip(src, where, "clusterGroup combined with clusterName/clusterSelector cannot be "
                          "expressed as one Fleetgate group; target not imported")
                continue
            gname = str(target["clusterGroup"])
            if gname not in env.groups:
                plan.skip(src, f"{where}.clusterGroup", f"no cluster group named {gname!r} in Fleetgate; "
                          "create it first")
                continue
            groups.append(plan.add_group(GroupSpec(gname, existing=True, source=str(src))))
            continue
        selector = target.get("clusterSelector")
        if selector is not None and not isinstance(selector, dict):
            plan.skip(src, f"{where}.clusterSelector", "must be a label selector")
            continue
        if "clusterName" in keys:
            cname = str(target["clusterName"])
            cluster = env.cluster_by_name(cname)
            if cluster is None:
                plan.skip(src, f"{where}.clusterName", f"no cluster named {cname!r} in Fleetgate")
                continue
            if selector is not None and cluster not in env.matching(selector):
                plan.skip(src, where, f"cluster {cname!r} does not match the target's clusterSelector: "
                          "the target selects nothing")
                continue
            groups.append(plan.add_group(GroupSpec(slug(src.name, tname), include=[cname], self_heal=heal,
                                                   source=str(src))))
            continue
        if selector is None:
            plan.skip(src, where, "a target without clusterSelector, clusterGroup or clusterName")
            continue
        groups.append(plan.add_group(GroupSpec(slug(src.name, tname), selector=_selector(selector),
                                               self_heal=heal,
                                               source=str(src))))
    return groups


def _group_selector(selector: Any, keys: set[str], where: str, src: Source, env: Environment, plan: Plan
                    ) -> list[GroupSpec]:
    """Fleet's clusterGroupSelector selects ClusterGroups by their own labels: the target's clusters are the
    members of every group it matches.  A Fleetgate mapping goes to one group, so the target becomes one
    mapping per matching existing group (each keeps its own rollout settings).  Matched now: a group
    labelled later is not added (import again), unlike Fleet, which keeps matching."""
    setting = f"{where}.clusterGroupSelector"
    if keys != {"clusterGroupSelector"}:
        plan.skip(src, where, "clusterGroupSelector combined with clusterName/clusterSelector/clusterGroup "
                  "cannot be expressed as Fleetgate groups; target not imported")
        return []
    if not isinstance(selector, dict):
        plan.skip(src, setting, "must be a label selector")
        return []
    matched = env.groups_matching(selector)
    if not matched:
        plan.skip(src, setting, "no cluster group (that you can see) has labels it matches; label the groups "
                  "(a group's labels), then import again; target not imported")
        return []
    plan.note(src, setting, f"matches the groups {', '.join(matched)} by their labels: one mapping per "
              "group; a group labelled later does not join (import again)")
    return [plan.add_group(GroupSpec(name, existing=True, source=str(src))) for name in matched]


def _selector(selector: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in selector.items() if k in ("matchLabels", "matchExpressions") and v}


def _seconds(text: Any) -> int | None:
    """A Go duration (``15s``, ``1m``, ``1h30m``) in seconds."""
    import re

    if isinstance(text, int):
        return text
    parts = re.findall(r"(\d+)(h|m|s)", str(text))
    if not parts or "".join(a + b for a, b in parts) != str(text):
        return None
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
