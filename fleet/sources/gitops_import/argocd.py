"""Argo CD ``Application`` and ``ApplicationSet`` (argoproj.io/v1alpha1) -> repositories, groups, mappings.

An Application is one source (repository, revision, path, and its directory, Helm or Kustomize options)
deployed to one destination (a cluster by ``name`` or ``server``, and a namespace). An ApplicationSet's
generators are evaluated here, as its controller does at that moment: git directory and file generators
over the repository's tree, the cluster generator over the clusters registered in Fleetgate (Fleetgate's
clusters are Argo CD's cluster secrets: ``name``, ``server`` = the API URL, ``metadata.labels``), the list
generator, and a matrix of two. The template is filled in per parameter set with fasttemplate's ``{{...}}``
(``{{path}}``, ``{{path.basename}}``, ``{{path[0]}}``, ``{{name}}``, ``{{server}}``,
``{{metadata.labels.x}}``, a files generator's keys), and the generated Applications that differ only by
cluster become one mapping whose group is the cluster generator's selector (or the clusters by name).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.sources.render import RenderError

from .environment import ClusterInfo, Environment, TreeRefused, TreeUnavailable
from .model import (
    GroupSpec,
    ImportError_,
    MappingSpec,
    Plan,
    RepositorySpec,
    Source,
    as_list,
    as_object,
    malformed,
    refuse_password,
    slug,
    walk_unknown,
)

IN_CLUSTER = "https://kubernetes.default.svc"
APP_SPEC = {"project", "source", "sources", "destination", "syncPolicy", "info", "revisionHistoryLimit"}
SOURCE_KEYS = {"repoURL", "path", "targetRevision", "directory", "helm", "kustomize", "chart"}
DIRECTORY_KEYS = {"recurse", "include", "exclude"}
HELM_KEYS = {"releaseName", "valueFiles", "values", "valuesObject", "parameters"}
SYNC_KEYS = {"automated", "syncOptions", "managedNamespaceMetadata"}
# Parameter sets one ApplicationSet may generate (a matrix multiplies), and the bytes its git files
# generator may read: an import plans mappings, it does not expand unbounded input.
MAX_GENERATED = 1000
MAX_GENERATOR_FILE_BYTES = 8 * 1024 * 1024


@dataclass
class ConcreteApp:
    """One generated (or written) Application, resolved: what a mapping needs, and its cluster."""

    name: str
    url: str
    branch: str
    path: str
    namespace: str
    cluster: str | None  # None: the import's target group (in-cluster destination)
    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    prune: bool = False
    self_heal: bool = False

    def key(self) -> str:
        return json.dumps([self.url, self.branch, self.path, self.namespace, self.values, self.options,
                           self.prune, self.self_heal], sort_keys=True, default=str)


# --------------------------------------------------------------------------- Application


def parse_application(doc: dict[str, Any], src: Source, env: Environment, plan: Plan) -> None:
    app = concrete_app(as_object(doc.get("spec"), src, "spec"), src, env, plan)
    if app is not None:
        _add(plan, env, src, [app], selector=None)


def concrete_app(spec: dict[str, Any], src: Source, env: Environment, plan: Plan,
                 app_name: str = "") -> ConcreteApp | None:
    walk_unknown(plan, src, spec, APP_SPEC, "spec")
    if spec.get("project") not in (None, "", "default"):
        plan.note(src, "spec.project", f"AppProject {spec['project']!r} is not imported: its restrictions "
                  "are a tenant allow-list on the cluster group in Fleetgate (docs/clusters.md)")
    source = spec.get("source")
    if spec.get("sources"):
        sources = spec["sources"]
        if not source and isinstance(sources, list) and len(sources) == 1:
            source = sources[0]
        elif not source and isinstance(sources, list):
            return _multi_source(spec, sources, src, env, plan, app_name)
        else:
            plan.skip(src, "spec.sources", "several sources in one Application cannot be one mapping")
            return None
    if not isinstance(source, dict) or not source.get("repoURL"):
        plan.skip(src, "spec.source", "no source.repoURL")
        return None
    walk_unknown(plan, src, source, SOURCE_KEYS, "spec.source")
    if source.get("chart"):
        return _chart_app(spec, source, src, env, plan, app_name)
    url = str(source["repoURL"])
    refuse_password(url, src)
    _check_shapes(spec, source, src)
    revision = str(source.get("targetRevision") or "HEAD")
    branch, tree = _branch_and_tree(url, revision, src, env, plan)
    if branch is None:
        return None
    path = str(source.get("path") or ".").strip().strip("/") or "."
    dest = spec.get("destination") or {}
    cluster = _destination(dest, src, env, plan)
    if cluster is False:
        return None
    app = ConcreteApp(app_name or src.name, url, branch, path, str(dest.get("namespace") or ""),
                      cluster if isinstance(cluster, str) else None)
    kind = _source_kind(tree, path, source)
    if kind == "directory":
        _directory(source.get("directory") or {}, tree, path, app, src, plan)
    elif source.get("directory"):
        plan.unsupported_(src, "spec.source.directory", f"the path is a {kind} source: directory options "
                          "do not apply")
    if source.get("helm"):
        _helm(source["helm"], app, src, plan)
        _git_value_files(app, src, plan)
    if kind == "helm":
        # Argo CD's release name is the Application's name unless helm.releaseName says otherwise.
        app.options.setdefault("release_name", app.name)
    if source.get("kustomize"):
        kust = source["kustomize"]
        for key in (kust if isinstance(kust, dict) else {}):
            plan.unsupported_(src, f"spec.source.kustomize.{key}", "Kustomize options on the Application "
                              "are not expressible on a mapping; put them in the kustomization.yaml")
    _sync_policy(spec.get("syncPolicy") or {}, app, src, plan)
    return app


def chart_reference(repo_url: str) -> str:
    """Argo CD's repoURL of a chart source as Fleetgate's: an https:// index repository as it is, an OCI
    registry (written without a scheme, or with oci://) as oci://host/path."""
    url = repo_url.strip().rstrip("/")
    if url.startswith(("https://", "http://", "oci://")):
        return url
    return "oci://" + url


def _multi_source(spec: dict[str, Any], sources: list[Any], src: Source, env: Environment, plan: Plan,
                  app_name: str) -> ConcreteApp | None:
    """Argo CD's multi-source form of a chart with values files of a Git repository: one ``chart`` source and
    one Git source with a ``ref`` (and no ``path``) that the chart's ``helm.valueFiles`` name as
    ``$<ref>/<file>``. One mapping of the chart on that repository; its path is the directory holding those
    files (so a change to them re-renders it). Any other combination is several mappings' worth: skipped."""
    import posixpath

    charts = [x for x in sources if isinstance(x, dict) and x.get("chart")]
    refs = [x for x in sources if isinstance(x, dict) and x.get("ref") and not x.get("chart")
            and not x.get("path")]
    if len(charts) != 1 or len(refs) != 1 or len(charts) + len(refs) != len(sources):
        plan.skip(src, "spec.sources", "several sources in one Application cannot be one mapping (only a "
                  "chart with the values files of one Git source's ref is)")
        return None
    ref = refs[0]
    walk_unknown(plan, src, ref, {"repoURL", "targetRevision", "ref"}, "spec.sources[ref]")
    walk_unknown(plan, src, charts[0], SOURCE_KEYS, "spec.sources[chart]")
    url = str(ref.get("repoURL") or "")
    refuse_password(url, src)
    branch, _ = _branch_and_tree(url, str(ref.get("targetRevision") or "HEAD"), src, env, plan)
    if branch is None:
        return None
    name = str(ref["ref"])
    prefix = f"${name}/"
    files = [str(v) for v in ((charts[0].get("helm") or {}).get("valueFiles") or [])]
    mine = [_inside(v[len(prefix):], "") for v in files if v.startswith(prefix)]
    directories = {posixpath.dirname(v) or "." for v in mine if v}
    path = posixpath.commonpath(sorted(directories)) if directories and "." not in directories else "."
    return _chart_app(spec, charts[0], src, env, plan, app_name, home=(url, branch, path or "."), ref=name)


def _chart_app(spec: dict[str, Any], source: dict[str, Any], src: Source, env: Environment, plan: Plan,
               app_name: str, *, home: tuple[str, str, str] | None = None, ref: str = ""
               ) -> ConcreteApp | None:
    """An Application of a chart from a Helm repository or OCI registry (``source.chart``): a mapping of the
    chart on the import's repository (it names no Git repository; its root holds nothing the chart reads
    but the values files a mapping may name), or on the Git source of its ``$ref`` values files."""
    from fleet.sources.charts import ChartError, ChartSpec

    chart, repo = str(source["chart"]), chart_reference(str(source["repoURL"]))
    revision = str(source.get("targetRevision") or "").strip()
    version = "" if revision in ("HEAD", "*") else revision  # a version or constraint; empty: the newest
    try:
        ChartSpec(chart=chart, repo=repo, version=version).check()
    except ChartError as exc:
        plan.skip(src, "spec.source.chart", exc.message)
        return None
    for key in ("path", "directory", "kustomize"):
        if source.get(key):
            plan.unsupported_(src, f"spec.source.{key}", "not read for a chart from a Helm repository")
    if home is None and env.home is not None:
        home = (env.home.url, env.home.branch, ".")
    if home is None:
        plan.skip(src, "spec.source.chart", f"chart {chart!r} from {repo} names no Git repository: give the "
                  "repository that holds its mapping (--repository / \"repository\")")
        return None
    dest = spec.get("destination") or {}
    cluster = _destination(dest, src, env, plan)
    if cluster is False:
        return None
    app = ConcreteApp(app_name or src.name, home[0], home[1], home[2],
                      str(dest.get("namespace") or ""), cluster if isinstance(cluster, str) else None)
    app.options.update({"chart": chart, "chart_repo": repo, "chart_version": version})
    if source.get("helm"):
        _helm(source["helm"], app, src, plan)
        files = app.options.pop("value_files", None)
        if files:
            prefix = f"${ref}/" if ref else None
            inside = [_inside(v[len(prefix):], "") if prefix and v.startswith(prefix)
                      else (None if v.startswith("$") else (f"chart:{c}" if (c := _inside(v, "")) else None))
                      for v in files]
            if any(v is None for v in inside):
                plan.unsupported_(src, "spec.source.helm.valueFiles", f"{files!r}: only files inside the "
                                  "chart (relative to its root) and $ref files of the Git source are read; "
                                  "URLs and paths leaving them are not imported")
            app.options["value_files"] = [v for v in inside if v is not None]
    app.options.setdefault("release_name", app.name)
    _sync_policy(spec.get("syncPolicy") or {}, app, src, plan)
    return app


def _inside(entry: str, base: str) -> str | None:
    """``entry`` (relative to ``base``) as a path relative to the root it must stay in, or None (a URL, a
    $ref, an absolute path or one leaving the root)."""
    import posixpath

    if "://" in entry or entry.startswith(("$", "/")) or not entry.strip():
        return None
    joined = posixpath.normpath(posixpath.join(base, entry) if base not in ("", ".") else entry)
    if joined in (".", "..") or joined.startswith("../"):
        return None
    return joined


def _git_value_files(app: ConcreteApp, src: Source, plan: Plan) -> None:
    """Argo CD reads a Git chart's valueFiles relative to the source path: as repository paths."""
    files = app.options.pop("value_files", None)
    if not files:
        return
    inside = [_inside(v, app.path) for v in files]
    if any(v is None for v in inside):
        plan.unsupported_(src, "spec.source.helm.valueFiles", f"{files!r}: only files of the source's "
                          "repository are read; URLs, $ref files of other sources and paths leaving the "
                          "repository are not imported")
    app.options["value_files"] = [v for v in inside if v is not None]


def _check_shapes(spec: dict[str, Any], source: dict[str, Any], src: Source) -> None:
    """The shapes an Application's settings must have, checked before its repository is fetched: a
    malformed document is refused (naming the setting) whether or not the repository can be read."""
    as_object(spec.get("destination"), src, "spec.destination")
    policy = as_object(spec.get("syncPolicy"), src, "spec.syncPolicy")
    as_list(policy.get("syncOptions"), src, "spec.syncPolicy.syncOptions")
    helm = as_object(source.get("helm"), src, "spec.source.helm")
    as_list(helm.get("parameters"), src, "spec.source.helm.parameters")
    as_list(helm.get("valueFiles"), src, "spec.source.helm.valueFiles")
    if helm.get("values") and not isinstance(helm["values"], dict):
        _inline_yaml(str(helm["values"]), src, "spec.source.helm.values")


def _branch_and_tree(url: str, revision: str, src: Source, env: Environment, plan: Plan
                     ) -> tuple[str | None, Path | None]:
    branch = "" if revision in ("HEAD", "") else revision
    if env.tree is None:
        return (branch or "main"), None
    try:
        name, tree = env.tree(url, branch)
    except TreeRefused as exc:
        raise TreeRefused(f"{src.at()}: spec.source.repoURL: {exc.message}", kind=exc.kind,
                          field="documents") from None
    except TreeUnavailable as exc:
        if branch:
            plan.note(src, "spec.source", f"the repository could not be read ({exc}); source type and "
                      f"directories not checked")
            return branch, None
        plan.skip(src, "spec.source.targetRevision", f"HEAD: the repository's default branch could not be "
                  f"read ({exc})")
        return None, None
    return name, tree


def _destination(dest: dict[str, Any], src: Source, env: Environment, plan: Plan) -> str | bool | None:
    """The cluster's name; None for the import's target group (in-cluster); False when unresolvable."""
    as_object(dest, src, "spec.destination")
    name, server = dest.get("name"), dest.get("server")
    cluster: ClusterInfo | None = None
    if name and name != "in-cluster":
        cluster = env.cluster_by_name(str(name))
        if cluster is None:
            plan.skip(src, "spec.destination.name", f"no cluster named {name!r} in Fleetgate")
            return False
        return cluster.name
    if server and str(server).rstrip("/") != IN_CLUSTER:
        cluster = env.cluster_by_server(str(server))
        if cluster is None:
            plan.skip(src, "spec.destination.server", f"no cluster with API URL {server!r} in Fleetgate")
            return False
        return cluster.name
    if not env.target_group:
        plan.skip(src, "spec.destination", "the in-cluster destination names no Fleetgate cluster: give the "
                  "target group (--group / \"group\")")
        return False
    return None


def _source_kind(tree: Path | None, path: str, source: dict[str, Any]) -> str:
    if source.get("helm"):
        return "helm"
    if source.get("kustomize"):
        return "kustomize"
    if tree is not None:
        d = tree / path if path != "." else tree
        if any((d / n).is_file() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
            return "kustomize"
        if (d / "Chart.yaml").is_file():
            return "helm"
    return "directory"


def _directory(directory: dict[str, Any], tree: Path | None, path: str, app: ConcreteApp, src: Source,
               plan: Plan) -> None:
    if not isinstance(directory, dict):
        return
    walk_unknown(plan, src, directory, DIRECTORY_KEYS | {"jsonnet"}, "spec.source.directory")
    if directory.get("jsonnet"):
        plan.unsupported_(src, "spec.source.directory.jsonnet", "Jsonnet is not rendered by Fleetgate")
    # Argo CD reads only the top directory unless recurse is on (Fleetgate's default is on, as Fleet's).
    app.options["recurse"] = bool(directory.get("recurse", False))
    for key in ("include", "exclude"):
        if directory.get(key):
            app.options[key] = str(directory[key])


def _helm(helm: dict[str, Any], app: ConcreteApp, src: Source, plan: Plan) -> None:
    as_object(helm, src, "spec.source.helm")
    walk_unknown(plan, src, helm, HELM_KEYS, "spec.source.helm")
    values: dict[str, Any] = {}
    if helm.get("values"):
        loaded = helm["values"] if isinstance(helm["values"], dict) else _inline_yaml(
            str(helm["values"]), src, "spec.source.helm.values")
        if isinstance(loaded, dict):
            values = loaded
        else:
            plan.unsupported_(src, "spec.source.helm.values", "not a YAML mapping")
    if isinstance(helm.get("valuesObject"), dict):
        from fleet.sources.render.context import deep_merge

        values = deep_merge(values, helm["valuesObject"])
    for i, param in enumerate(as_list(helm.get("parameters"), src, "spec.source.helm.parameters")):
        if not isinstance(param, dict) or not param.get("name"):
            plan.unsupported_(src, f"spec.source.helm.parameters[{i}]", "a parameter needs a name")
            continue
        if not _set_value(values, str(param["name"]), param.get("value", ""),
                          bool(param.get("forceString"))):
            plan.unsupported_(src, f"spec.source.helm.parameters[{i}]", f"{param['name']!r}: list indexes "
                              "and escaped dots are not expressible as values")
    app.values = values
    if helm.get("releaseName"):
        app.options["release_name"] = str(helm["releaseName"])
    if helm.get("valueFiles"):
        app.options["value_files"] = [str(v) for v in as_list(helm["valueFiles"], src,
                                                               "spec.source.helm.valueFiles")]


def _inline_yaml(text: str, src: Source, setting: str) -> Any:
    """YAML written as a string in a document (``helm.values``): read with the limits of every YAML the
    import reads (``yamlsafe``: aliases, size, depth), one document; errors name the setting and line."""
    from fleet.sources.render.yamlsafe import load_one

    try:
        return load_one(text, file=setting)
    except RenderError as exc:
        line = f"line {exc.line}: " if exc.line else ""
        raise malformed(src, setting, f"{line}{exc.message}") from None


def _set_value(values: dict[str, Any], name: str, value: Any, force_string: bool) -> bool:
    """Helm's ``--set name=value`` (a.b.c; no list indexes): typed like Helm unless forceString."""
    if "[" in name or "\\" in name:
        return False
    parts = name.split(".")
    node = values
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    text = str(value)
    if force_string:
        node[parts[-1]] = text
    elif text in ("true", "false"):
        node[parts[-1]] = text == "true"
    elif text == "null":
        node[parts[-1]] = None
    elif re.fullmatch(r"-?[0-9]+", text) and not (len(text) > 1 and text.lstrip("-").startswith("0")):
        node[parts[-1]] = int(text)
    else:
        node[parts[-1]] = text
    return True


def _sync_policy(policy: dict[str, Any], app: ConcreteApp, src: Source, plan: Plan) -> None:
    as_object(policy, src, "spec.syncPolicy")
    walk_unknown(plan, src, policy, SYNC_KEYS, "spec.syncPolicy")
    automated = policy.get("automated")
    if automated is None:
        plan.note(src, "spec.syncPolicy.automated", "manual sync in Argo CD; Fleetgate syncs a commit that "
                  "passed the gate as the group's sync mode says")
    elif isinstance(automated, dict):
        app.prune = bool(automated.get("prune", False))
        app.self_heal = bool(automated.get("selfHeal", False))
        for key in automated:
            if key not in ("prune", "selfHeal", "enabled"):
                plan.unsupported_(src, f"spec.syncPolicy.automated.{key}", "not expressible in Fleetgate")
    for option in as_list(policy.get("syncOptions"), src, "spec.syncPolicy.syncOptions"):
        if str(option) == "ServerSideApply=true":
            plan.note(src, "spec.syncPolicy.syncOptions", "ServerSideApply=true: Fleetgate always applies "
                      "server-side")
        elif str(option) == "CreateNamespace=true":
            _create_namespace(policy, app, src, plan)
        else:
            plan.unsupported_(src, f"spec.syncPolicy.syncOptions[{option}]", "not expressible in Fleetgate")


def _create_namespace(policy: dict[str, Any], app: ConcreteApp, src: Source, plan: Plan) -> None:
    """CreateNamespace=true (with managedNamespaceMetadata's labels and annotations): the mapping's
    create_namespace, which Argo CD and Fleetgate both keep when the Application goes."""
    setting = "spec.syncPolicy.syncOptions[CreateNamespace=true]"
    if app.namespace in ("", "default"):
        plan.note(src, setting, "the destination namespace is 'default' (or none), which every cluster has: "
                  "nothing to create")
        return
    app.options["create_namespace"] = True
    meta = as_object(policy.get("managedNamespaceMetadata"), src, "spec.syncPolicy.managedNamespaceMetadata")
    walk_unknown(plan, src, meta, {"labels", "annotations"}, "spec.syncPolicy.managedNamespaceMetadata")
    for key in ("labels", "annotations"):
        found = as_object(meta.get(key), src, f"spec.syncPolicy.managedNamespaceMetadata.{key}")
        if found:
            app.options[f"namespace_{key}"] = {str(k): str(v) for k, v in found.items()}


def _add(plan: Plan, env: Environment, src: Source, apps: list[ConcreteApp], selector: dict[str, Any] | None,
         selector_clusters: set[str] | None = None, name_prefix: str = "") -> None:
    """Mappings for resolved Applications: those equal but for their cluster share one mapping."""
    by_key: dict[str, list[ConcreteApp]] = {}
    for app in apps:
        by_key.setdefault(app.key(), []).append(app)
    for same in by_key.values():
        first = same[0]
        repo = plan.add_repository(RepositorySpec(slug(_repo_name(first.url)), first.url, first.branch,
                                                  source=str(src)))
        clusters = sorted({a.cluster for a in same if a.cluster})
        if any(a.cluster is None for a in same):
            group = plan.add_group(GroupSpec(env.target_group, existing=True, source=str(src)))
            if clusters:
                plan.note(src, "spec.destination", "in-cluster and named destinations mixed: the in-cluster "
                          "ones go to the target group")
        elif selector is not None and selector_clusters is not None and set(clusters) == selector_clusters:
            group = plan.add_group(GroupSpec(slug(src.name, "clusters"), selector=selector, prune=first.prune,
                                             self_heal=first.self_heal, source=str(src)))
        else:
            group = plan.add_group(GroupSpec(slug(src.name if len(clusters) > 1 else clusters[0]),
                                             include=clusters, prune=first.prune, self_heal=first.self_heal,
                                             source=str(src)))
        name = slug(name_prefix, first.path) if name_prefix else slug(first.name)
        plan.add_mapping(MappingSpec(name, repo.name, first.path, group.name, values=first.values,
                                     target_namespace=first.namespace, options=dict(first.options),
                                     source=str(src)))


def _repo_name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else tail


# --------------------------------------------------------------------------- ApplicationSet


APPSET_SPEC = {"generators", "template", "goTemplate", "syncPolicy"}


def parse_applicationset(doc: dict[str, Any], src: Source, env: Environment, plan: Plan) -> None:
    spec = as_object(doc.get("spec"), src, "spec")
    walk_unknown(plan, src, spec, APPSET_SPEC, "spec")
    if spec.get("goTemplate"):
        plan.skip(src, "spec.goTemplate", "Go templates are not evaluated by the import; use fasttemplate "
                  "({{path}}) or import the generated Applications")
        return
    for key in as_object(spec.get("syncPolicy"), src, "spec.syncPolicy"):
        plan.unsupported_(src, f"spec.syncPolicy.{key}", "how the ApplicationSet controller manages its "
                          "Applications; Fleetgate's mappings are managed by people or by importing again")
    generators = spec.get("generators") or []
    template = spec.get("template")
    if not isinstance(generators, list) or len(generators) != 1 or not isinstance(template, dict):
        plan.skip(src, "spec.generators", "one generator (a matrix for two) and a template are needed")
        return
    selector: dict[str, Any] | None = None
    try:
        params, selector = _generate(generators[0], src, env, plan)
        _count(len(params))
    except _Unsupported as exc:
        plan.skip(src, exc.setting, exc.reason)
        return
    apps: list[ConcreteApp] = []
    for key in as_object(template.get("metadata"), src, "spec.template.metadata"):
        if key != "name":
            plan.note(src, f"spec.template.metadata.{key}", "metadata of the Application object itself; "
                      "nothing is deployed from it")
    for p in params:
        filled = _fill(template, p)
        meta = as_object(filled.get("metadata"), src, "spec.template.metadata")
        app = concrete_app(as_object(filled.get("spec"), src, "spec.template.spec"), src, env, plan,
                           str(meta.get("name") or src.name))
        if app is not None:
            apps.append(app)
    if not apps:
        plan.skip(src, "spec.generators", "the generators produced no Application")
        return
    matched = {c.name for c in env.matching(selector)} if selector is not None else None
    _add(plan, env, src, apps, selector, matched, name_prefix=src.name)


class _Unsupported(Exception):
    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(reason)
        self.setting, self.reason = setting, reason


def _generate(gen: Any, src: Source, env: Environment, plan: Plan
              ) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
    """Parameter sets of one generator, and the cluster selector when a cluster generator takes part."""
    if not isinstance(gen, dict) or len([k for k in gen if k not in ("selector", "template")]) != 1:
        raise _Unsupported("spec.generators", "a generator must be one of list, clusters, git, matrix")
    kind = next(k for k in gen if k not in ("selector", "template"))
    body = as_object(gen[kind], src, f"spec.generators.{kind}")
    if gen.get("selector") or gen.get("template"):
        raise _Unsupported(f"spec.generators.{kind}", "generator-level selector/template overrides are not "
                           "evaluated")
    if kind == "list":
        elements = as_list(body.get("elements"), src, "spec.generators.list.elements")
        return [_flat(as_object(e, src, f"spec.generators.list.elements[{i}]"))
                for i, e in enumerate(elements) if e is not None], None
    if kind == "clusters":
        selector = as_object(body.get("selector"), src, "spec.generators.clusters.selector")
        out = []
        for c in env.matching(selector):
            p = {"name": c.name, "nameNormalized": c.name, "server": c.api_url, "_cluster": c.name}
            for k, v in c.labels.items():
                p[f"metadata.labels.{k}"] = v
            for k, v in as_object(body.get("values"), src, "spec.generators.clusters.values").items():
                p[f"values.{k}"] = str(v)
            out.append(p)
        return out, {k: v for k, v in selector.items() if k in ("matchLabels", "matchExpressions") and v}
    if kind == "git":
        return _git(body, src, env, plan), None
    if kind == "matrix":
        gens = as_list(body.get("generators"), src, "spec.generators.matrix.generators")
        if len(gens) != 2:
            raise _Unsupported("spec.generators.matrix", "a matrix needs two generators")
        if "{{" in json.dumps(gens[1], default=str):
            raise _Unsupported("spec.generators.matrix", "the second generator uses the first's parameters "
                               "({{...}}): parameter chaining is not evaluated by the import, and evaluating "
                               "the template unfilled would make wrong mappings; import the generated "
                               "Applications")
        a, sel_a = _generate(gens[0], src, env, plan)
        b, sel_b = _generate(gens[1], src, env, plan)
        _count(len(a) * len(b))
        return [{**x, **y} for x in a for y in b], sel_a or sel_b
    raise _Unsupported(f"spec.generators.{kind}", f"the {kind} generator is not evaluated by the import")


def _count(generated: int) -> None:
    if generated > MAX_GENERATED:
        raise _Unsupported("spec.generators", f"the generators make {generated} parameter sets, more than "
                           f"the import's limit of {MAX_GENERATED}: import the generated Applications")


def _git(body: dict[str, Any], src: Source, env: Environment, plan: Plan) -> list[dict[str, str]]:
    url = str(body.get("repoURL") or "")
    refuse_password(url, src)
    revision = str(body.get("revision") or "HEAD")
    if not url or env.tree is None:
        raise _Unsupported("spec.generators.git", "the git generator needs repoURL and a readable repository")
    try:
        _, tree = env.tree(url, "" if revision == "HEAD" else revision)
    except TreeRefused as exc:
        raise TreeRefused(f"{src.at()}: spec.generators.git.repoURL: {exc.message}", kind=exc.kind,
                          field="documents") from None
    except TreeUnavailable as exc:
        raise _Unsupported("spec.generators.git", f"cannot read {url}: {exc}") from None
    if body.get("pathParamPrefix"):
        raise _Unsupported("spec.generators.git.pathParamPrefix", "not evaluated by the import")
    source_tree, files = _generator_tree(tree, url, src)
    if body.get("directories"):
        dirs = sorted(str(p.relative_to(tree)) for p in tree.rglob("*")
                      if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(tree).parts))
        chosen: list[str] = []
        entries = [as_object(e, src, "spec.generators.git.directories[]")
                   for e in as_list(body["directories"], src, "spec.generators.git.directories")]
        body = {**body, "directories": entries}
        for entry in entries:
            pattern = str(entry.get("path", ""))
            hits = [d for d in dirs if _match(pattern, d)]
            if entry.get("exclude"):
                chosen = [d for d in chosen if d not in hits]
            else:
                chosen += [d for d in hits if d not in chosen]
        excluded = [str(e.get("path")) for e in body["directories"] if e.get("exclude")]
        chosen = [d for d in chosen if not any(_match(x, d) for x in excluded)]
        return [_path_params(d) for d in sorted(chosen)]
    if body.get("files"):
        out = []
        read = 0
        for entry in as_list(body["files"], src, "spec.generators.git.files"):
            pattern = str(as_object(entry, src, "spec.generators.git.files[]").get("path", ""))
            for f, rel in files:
                if _match(pattern, rel, doublestar=True):
                    read += f.stat().st_size
                    if read > MAX_GENERATOR_FILE_BYTES:
                        raise _Unsupported("spec.generators.git.files", f"the files read pass the import's "
                                           f"limit of {MAX_GENERATOR_FILE_BYTES} bytes")
                    data = _generator_file(source_tree, f, rel, url, src)
                    for item in data if isinstance(data, list) else [data]:
                        params = _flat(item if isinstance(item, dict) else {})
                        parent = str(Path(rel).parent)
                        params.update(_path_params(parent))
                        params["path.filename"] = f.name
                        params["path.filenameNormalized"] = slug(f.name)
                        out.append(params)
        return out
    raise _Unsupported("spec.generators.git", "a git generator needs directories or files")


def _generator_tree(root: Path, url: str, src: Source) -> tuple[Any, list[tuple[Path, str]]]:
    """The generator's repository as rendering reads a tree (``SourceTree``) and its files (path,
    repository-relative name), walked as rendering walks: symlinks that stay inside are followed, one
    leaving the repository (or a loop) refuses the import naming the link, so no file outside the export
    is ever listed or read."""
    from fleet.sources.render.tree import SourceTree

    try:
        tree = SourceTree(root)
        return tree, [(p, tree.rel(p)) for p in tree.walk(tree.root)]
    except RenderError as exc:
        raise ImportError_(f"{src.at()}: spec.generators.git: {url}: {exc.file or ''}: {exc.message}",
                           field="documents") from None


def _generator_file(tree: Any, path: Path, rel: str, url: str, src: Source) -> Any:
    """A git files generator's file (YAML or JSON), read like every YAML the import reads (``yamlsafe``:
    aliases, size, depth limits), one document; errors name the file of the repository and its line."""
    try:
        docs = [d for d in tree.documents(path) if d.data is not None]
    except RenderError as exc:
        line = f":{exc.line}" if exc.line else ""
        raise ImportError_(f"{src.at()}: spec.generators.git.files: {url}: {rel}{line}: {exc.message}",
                           field="documents") from None
    if len(docs) > 1:
        raise ImportError_(f"{src.at()}: spec.generators.git.files: {url}: {rel}:{docs[1].line}: expected "
                           "a single YAML document", field="documents")
    return docs[0].data if docs else {}


def _match(pattern: str, path: str, *, doublestar: bool = False) -> bool:
    """Go's path.Match (directories): ``*`` and ``?`` stay within one path segment; with ``doublestar``
    (the files generator) ``**/`` also matches any number of directories."""
    regex = ""
    for part in re.split(r"(\*\*/|\*|\?|\[[^\]]*\])", pattern):
        if part == "**/" and doublestar:
            regex += "(?:.*/)?"
        elif part == "**/":
            regex += "[^/]*[^/]*/"
        elif part == "*":
            regex += "[^/]*"
        elif part == "?":
            regex += "[^/]"
        elif part.startswith("[") and part.endswith("]") and len(part) > 2:
            regex += "[" + ("^" + part[2:-1] if part[1] in "!^" else part[1:-1]) + "]"
        else:
            regex += re.escape(part)
    return re.fullmatch(regex, path) is not None


def _path_params(path: str) -> dict[str, str]:
    base = path.rsplit("/", 1)[-1]
    params = {"path": path, "path.path": path, "path.basename": base, "path.basenameNormalized": slug(base)}
    for i, seg in enumerate(path.split("/")):
        params[f"path[{i}]"] = seg
    return params


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = "" if v is None else (json.dumps(v) if isinstance(v, list) else str(v).lower()
                                             if isinstance(v, bool) else str(v))
    return out


_TAG = re.compile(r"\{\{(.*?)\}\}")


def _fill(data: Any, params: dict[str, str]) -> Any:
    """fasttemplate as Argo CD uses it: ``{{ key }}`` (trimmed) replaced, unknown keys left as they are."""
    if isinstance(data, str):
        return _TAG.sub(lambda m: params.get(m.group(1).strip(), m.group(0)), data)
    if isinstance(data, dict):
        return {_fill(k, params): _fill(v, params) for k, v in data.items()}
    if isinstance(data, list):
        return [_fill(v, params) for v in data]
    return data
