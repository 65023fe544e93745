"""A read-only source tree (an exported commit) with path-safety checks and per-tree caches.

One ``SourceTree`` can be reused to render many mappings for many clusters of the same commit: file
digests and parsed YAML documents are computed once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from .errors import RenderError
from .yamlsafe import MAX_FILE_BYTES, YamlDocument, load_documents

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SKIP_RENDERING_MARKER = b"+argocd:skip-file-rendering"  # Argo CD skips a directory file holding it


def check_name(name: str, rel_parent: str) -> None:
    """A file or directory name must be UTF-8: git stores names as bytes, and a name Python can only
    represent with surrogates could not be hashed, stored or shown."""
    try:
        name.encode()
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        where = f"{rel_parent}/{shown}" if rel_parent else shown
        raise RenderError("the file name is not UTF-8 text: rename it", file=where) from None


class SourceTree:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise RenderError(f"source tree {root} is not a directory")
        self._digests: dict[Path, str] = {}
        self._docs: dict[Path, list[YamlDocument]] = {}
        self._walks: dict[tuple[Path, bool], list[Path]] = {}
        self._inside: dict[Path, bool] = {}
        self._rel: dict[Path, str] = {}
        self._has_vars: dict[Path, bool] = {}
        self._skip: dict[Path, bool] = {}

    def __repr__(self) -> str:
        return f"SourceTree({str(self.root)!r})"

    # ---- paths

    def rel(self, path: Path) -> str:
        """Repository-relative POSIX path of a lexical path under the root."""
        cached = self._rel.get(path)
        if cached is None:
            try:
                cached = PurePosixPath(Path(os.path.abspath(path)).relative_to(self.root)).as_posix()
            except ValueError:
                cached = str(path)
            if cached == ".":
                cached = ""
            self._rel[path] = cached
        return cached

    def inside(self, path: Path) -> bool:
        """Does ``path`` resolve (through symlinks) to the root or below it?  Cached: trees are
        read-only while rendering."""
        cached = self._inside.get(path)
        if cached is None:
            try:
                real = path.resolve()
            except (RuntimeError, OSError):  # a symlink loop (Python 3.11 raises RuntimeError)
                raise RenderError("symlink loop: the link points back to itself",
                                  file=self.rel(path)) from None
            cached = real == self.root or self.root in real.parents
            self._inside[path] = cached
        return cached

    def resolve(self, rel: str, *, base: Path | None = None, what: str = "path",
                allow_parent: bool = False) -> Path:
        """A lexical path for ``rel`` (relative to ``base`` or the root) that stays in the repository
        after resolving symlinks.  Absolute paths are refused; ``..`` only when ``allow_parent``."""
        if not isinstance(rel, str):
            raise RenderError(f"{what} must be a string")
        p = PurePosixPath(rel.replace("\\", "/"))
        if p.is_absolute() or rel.startswith("~"):
            raise RenderError(f"{what} {rel!r} must be relative to the repository")
        if ".." in p.parts and not allow_parent:
            raise RenderError(f"{what} {rel!r} may not contain '..'")
        start = base if base is not None else self.root
        lexical = Path(os.path.normpath(start.joinpath(*p.parts))) if p.parts else start
        if not (lexical == self.root or self.root in lexical.parents):
            raise RenderError(f"{what} {rel!r} leaves the repository")
        if not self.inside(lexical):
            raise RenderError(f"{what} {rel!r} resolves (through a symlink) outside the repository",
                              file=self.rel(lexical))
        return lexical

    # ---- walking

    def walk(self, directory: Path, *, skip_hidden: bool = False) -> list[Path]:
        """Every file under ``directory`` (sorted, following symlinks that stay in the repository).

        A symlink that resolves outside the repository is a RenderError naming the link."""
        key = (directory, skip_hidden)
        if key in self._walks:
            return self._walks[key]
        files: list[Path] = []
        seen: set[Path] = set()

        def visit(d: Path) -> None:
            real = d.resolve()
            if real in seen:
                return
            seen.add(real)
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                if skip_hidden and entry.name.startswith("."):
                    continue
                check_name(entry.name, self.rel(d))
                p = Path(entry.path)
                if entry.is_symlink():
                    if not self.inside(p):
                        raise RenderError(
                            f"symlink points outside the repository (to {os.readlink(p)!r})",
                            file=self.rel(p))
                    if p.is_dir():
                        visit(p)
                    elif p.is_file():
                        files.append(p)
                elif entry.is_dir(follow_symlinks=False):
                    visit(p)
                elif entry.is_file(follow_symlinks=False):
                    files.append(p)

        if not self.inside(directory):
            raise RenderError("directory resolves outside the repository", file=self.rel(directory))
        visit(directory)
        self._walks[key] = files
        return files

    def check_symlinks(self, directory: Path) -> None:
        self.walk(directory)

    # ---- content

    def read_bytes(self, path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        if not self.inside(path):
            raise RenderError("file resolves outside the repository", file=self.rel(path))
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise RenderError(f"file is {size} bytes, more than the limit of {max_bytes}",
                                  file=self.rel(path))
            return path.read_bytes()
        except OSError as exc:
            raise RenderError(f"cannot read file: {exc.strerror}", file=self.rel(path)) from None

    def digest(self, path: Path) -> str:
        """sha256 of the file's content (cached), and whether it contains ``${`` (``has_variables``)."""
        if path not in self._digests:
            if not self.inside(path):
                raise RenderError("file resolves outside the repository", file=self.rel(path))
            h = hashlib.sha256()
            has_vars = skip = False
            tail = b""
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 16), b""):
                    h.update(chunk)
                    window = tail + chunk
                    has_vars = has_vars or b"${" in window
                    skip = skip or SKIP_RENDERING_MARKER in window
                    tail = chunk[-len(SKIP_RENDERING_MARKER):]
            self._digests[path] = h.hexdigest()
            self._has_vars[path] = has_vars
            self._skip[path] = skip
        return self._digests[path]

    def skip_marked(self, path: Path) -> bool:
        """Does the file hold Argo CD's ``+argocd:skip-file-rendering`` marker (cached with the digest)?"""
        self.digest(path)
        return self._skip[path]

    def has_variables(self, path: Path) -> bool:
        self.digest(path)
        return self._has_vars[path]

    def documents(self, path: Path) -> list[YamlDocument]:
        """Parsed YAML documents of a file (cached; callers must not modify the data)."""
        if path not in self._docs:
            self._docs[path] = load_documents(self.read_bytes(path), file=self.rel(path))
        return self._docs[path]

    def kustomization_file(self, directory: Path) -> Path | None:
        for name in KUSTOMIZATION_FILES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        return None
