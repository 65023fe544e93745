"""Git access for Fleetgate sources: a locked cache per repository, authenticated fetch, new commits,
changed paths, and exporting the tree of one commit for rendering.

Modules: ``cache`` (``RepositoryCache``: lock, fetch, commits, diffs, export), ``auth`` (credentials,
URL checks and redaction, secret scrubbing, the environment of a network command, the SSRF check,
errors from git's output), ``archive`` (safe tar extraction of an export), ``select`` (mapping
selection with globs), ``results`` (the returned dataclasses) and ``errors``.  Import from the
package: every public name is re-exported here (except ``verify``: commit signature verification with
``git verify-commit`` against trusted keys, imported as ``fleet.sources.git.verify``).

Django-free: services pass plain values (cache root, repository id, URL, credentials) and get plain
dataclasses back.  Typical use from a service or Celery task::

    cache = RepositoryCache(settings.FLEETGATE_GIT_CACHE, repository.pk, repository.url, credentials)
    result = cache.fetch()                                  # clone on first use, fetch afterwards
    update = cache.new_commits("main", repository.last_seen_sha)
    for commit in update.commits: ...                       # oldest first
    if update.force_push: ...                               # update.rewritten lists dropped commits
    with cache.export(update.new_head) as tree:             # a temporary directory, removed afterwards
        render(tree, request)

Design choices:

* The cache is a bare repository at ``<cache_root>/<repository_id>.git``.  It is created with
  ``git init --bare`` and filled by the same fetch as later updates (refspecs
  ``+refs/heads/*:refs/heads/*`` and ``+refs/tags/*:refs/tags/*``, ``--prune``), so forced updates and
  deleted branches are followed.  A first fetch happens into a temporary sibling directory that is
  renamed into place only when it succeeded: a crash never leaves a half-made cache behind.
* Every operation that touches the cache holds an exclusive ``fcntl.flock`` on
  ``<cache_root>/<repository_id>.lock`` (with a timeout), so two workers, even in different processes,
  never fetch the same repository at once.  The lock is re-entrant inside one ``RepositoryCache``.
* Secrets never reach ``.git/config``, the command line or an error message: an https token is handed
  to git through a ``GIT_ASKPASS`` script that reads it from the child's environment; an ssh key is
  written to a 0600 file in a private temporary directory (deleted afterwards) and used through
  ``GIT_SSH_COMMAND`` with ``StrictHostKeyChecking=yes`` and the given known_hosts.  Error messages are
  scrubbed of the token and of any ``user:password@`` in URLs.
* ``GIT_TERMINAL_PROMPT=0``, no credential helpers, and every git command has a timeout.
* SSRF: before every network command the URL's host is resolved and refused when an address falls in
  ``deny_networks`` (default: link-local and cloud metadata, ``fleet.core.urlguard``).  Over http(s) git
  is pinned to the checked addresses (``http.curloptResolve``) and follows no redirect
  (``http.followRedirects=false``); over ssh the addresses are checked but ssh resolves the name again.
"""

from fleet.sources.git.archive import MAX_EXPORT_BYTES, MAX_EXPORT_FILES
from fleet.sources.git.auth import ANONYMOUS, GitCredentials, redact_url, scrub, validate_url
from fleet.sources.git.cache import (
    DEFAULT_LOCAL_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_TIMEOUT,
    MAX_COMMITS,
    ZERO_SHA,
    RepositoryCache,
)
from fleet.sources.git.errors import (
    GitAuthError,
    GitBranchNotFoundError,
    GitCommitNotFoundError,
    GitError,
    GitExportError,
    GitHostKeyError,
    GitLockTimeoutError,
    GitNotARepositoryError,
    GitTimeoutError,
    GitUnreachableError,
    GitURLRefusedError,
)
from fleet.sources.git.results import (
    BranchUpdate,
    ChangedPath,
    CommitInfo,
    FetchResult,
    Person,
    parse_name_status_z,
)
from fleet.sources.git.select import (
    affected_mappings,
    glob_matches,
    mapping_matches,
    normalize_mapping_path,
)

__all__ = [
    "ANONYMOUS",
    "DEFAULT_LOCAL_TIMEOUT",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_COMMITS",
    "MAX_EXPORT_BYTES",
    "MAX_EXPORT_FILES",
    "ZERO_SHA",
    "BranchUpdate",
    "ChangedPath",
    "CommitInfo",
    "FetchResult",
    "GitAuthError",
    "GitBranchNotFoundError",
    "GitCommitNotFoundError",
    "GitCredentials",
    "GitError",
    "GitExportError",
    "GitHostKeyError",
    "GitLockTimeoutError",
    "GitNotARepositoryError",
    "GitTimeoutError",
    "GitURLRefusedError",
    "GitUnreachableError",
    "Person",
    "RepositoryCache",
    "affected_mappings",
    "glob_matches",
    "mapping_matches",
    "normalize_mapping_path",
    "parse_name_status_z",
    "redact_url",
    "scrub",
    "validate_url",
]
