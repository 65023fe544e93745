"""What the parsers may look at besides the documents: the registered clusters and groups, the target group
given for sources that name no cluster (Flux), and the trees of the source repositories (Argo CD's git
generators list directories and read files; a revision ``HEAD`` is the remote's default branch)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusters.labelmatch import selector_matches


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    api_url: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class HomeRepository:
    """The Fleetgate repository given with the import for the mappings of charts that name no Git repository
    (Argo CD ``source.chart``, Flux charts from a HelmRepository or OCIRepository): it holds their values
    files, and its commits re-render them."""

    name: str
    url: str
    branch: str


class TreeUnavailable(Exception):
    """The repository's tree could not be read (network, credentials, unknown branch)."""


@dataclass
class Environment:
    clusters: Sequence[ClusterInfo] = ()
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # existing group -> member names
    target_group: str = ""
    home: HomeRepository | None = None  # for charts that name no Git repository
    # (url, branch or "" for the default) -> (branch, exported tree); TreeUnavailable when it cannot be read
    tree: Callable[[str, str], tuple[str, Path]] | None = None

    def cluster_by_name(self, name: str) -> ClusterInfo | None:
        return next((c for c in self.clusters if c.name == name), None)

    def cluster_by_server(self, server: str) -> ClusterInfo | None:
        wanted = server.rstrip("/")
        return next((c for c in self.clusters if c.api_url.rstrip("/") == wanted), None)

    def matching(self, selector: Mapping[str, Any]) -> list[ClusterInfo]:
        return [c for c in self.clusters if selector_matches(dict(selector), dict(c.labels))]


class RemoteTrees:
    """Fetches each repository once into a private temporary cache and exports the branch's head; every
    directory is removed on ``close()``. Only anonymous access: an import never reads credentials."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._root = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetgate-import-")))
        self._trees: dict[tuple[str, str], tuple[str, Path]] = {}
        self._count = 0

    def __call__(self, url: str, branch: str) -> tuple[str, Path]:
        key = (url, branch)
        if key in self._trees:
            return self._trees[key]
        from fleet.core import urlguard
        from fleet.sources.git import GitError, RepositoryCache

        self._count += 1
        try:
            cache = RepositoryCache(self._root, f"import-{self._count}", url,
                                    deny_networks=urlguard.deny_networks())
            result = cache.fetch()
            name = branch or RepositoryCache._remote_default_branch(result.heads) or ""
            if not name:
                raise TreeUnavailable(f"cannot tell the default branch of {url}")
            sha = cache.head_of(name)
            tree = Path(self._stack.enter_context(cache.export(sha, parent_dir=str(self._root))))
        except (GitError, ValueError) as exc:
            raise TreeUnavailable(str(getattr(exc, "message", exc))) from None
        self._trees[key] = (name, tree)
        return name, tree

    def close(self) -> None:
        self._stack.close()
