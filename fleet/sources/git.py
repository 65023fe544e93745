"""Git access for Fleetgate sources: a locked cache per repository, authenticated fetch, new commits,
changed paths, and exporting the tree of one commit for rendering.

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

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import logging
import os
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import git as gitpython

from fleet.core import urlguard

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # seconds for one git network command
DEFAULT_LOCAL_TIMEOUT = 60.0  # seconds for one local git command (rev-list, diff, archive)
DEFAULT_LOCK_TIMEOUT = 300.0  # seconds to wait for another worker's fetch of the same repository
MAX_COMMITS = 500  # commits returned by new_commits() before it reports truncated=True
MAX_EXPORT_BYTES = 512 * 1024 * 1024  # an exported tree larger than this is refused
MAX_EXPORT_FILES = 100_000
ZERO_SHA = "0" * 40

_SHA_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class GitCredentials:
    """How to authenticate to a remote.  ``repr`` never shows the secret parts.

    * ``kind="none"``: anonymous https, ``file://`` or an ssh agent-less public remote.
    * ``kind="token"``: https with a token (``username`` defaults to ``x-access-token``, which GitHub
      expects; GitLab accepts ``oauth2`` or any name with a personal access token; Gitea any name).
    * ``kind="ssh"``: ``ssh_private_key`` (PEM/OpenSSH text) and ``ssh_known_hosts`` (known_hosts lines);
      the host key is always checked.
    """

    kind: Literal["none", "token", "ssh"] = "none"
    token: str = field(default="", repr=False)
    username: str = "x-access-token"
    ssh_private_key: str = field(default="", repr=False)
    ssh_known_hosts: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("none", "token", "ssh"):
            raise ValueError(f"unknown credential kind {self.kind!r}")
        if self.kind == "token" and not self.token:
            raise ValueError("token credentials need a token")
        if self.kind == "ssh":
            if not self.ssh_private_key.strip():
                raise ValueError("ssh credentials need a private key")
            if not self.ssh_known_hosts.strip():
                raise ValueError("ssh credentials need known_hosts (host keys are always verified)")

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.ssh_private_key) if s]


ANONYMOUS = GitCredentials()

_ASKPASS_SCRIPT = """#!/bin/sh
# Fleetgate GIT_ASKPASS helper: answers git's prompts from the environment of this process only.
case "$1" in
  Username*|username*) printf '%s\\n' "$FLEETGATE_GIT_USERNAME" ;;
  *) printf '%s\\n' "$FLEETGATE_GIT_PASSWORD" ;;
esac
"""


def redact_url(url: str) -> str:
    """``https://user:secret@host/x`` -> ``https://user:***@host/x``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_URL_PASSWORD_RE = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets and URL passwords from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            for line in secret.strip().splitlines():
                if len(line.strip()) >= 8:
                    text = text.replace(line.strip(), "***")
    return _URL_PASSWORD_RE.sub(r"\1***@", text)


def validate_url(url: str) -> str:
    """Check a clone URL: https/http/ssh/git/file or scp-like ``git@host:path``; no embedded password."""
    url = url.strip()
    if not url:
        raise GitError("repository URL is empty")
    if url.startswith("-"):
        raise GitError("repository URL may not start with '-'")
    if re.match(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:", url) and "://" not in url:
        return url  # scp-like ssh
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise GitError(f"invalid repository URL: {exc}") from None
    if parts.scheme not in ("https", "http", "ssh", "git", "file"):
        raise GitError(f"unsupported URL scheme {parts.scheme!r} (use https, ssh or file)",
                       url=redact_url(url))
    if parts.password:
        raise GitError("repository URL contains a password: give the token as credentials instead",
                       url=redact_url(url))
    return url


# --------------------------------------------------------------------------- results


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


# --------------------------------------------------------------------------- the cache


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
        env: dict[str, str] = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GCM_INTERACTIVE": "never",
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
            "GIT_HTTP_LOW_SPEED_TIME": str(int(max(10, self.timeout))),
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
        config: list[tuple[str, str]] = [
            ("credential.helper", ""),  # never read or store a credential in a helper
            ("core.askPass", ""),
            ("protocol.ext.allow", "never"),
        ]
        config += self._address_config()
        creds = self.credentials
        tmpdir = tempfile.mkdtemp(prefix="fleetgate-git-")
        try:
            os.chmod(tmpdir, 0o700)
            if creds.kind == "token":
                askpass = Path(tmpdir) / "askpass.sh"
                askpass.write_text(_ASKPASS_SCRIPT)
                askpass.chmod(0o700)
                env["GIT_ASKPASS"] = str(askpass)
                env["FLEETGATE_GIT_USERNAME"] = creds.username or "x-access-token"
                env["FLEETGATE_GIT_PASSWORD"] = creds.token
            ssh_opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-F", "/dev/null"]
            if creds.kind == "ssh":
                key_path = Path(tmpdir) / "id_key"
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    key = creds.ssh_private_key
                    fh.write(key if key.endswith("\n") else key + "\n")
                hosts_path = Path(tmpdir) / "known_hosts"
                hosts_path.write_text(creds.ssh_known_hosts.strip() + "\n")
                ssh_opts += [
                    "-i", str(key_path), "-o", "IdentitiesOnly=yes",
                    "-o", f"UserKnownHostsFile={hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
                    "-o", "StrictHostKeyChecking=yes",
                ]
            else:
                ssh_opts += ["-o", "StrictHostKeyChecking=yes"]
            env["GIT_SSH_COMMAND"] = "ssh " + " ".join(shlex.quote(o) for o in ssh_opts)
            env["GIT_CONFIG_COUNT"] = str(len(config))
            for i, (key_name, value) in enumerate(config):
                env[f"GIT_CONFIG_KEY_{i}"] = key_name
                env[f"GIT_CONFIG_VALUE_{i}"] = value
            yield env
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _address_config(self) -> list[tuple[str, str]]:
        """Connect-time SSRF check against ``deny_networks``: resolve the host now and refuse a denied
        address.  Over http(s) git is then pinned to the addresses checked (``http.curloptResolve``) and
        follows no redirect, so neither a second DNS answer (rebinding) nor a redirect reaches another
        address.  Over ssh the addresses are checked but ssh resolves the name again itself."""
        if not self.deny_networks or _local_path(self.url) is not None:
            return []
        host, port = urlguard.url_host_port(self.url)
        try:
            addresses = urlguard.resolve_checked(host, port, self.deny_networks, what="repository URL")
        except urlguard.URLRefused as exc:
            raise GitURLRefusedError(str(exc), url=redact_url(self.url)) from None
        config: list[tuple[str, str]] = []
        scheme = urlsplit(self.url).scheme if "://" in self.url else "ssh"
        if scheme in ("http", "https"):
            config.append(("http.followRedirects", "false"))
            name = urlguard.normalize_host(host)
            if addresses and port and not urlguard.is_ip_literal(name):
                pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
                config.append(("http.curloptResolve", f"{name}:{port}:{pinned}"))
        return config

    def _error(self, exc: gitpython.GitCommandError | str, *, context: str) -> GitError:
        """Map git's stderr to an error type, with secrets scrubbed."""
        if isinstance(exc, gitpython.GitCommandError):
            raw = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
            if not raw.strip():
                raw = str(exc)
        else:
            raw = exc
        secrets = self.credentials.secrets()
        text = scrub(raw, secrets)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        lines = [re.sub(r"^stderr:\s*'?", "", ln).rstrip("'") for ln in lines]
        detail = "; ".join(ln for ln in lines if ln)[:500] or "git failed"
        low = text.lower()
        url = redact_url(self.url)
        shown = scrub(url, secrets)
        if "did not complete in" in low or ("timed out" in low and "connection timed out" not in low):
            return GitTimeoutError(f"{context}: git timed out talking to {shown}", url=url)
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return GitHostKeyError(f"{context}: ssh host key of {shown} is not in known_hosts or does "
                                   f"not match ({detail})", url=url)
        auth_markers = (
            "authentication failed", "could not read username", "could not read password",
            "terminal prompts disabled", "permission denied (publickey", "access denied",
            "invalid username or password", "http basic", "the requested url returned error: 401",
            "the requested url returned error: 403", "permission denied", "401 unauthorized",
            "403 forbidden",
        )
        if any(m in low for m in auth_markers):
            return GitAuthError(f"{context}: authentication to {shown} failed ({detail})", url=url)
        unreachable_markers = (
            "could not resolve host", "could not resolve hostname", "connection refused",
            "failed to connect", "connection timed out", "network is unreachable", "no route to host",
            "name or service not known", "temporary failure in name resolution", "connection reset",
            "couldn't connect to server", "ssh: connect to host",
        )
        if any(m in low for m in unreachable_markers):
            return GitUnreachableError(f"{context}: cannot reach {shown} ({detail})", url=url)
        local = _local_path(self.url)
        if local is not None and not local.exists():
            return GitUnreachableError(f"{context}: path {local} does not exist", url=url)
        not_repo_markers = (
            "does not appear to be a git repository", "not a git repository", "repository not found",
            "the requested url returned error: 404", "not found",
        )
        if any(m in low for m in not_repo_markers):
            return GitNotARepositoryError(f"{context}: {shown} is not a git repository ({detail})",
                                          url=url)
        return GitError(f"{context}: {detail}", url=url)

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
                    _check_relative(p)
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
            _extract_tar(archive, root, max_bytes=max_bytes)
            archive.unlink()
            yield root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urlsplit(url).path)
    if url.startswith("/"):
        return Path(url)
    return None


def _check_branch_name(branch: str) -> None:
    if (not branch or branch.startswith("-") or ".." in branch or any(c in branch for c in " ~^:?*[\\")
            or branch.endswith((".lock", "/", ".")) or "@{" in branch):
        raise GitBranchNotFoundError(f"invalid branch name {branch!r}", branch=branch)


def _check_relative(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts:
        raise GitExportError(f"path {path!r} must be relative to the repository root without '..'")


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


def _extract_tar(archive: Path, dest: Path, *, max_bytes: int) -> None:
    total = 0
    count = 0
    dest_resolved = dest.resolve()
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            if member.type == tarfile.XGLTYPE or member.type == tarfile.XHDTYPE:
                continue
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise GitExportError(f"unsafe path in archive: {member.name!r}")
            count += 1
            if count > MAX_EXPORT_FILES:
                raise GitExportError(f"tree has more than {MAX_EXPORT_FILES} entries")
            target = dest.joinpath(*name.parts)
            # parents must be real directories inside dest (git trees never put files under a symlink)
            parent = target.parent
            real_parent = parent.resolve()
            if real_parent != dest_resolved and dest_resolved not in real_parent.parents:
                raise GitExportError(f"unsafe path in archive: {member.name!r}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.issym():
                parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
            elif member.isreg():
                total += member.size
                if total > max_bytes:
                    raise GitExportError(f"tree is larger than {max_bytes} bytes")
                parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise GitExportError(f"cannot read {member.name!r} from the archive")
                with src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
                os.chmod(target, mode)
            # other entry types (hardlinks, devices) are never produced by git archive: skip


# --------------------------------------------------------------------------- mapping selection


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
