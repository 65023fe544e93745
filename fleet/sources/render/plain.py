"""Plain YAML: every ``.yaml``/``.yml``/``.json`` file under the mapped directory, recursively.

Subdirectories are included, as Fleet and Flux do (Argo CD does not by default): a mapping of
``apps/web`` renders ``apps/web/**``.  Files and directories whose name starts with ``.`` are skipped
(``.github/``, ``.gitlab-ci.yml``).  ``fleetgate.yaml`` and the Helm values files it names are not
manifests and are skipped (a ``fleetgate.yaml`` deeper down is an error: it would not apply).
A nested directory holding a ``kustomization.yaml`` or ``Chart.yaml`` is an
error (map it on its own, or reference it from a kustomization), so such files are never applied as
objects by accident.  Empty documents are skipped; any other document must be a mapping with
``apiVersion``, ``kind`` and ``metadata.name`` (checked in ``objects.validate_object``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import RenderError
from .objects import RawObject
from .tree import KUSTOMIZATION_FILES, SourceTree
from .yamlsafe import MAX_RENDER_BYTES

PLAIN_SUFFIXES = (".yaml", ".yml", ".json")
NOT_MANIFESTS = ("fleetgate.yaml", "fleetgate.yml")


def plain_files(tree: SourceTree, directory: Path, *, exclude: Iterable[Path] = ()) -> list[Path]:
    excluded = {Path(p) for p in exclude}
    files = []
    for f in tree.walk(directory, skip_hidden=True):
        if f.name in KUSTOMIZATION_FILES or f.name == "Chart.yaml":
            raise RenderError(
                f"{f.name} in a plain YAML directory: map {tree.rel(f.parent) or '.'} on its own "
                "(renderer kustomize/helm) or reference it from a kustomization", file=tree.rel(f))
        if f.name in NOT_MANIFESTS:
            if f.parent == directory:
                continue
            raise RenderError(
                f"{f.name} only applies at the mapped path: map {tree.rel(f.parent)} on its own",
                file=tree.rel(f))
        if f in excluded or not f.name.endswith(PLAIN_SUFFIXES):
            continue
        files.append(f)
    return files


def render_plain(tree: SourceTree, directory: Path, *, exclude: Iterable[Path] = (),
                 max_total_bytes: int = MAX_RENDER_BYTES) -> list[RawObject]:
    raws: list[RawObject] = []
    files = plain_files(tree, directory, exclude=exclude)
    total = 0
    for f in files:  # sizes first: nothing is parsed when the whole is too large
        total += f.stat().st_size
        if total > max_total_bytes:
            raise RenderError(f"the manifests of {tree.rel(directory) or '.'} are more than "
                              f"{max_total_bytes} bytes together (the limit of one render)", file=tree.rel(f))
    for f in files:
        rel = tree.rel(f)
        for doc in tree.documents(f):
            if doc.data is None:
                continue
            raws.append(RawObject(doc.data, rel, doc.index, doc.line))
    return raws
