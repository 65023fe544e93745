"""The repository cache: a locked bare mirror of one remote, fetched with credentials, that reports new
commits, changed paths and exports the tree of one commit.  See the package docstring for the design."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC
from pathlib import Path

import git as gitpython

from fleet.core import urlguard
from fleet.sources.git.archive import MAX_EXPORT_BYTES, check_relative, extract_tar
from fleet.sources.git.auth import (
    ANONYMOUS,
    GitCredentials,
    auth_env,
    git_error,
    redact_url,
    scrub,
    validate_url,
)
from fleet.sources.git.errors import (
    GitBranchNotFoundError,
    GitCommitNotFoundError,
    GitError,
    GitLockTimeoutError,
)
from fleet.sources.git.results import (
    BranchUpdate,
    ChangedPath,
    CommitInfo,
    FetchResult,
    Person,
    parse_name_status_z,
)

# the logger keeps the name it had before the split of fleet/sources/git.py
logger = logging.getLogger("fleet.sources.git")

DEFAULT_TIMEOUT = 120.0  # seconds for one git network command
DEFAULT_LOCAL_TIMEOUT = 60.0  # seconds for one local git command (rev-list, diff, archive)
DEFAULT_LOCK_TIMEOUT = 300.0  # seconds to wait for another worker's fetch of the same repository
MAX_COMMITS = 500  # commits returned by new_commits() before it reports truncated=True
ZERO_SHA = "0" * 40

_SHA_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RepositoryCache:
    """A locked, authenticated local mirror of one remote repository.

    ``repository_id`` keys the cache directory (use the database primary key or a slug); it must be
    a simple name (letters, digits, ``._-``).  All methods are safe to call from several processes.
    """

    def __init__(
        self,
        cache_root: str | os.PathLike[str],
        repository_id: str | int,
        url: str,
        credentials: GitCredentials | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        deny_networks: Sequence[urlguard.IPNetwork] | None = None,
    ) -> None:
        rid = str(repository_id)
        if not _REPO_ID_RE.match(rid) or ".." in rid:
            raise ValueError(f"invalid repository id {rid!r}")
        self.cache_root = Path(cache_root)
        self.repository_id = rid
        self.url = validate_url(url)
        self.credentials = credentials or ANONYMOUS
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        # None: the default denied networks (link-local, cloud metadata); () checks nothing
        self.deny_networks = tuple(deny_networks if deny_networks is not None
                                   else urlguard.parse_networks(urlguard.DEFAULT_DENY_CIDRS))
        self.path = self.cache_root / f"{rid}.git"
        self.lock_path = self.cache_root / f"{rid}.lock"
        self._lock_depth = 0
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RepositoryCache({self.repository_id!r}, {redact_url(self.url)!r})"

    # ---- locking

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the inter-process lock of this repository (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.cache_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        wait = self.lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        try:
            logger.debug("waiting for git lock %s", self.lock_path)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise GitLockTimeoutError(
                            f"repository {self.repository_id} is locked by another worker "
                            f"(waited {wait:g}s)", url=redact_url(self.url)) from None
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- environment

    @contextlib.contextmanager
    def _auth_env(self) -> Iterator[dict[str, str]]:
        """Environment for a network git command; temporary files removed on exit."""
        with auth_env(self.credentials, self.url, timeout=self.timeout,
                      deny_networks=self.deny_networks) as env:
            yield env

    def _error(self, exc: gitpython.GitCommandError | str, *, context: str) -> GitError:
        """Map git's stderr to an error type, with secrets scrubbed."""
        return git_error(exc, context=context, url=self.url, credentials=self.credentials)

    def _run(self, repo: gitpython.Repo, *args: str, env: Mapping[str, str] | None = None,
             timeout: float | None = None, context: str = "git") -> str:
        try:
            out: str = repo.git.execute(
                ["git", *args],
                env=dict(env or {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}),
                kill_after_timeout=timeout or DEFAULT_LOCAL_TIMEOUT,
                strip_newline_in_stdout=False,
            )
        except gitpython.GitCommandError as exc:
            raise self._error(exc, context=context) from None
        return out

    # ---- fetch

    def _is_valid_cache(self) -> bool:
        return (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    def repo(self) -> gitpython.Repo:
        """The GitPython ``Repo`` of the cache (fetch first)."""
        if not self._is_valid_cache():
            raise GitError(f"repository {self.repository_id} has not been fetched yet",
                           url=redact_url(self.url))
        return gitpython.Repo(self.path)

    def fetch(self) -> FetchResult:
        """Clone on first use, fetch afterwards (forced updates and deleted branches followed)."""
        with self.lock():
            started = time.monotonic()
            logger.info("git fetch start repository=%s url=%s pid=%s", self.repository_id,
                        redact_url(self.url), os.getpid())
            cloned = not self._is_valid_cache()
            before: dict[str, str] = {} if cloned else self._heads(self.repo())
            target = self.path
            if cloned:
                if self.path.exists():
                    shutil.rmtree(self.path)
                target = self.cache_root / f".{self.repository_id}.{uuid.uuid4().hex}.tmp"
                gitpython.Repo.init(target, bare=True)
            repo = gitpython.Repo(target)
            try:
                with repo.config_writer() as cw:
                    cw.set_value("gc", "auto", "0")  # keep rewritten-away commits for force-push reports
                    cw.set_value("core", "logAllRefUpdates", "false")
                with self._auth_env() as env:
                    self._run(
                        repo, "fetch", "--prune", "--no-write-fetch-head", "--update-head-ok",
                        "--no-recurse-submodules", "--", self.url,
                        "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
                        env=env, timeout=self.timeout, context="fetch",
                    )
                heads = self._heads(repo)
                if heads:
                    default = self._remote_default_branch(heads)
                    if default:
                        repo.git.symbolic_ref("HEAD", f"refs/heads/{default}")
            except BaseException:
                if cloned:
                    shutil.rmtree(target, ignore_errors=True)
                raise
            if cloned:
                os.replace(target, self.path)
            updated: dict[str, tuple[str | None, str | None]] = {}
            for name in sorted(set(before) | set(heads)):
                if before.get(name) != heads.get(name):
                    updated[name] = (before.get(name), heads.get(name))
            duration = time.monotonic() - started
            logger.info("git fetch done repository=%s pid=%s cloned=%s updated=%d", self.repository_id,
                        os.getpid(), cloned, len(updated))
            return FetchResult(url=redact_url(self.url), cloned=cloned, heads=heads, updated=updated,
                               duration=duration)

    @staticmethod
    def _remote_default_branch(heads: Mapping[str, str]) -> str | None:
        for candidate in ("main", "master"):
            if candidate in heads:
                return candidate
        return sorted(heads)[0] if heads else None

    @staticmethod
    def _heads(repo: gitpython.Repo) -> dict[str, str]:
        out = repo.git.execute(["git", "for-each-ref", "--format=%(refname)%00%(objectname)", "refs/heads"])
        heads: dict[str, str] = {}
        for line in str(out).splitlines():
            if "\0" in line:
                ref, sha = line.split("\0", 1)
                heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def branches(self) -> dict[str, str]:
        """Branch -> head sha in the cache (as of the last fetch)."""
        with self.lock():
            return self._heads(self.repo())

    def head_of(self, branch: str) -> str:
        """The head sha of ``branch`` in the cache; GitBranchNotFoundError if absent."""
        _check_branch_name(branch)
        heads = self.branches()
        if branch not in heads:
            raise GitBranchNotFoundError(
                f"branch {branch!r} does not exist in {scrub(redact_url(self.url))}"
                + (f" (branches: {', '.join(sorted(heads)[:10])})" if heads else " (no branches)"),
                url=redact_url(self.url), branch=branch, available=sorted(heads))
        return heads[branch]

    # ---- commits

    def _has_commit(self, repo: gitpython.Repo, sha: str) -> bool:
        if not _SHA_RE.match(sha):
            return False
        try:
            repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"])
        except gitpython.GitCommandError:
            return False
        return True

    def _resolve(self, repo: gitpython.Repo, sha: str) -> str:
        if not _SHA_RE.match(sha) or not self._has_commit(repo, sha):
            raise GitCommitNotFoundError(f"commit {sha[:40]!r} is not in repository {self.repository_id}",
                                         url=redact_url(self.url))
        return str(repo.git.execute(["git", "rev-parse", "--verify", f"{sha}^{{commit}}"])).strip()

    def commit_info(self, sha: str) -> CommitInfo:
        with self.lock():
            repo = self.repo()
            return self._commit_info(repo, self._resolve(repo, sha))

    def _commit_info(self, repo: gitpython.Repo, sha: str) -> CommitInfo:
        c = repo.commit(sha)
        parents = tuple(p.hexsha for p in c.parents)
        changed = self._diff(repo, parents[0] if parents else None, sha)
        return CommitInfo(
            sha=c.hexsha,
            parents=parents,
            author=Person(c.author.name or "", c.author.email or ""),
            committer=Person(c.committer.name or "", c.committer.email or ""),
            message=c.message if isinstance(c.message, str) else c.message.decode("utf-8", "replace"),
            authored_at=c.authored_datetime.astimezone(UTC),
            committed_at=c.committed_datetime.astimezone(UTC),
            changed_paths=tuple(changed),
        )

    def new_commits(self, branch: str, last_seen: str | None, *, fetch: bool = True,
                    max_commits: int = MAX_COMMITS) -> BranchUpdate:
        """Fetch (unless ``fetch=False``) and describe what happened on ``branch`` since ``last_seen``."""
        _check_branch_name(branch)
        if last_seen in ("", ZERO_SHA):
            last_seen = None
        with self.lock():
            if fetch:
                self.fetch()
            new_head = self.head_of(branch)
            repo = self.repo()
            if last_seen is None:
                info = self._commit_info(repo, new_head)
                all_files = self._diff(repo, None, new_head)
                return BranchUpdate(branch, None, new_head, (info,), False, (), False, False,
                                    tuple(all_files))
            old_known = self._has_commit(repo, last_seen)
            old = self._resolve(repo, last_seen) if old_known else last_seen
            if old == new_head:
                return BranchUpdate(branch, old, new_head, (), False, (), True, False, ())
            force = True
            rewritten: list[str] = []
            if old_known:
                try:
                    repo.git.execute(["git", "merge-base", "--is-ancestor", old, new_head])
                    force = False
                except gitpython.GitCommandError:
                    force = True
                if force:
                    out = self._run(repo, "rev-list", new_head + ".." + old, context="rev-list")
                    rewritten = out.split()
                range_args = [new_head, "^" + old]
            else:
                range_args = [new_head]  # old head unknown: everything up to a bounded depth
            out = self._run(repo, "rev-list", "--topo-order", f"--max-count={max_commits + 1}",
                            *range_args, context="rev-list")
            shas = out.split()
            truncated = len(shas) > max_commits
            shas = list(reversed(shas[:max_commits]))
            commits = tuple(self._commit_info(repo, s) for s in shas)
            changed = self._diff(repo, old if old_known else None, new_head)
            return BranchUpdate(branch, old, new_head, commits, force, tuple(rewritten), old_known,
                                truncated, tuple(changed))

    # ---- diffs

    def changed_paths(self, old: str | None, new: str) -> list[ChangedPath]:
        """``git diff --name-status -M old new``; with ``old=None`` every file of ``new`` as added."""
        with self.lock():
            repo = self.repo()
            new = self._resolve(repo, new)
            old = self._resolve(repo, old) if old else None
            return self._diff(repo, old, new)

    def _diff(self, repo: gitpython.Repo, old: str | None, new: str) -> list[ChangedPath]:
        if old is None:
            out = self._run(repo, "ls-tree", "-r", "-z", "--name-only", new, context="ls-tree")
            return [ChangedPath("A", p) for p in out.split("\0") if p]
        out = self._run(repo, "diff", "--name-status", "-M", "-z", "--no-color", "--no-ext-diff",
                        old, new, "--", context="diff")
        return parse_name_status_z(out)

    # ---- export

    @contextlib.contextmanager
    def export(self, sha: str, *, paths: Sequence[str] = (), max_bytes: int = MAX_EXPORT_BYTES,
               parent_dir: str | None = None) -> Iterator[Path]:
        """Export the tree of ``sha`` (optionally only ``paths``) into a temporary directory.

        Symlinks are kept as symlinks (their targets are not followed or checked here: the renderer
        refuses those leaving the tree).  Submodules are not included.  The directory is removed when
        the context exits.
        """
        tmp = Path(tempfile.mkdtemp(prefix="fleetgate-tree-", dir=parent_dir))
        try:
            with self.lock():
                repo = self.repo()
                resolved = self._resolve(repo, sha)
                archive = tmp / ".archive.tar"
                for p in paths:
                    check_relative(p)
                try:
                    with archive.open("wb") as out:
                        repo.git.execute(
                            ["git", "archive", "--format=tar", resolved, "--", *paths],
                            output_stream=out,
                            kill_after_timeout=DEFAULT_LOCAL_TIMEOUT * 5,
                        )
                except gitpython.GitCommandError as exc:
                    raise self._error(exc, context="export") from None
            root = tmp / "tree"
            root.mkdir()
            extract_tar(archive, root, max_bytes=max_bytes)
            archive.unlink()
            yield root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_branch_name(branch: str) -> None:
    if (not branch or branch.startswith("-") or ".." in branch or any(c in branch for c in " ~^:?*[\\")
            or branch.endswith((".lock", "/", ".")) or "@{" in branch):
        raise GitBranchNotFoundError(f"invalid branch name {branch!r}", branch=branch)
