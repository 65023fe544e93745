"""Rendering the mappings a commit affects, per target cluster, into RenderedManifest rows.

Per commit: one export of the tree and one shared ``SourceTree`` for every mapping and cluster.  Per
mapping: the input hash of every cluster first; results with a known hash are copied (from this run, or
from any earlier RenderedManifest with the same hash) instead of rendered; the rest render once per
distinct hash.  Rows are written with one bulk insert; the number of queries per mapping is constant.

A mapping is affected at a commit when files under its path (or a directory its last render read, such as
a Kustomize base) changed since the commit of its last render attempt, when it was never rendered, or when
its configuration fingerprint (path, renderer, values, namespace, group and member clusters with their
labels, and the group's own labels) differs from the one of its last render attempt.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Prefetch

from clusters import allowlist, tenancy
from clusters.models import Cluster
from fleet.audit.services import record
from fleet.sources.charts import ChartFetcher
from fleet.sources.choices import CommitStatus, ManifestStatus, RenderReason, RenderStatus
from fleet.sources.git import (
    ChangedPath,
    GitCommitNotFoundError,
    GitError,
    RepositoryCache,
    affected_mappings,
    redact_url,
)
from fleet.sources.models import Commit, MappingRender, PathMapping, RenderedManifest, Repository
from fleet.sources.render import (
    RENDER_FORMAT_VERSION,
    ClusterContext,
    DirectoryOptions,
    RenderError,
    RenderRequest,
    SourceTree,
    compute_input_hash,
    declared_dependencies,
    expand_mapping_path,
    fleet_file_references,
    input_files,
    kustomize_dependencies,
    render,
)
from fleet.sources.render.fleetbundle import (
    FLEET_DEPENDENCY_PREFIXES,
    fleet_candidates,
    match_fleet_dependency,
    paused_bundle,
)
from fleet.sources.render.helm import chart_dependencies
from fleet.sources.render.objects import RenderedObject
from fleet.sources.services.dependencies import (
    check_declared,
    describe_cycle,
    mapping_label,
    resolve_label,
)
from fleet.sources.services.signing import check_signature
from fleet.sources.services.signing import keyring as signing_keyring

logger = logging.getLogger(__name__)

MEMORY_CACHE_ENTRIES = 20_000  # rendered results kept in memory during one run, by input hash


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MappingRenderOutcome:
    commit: str
    mapping_id: int
    mapping: str
    status: str
    reason: str
    clusters: int = 0
    objects: int = 0
    rendered: int = 0
    reused: int = 0
    failed: int = 0
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "mapping_id": self.mapping_id,
            "mapping": self.mapping,
            "status": self.status,
            "reason": self.reason,
            "clusters": self.clusters,
            "objects": self.objects,
            "rendered": self.rendered,
            "reused": self.reused,
            "failed": self.failed,
            "error": self.error,
        }


@dataclass
class _Result:
    """One cluster's outcome, as stored in a RenderedManifest row."""

    input_hash: str
    renderer: str = ""
    namespace: str = ""
    resources: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False
    warnings: list[str] = field(default_factory=list)
    error: RenderError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class RenderStats:
    """Counters over one run (the benchmark and tests read them)."""

    def __init__(self) -> None:
        self.renders = 0  # calls of render() per expanded path
        self.results = 0  # distinct input hashes rendered
        self.reused_memory = 0
        self.reused_db = 0
        self.exports = 0


class RenderSession:
    """Shared state of one run: the in-memory results by input hash, counters, the kubectl to use, and
    ``on_rendered``, called with each MappingRender stored (inside its transaction; the pipeline)."""

    def __init__(self, *, kubectl: str | None = None,
                 on_rendered: Callable[[MappingRender], None] | None = None,
                 charts: ChartFetcher | None = None) -> None:
        self.kubectl = kubectl if kubectl is not None else getattr(settings, "FLEETGATE_KUBECTL", None)
        self.on_rendered = on_rendered
        self.results: dict[str, _Result] = {}
        self.stats = RenderStats()
        self._charts = charts
        self._fetchers: dict[int | None, ChartFetcher] = {}

    @property
    def charts(self) -> ChartFetcher:
        """The run's chart fetcher (Helm charts from repositories and registries; services/charts.py):
        each repository index is asked once per run, archives come from the cache keyed by digest."""
        return self.charts_for(None)

    def charts_for(self, group_id: int | None) -> ChartFetcher:
        """The run's chart fetcher for the mappings of one cluster group: chart repository credentials are
        scoped to groups, so each group gets its own (one given to the session serves all)."""
        if self._charts is not None:
            return self._charts
        fetcher = self._fetchers.get(group_id)
        if fetcher is None:
            from fleet.sources.services.charts import build_fetcher

            fetcher = self._fetchers[group_id] = build_fetcher(group_id=group_id)
        return fetcher

    def remember(self, result: _Result) -> None:
        if len(self.results) >= MEMORY_CACHE_ENTRIES:
            self.results.clear()
        self.results[result.input_hash] = result


# --------------------------------------------------------------------------- fingerprints


# Values layers: mapping -> group -> cluster (lowest first); see build_requests.
CLUSTER_FIELDS = ("id", "name", "labels", "values")


def _values_of(obj: Any) -> dict[str, Any]:
    value = getattr(obj, "values", None)
    return value if isinstance(value, dict) else {}



def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_fingerprint(mapping: PathMapping, clusters: Sequence[Cluster]) -> str:
    """What of a mapping's configuration can change its renders: when it differs from the fingerprint of
    the last render attempt, the mapping is rendered again even if no file under it changed."""
    group = mapping.cluster_group
    payload = {
        "format": RENDER_FORMAT_VERSION,
        "path": mapping.path,
        "renderer": mapping.renderer,
        "values": mapping.values or {},
        "group_values": _values_of(group),
        "namespace": mapping.target_namespace,
        **({"helm_release_name": mapping.helm_release_name} if mapping.helm_release_name else {}),
        **({"chart": [mapping.helm_chart, mapping.helm_repo, mapping.helm_version]}
           if mapping.helm_chart else {}),
        **({"values_files": list(mapping.helm_values_files)} if mapping.helm_values_files else {}),
        **({"postbuild": mapping.postbuild} if mapping.postbuild is not None else {}),
        **({"create_namespace": [mapping.namespace_labels or {}, mapping.namespace_annotations or {}]}
           if mapping.create_namespace else {}),
        **({"directory": [mapping.directory_recurse, mapping.directory_include, mapping.directory_exclude]}
           if (not mapping.directory_recurse or mapping.directory_include or mapping.directory_exclude)
           else {}),
        "repository": redact_url(mapping.repository.url),
        "group": [group.pk, group.name],
        "clusters": sorted([c.pk, c.name, c.labels or {}, _values_of(c)] for c in clusters),
    }
    if group.labels:  # fleet.yaml clusterGroupSelector reads them; absent when empty, as before labels
        payload["group_labels"] = group.labels
    allow = tenancy.fingerprint_of(group)
    if allow is not None:  # only restricted groups: an unrestricted group's fingerprint stays as it was
        payload["allow_list"] = allow
    return "sha256:" + hashlib.sha256(canonical(payload).encode()).hexdigest()


def _combined_hash(hashes: Sequence[str]) -> str:
    if len(hashes) == 1:
        return hashes[0]
    return "sha256:" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()


# --------------------------------------------------------------------------- loading


def load_mappings(repo: Repository, mapping_ids: Iterable[int] | None = None) -> list[PathMapping]:
    """Enabled mappings of a repository with their group and member clusters (three queries)."""
    qs = PathMapping.objects.filter(repository=repo, enabled=True)
    if mapping_ids is not None:
        qs = qs.filter(pk__in=list(mapping_ids))
    return list(
        qs.select_related("cluster_group", "cluster_group__allow_list", "repository")
        .prefetch_related(
            Prefetch("cluster_group__members",
                     queryset=Cluster.objects.order_by("name").only(*CLUSTER_FIELDS))
        )
        .order_by("name")
    )


def members(mapping: PathMapping) -> list[Cluster]:
    return list(mapping.cluster_group.members.all())


# --------------------------------------------------------------------------- which mappings


@dataclass
class _Plan:
    mapping: PathMapping
    clusters: list[Cluster]
    fingerprint: str
    reason: str


def _affected(cache: RepositoryCache, commit: Commit, mappings: Sequence[PathMapping],
              *, only_config: bool = False) -> list[_Plan]:
    plans: list[_Plan] = []
    diffs: dict[str, list[ChangedPath] | None] = {}
    for mapping in mappings:
        clusters = members(mapping)
        fingerprint = config_fingerprint(mapping, clusters)
        base = mapping.last_render_attempt_sha
        reason: str | None = None
        if not base:
            reason = RenderReason.NEW
        elif fingerprint != mapping.config_fingerprint:
            reason = RenderReason.CONFIG
        elif base != commit.sha and not only_config:
            if base not in diffs:
                try:
                    diffs[base] = cache.changed_paths(base, commit.sha)
                except GitCommitNotFoundError:
                    diffs[base] = None
            changed = diffs[base]
            if changed is None:
                reason = RenderReason.BASE_UNKNOWN
            elif affected_mappings([mapping.path], changed,
                                   dependencies={mapping.path: mapping.watched_paths or []}):
                reason = RenderReason.PATHS
        if reason is not None:
            plans.append(_Plan(mapping, clusters, fingerprint, reason))
    return plans


# --------------------------------------------------------------------------- rendering one mapping


def _context(mapping: PathMapping, cluster: Cluster, commit_sha: str) -> ClusterContext:
    return ClusterContext(
        name=cluster.name,
        labels=dict(cluster.labels or {}),
        group=mapping.cluster_group.name,
        repository=redact_url(mapping.repository.url),
        commit=commit_sha,
        values=_values_of(cluster),
        group_labels=dict(mapping.cluster_group.labels or {}),
    )


def build_requests(mapping: PathMapping, cluster: Cluster, commit_sha: str,
                   paths: Sequence[str]) -> list[RenderRequest]:
    """The render requests of one mapping for one cluster (one per directory a glob expands to)."""
    ctx = _context(mapping, cluster, commit_sha)
    values = tuple(v for v in (mapping.values, _values_of(mapping.cluster_group), _values_of(cluster)) if v)
    return [
        RenderRequest(path=p, cluster=ctx, renderer=mapping.renderer, values=values,
                      namespace=mapping.target_namespace or None, postbuild=mapping.postbuild,
                      directory=directory_options(mapping), release_name=mapping.helm_release_name or None,
                      chart=mapping.chart_spec(), values_files=tuple(mapping.helm_values_files or ()),
                      create_namespace=mapping.create_namespace,
                      namespace_labels=dict(mapping.namespace_labels or {}),
                      namespace_annotations=dict(mapping.namespace_annotations or {}))
        for p in paths
    ]


def values_files_watched(mapping: PathMapping, paths: Sequence[str]) -> list[str]:
    """The mapping's repository values files outside its paths: a change to one re-renders it."""
    from fleet.sources.validators import CHART_FILE_PREFIX

    out = []
    for entry in mapping.helm_values_files or []:
        entry = str(entry)
        if entry.startswith(CHART_FILE_PREFIX):
            continue
        rel = "/".join(part for part in entry.split("/") if part not in ("", "."))
        if not any(not p or rel == p or rel.startswith(p + "/") for p in paths):
            out.append(rel)
    return out


def directory_options(mapping: PathMapping) -> DirectoryOptions:
    """The mapping's Argo CD directory options (recurse, include/exclude) for plain directories."""
    return DirectoryOptions(recurse=mapping.directory_recurse, include=mapping.directory_include,
                            exclude=mapping.directory_exclude)


def expand_paths(tree: SourceTree, mapping: PathMapping) -> list[str]:
    """The directories a mapping's path (or glob) names in this tree; RenderError if none."""
    try:
        paths = expand_mapping_path(tree, mapping.path)
    except ValueError as exc:
        raise RenderError(str(exc)) from None
    if not paths:
        raise RenderError(f"mapping path {mapping.path!r} matches no directory in this commit")
    return paths


def watched_paths(tree: SourceTree, paths: Sequence[str]) -> list[str]:
    """Directories outside ``paths`` that their Kustomize builds read (bases, components), or their Helm
    charts read through ``file://`` dependencies: a change there affects the mapping."""
    watched: set[str] = set()
    for path in paths:
        if not path:
            continue  # the repository root: every change affects it anyway
        try:
            deps = kustomize_dependencies(tree, path)
        except RenderError:
            deps = []  # not a Kustomize directory (or a broken one: the render reports it)
        deps += chart_dependencies(tree, path)
        watched.update(d for d in deps if d != path and not d.startswith(path + "/"))
    return sorted(watched)


def render_requests(tree: SourceTree, requests: Sequence[RenderRequest], input_hash: str,
                    *, kubectl: str | None = None, stats: RenderStats | None = None,
                    charts: ChartFetcher | None = None) -> _Result:
    """Render every request of one cluster and combine the objects (a glob's directories)."""
    objects: list[RenderedObject] = []
    warnings: list[str] = []
    renderers: list[str] = []
    namespace = ""
    skipped = True
    seen: dict[tuple[str, str, str, str], RenderedObject] = {}
    try:
        for request in requests:
            if stats is not None:
                stats.renders += 1
            result = render(tree, request, kubectl=kubectl, charts=charts)
            renderers.append(result.renderer)
            namespace = namespace or (result.namespace or "")
            skipped = skipped and result.skipped
            warnings.extend(result.warnings)
            for obj in result.objects:
                if obj.key in seen:
                    first = seen[obj.key]
                    raise RenderError(
                        f"duplicate object {obj.kind} {obj.namespace + '/' if obj.namespace else ''}"
                        f"{obj.name} (also in {first.source})", file=obj.source, document=obj.document)
                seen[obj.key] = obj
                objects.append(obj)
    except RenderError as exc:
        return _Result(input_hash=input_hash, error=exc)
    objects.sort(key=RenderedObject.sort_key)
    return _Result(
        input_hash=input_hash,
        renderer=",".join(sorted(set(renderers))),
        namespace=namespace,
        resources=[o.to_dict() for o in objects],
        skipped=skipped and bool(requests),
        warnings=warnings,
    )


def _lookup_stored(hashes: Iterable[str]) -> dict[str, _Result]:
    """Earlier successful results with these input hashes (two queries whatever their number)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    firsts = (
        RenderedManifest.objects.filter(input_hash__in=wanted, status=ManifestStatus.OK)
        .values("input_hash")
        .annotate(first=Min("id"))
        .values_list("first", flat=True)
    )
    found: dict[str, _Result] = {}
    for row in RenderedManifest.objects.filter(pk__in=list(firsts)).values(
            "input_hash", "renderer", "namespace", "resources", "skipped", "warnings"):
        found[row["input_hash"]] = _Result(
            input_hash=row["input_hash"], renderer=row["renderer"], namespace=row["namespace"],
            resources=row["resources"], skipped=row["skipped"], warnings=list(row["warnings"] or []))
    return found


def render_mapping(session: RenderSession, tree: SourceTree, commit: Commit, plan: _Plan,
                   existing: MappingRender | None = None, *, known: bool = False) -> MappingRenderOutcome:
    """Render one mapping at one commit for every cluster of its group and store the outcome."""
    mapping = plan.mapping
    clusters = plan.clusters
    per_cluster: dict[int, _Result] = {}
    hashes: dict[int, str] = {}
    requests: dict[int, list[RenderRequest]] = {}
    mapping_error: RenderError | None = None
    fresh: set[int] = set()
    rendered = reused = 0
    try:
        paths = expand_paths(tree, mapping)
    except RenderError as exc:
        mapping_error = exc
        paths = []
    watched = sorted({*watched_paths(tree, paths), *values_files_watched(mapping, paths)})
    declared: list[str] = []
    rules = tenancy.rules_for(mapping.cluster_group)
    if mapping_error is None and rules is not None:
        mapping_error = source_error(tree, rules, mapping, paths)
    paused: str | None = None
    if mapping_error is None:
        try:
            declared = declared_dependencies_of(tree, mapping, paths)
            paused = paused_bundle(tree, paths)
        except RenderError as exc:
            mapping_error = exc
    if mapping_error is None:
        for cluster in clusters:
            reqs = build_requests(mapping, cluster, commit.sha, paths)
            try:
                charts = session.charts_for(mapping.cluster_group_id)
                key = _combined_hash([compute_input_hash(tree, r, charts=charts) for r in reqs])
            except RenderError as exc:
                per_cluster[cluster.pk] = _Result(input_hash="", error=exc)
                continue
            hashes[cluster.pk] = key
            requests[cluster.pk] = reqs
        missing = {h for h in hashes.values() if h not in session.results}
        stored = _lookup_stored(missing)
        for cluster in clusters:
            if cluster.pk in per_cluster:
                continue
            key = hashes[cluster.pk]
            if key in session.results:
                result = session.results[key]
                reused += 1
                session.stats.reused_memory += 1
            elif key in stored:
                result = stored[key]
                session.remember(result)
                reused += 1
                session.stats.reused_db += 1
            else:
                result = render_requests(tree, requests[cluster.pk], key, kubectl=session.kubectl,
                                         stats=session.stats,
                                         charts=session.charts_for(mapping.cluster_group_id))
                session.stats.results += 1
                session.remember(result)
                rendered += 1
                fresh.add(cluster.pk)
            if rules is not None and result.ok:
                # after the caches: a result is stored per input hash, whatever allow-list applies to it
                result = check_allowed(tree, rules, mapping, result, requests=requests[cluster.pk])
            per_cluster[cluster.pk] = result
    return _store(commit, plan, per_cluster, rendered, reused, mapping_error, fresh, existing, known=known,
                  watched=watched, declared=declared, on_rendered=session.on_rendered, paused=paused)


def source_error(tree: SourceTree, rules: allowlist.Rules, mapping: PathMapping,
                 paths: Sequence[str]) -> RenderError | None:
    """Why the group's allow-list refuses the mapping's source before any render (its repository and path,
    its Helm values files, the files its paths' fleet.yaml/fleetgate.yaml name), or None.  Shared by the
    render, ``manage.py render`` (preview) and the manifests API."""
    repo = mapping.repository
    refusal = allowlist.source_refusal(rules, repository=repo.name, url=repo.url, path=mapping.path)
    refusal = refusal or allowlist.values_files_refusal(
        rules, repository=repo.name, url=repo.url, values_files=list(mapping.helm_values_files or ()))
    if refusal:
        return RenderError(f"not allowed: {refusal}")
    try:  # the files the paths' fleet.yaml/fleetgate.yaml name (helm.valuesFiles: ../..): same globs
        refusal = allowlist.fleet_file_refusal(rules, repository=repo.name, url=repo.url,
                                               references=fleet_file_references(tree, paths))
    except RenderError as exc:
        return exc
    return RenderError(f"not allowed: {refusal}") if refusal else None


def read_files_error(tree: SourceTree, rules: allowlist.Rules, mapping: PathMapping,
                     requests: Sequence[RenderRequest]) -> RenderError | None:
    """A RenderError naming the first repository file the render of ``requests`` read (Kustomize bases,
    ``file://`` chart dependencies, files through symlinks, values files...) outside the paths the group's
    allow-list allows, or None (not waivable)."""
    repo = mapping.repository
    for request in requests:
        try:
            files = input_files(tree, request)
        except RenderError as exc:
            return exc
        refused = allowlist.read_files_refusal(rules, repository=repo.name, url=repo.url, path=request.path,
                                               files=files)
        if refused is not None:
            return RenderError(f"not allowed: {refused.message}", file=refused.source or None)
    return None


def check_allowed(tree: SourceTree, rules: allowlist.Rules, mapping: PathMapping, result: _Result, *,
                  requests: Sequence[RenderRequest] = ()) -> _Result:
    """The result, or a failed one naming the first file the render of ``requests`` read outside the
    group's allowed paths, else the first object outside its allow-list with its file and line (not
    waivable: the policy gate never sees it)."""
    read_error = read_files_error(tree, rules, mapping, requests)
    if read_error is not None:
        return _Result(input_hash=result.input_hash, error=read_error)
    refusals = allowlist.object_refusals(
        rules, result.resources, mapping.target_namespace or "default",
        cluster_scoped_kinds=allowlist.declared_cluster_kinds(result.resources))
    if not refusals:
        return result
    first = refusals[0]
    more = f" (and {len(refusals) - 1} more object(s) outside it)" if len(refusals) > 1 else ""
    error = RenderError(f"not allowed: {first.message}{more}", file=first.source or None,
                        line=line_of(tree, first.source, first.document), document=first.document)
    return _Result(input_hash=result.input_hash, error=error)


def line_of(tree: SourceTree, source: str, document: int | None) -> int | None:
    """The 1-based line where document ``document`` of ``source`` starts (a plain YAML file or a Helm
    template's file), or None when the source is not a file of the tree (a kustomization's output)."""
    if not source or document is None:
        return None
    try:
        path = tree.resolve(source, what="file")
        if not path.is_file():
            return None
        for doc in tree.documents(path):
            if doc.index == document:
                return doc.line
    except (RenderError, OSError, ValueError):
        return None
    return None


def declared_dependencies_of(tree: SourceTree, mapping: PathMapping, paths: Sequence[str]) -> list[str]:
    """The mappings the fleetgate.yaml files of ``paths`` name in ``dependsOn``, as labels; a RenderError
    (on the file) when they would close a dependency cycle, named.  Mappings without dependsOn cost no
    query."""
    names, file = declared_dependencies(tree, paths)
    if any(name.startswith(FLEET_DEPENDENCY_PREFIXES) for name in names):
        names = tuple(resolve_fleet_dependencies(tree, mapping, names))
    labels = list(dict.fromkeys(resolve_label(name, mapping.repository.name) for name in names))
    if labels:
        cycle = check_declared(mapping, labels)
        if cycle:
            raise RenderError(f"dependsOn: dependency cycle: {describe_cycle(cycle)}", file=file)
    return labels


def resolve_fleet_dependencies(tree: SourceTree, mapping: PathMapping, names: Sequence[str]) -> list[str]:
    """fleet.yaml ``dependsOn`` entries (``fleet:<bundle>``, ``fleet-selector:<selector>``) as the labels of
    the mappings of the same repository they name: by mapping name, by the bundle's fleet.yaml ``name`` or
    Fleet's generated bundle name (``<repository>-<path>``), or by the bundle ``labels`` a selector matches.
    A name that matches no mapping stays a name (the dependent waits: "does not exist", as Fleet waits).
    One query for the repository's mappings."""
    siblings = list(PathMapping.objects.filter(repository_id=mapping.repository_id).exclude(pk=mapping.pk)
                    .values_list("name", "path"))
    candidates = fleet_candidates(tree, mapping.repository.name, siblings)
    out: list[str] = []
    for name in names:
        if name.startswith(FLEET_DEPENDENCY_PREFIXES):
            out.extend(match_fleet_dependency(name, candidates))
        else:
            out.append(name)
    return out


def _store(commit: Commit, plan: _Plan, per_cluster: dict[int, _Result], rendered: int, reused: int,
           mapping_error: RenderError | None, fresh: set[int] | None = None,
           existing: MappingRender | None = None, *, known: bool = False,
           watched: Sequence[str] = (), declared: Sequence[str] = (),
           on_rendered: Callable[[MappingRender], None] | None = None,
           paused: str | None = None) -> MappingRenderOutcome:
    """Write one mapping's outcome at a commit.  ``known``: the caller already looked up the existing
    MappingRender of (commit, mapping) and passes it as ``existing`` (None when there is none).
    ``on_rendered(render)`` is called once the MappingRender is saved (in this transaction)."""
    mapping = plan.mapping
    clusters = plan.clusters
    failures = [(c, per_cluster[c.pk]) for c in clusters if c.pk in per_cluster and not per_cluster[c.pk].ok]
    first_error: RenderError | None = mapping_error or (failures[0][1].error if failures else None)
    error_cluster = "" if mapping_error or not failures else failures[0][0].name
    if not clusters and first_error is None:
        status = RenderStatus.SKIPPED
    elif first_error is not None:
        status = RenderStatus.FAILED
    else:
        status = RenderStatus.RENDERED
    ok_results = [per_cluster[c.pk] for c in clusters if c.pk in per_cluster and per_cluster[c.pk].ok]
    object_count = sum(len(r.resources) for r in ok_results) if status == RenderStatus.RENDERED else 0
    renderers = sorted({r.renderer for r in ok_results if r.renderer})
    with transaction.atomic():
        if not known:
            existing = MappingRender.objects.filter(commit=commit, mapping=mapping).first()
        created = existing is None
        mr = existing or MappingRender(commit=commit, mapping=mapping)
        mr.status = status
        mr.reason = plan.reason
        mr.renderer = ",".join(renderers)[:16]
        mr.cluster_count = len(clusters)
        mr.object_count = object_count
        mr.rendered_count = rendered
        mr.reused_count = reused
        mr.failed_count = len(clusters) if mapping_error else len(failures)
        mr.error_message = first_error.message[:5000] if first_error else ""
        mr.error_file = (first_error.file or "")[:500] if first_error else ""
        mr.error_line = first_error.line if first_error else None
        mr.error_cluster = error_cluster
        mr.config_fingerprint = plan.fingerprint
        mr.save()  # one save per (commit, mapping)
        if on_rendered is not None and not paused:
            on_rendered(mr)  # the pipeline: a rendered mapping starts its rollout after this commits
        if not created:
            RenderedManifest.objects.filter(mapping_render=mr).delete()
        rows: list[RenderedManifest] = []
        for cluster in clusters:
            result = per_cluster.get(cluster.pk)
            if status == RenderStatus.RENDERED and result is not None:
                rows.append(RenderedManifest(
                    commit=commit, mapping=mapping, cluster=cluster, mapping_render=mr,
                    input_hash=result.input_hash, renderer=result.renderer[:16],
                    namespace=result.namespace[:63], resources=result.resources,
                    object_count=len(result.resources), status=ManifestStatus.OK, skipped=result.skipped,
                    reused=cluster.pk not in (fresh or set()),
                    warnings=result.warnings,
                ))
            elif status == RenderStatus.FAILED:
                err = mapping_error or (result.error if result is not None else None)
                if err is None:
                    continue  # this cluster rendered, but the mapping failed: nothing is stored for it
                rows.append(RenderedManifest(
                    commit=commit, mapping=mapping, cluster=cluster, mapping_render=mr,
                    input_hash=result.input_hash if result is not None else "",
                    status=ManifestStatus.FAILED, error_message=err.message[:5000],
                    error_file=(err.file or "")[:500], error_line=err.line,
                ))
        RenderedManifest.objects.bulk_create(rows)
        updates: dict[str, Any] = {
            "last_render_attempt_sha": commit.sha,
            "config_fingerprint": plan.fingerprint,
        }
        if status == RenderStatus.RENDERED:
            updates["last_rendered_sha"] = commit.sha
            updates["watched_paths"] = sorted(watched)
            updates["declared_depends_on"] = list(declared)
        PathMapping.objects.filter(pk=mapping.pk).update(**updates)
        for key, value in updates.items():
            setattr(mapping, key, value)
        short = commit.sha[:10]
        counts = (f"{len(clusters)} cluster(s), {object_count} object(s), {rendered} rendered, "
                  f"{reused} reused")
        if status == RenderStatus.FAILED and first_error is not None:
            where = ""
            if first_error.file:
                where = first_error.file + (f":{first_error.line}" if first_error.line else "") + ": "
            record("render.failed", mr, repository=mapping.repository,
                   after={"status": status, "reason": plan.reason, "failed_clusters": mr.failed_count,
                          "clusters": len(clusters), "error": mr.error_dict()},
                   message=f"{mapping.name} at {short} failed ({mr.failed_count} of {len(clusters)} "
                           f"cluster(s)): {where}{first_error.message}"[:1000])
        else:
            record(f"render.{'ok' if status == RenderStatus.RENDERED else 'skipped'}", mr,
                   repository=mapping.repository,
                   after={"status": status, "reason": plan.reason, "clusters": len(clusters),
                          "objects": object_count, "rendered": rendered, "reused": reused},
                   message=f"{mapping.name} at {short}: {counts}"
                           + ("" if clusters else " (the group has no clusters)")
                           + (f" (paused by {paused}: not rolled out)" if paused else ""))
    return MappingRenderOutcome(
        commit=commit.sha, mapping_id=mapping.pk, mapping=mapping.name, status=status, reason=plan.reason,
        clusters=len(clusters), objects=object_count, rendered=rendered, reused=reused,
        failed=mr.failed_count, error=mr.error_dict(),
    )


# --------------------------------------------------------------------------- commits


def dependencies_first(tree: SourceTree, plans: list[_Plan]) -> list[_Plan]:
    """The plans with the mappings others depend on first (set dependencies, and dependsOn as this commit's
    fleetgate.yaml files say), so that a dependency's rollout of a commit exists before its dependents'
    do: a dependent then waits for the new commit of its dependency, not the old one. Unchanged when
    nothing depends on anything here (or on a cycle, which the render of the mapping reports)."""
    if len(plans) < 2:
        return plans
    by_label = {mapping_label(p.mapping): p for p in plans}
    graph: dict[str, set[str]] = {name: set() for name in by_label}
    ids = {p.mapping.pk: name for name, p in by_label.items()}
    through = PathMapping.depends_on.through
    for src, dst in through.objects.filter(from_pathmapping_id__in=list(ids)).values_list(
            "from_pathmapping_id", "to_pathmapping_id"):
        if dst in ids:
            graph[ids[src]].add(ids[dst])
    for name, plan in by_label.items():
        try:
            names, _ = declared_dependencies(tree, expand_paths(tree, plan.mapping))
            if any(n.startswith(FLEET_DEPENDENCY_PREFIXES) for n in names):  # fleet.yaml names, selectors
                names = tuple(resolve_fleet_dependencies(tree, plan.mapping, names))
        except RenderError:
            continue  # rendering the mapping reports it
        graph[name].update(d for d in (resolve_label(n, plan.mapping.repository.name) for n in names)
                           if d in by_label)
    if not any(graph.values()):
        return plans
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return plans
    return [by_label[name] for name in order]


def _commit_status(commit: Commit) -> str:
    statuses = set(MappingRender.objects.filter(commit=commit).values_list("status", flat=True))
    if RenderStatus.FAILED in statuses:
        return CommitStatus.FAILED
    if RenderStatus.RENDERED in statuses:
        return CommitStatus.RENDERED
    return CommitStatus.SKIPPED


def render_commit(session: RenderSession, cache: RepositoryCache, commit: Commit,
                  mappings: Sequence[PathMapping], *, only_config: bool = False
                  ) -> list[MappingRenderOutcome]:
    """Render, at ``commit``, every mapping it affects; set the commit's status."""
    plans = _affected(cache, commit, mappings, only_config=only_config)
    outcomes: list[MappingRenderOutcome] = []
    if plans:
        existing = {mr.mapping_id: mr for mr in MappingRender.objects.filter(commit=commit)}
        try:
            with cache.export(commit.sha) as root:
                session.stats.exports += 1
                tree = SourceTree(root)
                plans = dependencies_first(tree, plans)
                for plan in plans:
                    outcomes.append(render_mapping(session, tree, commit, plan,
                                                   existing.get(plan.mapping.pk), known=True))
        except GitError as exc:
            error = RenderError(f"cannot export commit {commit.sha[:10]}: {exc.message}")
            for plan in plans[len(outcomes):]:
                outcomes.append(_store(commit, plan, {}, 0, 0, error, None,
                                       existing.get(plan.mapping.pk), known=True,
                                       on_rendered=session.on_rendered))
    if plans:
        status = _commit_status(commit)
    elif commit.status == CommitStatus.SEEN:
        status = CommitStatus.SKIPPED
    else:
        status = commit.status
    if status != commit.status:
        Commit.objects.filter(pk=commit.pk).update(status=status)
        commit.status = status
    return outcomes


def render_pending(repo: Repository, cache: RepositoryCache, *, session: RenderSession | None = None
                   ) -> list[MappingRenderOutcome]:
    """Render every commit of the repository not rendered yet (status ``seen``), oldest first, then
    the head again for mappings that are new or whose configuration changed.  Where the repository requires
    signed commits, each commit is verified first (``signing.check_signature``) and a refused one is not
    rendered.  Resumable: a run that died
    half-way leaves commits ``seen`` and the next run continues with them."""
    session = session or RenderSession()
    mappings = load_mappings(repo)
    outcomes: list[MappingRenderOutcome] = []
    pending = list(
        Commit.objects.filter(repository=repo, status=CommitStatus.SEEN).order_by("sequence", "id"))
    with signing_keyring(repo) as keys:
        for commit in pending:
            # Verified commits: an unsigned or wrongly signed commit is refused here, never rendered.
            if check_signature(repo, cache, commit, keys=keys):
                outcomes.extend(render_commit(session, cache, commit, mappings))
        head = Commit.objects.filter(repository=repo, sha=repo.head_sha).first() if repo.head_sha else None
        if head is not None and mappings and head.pk not in {c.pk for c in pending}:
            # A head refused earlier is rendered in full once it passes (a key was added, or verification
            # turned off); any other head only for mappings that are new or whose configuration changed.
            refused = head.status == CommitStatus.UNVERIFIED
            if check_signature(repo, cache, head, keys=keys):
                outcomes.extend(render_commit(session, cache, head, mappings, only_config=not refused))
    return outcomes
