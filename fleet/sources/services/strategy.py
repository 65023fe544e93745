"""The rollout strategy a mapping's fleet.yaml declares at a commit (``rolloutStrategy``, Rancher Fleet's
bundle key): read from the commit's tree for the rollouts (``fleet.rollouts.ports.rollout_strategy``), which
map it onto their batches (``fleet.sources.render.fleetrollout``).

Only the mapping's directory is exported (the static part of a glob path), so a rollout of a mapping
without fleet.yaml costs one small ``git archive``.  A mapping whose glob reaches several fleet.yaml files
with different strategies uses none of them, and says so: one rollout has one set of batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.sources.git import GitCommitNotFoundError, GitError
from fleet.sources.models import Commit, PathMapping
from fleet.sources.render import RenderError, SourceTree
from fleet.sources.render.fleetbundle import _bundle_at
from fleet.sources.services.fetch import repository_cache
from fleet.sources.services.manifests import CommitNotFound, ManifestsUnavailable, RenderFailed, ensure_commit
from fleet.sources.services.rendering import expand_paths


@dataclass(frozen=True)
class DeclaredStrategy:
    """A fleet.yaml ``rolloutStrategy``: the file it is in, the checked spec, and notes (what the mapping's
    rollouts cannot honour, found before any cluster is known)."""

    file: str
    spec: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"source": "fleet.yaml", "file": self.file, "spec": self.spec, "notes": list(self.notes)}


def _static_prefix(path: str) -> str:
    parts = []
    for part in (path or "").replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def declared_strategy(mapping: PathMapping, commit: Commit | str) -> DeclaredStrategy | None:
    """The ``rolloutStrategy`` of the fleet.yaml at the mapping's path at ``commit``, or None (no fleet.yaml,
    or none with a strategy).  Raises CommitNotFound, RenderFailed (a fleet.yaml Fleet would refuse),
    ManifestsUnavailable (git failed)."""
    sha = commit.sha if isinstance(commit, Commit) else commit
    cache = repository_cache(mapping.repository)
    prefix = _static_prefix(mapping.path)
    try:
        sha = ensure_commit(cache, sha)
        with cache.export(sha, paths=[prefix] if prefix else ()) as root:
            tree = SourceTree(root)
            found: list[tuple[str, dict[str, Any]]] = []
            for path in expand_paths(tree, mapping):
                bundle = _bundle_at(tree, path)
                if bundle is not None and bundle.rollout_strategy is not None:
                    found.append((bundle.file, bundle.rollout_strategy))
    except RenderError as exc:
        raise RenderFailed(f"fleet.yaml rolloutStrategy: {exc.message}", file=exc.file or "",
                           line=exc.line) from None
    except GitCommitNotFoundError as exc:
        raise CommitNotFound(exc.message) from None
    except GitError as exc:
        raise ManifestsUnavailable(f"cannot read the fleet.yaml of {mapping.path} at {sha[:10]}: "
                                   f"{exc.message}") from None
    if not found:
        return None
    specs = {repr(sorted(spec.items())) for _, spec in found}
    if len(specs) > 1:
        files = ", ".join(f for f, _ in found)
        return DeclaredStrategy(file=found[0][0], spec={}, notes=(
            f"fleet.yaml rolloutStrategy is not honoured: the mapping's paths hold different strategies "
            f"({files}) and one rollout has one set of batches; the group's settings apply (map each "
            "path on its own to use them)",))
    file, spec = found[0]
    return DeclaredStrategy(file=file, spec=spec)
