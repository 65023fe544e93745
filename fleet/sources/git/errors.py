"""The errors of ``fleet.sources.git``: every failure is a ``GitError`` with a stable ``code`` and a
message without secrets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class GitError(Exception):
    """Base class of every git failure.  ``str(error)`` never contains a secret."""

    code = "git_error"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "url": self.url}


class GitAuthError(GitError):
    """The remote refused our credentials (or asked for some and none were given)."""

    code = "auth_failed"


class GitHostKeyError(GitAuthError):
    """The ssh host key is unknown or does not match the known_hosts given."""

    code = "host_key_mismatch"


class GitUnreachableError(GitError):
    """Host cannot be resolved or connected, or a local path does not exist."""

    code = "unreachable"


class GitTimeoutError(GitUnreachableError):
    """A git command did not finish in time and was killed."""

    code = "timeout"


class GitNotARepositoryError(GitError):
    """The URL answers, but there is no git repository there."""

    code = "not_a_repository"


class GitBranchNotFoundError(GitError):
    """The branch does not exist on the remote (after a fetch)."""

    code = "branch_not_found"

    def __init__(self, message: str, *, url: str | None = None, branch: str = "",
                 available: Sequence[str] = ()) -> None:
        super().__init__(message, url=url)
        self.branch = branch
        self.available = tuple(available)


class GitCommitNotFoundError(GitError):
    """A commit SHA is not in the cache (never fetched, or garbage-collected)."""

    code = "commit_not_found"


class GitLockTimeoutError(GitError):
    """Another worker held the repository lock for longer than the lock timeout."""

    code = "lock_timeout"


class GitURLRefusedError(GitError):
    """The URL's host resolves to a denied address (link-local, cloud metadata): never contacted."""

    code = "url_refused"


class GitExportError(GitError):
    """The tree of a commit could not be exported (too large, unsupported entry)."""

    code = "export_failed"
