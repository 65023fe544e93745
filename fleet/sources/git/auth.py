"""Authentication and URL hygiene of git network commands: credentials, URL checks and redaction,
scrubbing secrets out of messages, the environment of one network command (askpass helper, ssh key
and known_hosts in a private temporary directory) and the connect-time SSRF check.

Secrets never reach ``.git/config``, the command line or an error message.  See the package docstring
of ``fleet.sources.git`` for the design.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import git as gitpython

from fleet.core import urlguard
from fleet.sources.git.errors import (
    GitAuthError,
    GitError,
    GitHostKeyError,
    GitNotARepositoryError,
    GitTimeoutError,
    GitUnreachableError,
    GitURLRefusedError,
)

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


def local_path(url: str) -> Path | None:
    """The filesystem path of a ``file://`` or absolute-path URL, else None."""
    if url.startswith("file://"):
        return Path(urlsplit(url).path)
    if url.startswith("/"):
        return Path(url)
    return None


# --------------------------------------------------------------------------- network command environment


@contextlib.contextmanager
def auth_env(credentials: GitCredentials, url: str, *, timeout: float,
             deny_networks: Sequence[urlguard.IPNetwork]) -> Iterator[dict[str, str]]:
    """Environment for a network git command; temporary files removed on exit."""
    env: dict[str, str] = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GCM_INTERACTIVE": "never",
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": str(int(max(10, timeout))),
        "LC_ALL": "C",
        "LANGUAGE": "C",
    }
    config: list[tuple[str, str]] = [
        ("credential.helper", ""),  # never read or store a credential in a helper
        ("core.askPass", ""),
        ("protocol.ext.allow", "never"),
    ]
    config += address_config(url, deny_networks)
    creds = credentials
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


def address_config(url: str, deny_networks: Sequence[urlguard.IPNetwork]) -> list[tuple[str, str]]:
    """Connect-time SSRF check against ``deny_networks``: resolve the host now and refuse a denied
    address.  Over http(s) git is then pinned to the addresses checked (``http.curloptResolve``) and
    follows no redirect, so neither a second DNS answer (rebinding) nor a redirect reaches another
    address.  Over ssh the addresses are checked but ssh resolves the name again itself."""
    if not deny_networks or local_path(url) is not None:
        return []
    host, port = urlguard.url_host_port(url)
    try:
        addresses = urlguard.resolve_checked(host, port, deny_networks, what="repository URL")
    except urlguard.URLRefused as exc:
        raise GitURLRefusedError(str(exc), url=redact_url(url)) from None
    config: list[tuple[str, str]] = []
    scheme = urlsplit(url).scheme if "://" in url else "ssh"
    if scheme in ("http", "https"):
        config.append(("http.followRedirects", "false"))
        name = urlguard.normalize_host(host)
        if addresses and port and not urlguard.is_ip_literal(name):
            pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
            config.append(("http.curloptResolve", f"{name}:{port}:{pinned}"))
    return config


# --------------------------------------------------------------------------- errors from git's output


def git_error(exc: gitpython.GitCommandError | str, *, context: str, url: str,
              credentials: GitCredentials) -> GitError:
    """Map git's stderr to an error type, with secrets scrubbed."""
    if isinstance(exc, gitpython.GitCommandError):
        raw = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
        if not raw.strip():
            raw = str(exc)
    else:
        raw = exc
    secrets = credentials.secrets()
    text = scrub(raw, secrets)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [re.sub(r"^stderr:\s*'?", "", ln).rstrip("'") for ln in lines]
    detail = "; ".join(ln for ln in lines if ln)[:500] or "git failed"
    low = text.lower()
    raw_url = url
    url = redact_url(raw_url)
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
    local = local_path(raw_url)
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
