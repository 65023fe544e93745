"""Helm through helm-python-sdk (Helm v4 in-process; ``helm_python`` is imported lazily, in the worker).

What Fleetgate does with a chart:

* ``Chart.yaml`` dependencies must be vendored in ``charts/`` (a directory or ``.tgz``).  A missing one
  is a RenderError (Helm itself would render it as zero objects without an error); a remote one says that
  the chart needs the network and must be vendored (``helm dependency build`` and commit ``charts/``).
* Values: chart defaults < ``helm.valuesFiles`` < ``helm.values`` of ``fleetgate.yaml`` (top level, then
  the matched target) < the mapping's, group's and cluster's values (given by the caller, in that order).
  The cluster context is added as ``.Values.fleetgate`` and ``.Values.global.fleetgate`` (visible in
  subcharts): ``{cluster: {name, labels, group}, group: {name}, repository: {url}, commit: {sha, short},
  mapping: {path}}``.
* Rendering is an install (``.Release.IsInstall``), revision 1, the release name (``helm.releaseName``,
  the request's, or the chart name) and the target namespace.
* CRDs from ``crds/`` (chart and subcharts) are added to the objects, as ``helm install`` would apply them.
* ``NOTES.txt`` is dropped, empty documents are dropped.
* Hooks (``helm.sh/hook``): test hooks (``test``, ``test-success``, ``test-failure``) are dropped;
  delete and rollback hooks (``pre/post-delete``, ``pre/post-rollback``) are dropped, since there is no
  release lifecycle in a GitOps apply; install and upgrade hooks (``pre-install``, ``post-install``,
  ``pre-upgrade``, ``post-upgrade``) are kept as ordinary objects with their annotations, so the apply
  step can order them (``pre-*`` first) using ``helm_hook_phases``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import RenderError
from .objects import RawObject
from .tree import SourceTree
from .yamlsafe import MAX_FILE_BYTES, MAX_RENDER_BYTES, load_documents, load_one

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


def check_dependencies(tree: SourceTree, chart_dir: Path) -> None:
    import helm_python

    chart_rel = tree.rel(chart_dir)
    chart_file = f"{chart_rel}/Chart.yaml" if chart_rel else "Chart.yaml"
    try:
        deps = helm_python.dependency_list(str(chart_dir))
    except helm_python.HelmError as exc:
        raise RenderError(f"cannot read chart dependencies: {exc}", file=chart_file,
                          renderer="helm") from None
    for dep in deps:
        status = dep.get("status")
        if status in ("ok", "unpacked"):
            continue
        name, repo = dep.get("name"), str(dep.get("repository") or "")
        if status == "missing":
            if repo.startswith(("http://", "https://", "oci://")) or repo.startswith("@"):
                raise RenderError(
                    f"dependency {name!r} from {repo} is not vendored: the chart needs network access; "
                    "run `helm dependency build` and commit charts/", file=chart_file, renderer="helm")
            raise RenderError(f"dependency {name!r} is declared in Chart.yaml but missing from charts/",
                              file=chart_file, renderer="helm")
        raise RenderError(f"dependency {name!r} in charts/ is {status}", file=chart_file, renderer="helm")


def render_helm(
    tree: SourceTree,
    chart_dir: Path,
    *,
    values: Mapping[str, Any],
    release_name: str,
    namespace: str,
) -> tuple[list[RawObject], list[str]]:
    import helm_python

    chart_rel = tree.rel(chart_dir)
    chart_file = f"{chart_rel}/Chart.yaml" if chart_rel else "Chart.yaml"
    tree.check_symlinks(chart_dir)
    meta = load_one(tree.read_bytes(chart_dir / "Chart.yaml"), file=chart_file)
    if not isinstance(meta, dict) or not meta.get("name"):
        raise RenderError("Chart.yaml needs a name", file=chart_file, renderer="helm")
    try:
        helm_python.validate_release_name(release_name)
    except helm_python.HelmError as exc:
        raise RenderError(f"invalid release name {release_name!r}: {exc}", file=chart_file,
                          renderer="helm") from None
    check_dependencies(tree, chart_dir)
    warnings: list[str] = []
    try:
        with helm_python.Chart.load(str(chart_dir)) as chart:
            crds = chart.crds
            manifests = chart.render(dict(values), name=release_name, namespace=namespace, revision=1,
                                     is_install=True)
    except helm_python.HelmError as exc:
        text = str(exc).replace(str(tree.root) + "/", "")
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
