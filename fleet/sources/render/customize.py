"""``fleetgate.yaml``: per-path defaults and per-target customizations (like Fleet's ``fleet.yaml``).

Schema (every key optional)::

    renderer: auto | plain | kustomize | helm   # used when the mapping says "auto"
    namespace: apps                              # target namespace (forced onto namespaced objects)
    substitute: true                             # ${...} substitution in plain/Kustomize output
    kustomize:
      dir: overlays/default                      # relative to the mapped path, must stay in the repo
    helm:
      releaseName: web
      chart: web                                 # a chart outside the repository (docs/sources.md, Helm):
      repo: https://charts.example.com           #   index repository; or chart: oci://host/path/web,
      version: ^1.2.0                            #   or chart: https://host/web-1.2.0.tgz; version: exact,
      digest: sha256:...                         #   a constraint or empty (newest); digest pins it
      values: {replicas: 2}
      valuesFiles: [values-common.yaml]          # relative to the mapped path; excluded from plain rendering
    patches: [...]                               # as below, applied to every target
    dependsOn:                                   # mappings synced and healthy on a cluster first
      - crds                                     #   a mapping of the same repository
      - infra/namespaces                         #   repository/mapping
      - name: operators                          #   Fleet/Flux form; repository: optional
        repository: infra
    targetCustomizations:                        # first match wins
      - name: eu-prod
        clusterSelector:                         # Kubernetes label selector on cluster labels
          matchLabels: {region: eu}
          matchExpressions: [{key: env, operator: In, values: [prod]}]
        clusterName: prod-eu-1                   # and/or an exact cluster name
        clusterGroup: production                 # and/or an exact group name
        namespace: apps-eu
        doNotDeploy: false                       # true: render nothing for these clusters
        kustomize: {dir: overlays/eu}
        helm: {values: {...}, valuesFiles: [values-eu.yaml], releaseName: web-eu}
        patches:
          - target: {kind: Deployment, name: web}            # also apiVersion, group, namespace,
            patch: {spec: {replicas: 3}}                     #   labelSelector (matchLabels form)
          - target: {kind: Service, name: web}
            jsonPatch: [{op: replace, path: /spec/type, value: NodePort}]

Selection: every criterion present in an entry must match (AND); an entry without any criterion is an
error; an empty ``clusterSelector: {}`` matches every cluster (Kubernetes semantics).  The first
matching entry wins and is layered over the top-level settings.

``patch`` is strategic-merge-like: mappings merge recursively, ``null`` deletes a key, a list whose
items are all mappings with a ``name`` merges item by item on ``name`` (containers, env, ports,
volumes), any other list is replaced.  ``jsonPatch`` is RFC 6902 (add, remove, replace, move, copy,
test).  A patch whose target matches no object is an error, so typos do not pass silently.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusters.labelmatch import selector_matches

from .context import ClusterContext, deep_merge
from .errors import RenderError
from .plain import directory_from_fleetgate

FLEETGATE_FILES = ("fleetgate.yaml", "fleetgate.yml")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RENDERERS = ("auto", "plain", "kustomize", "helm")

_TOP_KEYS = {"renderer", "namespace", "substitute", "kustomize", "helm", "patches", "targetCustomizations",
             "dependsOn", "directory"}  # directory: Argo CD's options for plain directories (plain.py)
_TARGET_KEYS = {"name", "clusterSelector", "clusterName", "clusterGroup", "namespace", "doNotDeploy",
                "kustomize", "helm", "patches"}
_HELM_KEYS = {"releaseName", "values", "valuesFiles", "chart", "repo", "version", "digest"}
_PATCH_TARGET_KEYS = {"kind", "name", "namespace", "apiVersion", "group", "labelSelector"}


@dataclass(frozen=True)
class Patch:
    target: Mapping[str, Any]
    merge: Mapping[str, Any] | None = None
    json_patch: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Customization:
    """The effective settings for one cluster after selection."""

    renderer: str | None = None
    namespace: str | None = None
    substitute: bool = True
    kustomize_dir: str | None = None
    helm_release_name: str | None = None
    helm_values: Mapping[str, Any] = field(default_factory=dict)
    helm_values_files: tuple[str, ...] = ()
    patches: tuple[Patch, ...] = ()
    do_not_deploy: bool = False
    target_name: str | None = None  # name (or index) of the matched targetCustomization
    # Rancher Fleet's fleet.yaml (fleetbundle.py); their defaults change nothing for fleetgate.yaml
    default_namespace: str | None = None
    namespace_labels: Mapping[str, Any] = field(default_factory=dict)
    namespace_annotations: Mapping[str, Any] = field(default_factory=dict)
    create_namespace: bool = True
    delete_namespace: bool = False
    yaml_overlays: tuple[str, ...] = ()
    helm_chart: str | None = None
    helm_repo: str | None = None
    helm_version: str | None = None
    helm_digest: str | None = None  # pins a chart from outside the repository (fleetgate.yaml helm.digest)
    compare_patches: tuple[Mapping[str, Any], ...] = ()
    paused: bool = False
    notes: tuple[str, ...] = ()  # keys read but not honoured, reported as render warnings
    source_format: str = "fleetgate"  # or "fleet"
    origin: str | None = None  # the file the settings come from (fleet.yaml's path, for sources and errors)


@dataclass(frozen=True)
class FleetgateFile:
    data: Mapping[str, Any]
    file: str  # repository-relative path of the fleetgate.yaml, for errors

    def all_values_files(self) -> set[str]:
        files: set[str] = set()
        for block in [self.data.get("helm") or {}] + [t.get("helm") or {} for t in self._targets()]:
            files.update(block.get("valuesFiles") or [])
        return files

    def depends_on(self) -> tuple[str, ...]:
        """The ``dependsOn`` entries as ``mapping`` or ``repository/mapping`` (checked by parse_fleetgate)."""
        return tuple(_dependency(item) for item in self.data.get("dependsOn") or ())

    def _targets(self) -> list[Mapping[str, Any]]:
        return list(self.data.get("targetCustomizations") or [])

    def select(self, cluster: ClusterContext) -> Customization:
        top = self.data
        chosen: Mapping[str, Any] = {}
        chosen_name: str | None = None
        for i, target in enumerate(self._targets()):
            if _target_matches(target, cluster, self.file, i):
                chosen = target
                chosen_name = str(target.get("name") or f"#{i}")
                break
        top_helm = top.get("helm") or {}
        t_helm = chosen.get("helm") or {}
        values = deep_merge(top_helm.get("values") or {}, t_helm.get("values") or {})
        files = tuple(top_helm.get("valuesFiles") or ()) + tuple(t_helm.get("valuesFiles") or ())
        patches = tuple(_patches(top.get("patches"), self.file)) + tuple(
            _patches(chosen.get("patches"), self.file))
        return Customization(
            renderer=top.get("renderer"),
            namespace=chosen.get("namespace") or top.get("namespace"),
            substitute=bool(top.get("substitute", True)),
            kustomize_dir=((chosen.get("kustomize") or {}).get("dir")
                           or (top.get("kustomize") or {}).get("dir")),
            helm_release_name=t_helm.get("releaseName") or top_helm.get("releaseName"),
            helm_chart=t_helm.get("chart") or top_helm.get("chart"),
            helm_repo=t_helm.get("repo") or top_helm.get("repo"),
            helm_version=_version(t_helm.get("version") or top_helm.get("version")),
            helm_digest=t_helm.get("digest") or top_helm.get("digest"),
            helm_values=values,
            helm_values_files=files,
            patches=patches,
            do_not_deploy=bool(chosen.get("doNotDeploy", False)),
            target_name=chosen_name,
        )


def _version(value: Any) -> str | None:
    """``version: 1.2`` is read by YAML as a number: the text is meant."""
    return None if value is None else str(value)


def _err(file: str, msg: str) -> RenderError:
    return RenderError(msg, file=file)


def _check_str(value: Any, what: str, file: str) -> None:
    if value is not None and not isinstance(value, str):
        raise _err(file, f"{what} must be a string")


def parse_fleetgate(data: Any, file: str) -> FleetgateFile:
    """Validate a parsed fleetgate.yaml; RenderError with the file for every mistake."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _err(file, "fleetgate.yaml must be a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        allowed = ", ".join(sorted(_TOP_KEYS))
        raise _err(file, f"unknown key(s) {', '.join(sorted(unknown))} (allowed: {allowed})")
    if data.get("renderer") is not None and data["renderer"] not in RENDERERS:
        raise _err(file, f"renderer must be one of {', '.join(RENDERERS)}")
    _check_str(data.get("namespace"), "namespace", file)
    _check_block(data, file, "")
    _check_depends_on(data.get("dependsOn"), file)
    directory_from_fleetgate(data.get("directory"), file)
    targets = data.get("targetCustomizations") or []
    if not isinstance(targets, list):
        raise _err(file, "targetCustomizations must be a list")
    for i, t in enumerate(targets):
        where = f"targetCustomizations[{i}]"
        if not isinstance(t, Mapping):
            raise _err(file, f"{where} must be a mapping")
        unknown = set(t) - _TARGET_KEYS
        if unknown:
            raise _err(file, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if not any(k in t for k in ("clusterSelector", "clusterName", "clusterGroup")):
            raise _err(file, f"{where}: needs clusterSelector, clusterName or clusterGroup")
        _check_str(t.get("clusterName"), f"{where}.clusterName", file)
        _check_str(t.get("clusterGroup"), f"{where}.clusterGroup", file)
        _check_str(t.get("namespace"), f"{where}.namespace", file)
        if "clusterSelector" in t:
            _check_selector(t["clusterSelector"], f"{where}.clusterSelector", file)
        _check_block(t, file, where + ".")
    return FleetgateFile(data, file)


def _dns_label(value: Any) -> bool:
    return isinstance(value, str) and bool(_DNS_LABEL.match(value))


def _dependency(item: Any) -> str:
    if isinstance(item, str):
        return item
    repo = item.get("repository")
    return f"{repo}/{item['name']}" if repo else str(item["name"])


def _check_depends_on(raw: Any, file: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _err(file, "dependsOn must be a list of mapping names")
    for i, item in enumerate(raw):
        where = f"dependsOn[{i}]"
        if isinstance(item, Mapping):
            if "selector" in item:
                raise _err(file, f"{where}: a label selector is not supported here; name the mapping")
            if set(item) - {"name", "repository"} or "name" not in item:
                raise _err(file, f"{where} takes name and an optional repository")
            if not _dns_label(item["name"]) or ("repository" in item and not _dns_label(item["repository"])):
                raise _err(file, f"{where}: name and repository must be DNS labels (lower case, digits, '-')")
        elif isinstance(item, str):
            parts = item.split("/")
            if len(parts) > 2 or not all(_dns_label(p) for p in parts):
                raise _err(file, f"{where}: '{item}' is not a mapping name or repository/mapping")
        else:
            raise _err(file, f"{where} must be a mapping name or {{name, repository}}")


def _check_block(block: Mapping[str, Any], file: str, where: str) -> None:
    k = block.get("kustomize")
    if k is not None:
        if not isinstance(k, Mapping) or set(k) - {"dir"}:
            raise _err(file, f"{where}kustomize must be a mapping with 'dir'")
        _check_str(k.get("dir"), f"{where}kustomize.dir", file)
    h = block.get("helm")
    if h is not None:
        if not isinstance(h, Mapping) or set(h) - _HELM_KEYS:
            raise _err(file, f"{where}helm may only have {', '.join(sorted(_HELM_KEYS))}")
        if h.get("values") is not None and not isinstance(h["values"], Mapping):
            raise _err(file, f"{where}helm.values must be a mapping")
        vf = h.get("valuesFiles")
        if vf is not None and (not isinstance(vf, list) or not all(isinstance(x, str) for x in vf)):
            raise _err(file, f"{where}helm.valuesFiles must be a list of paths")
        _check_str(h.get("releaseName"), f"{where}helm.releaseName", file)
        for key in ("chart", "repo", "digest"):
            _check_str(h.get(key), f"{where}helm.{key}", file)
        if h.get("version") is not None and not isinstance(h["version"], str | int | float):
            raise _err(file, f"{where}helm.version must be a string")
    list(_patches(block.get("patches"), file, where))


def _check_selector(sel: Any, where: str, file: str) -> None:
    if not isinstance(sel, Mapping) or set(sel) - {"matchLabels", "matchExpressions"}:
        raise _err(file, f"{where} must have only matchLabels and matchExpressions")
    ml = sel.get("matchLabels") or {}
    if not isinstance(ml, Mapping):
        raise _err(file, f"{where}.matchLabels must be a mapping")
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str):
            raise _err(file, f"{where}.matchExpressions[{i}] needs a key")
        op = expr.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise _err(file, f"{where}.matchExpressions[{i}].operator must be In, NotIn, Exists "
                             "or DoesNotExist")
        vals = expr.get("values")
        if op in ("In", "NotIn") and (not isinstance(vals, list) or not vals):
            raise _err(file, f"{where}.matchExpressions[{i}] with {op} needs a non-empty values list")
        if op in ("Exists", "DoesNotExist") and vals:
            raise _err(file, f"{where}.matchExpressions[{i}] with {op} takes no values")


def _target_matches(target: Mapping[str, Any], cluster: ClusterContext, file: str, index: int) -> bool:
    if "clusterName" in target and target["clusterName"] != cluster.name:
        return False
    if "clusterGroup" in target and target["clusterGroup"] != cluster.group:
        return False
    sel = target.get("clusterSelector")
    return not ("clusterSelector" in target and not selector_matches(sel or {}, cluster.labels))


def _patches(raw: Any, file: str, where: str = "") -> list[Patch]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _err(file, f"{where}patches must be a list")
    out: list[Patch] = []
    for i, p in enumerate(raw):
        w = f"{where}patches[{i}]"
        if not isinstance(p, Mapping) or not isinstance(p.get("target"), Mapping):
            raise _err(file, f"{w} needs a target mapping")
        if set(p["target"]) - _PATCH_TARGET_KEYS or not p["target"]:
            raise _err(file, f"{w}.target may use {', '.join(sorted(_PATCH_TARGET_KEYS))}")
        has_merge, has_json = "patch" in p, "jsonPatch" in p
        if has_merge == has_json:
            raise _err(file, f"{w} needs exactly one of patch or jsonPatch")
        if has_merge and not isinstance(p["patch"], Mapping):
            raise _err(file, f"{w}.patch must be a mapping")
        if has_json:
            ops = p["jsonPatch"]
            if not isinstance(ops, list) or not all(isinstance(o, Mapping) and "op" in o and "path" in o
                                                    for o in ops):
                raise _err(file, f"{w}.jsonPatch must be a list of operations with op and path")
        out.append(Patch(p["target"], p.get("patch"), p.get("jsonPatch")))
    return out


# --------------------------------------------------------------------------- applying patches


def patch_target_matches(target: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    checks = (
        ("kind", obj.get("kind")),
        ("name", meta.get("name")),
        ("namespace", meta.get("namespace")),
        ("apiVersion", api_version),
        ("group", group),
    )
    for key, actual in checks:
        if key in target and target[key] != actual:
            return False
    if "labelSelector" in target:
        sel = target["labelSelector"]
        if isinstance(sel, Mapping) and "matchLabels" not in sel and "matchExpressions" not in sel:
            sel = {"matchLabels": sel}
        if not selector_matches(sel, meta.get("labels") or {}):
            return False
    return True


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, Mapping):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base)
            and all(isinstance(x, Mapping) and "name" in x for x in patch)):
        merged = list(base)
        index = {x["name"]: i for i, x in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(dict(item)))
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for p in parts[:-1]:
        if isinstance(node, dict):
            if p not in node:
                raise ValueError(f"path element {p!r} does not exist")
            node = node[p]
        elif isinstance(node, list):
            node = node[_index(node, p, allow_end=False)]
        else:
            raise ValueError(f"cannot descend into a scalar at {p!r}")
    return node, parts[-1]


def _index(lst: list[Any], p: str, *, allow_end: bool) -> int:
    if p == "-" and allow_end:
        return len(lst)
    if not p.isdigit() or (len(p) > 1 and p.startswith("0")):
        raise ValueError(f"invalid list index {p!r}")
    i = int(p)
    if i > len(lst) or (i == len(lst) and not allow_end):
        raise ValueError(f"list index {i} out of range")
    return i


def _get(doc: Any, path: str) -> Any:
    node = doc
    for p in _pointer(path):
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list):
            node = node[_index(node, p, allow_end=False)]
        else:
            raise ValueError(f"path {path!r} does not exist")
    return node


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise ValueError("cannot remove the whole document")
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise ValueError(f"path {path!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise ValueError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any, *, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ValueError(f"path {path!r} does not exist")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, allow_end=False)] = copy.deepcopy(value)
        else:
            parent.insert(_index(parent, last, allow_end=True), copy.deepcopy(value))
    else:
        raise ValueError(f"path {path!r} does not exist")
    return doc


def json_patch(doc: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 on a copy of ``doc``.  Raises ValueError with the failing operation."""
    doc = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        kind, path = op.get("op"), op.get("path")
        try:
            if not isinstance(path, str):
                raise ValueError("path must be a string")
            if kind == "add":
                doc = _add(doc, path, op.get("value"))
            elif kind == "remove":
                _remove(doc, path)
            elif kind == "replace":
                doc = _add(doc, path, op.get("value"), replace=True)
            elif kind in ("move", "copy"):
                src = op.get("from")
                if not isinstance(src, str):
                    raise ValueError("needs 'from'")
                value = _remove(doc, src) if kind == "move" else copy.deepcopy(_get(doc, src))
                doc = _add(doc, path, value)
            elif kind == "test":
                if _get(doc, path) != op.get("value"):
                    raise ValueError(f"test failed at {path!r}")
            else:
                raise ValueError(f"unknown op {kind!r}")
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"jsonPatch[{i}] {kind} {path}: {exc}") from None
    return doc
