"""Plain directories: manifests under the mapped directory, laid out as Flux, Fleet or Argo CD lay them.

**Which files.** ``.yaml``/``.yml``/``.json`` files under the mapped directory, recursively by default (as
Fleet and Flux do). ``DirectoryOptions`` gives Argo CD's directory source options: ``recurse`` off reads
the mapped directory only (Argo's default), ``include``/``exclude`` are Argo's globs, matched as Argo
matches them (gobwas/glob without separators: ``*`` also crosses ``/``; ``{a.yaml,b/*.yaml}``
alternatives) against the path relative to the mapped directory; exclude wins. A file holding Argo's
``+argocd:skip-file-rendering`` marker is skipped, as Argo skips it.

**Skipped, never read as manifests.** Names starting with ``.`` (``.github/``, ``.gitlab-ci.yml``);
``fleetgate.yaml`` at the mapped path and the Helm values files it names (deeper down it is an error: it
would not apply); the CI files Flux's source-controller leaves out of every artifact (``appveyor.yml``,
``cloudbuild.yaml``, ``codeship-services.yml``, ``codeship-steps.yml``); and whatever the repository's
``.sourceignore`` files exclude (gitignore syntax, each file scoped to its directory, as Flux reads them).
Any other YAML file must hold Kubernetes objects: a values file or CI configuration that is not listed
above is an error naming the file, as Flux's "failed to decode Kubernetes YAML" is.

**Nested kustomizations (Flux's layout).** A subdirectory holding its own ``kustomization.yaml`` is built
as a Kustomize base and its objects are added, the way kustomize-controller's generated kustomization
lists it as a resource; its files are not read a second time as plain manifests, and the walk does not
descend into it. A nested ``Chart.yaml`` is an error naming it (map the chart on its own), unless recursion,
the globs or ``.sourceignore`` leave it out: Argo CD detects Helm only at an application's root and
kustomize-controller renders no chart (both read a nested chart's files as manifests and fail on them);
leaving it out silently would deploy less than the directory holds.  (A Fleet bundle, with ``fleet.yaml``
at the mapped path, leaves nested charts out: ``fleetbundle.render_raw_bundle``.)

**Unsupported renderers.** Jsonnet (``*.jsonnet``/``*.libsonnet``, which Argo CD evaluates in directory
sources) and the markers of Argo CD config-management plugins (``.argocd-source*.yaml`` naming a
``plugin``, ``helmfile.yaml``, ``jsonnetfile.json``, ``cdk8s.yaml``, ``kcl.mod``) are refused with an
"unsupported renderer" error naming the files: rendering only the YAML beside them, or nothing, would look
like "delete everything else" to a prune.

Empty documents are skipped; any other document must be a mapping with ``apiVersion``, ``kind`` and
``metadata.name`` (checked in ``objects.validate_object``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import RenderError
from .objects import RawObject
from .tree import KUSTOMIZATION_FILES, SourceTree
from .yamlsafe import MAX_RENDER_BYTES

PLAIN_SUFFIXES = (".yaml", ".yml", ".json")
NOT_MANIFESTS = ("fleetgate.yaml", "fleetgate.yml")
# Rancher Fleet: fleet.yaml is a bundle's options, never a manifest; a subdirectory holding one is a bundle of
# its own (Fleet leaves it out of its parent's bundle), so a plain render leaves it out too (fleetbundle.py).
FLEET_BUNDLE_FILES = ("fleet.yaml", "fleet.yml")
# Flux source-controller's default exclusions that do not start with a dot (sourceignore.ExcludeCI).
FLUX_CI_FILES = frozenset({"appveyor.yml", "cloudbuild.yaml", "codeship-services.yml", "codeship-steps.yml"})
SOURCEIGNORE = ".sourceignore"
JSONNET_SUFFIXES = (".jsonnet", ".libsonnet")
# Files that mean "another tool renders this directory" (Argo CD config-management plugins and friends).
PLUGIN_MARKERS = {
    "helmfile.yaml": "Helmfile", "helmfile.yaml.gotmpl": "Helmfile", "helmfile.yml": "Helmfile",
    "jsonnetfile.json": "Jsonnet (jsonnet-bundler/Tanka)", "cdk8s.yaml": "cdk8s", "kcl.mod": "KCL",
}
MAX_NAMED_FILES = 5


@dataclass(frozen=True)
class DirectoryOptions:
    """Argo CD's directory options for a plain directory (``spec.source.directory``)."""

    recurse: bool = True
    include: str = ""
    exclude: str = ""

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > 1000 or "\n" in value:
                raise RenderError(f"directory {name} must be one glob of at most 1000 characters")

    @property
    def is_default(self) -> bool:
        return self.recurse and not self.include and not self.exclude

    def selects(self, rel: str) -> bool:
        """Does a path relative to the mapped directory pass ``include``/``exclude`` (as Argo CD)?"""
        if self.exclude and glob_match(self.exclude, rel):
            return False
        return not self.include or glob_match(self.include, rel)


def glob_match(pattern: str, rel: str) -> bool:
    """Argo CD's ``glob.Match(pattern, path)``: gobwas/glob without separators (``*`` crosses ``/``,
    ``?``, ``[a-z]``, ``[!a]``, ``{a,b}``), the whole path must match."""
    from wcmatch import fnmatch  # imported when a mapping uses globs: keeps the render command's start fast

    try:
        return bool(fnmatch.fnmatch(rel, pattern, flags=fnmatch.BRACE | fnmatch.DOTMATCH | fnmatch.FORCEUNIX))
    except Exception as exc:  # wcmatch raises several types for a malformed pattern
        raise RenderError(f"directory glob {pattern!r} is not valid: {exc}") from None


MAX_BRACE_DEPTH = 3  # {a,{b,{c,d}}}: deeper nesting is refused (the schema's pattern can then say it exactly)


def _glob_schema_pattern() -> str:
    """What ``validate_glob`` accepts, as a regular expression for the API schema (ECMA-262 and Python ``re``
    read it alike) for a non-empty value (the empty one is offered beside it): leading and trailing white
    space (the API strips it, as Python's ``str.strip``), then tokens: an escape (a backslash and any
    character, or a backslash at the end), a class (``[`` then any character, then anything up to the
    first ``]``), a ``{...}`` group (nested at most MAX_BRACE_DEPTH deep) or any other character but a
    newline or NUL.  ``tests/sources/test_directory_glob_schema.py`` checks that the two agree."""
    space = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    token = rf"(?:\\[^\n\x00]|\\(?=[{space}]*$)|\[[^\n\x00][^\]\n\x00]*\]|[^\\\[{{}}\n\x00])"
    body = f"{token}*"
    for _ in range(MAX_BRACE_DEPTH):
        body = f"(?:{token}|\\{{{body}\\}})*"
    # At least one character: drf-spectacular offers the empty string beside the pattern (oneOf).
    return rf"^(?=[\s\S])[{space}]*{body}[{space}]*$"


GLOB_SCHEMA_PATTERN = _glob_schema_pattern()


def validate_glob(pattern: str) -> str:
    """Check an include/exclude glob when it is saved; returns it stripped.  Unbalanced ``{}`` and ``[]``
    are refused: gobwas/glob does not compile them, and Argo CD then matches nothing.  So are braces nested
    more than MAX_BRACE_DEPTH deep, and globs with more than 1000 alternatives once braces are expanded
    (wcmatch's limit)."""
    pattern = (pattern or "").strip()
    if pattern:
        DirectoryOptions(include=pattern)
        if "\x00" in pattern:
            raise RenderError("directory glob may not contain NUL characters")
        depth, i = 0, 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\":
                i += 1
            elif c == "[":
                end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
                if end < 0:
                    raise RenderError(f"directory glob {pattern!r} is not valid: '[' is not closed")
                i = end
            elif c == "{":
                depth += 1
                if depth > MAX_BRACE_DEPTH:
                    raise RenderError(f"directory glob {pattern!r} is not valid: braces nested more than "
                                      f"{MAX_BRACE_DEPTH} deep")
            elif c == "}":
                depth -= 1
                if depth < 0:
                    raise RenderError(f"directory glob {pattern!r} is not valid: '}}' without '{{'")
            i += 1
        if depth:
            raise RenderError(f"directory glob {pattern!r} is not valid: '{{' is not closed")
        glob_match(pattern, "probe.yaml")
    return pattern


@dataclass
class PlainLayout:
    """What a plain render of a directory reads: manifest files and nested Kustomize bases."""

    files: list[Path] = field(default_factory=list)
    bases: list[Path] = field(default_factory=list)


class _SourceIgnore:
    """The ``.sourceignore`` files of a tree, each scoped to its directory (Flux's LoadIgnorePatterns)."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self._specs: dict[Path, Any] = {}

    def _spec(self, directory: Path) -> Any:
        if directory not in self._specs:
            f = directory / SOURCEIGNORE
            spec = None
            if f.is_file():
                import pathspec

                lines = self.tree.read_bytes(f).decode("utf-8", "replace").splitlines()
                spec = pathspec.GitIgnoreSpec.from_lines(
                    ln for ln in lines if ln.strip() and not ln.startswith("#"))
            self._specs[directory] = spec
        return self._specs[directory]

    def ignored(self, path: Path, *, is_dir: bool = False) -> bool:
        verdict: bool | None = None
        root = self.tree.root
        rel_parts = Path(self.tree.rel(path)).parts
        directory = root
        for i in range(len(rel_parts)):  # root first, deeper files override (go-git's matcher order)
            spec = self._spec(directory)
            if spec is not None:
                sub = "/".join(rel_parts[i:]) + ("/" if is_dir else "")
                include = spec.check_file(sub).include
                if include is not None:
                    verdict = include
            directory = directory / rel_parts[i]
        return bool(verdict)


class _Scan:
    def __init__(self, tree: SourceTree, directory: Path, options: DirectoryOptions,
                 exclude: Iterable[Path]) -> None:
        self.tree = tree
        self.directory = directory
        self.options = options
        self.excluded = {Path(p) for p in exclude}
        self.dir_rel = tree.rel(directory)

    @cached_property
    def ignore(self) -> _SourceIgnore:
        return _SourceIgnore(self.tree)

    def rel_to_dir(self, path: Path) -> str:
        rel = self.tree.rel(path)
        return rel[len(self.dir_rel) + 1:] if self.dir_rel else rel

    def in_scope(self, path: Path) -> bool:
        """Recursion and include/exclude (Argo), ``.sourceignore`` (Flux)."""
        rel = self.rel_to_dir(path)
        if not self.options.recurse and "/" in rel:
            return False
        if not self.options.selects(rel):
            return False
        return not self.ignore.ignored(path)


def scan(tree: SourceTree, directory: Path, *, options: DirectoryOptions = DirectoryOptions(),
         exclude: Iterable[Path] = ()) -> PlainLayout:
    """The manifest files and nested Kustomize bases a plain render of ``directory`` reads.

    Raises RenderError for a nested ``Chart.yaml`` or ``fleetgate.yaml`` and for files of an
    unsupported renderer (Jsonnet, config-management plugins)."""
    s = _Scan(tree, directory, options, exclude)
    walked = tree.walk(directory, skip_hidden=True)
    # nested kustomizations: the outermost directories holding one become bases (not descended into)
    kdirs = {f.parent for f in walked if f.name in KUSTOMIZATION_FILES and f.parent != directory}
    if not options.recurse:
        kdirs = set()

    bundles = {f.parent for f in walked if f.name in FLEET_BUNDLE_FILES and f.parent != directory}

    def base_of(f: Path) -> Path | None:
        for parent in f.parents:
            if parent == directory or parent == tree.root:
                return None
            if parent in kdirs:
                return parent
        return None

    layout = PlainLayout()
    left_out: list[str] = []  # manifests the directory options leave out
    unsupported: dict[str, list[str]] = {}
    bases: set[Path] = set()
    for f in walked:
        if (f.name in FLEET_BUNDLE_FILES and f.parent == directory) or (
                bundles and any(parent in bundles for parent in f.parents)):
            continue
        base = base_of(f)
        if base is not None:
            # a base's directory is in scope when its kustomization file is (include/exclude, ignores)
            if f.name in KUSTOMIZATION_FILES and base == f.parent and base not in bases and s.in_scope(f):
                outer = base_of(base)
                if outer is None:
                    bases.add(base)
            continue
        if f.name == SOURCEIGNORE:
            continue
        if not s.in_scope(f):
            if f.name.endswith(PLAIN_SUFFIXES) and not s.ignore.ignored(f):
                left_out.append(tree.rel(f))
            continue
        name = f.name
        if name == "Chart.yaml":
            raise RenderError(
                f"Chart.yaml in a plain YAML directory: map {tree.rel(f.parent) or '.'} on its own "
                "(renderer helm) or reference it from a kustomization", file=tree.rel(f))
        if name in NOT_MANIFESTS:
            if f.parent == directory:
                continue
            raise RenderError(
                f"{name} only applies at the mapped path: map {tree.rel(f.parent)} on its own",
                file=tree.rel(f))
        if name.endswith(JSONNET_SUFFIXES):
            unsupported.setdefault("Jsonnet", []).append(tree.rel(f))
            continue
        if name in PLUGIN_MARKERS:
            unsupported.setdefault(PLUGIN_MARKERS[name], []).append(tree.rel(f))
            continue
        if name in FLUX_CI_FILES or f in s.excluded or not name.endswith(PLAIN_SUFFIXES):
            continue
        if tree.skip_marked(f):
            continue
        layout.files.append(f)
    _argocd_plugin(tree, directory, unsupported)
    if unsupported:
        raise unsupported_renderer(unsupported)
    if left_out and not layout.files and not bases and not options.is_default:
        # Argo CD refuses to sync an empty set unless allowEmpty: here an empty render would prune everything
        raise RenderError(
            f"the directory options (recurse {'on' if options.recurse else 'off'}, include "
            f"{options.include or '-'!r}, exclude {options.exclude or '-'!r}) leave out every manifest of "
            f"{tree.rel(directory) or '.'} (e.g. {left_out[0]}): an empty render would delete what the "
            "mapping deployed", file=left_out[0])
    layout.bases = sorted(bases)
    return layout


def _argocd_plugin(tree: SourceTree, directory: Path, found: dict[str, list[str]]) -> None:
    """Argo CD's ``.argocd-source.yaml`` / ``.argocd-source-<app>.yaml`` naming a config-management plugin."""
    from .yamlsafe import load_one

    for f in sorted(directory.glob(".argocd-source*.y*ml")):
        if not f.is_file():
            continue
        try:
            data = load_one(tree.read_bytes(f), file=tree.rel(f))
        except RenderError:
            continue
        if isinstance(data, dict) and data.get("plugin") is not None:
            found.setdefault("an Argo CD config-management plugin", []).append(tree.rel(f))


def unsupported_renderer(found: dict[str, list[str]]) -> RenderError:
    kinds = ", ".join(sorted(found))
    files = [f for fs in found.values() for f in fs]
    shown = ", ".join(files[:MAX_NAMED_FILES]) + (f" and {len(files) - MAX_NAMED_FILES} more"
                                                   if len(files) > MAX_NAMED_FILES else "")
    return RenderError(
        f"unsupported renderer: {kinds} ({shown}); Fleetgate renders plain YAML, Kustomize and Helm. "
        "Render these files to YAML in the repository (or in CI), or exclude them from the mapping "
        "(directory exclude glob or .sourceignore)", file=files[0], renderer="unsupported")


def plain_files(tree: SourceTree, directory: Path, *, exclude: Iterable[Path] = (),
                options: DirectoryOptions = DirectoryOptions()) -> list[Path]:
    return scan(tree, directory, options=options, exclude=exclude).files


def render_plain(tree: SourceTree, directory: Path, *, exclude: Iterable[Path] = (),
                 options: DirectoryOptions = DirectoryOptions(), layout: PlainLayout | None = None,
                 max_total_bytes: int = MAX_RENDER_BYTES) -> list[RawObject]:
    """The objects of the plain manifest files (nested Kustomize bases are built by the caller)."""
    raws: list[RawObject] = []
    files = (layout or scan(tree, directory, options=options, exclude=exclude)).files
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


def directory_from_fleetgate(data: Any, file: str) -> DirectoryOptions | None:
    """``directory: {recurse, include, exclude}`` of a fleetgate.yaml (None when absent)."""
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"recurse", "include", "exclude"}:
        raise RenderError("directory must be a mapping with recurse, include and/or exclude", file=file)
    recurse = data.get("recurse", True)
    if not isinstance(recurse, bool):
        raise RenderError("directory.recurse must be true or false", file=file)
    globs = {}
    for key in ("include", "exclude"):
        value = data.get(key) or ""
        if not isinstance(value, str):
            raise RenderError(f"directory.{key} must be a glob string", file=file)
        try:
            globs[key] = validate_glob(value)
        except RenderError as exc:
            raise RenderError(f"directory.{key}: {exc.message}", file=file) from None
    return DirectoryOptions(recurse=recurse, **globs)
