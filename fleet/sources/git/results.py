"""The plain results of ``fleet.sources.git``: fetch results, commits, branch updates, changed paths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FetchResult:
    url: str
    cloned: bool  # True when this call created the cache
    heads: dict[str, str]  # branch -> sha after the fetch
    updated: dict[str, tuple[str | None, str | None]]  # branch -> (old sha, new sha) for changed heads
    duration: float


@dataclass(frozen=True)
class ChangedPath:
    """One line of ``git diff --name-status -M``: status A, M, D, R (rename), C, T."""

    status: str
    path: str
    old_path: str | None = None  # for renames/copies

    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.old_path is None else (self.old_path, self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "path": self.path, "old_path": self.old_path}


@dataclass(frozen=True)
class Person:
    name: str
    email: str


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    parents: tuple[str, ...]
    author: Person
    committer: Person
    message: str
    authored_at: datetime
    committed_at: datetime
    changed_paths: tuple[ChangedPath, ...]  # against the first parent (the root commit: all files)

    @property
    def summary(self) -> str:
        return self.message.split("\n", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "parents": list(self.parents),
            "author_name": self.author.name,
            "author_email": self.author.email,
            "committer_name": self.committer.name,
            "committer_email": self.committer.email,
            "message": self.message,
            "authored_at": self.authored_at.isoformat(),
            "committed_at": self.committed_at.isoformat(),
            "changed_paths": [c.to_dict() for c in self.changed_paths],
        }


@dataclass(frozen=True)
class BranchUpdate:
    """What happened on a branch since ``old_head``.

    * ``commits``: new commits, oldest first (topological), at most ``MAX_COMMITS`` (``truncated``).
      With ``old_head=None`` (first look at a branch) only the head commit is returned.
    * ``force_push``: ``old_head`` is not an ancestor of ``new_head``.  ``rewritten`` then lists the
      commits reachable from the old head but not from the new one (newest first), when the old head
      is still in the cache (``old_head_known``).
    * ``changed_paths``: the net change between ``old_head`` and ``new_head`` (or the whole tree of the
      head on the first look), which is what mapping selection needs.
    """

    branch: str
    old_head: str | None
    new_head: str
    commits: tuple[CommitInfo, ...]
    force_push: bool
    rewritten: tuple[str, ...]
    old_head_known: bool
    truncated: bool
    changed_paths: tuple[ChangedPath, ...]

    @property
    def up_to_date(self) -> bool:
        return self.old_head == self.new_head


def parse_name_status_z(out: str) -> list[ChangedPath]:
    """Parse ``git diff --name-status -z`` output."""
    fields = out.split("\0")
    result: list[ChangedPath] = []
    i = 0
    while i < len(fields):
        status = fields[i].strip()
        if not status:
            i += 1
            continue
        code = status[0]
        if code in ("R", "C"):
            result.append(ChangedPath(code, fields[i + 2], old_path=fields[i + 1]))
            i += 3
        else:
            result.append(ChangedPath(code, fields[i + 1]))
            i += 2
    return result
