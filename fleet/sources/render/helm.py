"""Helm through helm-python-sdk (Helm v4 in-process; ``helm_python`` is imported lazily, in the worker).

What Fleetgate does with a chart:

* Where the chart comes from: a directory of the repository (the mapped path, or ``helm.chart`` naming a
  directory relative to it), or a chart outside it (``helm.chart``/``helm.repo``/``helm.version``/
  ``helm.digest``: an index repository, an ``oci://`` registry or an archive URL), fetched through the chart
  cache (``fleet.sources.charts``) and rendered from its archive.  Its digest is part of the input hash.
* ``Chart.yaml`` dependencies: those vendored in ``charts/`` (a directory or ``.tgz``) are used as they
  are.  A missing ``file://`` dependency is taken from that directory of the repository (it must stay in
  the repository), as ``helm dependency build`` would; a missing one from an ``https://`` or ``oci://``
  repository is fetched through the chart cache (the version of ``Chart.lock`` if there is one, else the
  constraint of ``Chart.yaml``); without a chart fetcher (or offline) that is a ``network_required``
  error naming the dependency and the repository.  A dependency from a repository alias (``@name``) is
  refused (no Helm repository configuration in Fleetgate: write the URL).  Helm itself would render a
  missing dependency as zero objects without an error.
* Values: chart defaults < ``helm.valuesFiles`` < ``helm.values`` of ``fleetgate.yaml`` (top level, then
  the matched target) < the mapping's, group's and cluster's values (given by the caller, in that order).
  The cluster context is added as ``.Values.fleetgate`` and ``.Values.global.fleetgate`` (visible in
  subcharts): ``{cluster: {name, labels, group}, group: {name}, repository: {url}, commit: {sha, short},
  mapping: {path}}``.
* Rendering is an install (``.Release.IsInstall``), revision 1, the release name (the mapping's
  ``helm_release_name``, else ``helm.releaseName``, else the chart name) and the release namespace (the
  forced namespace of ``fleetgate.yaml``, else the mapping's ``target_namespace``, else ``default``):
  ``.Release.Name`` and ``.Release.Namespace`` in templates.
* CRDs from ``crds/`` (chart and subcharts) are added to the objects, as ``helm install`` would apply them.
* ``NOTES.txt`` is dropped, empty documents are dropped.
* Hooks (``helm.sh/hook``): test hooks (``test``, ``test-success``, ``test-failure``) are dropped;
  delete and rollback hooks (``pre/post-delete``, ``pre/post-rollback``) are dropped, since there is no
  release lifecycle in a GitOps apply; install and upgrade hooks (``pre-install``, ``post-install``,
  ``pre-upgrade``, ``post-upgrade``) are kept as ordinary objects with their annotations, so the apply
  step can order them (``pre-*`` first) using ``helm_hook_phases``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.sources.charts.errors import ChartError
from fleet.sources.charts.spec import ChartSpec, ResolvedChart, redact

from .errors import RenderError
from .objects import RawObject
from .tree import SourceTree
from .yamlsafe import MAX_FILE_BYTES, MAX_RENDER_BYTES, load_documents, load_one

if TYPE_CHECKING:
    from fleet.sources.charts.fetcher import ChartFetcher

KEPT_HOOKS = frozenset({"pre-install", "post-install", "pre-upgrade", "post-upgrade"})
_ERR_LOC = re.compile(r"([\w.\-]+(?:/[\w.\-]+)+\.(?:yaml|yml|tpl|txt|json)):(\d+)")


def helm_hook_phases(obj: Mapping[str, Any]) -> list[str]:
    ann = ((obj.get("metadata") or {}).get("annotations")) or {}
    raw = ann.get("helm.sh/hook")
    if not isinstance(raw, str):
        return []
    return [p.strip() for p in raw.split(",") if p.strip()]


def _keep_hook(obj: Mapping[str, Any]) -> bool:
    phases = helm_hook_phases(obj)
    if not phases:
        return True
    if any(p.startswith("test") for p in phases):
        return False
    return any(p in KEPT_HOOKS for p in phases)


def _template_source(chart_rel: str, name: str) -> str:
    """``demo/templates/x.yaml`` (chart-name prefixed) -> ``<chart dir>/templates/x.yaml``."""
    rest = name.split("/", 1)[1] if "/" in name else name
    return f"{chart_rel}/{rest}" if chart_rel else rest


def _chart_file(tree: SourceTree, chart_dir: Path) -> str:
    rel = tree.rel(chart_dir)
    return f"{rel}/Chart.yaml" if rel else "Chart.yaml"


def _dependency_list(tree: SourceTree, chart_dir: Path) -> list[dict[str, Any]]:
    import helm_python

    try:
        return list(helm_python.dependency_list(str(chart_dir)))
    except helm_python.HelmError as exc:
        raise RenderError(f"cannot read chart dependencies: {exc}", file=_chart_file(tree, chart_dir),
                          renderer="helm") from None


def _locked_versions(tree: SourceTree, chart_dir: Path) -> dict[str, str]:
    lock = chart_dir / "Chart.lock"
    if not lock.is_file():
        return {}
    data = load_one(tree.read_bytes(lock), file=tree.rel(lock)) or {}
    deps = data.get("dependencies") if isinstance(data, dict) else None
    return {str(d.get("name")): str(d.get("version")) for d in deps or [] if isinstance(d, dict)}


@dataclass(frozen=True)
class ChartInputs:
    """What a repository chart reads besides its own files: the directories of ``file://`` dependencies
    missing from ``charts/`` (copied in at render time) and the remote dependencies fetched for it."""

    local: tuple[tuple[str, Path], ...] = ()  # (path in the assembled chart, repository directory)
    remote: tuple[tuple[str, ResolvedChart], ...] = ()  # (charts/ directory, resolved chart)

    @property
    def needs_assembly(self) -> bool:
        return bool(self.local or self.remote)

    def hash_payload(self, tree: SourceTree) -> dict[str, Any]:
        return {
            "local": [[at, tree.rel(d)] for at, d in self.local],
            "remote": [[at, r.name, r.version, r.archive_digest] for at, r in self.remote],
        }

    def files(self, tree: SourceTree) -> list[Path]:
        out: list[Path] = []
        for _, d in self.local:
            out.extend(tree.walk(d))
        return out


def chart_inputs(tree: SourceTree, chart_dir: Path, charts: ChartFetcher | None) -> ChartInputs:
    """The dependencies of a repository chart that are not vendored, resolved (recursively for ``file://``);
    RenderError for those that cannot be (missing directory, alias, no fetcher, offline...)."""
    local: list[tuple[str, Path]] = []
    remote: list[tuple[str, ResolvedChart]] = []

    def visit(directory: Path, at: str, seen: tuple[Path, ...]) -> None:
        chart_file = _chart_file(tree, directory)
        locked = _locked_versions(tree, directory)
        for dep in _dependency_list(tree, directory):
            status = dep.get("status")
            if status in ("ok", "unpacked"):
                continue
            name, repo = str(dep.get("name") or ""), str(dep.get("repository") or "")
            if status != "missing":
                raise RenderError(f"dependency {name!r} in charts/ is {status}", file=chart_file,
                                  renderer="helm")
            sub = f"{at}/charts/{name}" if at else f"charts/{name}"
            if repo.startswith("file://"):
                try:
                    target = tree.resolve(repo[len("file://"):], base=directory, what=f"dependency {name!r}",
                                          allow_parent=True)
                except RenderError as exc:
                    raise RenderError(f"dependency {name!r} is missing from charts/ and {repo} cannot be "
                                      f"used: {exc.message} (a file:// dependency must be a chart directory "
                                      "inside the repository)", file=chart_file, renderer="helm") from None
                if not (target / "Chart.yaml").is_file():
                    raise RenderError(f"dependency {name!r}: {repo} is not a chart directory of the "
                                      "repository", file=chart_file, renderer="helm")
                if target in seen:
                    raise RenderError(f"dependency {name!r}: {repo} depends on itself", file=chart_file,
                                      renderer="helm")
                tree.check_symlinks(target)
                local.append((sub, target))
                visit(target, sub, (*seen, target))
            elif repo.startswith(("https://", "http://", "oci://")):
                if charts is None:
                    raise ChartError("network_required", f"dependency {name!r} from {redact(repo)} is not "
                                     "vendored and no chart fetcher is configured: the chart needs network "
                                     "access, or run `helm dependency build` and commit charts/",
                                     file=chart_file)
                version = locked.get(name) or str(dep.get("version") or "")
                resolved = charts.resolve(ChartSpec(chart=name, repo=repo, version=version), file=chart_file)
                remote.append((f"{at}/charts" if at else "charts", resolved))
            elif repo.startswith("@") or repo.startswith("alias:"):
                raise RenderError(f"dependency {name!r} is not vendored and names the repository alias "
                                  f"{repo}: Fleetgate has no Helm repository configuration; write its URL, "
                                  "or vendor it into charts/",
                                  file=chart_file, renderer="helm")
            else:
                raise RenderError(f"dependency {name!r} is declared in Chart.yaml but missing from charts/",
                                  file=chart_file, renderer="helm")

    visit(chart_dir, "", (chart_dir,))
    return ChartInputs(tuple(local), tuple(remote))


def remote_chart(custom: Any, file: str | None) -> ChartSpec | None:
    """The chart outside the repository that ``helm.chart``/``helm.repo``/``helm.version``/``helm.digest``
    (of fleetgate.yaml or fleet.yaml, in the matched customization) name, or None (no chart named, or a
    directory of the repository: ``fleetbundle.chart_entry`` finds that one)."""
    chart = str(getattr(custom, "helm_chart", None) or "").strip()
    repo = str(getattr(custom, "helm_repo", None) or "").strip()
    if not repo and "://" not in chart and not chart.startswith(("git::", "github.com/")):
        return None
    if chart.startswith(("git::", "github.com/")):
        raise ChartError("invalid", f"helm.chart {chart!r} is a go-getter source: add its Git repository to "
                         "Fleetgate and point helm.chart at the chart's directory", file=file)
    if not chart:
        raise ChartError("invalid", f"helm.repo {redact(repo)} needs helm.chart (the chart's name)",
                         file=file)
    version = str(getattr(custom, "helm_version", None) or "").strip()
    digest = str(getattr(custom, "helm_digest", None) or "").strip()
    return ChartSpec(chart=chart, repo=repo, version=version, digest=digest).check(file=file)


def local_dependencies(tree: SourceTree, chart_dir: Path) -> list[Path]:
    """The repository directories a chart reads through ``file://`` dependencies missing from ``charts/``
    (recursively), for the mapping's watched paths: a change there re-renders it.  Tolerant: what cannot
    be read is left out (the render reports it)."""
    found: list[Path] = []

    def visit(directory: Path) -> None:
        try:
            deps = _dependency_list(tree, directory)
        except RenderError:
            return
        for dep in deps:
            repo = str(dep.get("repository") or "")
            if dep.get("status") != "missing" or not repo.startswith("file://"):
                continue
            try:
                target = tree.resolve(repo[len("file://"):], base=directory, what="dependency",
                                      allow_parent=True)
            except RenderError:
                continue
            if (target / "Chart.yaml").is_file() and target not in found and target != chart_dir:
                found.append(target)
                visit(target)

    visit(chart_dir)
    return found


def chart_dependencies(tree: SourceTree, path: str) -> list[str]:
    """``local_dependencies`` of the chart at a mapping path (repository-relative), [] when it is none."""
    try:
        directory = tree.resolve(path, what="mapping path")
    except RenderError:
        return []
    if not (directory / "Chart.yaml").is_file():
        return []
    return [tree.rel(d) for d in local_dependencies(tree, directory)]


def check_dependencies(tree: SourceTree, chart_dir: Path) -> None:
    """Every dependency vendored, or resolvable without the network (``file://``)."""
    chart_inputs(tree, chart_dir, None)


@contextlib.contextmanager
def _assembled(tree: SourceTree, chart_dir: Path, inputs: ChartInputs, charts: ChartFetcher | None
               ) -> Iterator[Path]:
    """The chart directory itself, or a private copy with its missing dependencies put into ``charts/``
    (the copy sits at the same relative path, so messages name the repository's files)."""
    if not inputs.needs_assembly:
        yield chart_dir
        return
    with tempfile.TemporaryDirectory(prefix="fleetgate-chart-") as tmp:
        rel = tree.rel(chart_dir)
        root = Path(tmp) / (rel or "chart")
        shutil.copytree(chart_dir, root, symlinks=False)
        for at, directory in inputs.local:
            dest = root / at
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(directory, dest, symlinks=False)
        for at, resolved in inputs.remote:
            if charts is None:  # chart_inputs refused this already
                raise RenderError("a chart fetcher is needed", renderer="helm")
            archive = charts.fetch(resolved)
            dest_dir = root / at
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, dest_dir / f"{resolved.name}-{resolved.version or 'pinned'}.tgz")
        yield root


def render_helm(
    tree: SourceTree,
    chart_dir: Path,
    *,
    values: Mapping[str, Any],
    release_name: str,
    namespace: str,
    charts: ChartFetcher | None = None,
    inputs: ChartInputs | None = None,
) -> tuple[list[RawObject], list[str]]:
    import helm_python

    chart_rel = tree.rel(chart_dir)
    chart_file = _chart_file(tree, chart_dir)
    tree.check_symlinks(chart_dir)
    meta = load_one(tree.read_bytes(chart_dir / "Chart.yaml"), file=chart_file)
    if not isinstance(meta, dict) or not meta.get("name"):
        raise RenderError("Chart.yaml needs a name", file=chart_file, renderer="helm")
    _check_release(release_name, chart_file)
    if inputs is None:
        inputs = chart_inputs(tree, chart_dir, charts)
    with _assembled(tree, chart_dir, inputs, charts) as path:
        prefix = str(path)[: len(str(path)) - len(chart_rel)] if chart_rel else str(path.parent) + "/"
        return _render_loaded(lambda: helm_python.Chart.load(str(path)), chart_rel, chart_file,
                              values=values, release_name=release_name, namespace=namespace,
                              strip=(str(tree.root) + "/", prefix))


def render_helm_archive(
    archive: Path,
    resolved: ResolvedChart,
    *,
    values: Mapping[str, Any],
    release_name: str,
    namespace: str,
) -> tuple[list[RawObject], list[str]]:
    """Render a fetched chart archive; sources read ``<name>-<version>/templates/...``."""
    import helm_python

    label = f"{resolved.name}-{resolved.version}" if resolved.version else resolved.name
    what = resolved.spec.describe()
    _check_release(release_name, what)
    data = archive.read_bytes()
    raws, warnings = _render_loaded(lambda: helm_python.Chart.load_archive(data), label, what,
                                    values=values, release_name=release_name, namespace=namespace)
    return raws, [f"rendered {what} ({resolved.archive_digest})", *warnings]


def _check_release(release_name: str, file: str) -> None:
    import helm_python

    try:
        helm_python.validate_release_name(release_name)
    except helm_python.HelmError as exc:
        raise RenderError(f"invalid release name {release_name!r}: {exc}", file=file,
                          renderer="helm") from None


def _render_loaded(
    load: Callable[[], Any],
    chart_rel: str,
    chart_file: str,
    *,
    values: Mapping[str, Any],
    release_name: str,
    namespace: str,
    strip: tuple[str, ...] = (),
) -> tuple[list[RawObject], list[str]]:
    import helm_python

    warnings: list[str] = []
    try:
        with load() as chart:
            crds = chart.crds
            manifests = chart.render(dict(values), name=release_name, namespace=namespace, revision=1,
                                     is_install=True)
    except helm_python.HelmError as exc:
        text = str(exc)
        for prefix in strip:
            text = text.replace(prefix, "")
        file, line = chart_file, None
        m = _ERR_LOC.search(text)
        if m:
            file, line = _template_source(chart_rel, m.group(1)), int(m.group(2))
        kind = "render" if isinstance(exc, helm_python.HelmRenderError) else "load"
        raise RenderError(f"helm {kind} failed: {text}", file=file, line=line, renderer="helm") from None
    raws: list[RawObject] = []
    for crd in sorted(crds, key=lambda c: c.get("filename", "")):
        source = _template_source(chart_rel, crd.get("filename") or crd.get("name", "crds"))
        raws.extend(_documents(crd.get("data", ""), source))
    total = sum(len(str(text)) for text in manifests.values())
    if total > MAX_RENDER_BYTES:
        raise RenderError(f"the chart rendered {total} bytes, more than the limit of {MAX_RENDER_BYTES}",
                          file=chart_file, renderer="helm")
    dropped = 0
    for name in sorted(manifests):
        if name.endswith("NOTES.txt"):
            continue
        source = _template_source(chart_rel, name)
        for raw in _documents(manifests[name], source):
            if isinstance(raw.data, dict) and not _keep_hook(raw.data):
                dropped += 1
                continue
            raws.append(raw)
    if dropped:
        warnings.append(f"dropped {dropped} Helm test/delete/rollback hook object(s)")
    return raws, warnings


def _documents(text: str, source: str) -> list[RawObject]:
    if not text.strip():
        return []
    size = len(text.encode())
    if size > MAX_FILE_BYTES:
        raise RenderError(f"the template rendered {size} bytes, more than the limit of {MAX_FILE_BYTES}",
                          file=source, renderer="helm")
    try:
        docs = load_documents(text, file=source)
    except RenderError as exc:
        raise RenderError(f"rendered output is not valid YAML: {exc.message}", file=source, line=exc.line,
                          document=exc.document, renderer="helm") from None
    return [RawObject(d.data, source, d.index, d.line) for d in docs if d.data is not None]


def read_chart_file(archive: Path, rel: str, what: str) -> bytes:
    """The bytes of file ``rel`` (relative to the chart's root) in a chart archive (``<name>/...`` inside),
    as Argo CD and Flux read the valuesFiles of a chart from a repository; RenderError if it is not there."""
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                top, _, inner = member.name.lstrip("./").partition("/")
                if top and inner == rel and member.isfile():
                    if member.size > MAX_FILE_BYTES:
                        raise RenderError(f"{what} is {member.size} bytes, more than the limit of "
                                          f"{MAX_FILE_BYTES}", renderer="helm")
                    f = tar.extractfile(member)
                    return f.read() if f is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise RenderError(f"cannot read {what}: {exc}", renderer="helm") from None
    raise RenderError(f"values file {what} is not in the chart", renderer="helm")
