"""Mapping selection: which mapping paths (directories or globs) a set of changed files affects."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

from fleet.sources.git.results import ChangedPath

_GLOB_CHARS = set("*?[")


def normalize_mapping_path(path: str) -> str:
    """``./apps/web/`` -> ``apps/web``; ``''``/``.``/``/`` -> ``''`` (repository root).

    Raises ValueError for absolute paths or ``..`` components.
    """
    raw = path.strip()
    if raw.startswith("/") and raw.strip("/"):
        raise ValueError(f"mapping path {path!r} must be relative to the repository root")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"mapping path {path!r} may not contain '..'")
    return "/".join(parts)


def _glob_to_regex(glob: str) -> re.Pattern[str]:
    """``**`` matches any number of directories, ``*``/``?``/``[..]`` stay within one component."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                out.append(fnmatch.translate(glob[i:j + 1])[4:-3])
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def glob_matches(pattern: str, path: str) -> bool:
    """Does the whole ``path`` match the mapping glob ``pattern`` (``**`` spans directories)?"""
    return bool(_glob_to_regex(normalize_mapping_path(pattern)).match(normalize_mapping_path(path)))


def mapping_matches(mapping_path: str, changed_path: str) -> bool:
    """Does a change to ``changed_path`` (a file) affect the mapping at ``mapping_path``?

    A mapping path is a directory relative to the repository root (``''`` is the whole repository) or
    a glob (``apps/*``, ``envs/**/prod``).  A file affects a directory mapping when it lies under it; it
    affects a glob mapping when the glob matches the file or one of its parent directories.
    """
    mp = normalize_mapping_path(mapping_path)
    cp = normalize_mapping_path(changed_path)
    if not mp:
        return True
    if not (_GLOB_CHARS & set(mp)):
        return cp == mp or cp.startswith(mp + "/")
    rx = _glob_to_regex(mp)
    parts = cp.split("/")
    return any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def affected_mappings(
    mapping_paths: Iterable[str],
    changed: Iterable[ChangedPath | str],
    *,
    dependencies: Mapping[str, Iterable[str]] | None = None,
) -> set[str]:
    """Which of ``mapping_paths`` are affected by ``changed`` (ChangedPath or plain path strings).

    Renames count for both their old and new path.  ``dependencies`` optionally maps a mapping path to
    more directories it reads (e.g. the Kustomize bases outside it, from
    ``fleet.sources.render.kustomize_dependencies``); a change under one of them affects the mapping.
    Returns the subset of the given mapping path strings, unchanged.
    """
    files: list[str] = []
    for c in changed:
        if isinstance(c, ChangedPath):
            files.extend(c.paths())
        else:
            files.append(c)
    result: set[str] = set()
    for mp in mapping_paths:
        watched = [mp, *((dependencies or {}).get(mp, ()))]
        if any(mapping_matches(w, f) for w in watched for f in files):
            result.add(mp)
    return result
