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
from fleet.core.errors import ErrorKind

from .model import ImportError_


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


class TreeRefused(ImportError_):
    """The repository may not be read at all: its URL breaks the rules of a Repository's URL, or the user
    may not have it read (400 or 403; nothing was fetched). Parsers re-raise it naming the document."""


def check_readable(url: str, user: Any) -> None:
    """Before any fetch: ``url`` must pass ``validate_repository_url`` (the scheme, file:// only with
    FLEETGATE_ALLOW_FILE_REPOSITORIES, no password, the SSRF guard: no denied address or metadata host), and
    ``user`` must be allowed to have it read: with ``repository.add`` on all clusters (who may add it as a
    repository anyway) or when it is the URL of a repository they can see. ``user`` None: the system."""
    from django.core.exceptions import ValidationError

    from fleet.access.restrict import groups_where, restrict
    from fleet.sources.models import Repository
    from fleet.sources.validators import validate_repository_url

    from .model import same_url

    try:
        validate_repository_url(url)
    except ValidationError as exc:
        raise TreeRefused(f"repository URL refused: {' '.join(exc.messages)}") from None
    if user is None or groups_where(user, Repository, "add").everywhere:
        return
    if any(same_url(known, url) for known in restrict(Repository.objects.all(), user, "view")
           .values_list("url", flat=True)):
        return
    raise TreeRefused("you may not have this repository read: reading a repository at import needs "
                      "repository.add on all clusters, or a repository of that URL you can see",
                      kind=ErrorKind.FORBIDDEN)


@dataclass
class Environment:
    clusters: Sequence[ClusterInfo] = ()
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # existing group -> member names
    group_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # existing group -> labels
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

    def groups_matching(self, selector: Mapping[str, Any]) -> list[str]:
        """The existing groups whose own labels match (Fleet's clusterGroupSelector selects ClusterGroups by
        their labels, with Kubernetes' rules: an empty selector matches every group)."""
        return sorted(name for name, labels in self.group_labels.items()
                      if selector_matches(dict(selector), dict(labels)))


class RemoteTrees:
    """Fetches each repository once into a private temporary cache and exports the branch's head; every
    directory is removed on ``close()``. Only anonymous access: an import never reads credentials. Every
    URL is checked (``check_readable``, for ``user``; None: the system) before anything is fetched."""

    def __init__(self, user: Any = None) -> None:
        self._user = user
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

        check_readable(url, self._user)
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
