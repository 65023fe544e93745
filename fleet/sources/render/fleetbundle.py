"""Rancher Fleet's ``fleet.yaml`` (the bundle spec), read natively.

A mapped directory holding ``fleet.yaml`` (or ``fleet.yml``) is read as Fleet reads a bundle directory: the
file is never a manifest, and every key of Fleet's ``FleetYAML`` (``pkg/apis/fleet.cattle.io/v1alpha1``:
``fleetyaml.go``, ``bundle_types.go``, ``bundledeployment_types.go``) is known here.  Each key is either

* **honoured**: ``namespace`` (forced onto namespaced objects), ``defaultNamespace``, ``namespaceLabels`` /
  ``namespaceAnnotations`` (a ``Namespace`` object carrying them, never pruned unless ``deleteNamespace``),
  ``createNamespace: false`` (no such object), ``helm.values``, ``helm.valuesFiles`` (Fleet's order: a
  block's files over its values), ``helm.valuesFrom`` (a ConfigMap/Secret found among the YAML files of the
  mapped directory; otherwise a named error), ``helm.releaseName``, ``helm.chart`` (a local directory; a
  remote chart goes to the Helm chart fetcher when there is one), ``helm.repo`` / ``helm.version``,
  ``helm.disablePreProcess``, ``helm.takeOwnership`` (Fleetgate never checks Helm ownership),
  ``kustomize.dir``, ``yaml.overlays`` (``overlays/<name>/`` files replace, ``*_patch.*`` files patch),
  ``targetCustomizations`` (``clusterName``, ``clusterGroup``, ``clusterSelector``, ``clusterGroupSelector``;
  first match wins, or ``targetCustomizationMode: AllMatches``), ``doNotDeploy``, ``diff.comparePatches``
  (``remove`` operations and ``jsonPointers``: not drift), ``dependsOn`` (bundle ``name`` or ``selector``),
  ``paused`` (rendered, not rolled out), ``name`` / ``labels`` (what ``dependsOn`` of other bundles match),
  ``rolloutStrategy`` (the mapping's rollouts: batches and halt threshold, ``fleetrollout.py``);
* **accepted at its default** (``force: false``, ``timeoutSeconds: 0``, ``chart: ""`` ...), silently;
* or **reported by name**: a warning on the render result (commit page, API, ``manage.py render``) saying
  what Fleetgate does instead (``rolloutStrategy.maxNew``, ``helm.atomic``, ``keepResources``,
  ``correctDrift``, ``imageScans``, ``overrideTargets``...).  An unknown key is reported too, never
  silently dropped.

Values may use Fleet's templating (``${ .ClusterName }``, ``${ .ClusterLabels.env }``,
``${ index .ClusterLabels "topology.kubernetes.io/zone" }``, ``.ClusterNamespace``, ``.ClusterValues.x``);
those forms are translated, any other ``${ .Cluster... }`` template is a RenderError naming it.
A directory with both ``fleet.yaml`` and ``fleetgate.yaml`` is refused (RenderError): one file decides.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clusters.labelmatch import selector_matches

from .context import ClusterContext, deep_merge
from .customize import Customization, Patch, _check_selector
from .errors import RenderError
from .fleetrollout import check_strategy

FLEET_FILES = ("fleet.yaml", "fleet.yml")
COMPARE_ANNOTATION = "fleetgate.io/compare-ignore"  # JSON list of JSON pointers; ["*"] ignores the object
PRUNE_DISABLED = {"fleetgate.io/prune": "disabled"}
VALUES_FROM_KEY = "values.yaml"  # Fleet's default key of a valuesFrom ConfigMap/Secret
_RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_BUNDLE_STATES = ("Ready", "NotReady", "WaitApplied", "ErrApplied", "OutOfSync", "Pending", "Modified")

# Keys that take effect elsewhere, or not at all, in Fleetgate: reported when not at their default.
_REPORTED: dict[str, str] = {
    "targets": "the clusters are the mapping's cluster group; fleet.yaml targets are not used",
    "overrideTargets": "the clusters are the mapping's cluster group; overrideTargets is not used",
    "imageScans": "image scans (writing image tags back to Git) are not supported",
    "serviceAccount": "syncs use the cluster's credentials (a restricted group's allow-list can impersonate)",
    "keepResources": "what leaves Git is pruned as the group's prune setting says",
    "deleteCRDResources": "CRDs are pruned like other objects when the group prunes",
    "correctDrift": "drift is reported; re-applying it is the group's self_heal setting",
    "ignore": "health conditions are not ignored: health is judged on every object",
    "downstreamResources": "objects are not copied from the management cluster: put them in the repository",
    "forceSyncGeneration": "every new commit syncs; to sync again, use the rollout's retry",
    "helm.timeoutSeconds": "health waits as long as the group's health_timeout_seconds",
    "helm.force": "server-side apply never deletes and recreates objects",
    "helm.atomic": "a failed sync is not rolled back by itself; roll back the rollout",
    "helm.waitForJobs": "health is judged on every object of the sync",
    "helm.maxHistory": "there is no Helm release history: Git is the history",
    "helm.disableDNS": "charts render without DNS lookups",
    "helm.skipSchemaValidation": "values are validated against the chart's schema",
    "helm.disableDependencyUpdate": "chart dependencies must be vendored in charts/ (no update either way)",
    "helm.templateValues": "templateValues are not rendered; use values with ${ .ClusterLabels.x }",
}
_INTERNAL = ("resources", "targetRestrictions", "contentsId", "helmOpOptions", "valuesHash", "overwrites",
             "allowedTargetNamespaceSelector")
_OPTION_KEYS = {"yaml", "kustomize", "defaultNamespace", "namespace", "helm", "serviceAccount",
                "createNamespace", "forceSyncGeneration", "diff", "keepResources", "deleteNamespace",
                "ignore", "correctDrift", "namespaceLabels", "namespaceAnnotations", "deleteCRDResources",
                "downstreamResources", *_INTERNAL}
_TOP_KEYS = _OPTION_KEYS | {"name", "labels", "annotations", "paused", "rolloutStrategy",
                            "targetCustomizationMode", "targets", "dependsOn", "targetCustomizations",
                            "imageScans", "overrideTargets"}
_TARGET_KEYS = _OPTION_KEYS | {"name", "clusterName", "clusterSelector", "clusterGroup",
                               "clusterGroupSelector", "doNotDeploy"}
_HELM_KEYS = {"chart", "repo", "releaseName", "version", "timeoutSeconds", "values", "templateValues",
              "valuesFrom", "valuesFiles", "force", "takeOwnership", "maxHistory", "waitForJobs", "atomic",
              "disablePreProcess", "disableDNS", "skipSchemaValidation", "disableDependencyUpdate"}
_HELM_HONOURED = {"chart", "repo", "releaseName", "version", "values", "valuesFrom", "valuesFiles",
                  "takeOwnership", "disablePreProcess"}


def _empty(value: Any) -> bool:
    """Fleet's defaults: zero values (omitempty)."""
    return value in (None, "", 0, False) or value == [] or value == {}


class FleetBundle:
    """A parsed and checked fleet.yaml; ``select(cluster)`` gives the effective Customization."""

    def __init__(self, data: Mapping[str, Any], file: str, notes: Sequence[str]) -> None:
        self.data = data
        self.file = file
        self.notes = tuple(notes)  # keys reported for every cluster

    # -- identity, for dependsOn of other bundles
    @property
    def name(self) -> str:
        return str(self.data.get("name") or "")

    @property
    def labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.data.get("labels") or {}).items()}

    def depends_on(self) -> tuple[str, ...]:
        """``dependsOn`` as strings: ``fleet:<bundle name>`` or ``fleet-selector:<JSON selector>``, resolved
        against the repository's mappings by the rendering service (``resolve_fleet_dependencies``)."""
        out = []
        for item in self.data.get("dependsOn") or ():
            if item.get("name"):
                out.append("fleet:" + str(item["name"]))
            if item.get("selector") is not None:
                out.append("fleet-selector:" + json.dumps(item["selector"], sort_keys=True))
        return tuple(out)

    @property
    def paused(self) -> bool:
        return bool(self.data.get("paused"))

    @property
    def rollout_strategy(self) -> dict[str, Any] | None:
        """The bundle's ``rolloutStrategy`` (checked), or None; mapped onto the mapping's rollouts by
        ``fleetrollout.plan_batches``."""
        value = self.data.get("rolloutStrategy")
        return dict(value) if isinstance(value, Mapping) and value else None

    def _targets(self) -> list[Mapping[str, Any]]:
        return list(self.data.get("targetCustomizations") or [])

    def all_values_files(self) -> set[str]:
        files: set[str] = set()
        for block in [self.data.get("helm") or {}] + [t.get("helm") or {} for t in self._targets()]:
            files.update(block.get("valuesFiles") or [])
        return files

    def matching(self, cluster: ClusterContext) -> list[tuple[str, Mapping[str, Any]]]:
        all_matches = self.data.get("targetCustomizationMode") == "AllMatches"
        found = []
        for i, target in enumerate(self._targets()):
            if _target_matches(target, cluster):
                found.append((str(target.get("name") or f"target{i:03d}"), target))
                if not all_matches:
                    break
        return found

    def select(self, cluster: ClusterContext,
               read_values: Callable[[str], Mapping[str, Any]] | None = None,
               values_from: Callable[[str, str, str, str], Mapping[str, Any]] | None = None) -> Customization:
        """The effective settings for ``cluster``.  ``read_values(path)`` loads a values file (relative to
        the mapped directory); ``values_from(kind, name, namespace, key)`` resolves a valuesFrom entry."""
        notes = list(self.notes)
        if not cluster.group_labels and any(t.get("clusterGroupSelector") for t in self._targets()):
            notes.append("fleet.yaml clusterGroupSelector: the cluster group "
                         f"{cluster.group or '(none)'} has no labels, so only an empty selector matches it "
                         "(give the group labels, or select by clusterGroup, the group's name)")
        matched = self.matching(cluster)
        top = self.data
        blocks: list[Mapping[str, Any]] = [top] + [t for _, t in matched]
        values: dict[str, Any] = {}
        chart = repo = version = release = None
        disable_pre = False
        compare: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
        overlays: list[str] = []
        namespace = default_ns = kdir = None
        ns_labels: dict[str, str] = {}
        ns_annotations: dict[str, str] = {}
        create_ns = True
        delete_ns = False
        do_not_deploy = False
        for n, block in enumerate(blocks):
            helm = block.get("helm") or {}
            layer = dict(helm.get("values") or {})
            for vf in helm.get("valuesFiles") or ():
                if read_values is None:
                    raise RenderError("helm.valuesFiles needs the repository", file=self.file)
                layer = deep_merge(layer, read_values(vf))  # Fleet: a block's files over its values
            values = deep_merge(values, layer)
            for i, ref in enumerate(helm.get("valuesFrom") or ()):
                kind = "ConfigMap" if ref.get("configMapKeyRef") else "Secret"
                sel = ref.get("configMapKeyRef") or ref.get("secretKeyRef") or {}
                if values_from is None:
                    raise RenderError(f"helm.valuesFrom[{i}] cannot be resolved here", file=self.file)
                values = deep_merge(values, values_from(kind, str(sel.get("name") or ""),
                                                        str(sel.get("namespace") or ""),
                                                        str(sel.get("key") or VALUES_FROM_KEY)))
            chart = helm.get("chart") or chart
            repo = helm.get("repo") or repo
            version = helm.get("version") or version
            release = helm.get("releaseName") or release
            disable_pre = disable_pre or bool(helm.get("disablePreProcess"))
            namespace = block.get("namespace") or namespace
            default_ns = block.get("defaultNamespace") or default_ns
            kdir = (block.get("kustomize") or {}).get("dir") or kdir
            overlays.extend((block.get("yaml") or {}).get("overlays") or ())
            for cp in (block.get("diff") or {}).get("comparePatches") or ():
                compare[(cp.get("apiVersion", ""), cp.get("kind", ""), cp.get("namespace", ""),
                         cp.get("name", ""))] = cp
            ns_labels.update(block.get("namespaceLabels") or {})
            ns_annotations.update(block.get("namespaceAnnotations") or {})
            if block.get("createNamespace") is False:
                create_ns = False
            delete_ns = delete_ns or bool(block.get("deleteNamespace"))
            if n > 0:
                do_not_deploy = do_not_deploy or bool(block.get("doNotDeploy"))
                notes.extend(_reported(block, f"targetCustomizations[{matched[n - 1][0]}]."))
        if not disable_pre:
            values = _fleet_templates(values, cluster, self.file)
        return Customization(
            namespace=namespace or None,
            substitute=False,  # Fleet substitutes nothing in manifests
            kustomize_dir=kdir or None,
            helm_release_name=release or None,
            helm_values=values,
            helm_values_files=(),  # already merged above, in Fleet's order
            do_not_deploy=do_not_deploy,
            target_name=",".join(name for name, _ in matched) or None,
            default_namespace=default_ns or None,
            namespace_labels=ns_labels,
            namespace_annotations=ns_annotations,
            create_namespace=create_ns,
            delete_namespace=delete_ns,
            yaml_overlays=tuple(overlays),
            helm_chart=chart or None,
            helm_repo=repo or None,
            helm_version=version or None,
            compare_patches=tuple(compare.values()),
            paused=self.paused,
            notes=tuple(dict.fromkeys(notes)),
            source_format="fleet",
            origin=self.file,
        )


def _err(file: str, msg: str) -> RenderError:
    return RenderError(msg, file=file)


def _reported(block: Mapping[str, Any], where: str) -> list[str]:
    notes = []
    for key, why in _REPORTED.items():
        head, _, sub = key.partition(".")
        value = (block.get(head) or {}).get(sub) if sub else block.get(head)
        if key == "correctDrift" and isinstance(value, Mapping) and not value.get("enabled"):
            continue
        if not _empty(value):
            notes.append(f"fleet.yaml {where}{key} is not honoured: {why}")
    for key in _INTERNAL:
        if not _empty(block.get(key)):
            notes.append(f"fleet.yaml {where}{key} is set by Fleet itself and is ignored here")
    for key in sorted(set(block) - _TOP_KEYS - _TARGET_KEYS):
        notes.append(f"fleet.yaml {where}{key}: unknown key, ignored (as Fleet ignores it)")
    helm = block.get("helm") or {}
    if isinstance(helm, Mapping):
        for key in sorted(set(helm) - _HELM_KEYS):
            notes.append(f"fleet.yaml {where}helm.{key}: unknown key, ignored (as Fleet ignores it)")
    if not _empty(block.get("annotations")) and not where:
        notes.append("fleet.yaml annotations (bundle metadata) have no effect")
    return notes


def _check_map(value: Any, where: str, file: str, *, strings: bool = True) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping) or (strings and not all(isinstance(v, (str, int, float, bool))
                                                              for v in value.values())):
        raise _err(file, f"{where} must be a mapping" + (" of strings" if strings else ""))


def _check_str(value: Any, where: str, file: str) -> None:
    if value is not None and not isinstance(value, str):
        raise _err(file, f"{where} must be a string")


def _check_bool(value: Any, where: str, file: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise _err(file, f"{where} must be true or false")


def _check_options(block: Mapping[str, Any], where: str, file: str) -> None:
    for key in ("namespace", "defaultNamespace", "serviceAccount"):
        _check_str(block.get(key), where + key, file)
    for key in ("keepResources", "deleteNamespace", "deleteCRDResources", "createNamespace", "paused",
                "doNotDeploy"):
        _check_bool(block.get(key), where + key, file)
    _check_map(block.get("namespaceLabels"), where + "namespaceLabels", file)
    _check_map(block.get("namespaceAnnotations"), where + "namespaceAnnotations", file)
    for key, sub in (("kustomize", "dir"),):
        k = block.get(key)
        if k is not None:
            if not isinstance(k, Mapping):
                raise _err(file, f"{where}{key} must be a mapping")
            _check_str(k.get(sub), f"{where}{key}.{sub}", file)
    y = block.get("yaml")
    if y is not None:
        if not isinstance(y, Mapping):
            raise _err(file, f"{where}yaml must be a mapping")
        ov = y.get("overlays")
        if ov is not None and (not isinstance(ov, list) or not all(isinstance(o, str) and o and "/" not in o
                                                                   and o not in (".", "..") for o in ov)):
            raise _err(file, f"{where}yaml.overlays must be a list of names of directories in overlays/")
    _check_helm(block.get("helm"), where + "helm", file)
    d = block.get("diff")
    if d is not None:
        if not isinstance(d, Mapping):
            raise _err(file, f"{where}diff must be a mapping")
        for i, cp in enumerate(d.get("comparePatches") or []):
            w = f"{where}diff.comparePatches[{i}]"
            if not isinstance(cp, Mapping):
                raise _err(file, f"{w} must be a mapping")
            for key in ("apiVersion", "kind", "name", "namespace"):
                _check_str(cp.get(key), f"{w}.{key}", file)
            for j, op in enumerate(cp.get("operations") or []):
                if not isinstance(op, Mapping) or op.get("op") not in ("remove", "ignore"):
                    raise _err(file, f"{w}.operations[{j}]: op must be remove or ignore (Fleet's drift "
                                     "comparison uses no other)")
                if op.get("op") == "remove" and not str(op.get("path") or "").startswith("/"):
                    raise _err(file, f"{w}.operations[{j}]: remove needs a JSON pointer path (/spec/...)")
            for j, ptr in enumerate(cp.get("jsonPointers") or []):
                if not isinstance(ptr, str) or not ptr.startswith("/"):
                    raise _err(file, f"{w}.jsonPointers[{j}] must be a JSON pointer (/spec/...)")


def _check_helm(h: Any, where: str, file: str) -> None:
    if h is None:
        return
    if not isinstance(h, Mapping):
        raise _err(file, f"{where} must be a mapping")
    for key in ("chart", "repo", "version", "releaseName"):
        if h.get(key) is not None and not isinstance(h.get(key), (str, int, float)):
            raise _err(file, f"{where}.{key} must be a string")
    release = h.get("releaseName")
    if release and (len(str(release)) > 53 or not _RELEASE_NAME.match(str(release))):
        raise _err(file, f"{where}.releaseName {release!r} is not a valid Helm release name (at most 53 "
                         "characters, lower case, digits, '-' and '.')")
    if h.get("values") is not None and not isinstance(h["values"], Mapping):
        raise _err(file, f"{where}.values must be a mapping")
    vf = h.get("valuesFiles")
    if vf is not None and (not isinstance(vf, list) or not all(isinstance(x, str) for x in vf)):
        raise _err(file, f"{where}.valuesFiles must be a list of paths")
    for i, ref in enumerate(h.get("valuesFrom") or []):
        refs = [k for k in ("configMapKeyRef", "secretKeyRef") if isinstance(ref, Mapping) and ref.get(k)]
        if len(refs) != 1 or not isinstance(ref[refs[0]], Mapping) or not ref[refs[0]].get("name"):
            raise _err(file, f"{where}.valuesFrom[{i}] needs one of configMapKeyRef or secretKeyRef "
                                 "with a name")
    for key in ("timeoutSeconds", "maxHistory"):
        if h.get(key) is not None and (not isinstance(h[key], int) or isinstance(h[key], bool)):
            raise _err(file, f"{where}.{key} must be a number")
    for key in ("force", "takeOwnership", "waitForJobs", "atomic", "disablePreProcess", "disableDNS",
                "skipSchemaValidation", "disableDependencyUpdate"):
        _check_bool(h.get(key), f"{where}.{key}", file)


def parse_fleet_yaml(data: Any, file: str) -> FleetBundle:
    """Check a parsed fleet.yaml; RenderError with the file for a value Fleet itself would refuse (wrong
    types, invalid selectors or release names, dependsOn without name or selector)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _err(file, "fleet.yaml must be a mapping")
    _check_str(data.get("name"), "name", file)
    _check_map(data.get("labels"), "labels", file)
    _check_options(data, "", file)
    mode = data.get("targetCustomizationMode")
    if mode not in (None, "", "FirstMatch", "AllMatches"):
        raise _err(file, "targetCustomizationMode must be FirstMatch or AllMatches")
    for i, dep in enumerate(data.get("dependsOn") or []):
        if not isinstance(dep, Mapping) or (not dep.get("name") and dep.get("selector") is None):
            raise _err(file, f"dependsOn[{i}]: must specify either 'name' or 'selector'")
        if dep.get("selector") is not None:
            _check_selector(dep["selector"], f"dependsOn[{i}].selector", file)
        for j, state in enumerate(dep.get("acceptedStates") or []):
            if state not in _BUNDLE_STATES:
                raise _err(file, f"dependsOn[{i}].acceptedStates[{j}]: invalid state {state!r}, valid values "
                                 f"are: {', '.join(_BUNDLE_STATES)}")
    targets = data.get("targetCustomizations") or []
    if not isinstance(targets, list):
        raise _err(file, "targetCustomizations must be a list")
    notes = _reported(data, "")
    notes.extend(check_strategy(data.get("rolloutStrategy"), file))
    if data.get("paused"):
        notes.append("fleet.yaml paused: rendered and checked, not rolled out until paused is removed")
    if any(d.get("acceptedStates") not in (None, [], ["Ready"]) for d in data.get("dependsOn") or []):
        notes.append("fleet.yaml dependsOn.acceptedStates is not honoured: a dependency must be synced and "
                     "healthy")
    for i, t in enumerate(targets):
        where = f"targetCustomizations[{i}]"
        if not isinstance(t, Mapping):
            raise _err(file, f"{where} must be a mapping")
        _check_str(t.get("name"), f"{where}.name", file)
        _check_str(t.get("clusterName"), f"{where}.clusterName", file)
        _check_str(t.get("clusterGroup"), f"{where}.clusterGroup", file)
        for key in ("clusterSelector", "clusterGroupSelector"):
            if t.get(key) is not None:
                _check_selector(t[key], f"{where}.{key}", file)
        _check_options(t, where + ".", file)
        if t.get("rolloutStrategy") is not None:
            notes.append(f"fleet.yaml {where}.rolloutStrategy is ignored: Fleet's rollout strategy is the "
                         "bundle's (at the top of fleet.yaml), a target customization has none")
        if not any(t.get(k) is not None and t.get(k) != "" for k in
                   ("clusterName", "clusterGroup", "clusterSelector", "clusterGroupSelector")):
            notes.append(f"fleet.yaml {where} has no clusterName, clusterGroup, clusterSelector or "
                         "clusterGroupSelector: it matches no cluster (as in Fleet)")
    return FleetBundle(data, file, notes)


def _target_matches(target: Mapping[str, Any], cluster: ClusterContext) -> bool:
    """Fleet's ClusterMatcher: every criterion given must match; none given matches nothing."""
    criteria = 0
    if target.get("clusterName"):
        criteria += 1
        display = cluster.labels.get("management.cattle.io/cluster-display-name")
        if target["clusterName"] not in (cluster.name, display):
            return False
    if target.get("clusterGroup"):
        criteria += 1
        if target["clusterGroup"] != cluster.group:
            return False
    if target.get("clusterGroupSelector") is not None:
        criteria += 1
        if not selector_matches(target["clusterGroupSelector"] or {}, dict(cluster.group_labels)):
            return False
    if target.get("clusterSelector") is not None:
        criteria += 1
        if not selector_matches(target["clusterSelector"] or {}, dict(cluster.labels)):
            return False
    return criteria > 0


# --------------------------------------------------------------------------- Fleet's values templating

_TEMPLATE = re.compile(r"\$\{\s*(\.[^{}]*?|index\s+[^{}]*?|get\s+[^{}]*?)\s*\}")
_INDEX = re.compile(r'^(?:index|get)\s+\.(ClusterLabels|ClusterAnnotations|ClusterValues)\s+"([^"]+)"$')


def _fleet_lookup(expr: str, cluster: ClusterContext) -> Any:
    m = _INDEX.match(expr)
    if m:
        root, key = m.group(1), m.group(2)
    elif expr == ".ClusterName":
        return cluster.name
    elif expr == ".ClusterNamespace":
        return "fleet-default"
    elif expr.startswith((".ClusterLabels.", ".ClusterAnnotations.", ".ClusterValues.")):
        root, _, key = expr[1:].partition(".")
    else:
        raise KeyError(expr)
    if root == "ClusterLabels":
        if key not in cluster.labels:
            raise KeyError(expr)
        return cluster.labels[key]
    if root == "ClusterValues":
        node: Any = cluster.values
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(expr)
            node = node[part]
        return node
    raise KeyError(expr)  # cluster annotations: Fleetgate clusters have none


def _fleet_templates(data: Any, cluster: ClusterContext, file: str, where: str = "helm.values") -> Any:
    if isinstance(data, str):
        if "${" not in data:
            return data
        whole = _TEMPLATE.fullmatch(data.strip())

        def repl(m: re.Match[str]) -> str:
            try:
                return str(_fleet_lookup(m.group(1).strip(), cluster))
            except KeyError:
                raise RenderError(f"{where}: Fleet template ${{ {m.group(1).strip()} }} cannot be "
                                  f"resolved for cluster {cluster.name} (Fleetgate knows .ClusterName, "
                                  ".ClusterLabels.KEY, "
                                  ".ClusterValues.KEY and index/get on them)", file=file) from None

        if whole:
            try:
                return _fleet_lookup(whole.group(1).strip(), cluster)
            except KeyError:
                repl(whole)
        return _TEMPLATE.sub(repl, data)
    if isinstance(data, dict):
        return {k: _fleet_templates(v, cluster, file, f"{where}.{k}") for k, v in data.items()}
    if isinstance(data, list):
        return [_fleet_templates(v, cluster, file, f"{where}[{i}]") for i, v in enumerate(data)]
    return data


# --------------------------------------------------------------------------- applying to rendered objects


def compare_ignores(patches: Sequence[Mapping[str, Any]], obj: Mapping[str, Any]) -> list[str]:
    """The JSON pointers that comparePatches exclude from drift for ``obj`` (``*``: the whole object)."""
    meta = obj.get("metadata") or {}
    out: list[str] = []
    for cp in patches:
        if ((cp.get("apiVersion") and cp["apiVersion"] != obj.get("apiVersion"))
                or (cp.get("kind") and cp["kind"] != obj.get("kind"))
                or (cp.get("name") and cp["name"] != meta.get("name"))
                or (cp.get("namespace") and cp["namespace"] != (meta.get("namespace") or ""))):
            continue
        for op in cp.get("operations") or ():
            out.append("*" if op.get("op") == "ignore" else str(op.get("path")))
        out.extend(str(p) for p in cp.get("jsonPointers") or ())
    return list(dict.fromkeys(out))


def annotate_compare(body: dict[str, Any], pointers: Sequence[str]) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    notes = dict(meta.get("annotations") or {})
    notes[COMPARE_ANNOTATION] = json.dumps(list(pointers), separators=(",", ":"))
    meta["annotations"] = notes
    return {**body, "metadata": meta}


def namespace_object(name: str, labels: Mapping[str, Any], annotations: Mapping[str, Any],
                     *, delete_namespace: bool) -> dict[str, Any]:
    """The Namespace Fleet creates for a bundle, with namespaceLabels/Annotations.  Fleet keeps it when the
    bundle goes (unless deleteNamespace), so it carries the prune opt-out."""
    notes = {str(k): str(v) for k, v in annotations.items()}
    if not delete_namespace:
        notes.update(PRUNE_DISABLED)
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = {str(k): str(v) for k, v in labels.items()}
    if notes:
        meta["annotations"] = notes
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def decode_values(kind: str, name: str, key: str, obj: Mapping[str, Any], file: str) -> Mapping[str, Any]:
    """The values in ``data[key]`` of a ConfigMap or Secret manifest (YAML text)."""
    from .yamlsafe import load_one

    text: str | None = None
    if kind == "Secret" and isinstance(obj.get("stringData"), Mapping) and key in obj["stringData"]:
        text = str(obj["stringData"][key])
    elif isinstance(obj.get("data"), Mapping) and key in obj["data"]:
        raw = str(obj["data"][key])
        if kind == "Secret":
            try:
                text = base64.b64decode(raw, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise RenderError(f"helm.valuesFrom: Secret {name} key {key!r} is not base64 text",
                                  file=file) from None
        else:
            text = raw
    if text is None:
        raise RenderError(f"helm.valuesFrom: {kind} {name} has no key {key!r}", file=file)
    data = load_one(text.encode(), file=file)
    if data is not None and not isinstance(data, Mapping):
        raise RenderError(f"helm.valuesFrom: {kind} {name} key {key!r} is not a mapping of values", file=file)
    return data or {}


# --------------------------------------------------------------------------- the engine's entry points


def load_fleet_yaml(tree: Any, directory: Any, fleetgate_files: Sequence[str]) -> FleetBundle | None:
    """The fleet.yaml (or fleet.yml) of a mapped directory; RenderError when a fleetgate.yaml sits beside it
    (two files would decide the same things: keep one)."""
    from .yamlsafe import load_one

    for name in FLEET_FILES:
        f = directory / name
        if f.is_file():
            rel = tree.rel(f)
            both = [n for n in fleetgate_files if (directory / n).is_file()]
            if both:
                raise RenderError(f"{name} and {both[0]} in the same directory: Fleetgate reads one of them; "
                                  "keep fleet.yaml (Rancher Fleet's bundle options) or move its settings "
                                  "into "
                                  f"{both[0]}", file=rel)
            return parse_fleet_yaml(load_one(tree.read_bytes(f), file=rel), rel)
    return None


def select_for(tree: Any, directory: Any, bundle: FleetBundle, cluster: ClusterContext) -> Customization:
    """``bundle.select`` with values files and valuesFrom read from the tree."""
    from .yamlsafe import load_one

    def read_values(rel: str) -> Mapping[str, Any]:
        path = tree.resolve(rel, base=directory, what="helm.valuesFiles entry", allow_parent=True)
        if not path.is_file():
            raise RenderError(f"helm.valuesFiles: {rel} is not a file", file=bundle.file)
        data = load_one(tree.read_bytes(path), file=tree.rel(path))
        if data is not None and not isinstance(data, Mapping):
            raise RenderError("a values file must be a mapping", file=tree.rel(path))
        return data or {}

    def values_from(kind: str, name: str, namespace: str, key: str) -> Mapping[str, Any]:
        for f in tree.walk(directory, skip_hidden=True):
            if not f.name.endswith(PLAIN_SUFFIXES) or f.name in FLEET_FILES or "templates" in f.parts:
                continue
            try:
                documents = tree.documents(f)
            except RenderError:
                continue
            for doc in documents:
                d = doc.data
                meta = (d.get("metadata") or {}) if isinstance(d, dict) else {}
                if (isinstance(d, dict) and d.get("kind") == kind and meta.get("name") == name
                        and (not namespace or meta.get("namespace") in (None, namespace))):
                    return decode_values(kind, name, key, d, tree.rel(f))
        where = f"{namespace}/{name}" if namespace else name
        raise RenderError(f"helm.valuesFrom: {kind} {where} is not in this mapping's files; Fleet reads "
                          "it from the cluster at deploy time, Fleetgate renders before any cluster is "
                          "touched: "
                          "add the "
                          "manifest to the mapped directory, or put the values in helm.values or valuesFiles",
                          file=bundle.file)

    return bundle.select(cluster, read_values=read_values, values_from=values_from)


def chart_entry(tree: Any, directory: Any, custom: Customization, file: str) -> Any:
    """The chart directory of the repository that ``helm.chart`` names.  A chart from a Helm repository
    (``helm.repo``), an https URL or ``oci://`` never comes here: ``helm.remote_chart`` names it and the chart
    fetcher (fleet/sources/charts) brings it."""
    chart = (custom.helm_chart or "").strip()
    path = tree.resolve(chart, base=directory, what="helm.chart", allow_parent=True)
    if (path / "Chart.yaml").is_file():
        return path
    if path.exists():
        raise RenderError(f"helm.chart {chart!r} has no Chart.yaml", file=file)
    raise RenderError(f"helm.chart {chart!r} is not a directory of the repository: name the chart's "
                      "directory, or set helm.repo for a chart of a Helm repository (or give an oci:// or "
                      "https:// reference)", file=file, renderer="helm")


def finish_bundle(raws: list[Any], custom: Customization, namespace: str | None
                  ) -> tuple[list[Any], list[str]]:
    """After rendering: the Namespace Fleet creates (with namespaceLabels/Annotations) and the comparePatches
    as an annotation that drift detection reads (``clusters.connector.drift``); warnings for what is not."""
    from .objects import RawObject

    warnings: list[str] = []
    if custom.namespace:  # Fleet: "if any cluster scoped resource exists the deployment will fail"
        from .objects import cluster_scoped_kinds

        scoped = cluster_scoped_kinds(raws)
        for raw in raws:
            if isinstance(raw.data, dict) and raw.data.get("kind") in scoped:
                what = f"{raw.data.get('kind')} {(raw.data.get('metadata') or {}).get('name')}"
                raise RenderError(f"fleet.yaml namespace {custom.namespace} puts every object in that "
                                  f"namespace, and {what} is cluster-scoped: Fleet fails such a deployment "
                                  "too; use defaultNamespace", file=raw.source,
                                  document=raw.document, line=raw.line)
    if custom.compare_patches:
        out = []
        for raw in raws:
            pointers = compare_ignores(custom.compare_patches, raw.data) if isinstance(raw.data, dict) else []
            out.append(RawObject(annotate_compare(raw.data, pointers), raw.source, raw.document, raw.line)
                       if pointers else raw)
        raws = out
    labelled = bool(custom.namespace_labels or custom.namespace_annotations)
    if namespace and custom.create_namespace and namespace != "default":
        present = any(isinstance(r.data, dict) and r.data.get("kind") == "Namespace"
                      and (r.data.get("metadata") or {}).get("name") == namespace for r in raws)
        if not present:
            raws = [*raws, RawObject(namespace_object(namespace, custom.namespace_labels,
                                                      custom.namespace_annotations,
                                                      delete_namespace=custom.delete_namespace),
                                     custom_file(custom), 0)]
        elif labelled:
            warnings.append("fleet.yaml namespaceLabels/namespaceAnnotations are not honoured: the "
                            f"Namespace {namespace} comes from a manifest, whose labels apply")
    elif labelled:
        warnings.append("fleet.yaml namespaceLabels/namespaceAnnotations are not honoured: Fleetgate labels "
                        "only a namespace it creates (set namespace or defaultNamespace, not 'default', and "
                        "leave "
                        "createNamespace on)")
    return raws, warnings


def custom_file(custom: Customization) -> str:
    return custom.origin or "fleet.yaml"


# ------------------------------------------------------------------------- dependsOn and paused, per mapping

FLEET_DEPENDENCY_PREFIXES = ("fleet:", "fleet-selector:")


def fleet_bundle_name(repository: str, path: str) -> str:
    """Fleet's generated bundle name for a GitRepo path (names.HelmReleaseName of ``<gitrepo>/<path>``, the
    Fleetgate repository standing for the GitRepo), without the hash Fleet appends to names it had to
    change."""
    text = f"{repository}/{path}".strip("/").replace("/", "-").lower()
    return re.sub(r"-+", "-", re.sub(r"[^-a-z0-9.]", "-", text)).strip("-")


def _bundle_at(tree: Any, path: str) -> FleetBundle | None:
    from .customize import FLEETGATE_FILES
    from .engine import normalize_path

    try:
        directory = tree.resolve(normalize_path(path), what="mapping path")
    except RenderError:
        return None
    return load_fleet_yaml(tree, directory, FLEETGATE_FILES) if directory.is_dir() else None


def fleet_candidates(tree: Any, repository: str, mappings: Sequence[tuple[str, str]]
                     ) -> list[tuple[str, set[str], dict[str, str]]]:
    """For each (mapping name, path) of a repository: the names a fleet.yaml ``dependsOn`` may call it by and
    its bundle labels.  A mapping path that is a glob or has no fleet.yaml is known by its names only."""
    out = []
    for name, path in mappings:
        names = {name, fleet_bundle_name(repository, path)}
        labels: dict[str, str] = {}
        if not any(c in path for c in "*?["):
            try:
                bundle = _bundle_at(tree, path)
            except RenderError:
                bundle = None
            if bundle is not None:
                labels = bundle.labels
                if bundle.name:
                    names.add(bundle.name)
        out.append((name, names, labels))
    return out


def match_fleet_dependency(entry: str, candidates: Sequence[tuple[str, set[str], dict[str, str]]]
                           ) -> list[str]:
    """The mapping names a ``fleet:``/``fleet-selector:`` entry names (a bundle name matching none stays)."""
    if entry.startswith("fleet:"):
        wanted = entry[len("fleet:"):]
        found = [name for name, names, _ in candidates if wanted in names]
        return found[:1] or [wanted if _dns(wanted) else f"missing-{fleet_bundle_name('', wanted)}"[:63]]
    selector = json.loads(entry[len("fleet-selector:"):])
    return sorted(name for name, _, labels in candidates
                  if labels and selector_matches(selector or {}, labels))


def _dns(text: str) -> bool:
    return bool(re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", text))


def paused_bundle(tree: Any, paths: Sequence[str]) -> str | None:
    """The fleet.yaml (of a mapping's paths) that says ``paused: true``, or None: such a mapping is rendered
    and gated on each commit but not rolled out, as Fleet does not deploy a paused bundle's changes."""
    for path in paths:
        bundle = _bundle_at(tree, path)
        if bundle is not None and bundle.paused:
            return bundle.file
    return None


# --------------------------------------------------------------------------- Helm post-rendered by Kustomize

MANIFESTS_YAML = "fleet-manifests.yaml"  # Fleet's name for the chart's output inside the kustomization


def kustomize_post_render(tree: Any, directory: Any, kustomize_dir: str, raws: list[Any], *,
                          kubectl: str | None, timeout: float, file: str) -> tuple[list[Any], list[str]]:
    """Fleet's Helm + ``kustomize.dir``: the chart's output becomes ``fleet-manifests.yaml``, the first
    resource of the kustomization in ``kustomize.dir`` (helmdeployer/kustomize), built over a copy of the
    bundle's files (a kustomization can read only inside the bundle, as in Fleet)."""
    import shutil
    import tempfile
    from pathlib import Path

    import yaml

    from .kustomize import render_kustomize
    from .objects import RawObject
    from .tree import KUSTOMIZATION_FILES, SourceTree

    target = tree.resolve(kustomize_dir, base=directory, what="kustomize.dir")
    rel = Path(tree.rel(target)).relative_to(tree.rel(directory) or ".") if tree.rel(directory) else \
        Path(tree.rel(target))
    with tempfile.TemporaryDirectory(prefix="fleetgate-fleet-kustomize-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(directory, copy, symlinks=False, ignore=shutil.ignore_patterns(".git"))
        kdir = copy / rel
        kfile = next((kdir / n for n in KUSTOMIZATION_FILES if (kdir / n).is_file()), None)
        if kfile is None:
            raise RenderError(f"kustomize.dir {kustomize_dir!r} has no kustomization.yaml", file=file)
        data = yaml.safe_load(kfile.read_text()) or {}
        if not isinstance(data, dict):
            raise RenderError(f"{kustomize_dir}/{kfile.name} must be a mapping", file=file)
        resources = list(data.get("resources") or [])
        if MANIFESTS_YAML not in resources:
            data["resources"] = [MANIFESTS_YAML, *resources]
        kfile.write_text(yaml.safe_dump(data, sort_keys=False))
        (kdir / MANIFESTS_YAML).write_text(yaml.safe_dump_all([r.data for r in raws], sort_keys=False))
        sub = SourceTree(tmp)
        out, warnings = render_kustomize(sub, kdir, kubectl=kubectl, timeout=timeout)
    base = tree.rel(directory)
    fixed = [RawObject(r.data, (f"{base}/{r.source[len('bundle/'):]}" if base else r.source[len("bundle/"):])
                       if r.source.startswith("bundle/") else r.source, r.document, r.line) for r in out]
    return fixed, warnings


# --------------------------------------------------------------------------- raw YAML bundles (yaml.overlays)

PLAIN_SUFFIXES = (".yaml", ".yml", ".json")
OVERLAYS_DIR = "overlays/"


def _patch_target(rel: str) -> str | None:
    """``dir/x_patch.yaml`` patches ``dir/x.yaml`` (Fleet's isPatchFile)."""
    head, _, base = rel.rpartition("/")
    if "_patch." not in base:
        return None
    target = base.replace("_patch.", ".", 1)
    return f"{head}/{target}" if head else target


def render_raw_bundle(tree: Any, directory: Any, *, overlays: Sequence[str] = (), exclude: Any = (),
                      file: str = "") -> tuple[list[Any], list[str]]:
    """The objects of a raw-YAML Fleet bundle, as Fleet builds it (bundlereader + render/patch):

    * every ``.yaml``/``.yml``/``.json`` file under the directory (dot-names skipped), except fleet.yaml, the
      values files it names, and subdirectories holding their own ``fleet.yaml`` or ``Chart.yaml`` (separate
      bundles in Fleet);
    * ``overlays/`` is never deployed itself; for each name of ``yaml.overlays`` in order, a file
      ``overlays/<name>/<path>`` replaces (or adds) ``<path>`` and ``overlays/<name>/<dir>/<x>_patch.<ext>``
      patches ``<dir>/<x>.<ext>`` (a mapping: a strategic/merge patch; a list: a JSON patch).  An empty
      replacement removes the file's objects.
    """
    from .customize import json_patch, strategic_merge
    from .objects import RawObject
    excluded = set(exclude)
    walked = tree.walk(directory, skip_hidden=True)
    nested = {f.parent for f in walked
              if f.parent != directory and (f.name in FLEET_FILES or f.name == "Chart.yaml")}
    dir_rel = tree.rel(directory)
    files: dict[str, Any] = {}
    for f in walked:
        if any(parent in nested for parent in f.parents):
            continue
        if (f.parent == directory and f.name in FLEET_FILES) or f in excluded:
            continue
        rel = tree.rel(f)
        files[rel[len(dir_rel) + 1:] if dir_rel else rel] = f
    # each entry: bundle-relative name -> list of (data, source, document, line)
    docs: dict[str, list[tuple[Any, str, int, int | None]]] = {}

    def load(name: str) -> list[tuple[Any, str, int, int | None]]:
        if name not in docs:
            f = files[name]
            docs[name] = [(d.data, tree.rel(f), d.index, d.line) for d in tree.documents(f)]
        return docs[name]

    warnings: list[str] = []
    for overlay in overlays:
        prefix = f"{OVERLAYS_DIR}{overlay}/"
        names = sorted(n for n in files if n.startswith(prefix))
        if not names:
            warnings.append(f"yaml.overlays: {dir_rel + '/' if dir_rel else ''}{prefix} has no files: "
                            "nothing to overlay (as in Fleet)")
        for name in names:
            rest = name[len(prefix):]
            target = _patch_target(rest)
            if target is None:
                files[rest] = files[name]
                docs[rest] = load(name)
                continue
            if target not in files:
                raise RenderError(f"yaml.overlays {overlay}: failed to find base file {target} to patch "
                                  f"({name})", file=file)
            patch_docs = [d for d in load(name) if d[0] is not None]
            if len(patch_docs) != 1:
                raise RenderError(f"yaml.overlays {overlay}: {name} must hold one patch document", file=file)
            patch = patch_docs[0][0]
            out = []
            for data, source, index, line in load(target):
                if data is None:
                    continue
                try:
                    data = (json_patch(data, patch) if isinstance(patch, list)
                            else strategic_merge(data, patch))
                except ValueError as exc:
                    raise RenderError(f"yaml.overlays {overlay}: {name} on {target}: {exc}",
                                      file=file) from None
                out.append((data, source, index, line))
            docs[target] = out
    raws = []
    for name in sorted(files):
        if name.startswith(OVERLAYS_DIR) or not name.endswith(PLAIN_SUFFIXES):
            continue
        for data, source, index, line in load(name):
            if data is not None:
                raws.append(RawObject(data, source, index, line))
    return raws, warnings


__all__ = [
    "COMPARE_ANNOTATION",
    "FLEET_DEPENDENCY_PREFIXES",
    "FLEET_FILES",
    "FleetBundle",
    "Patch",
    "annotate_compare",
    "chart_entry",
    "compare_ignores",
    "decode_values",
    "finish_bundle",
    "fleet_bundle_name",
    "fleet_candidates",
    "kustomize_post_render",
    "load_fleet_yaml",
    "match_fleet_dependency",
    "namespace_object",
    "parse_fleet_yaml",
    "paused_bundle",
    "render_raw_bundle",
    "select_for",
]
