"""fleet.sources.git against real repositories made in tmp_path (file:// and smart HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.git import (
    ChangedPath,
    GitAuthError,
    GitBranchNotFoundError,
    GitCredentials,
    GitError,
    GitLockTimeoutError,
    GitNotARepositoryError,
    GitUnreachableError,
    RepositoryCache,
    affected_mappings,
    mapping_matches,
    redact_url,
    scrub,
    validate_url,
)

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: '{v}'\n"


def cache_for(tmp_path: Path, url: str, rid: str = "repo1", **kw: Any) -> RepositoryCache:
    return RepositoryCache(tmp_path / "cache", rid, url, **kw)


def test_clone_then_fetch_returns_every_new_commit_in_order(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    first = origin.commit("initial", {"apps/web/cm.yaml": CM.format(name="web", v=1), "README.md": "x"})
    cache = cache_for(tmp_path, origin.url)

    result = cache.fetch()
    assert result.cloned is True
    assert result.heads == {"main": first}
    assert (tmp_path / "cache" / "repo1.git" / "HEAD").is_file()
    # nothing about the URL or credentials is written into the cache's config
    assert "file://" not in (tmp_path / "cache" / "repo1.git" / "config").read_text()

    initial = cache.new_commits("main", None)
    assert [c.sha for c in initial.commits] == [first]
    assert {c.path for c in initial.changed_paths} == {"apps/web/cm.yaml", "README.md"}

    c2 = origin.commit("scale web", {"apps/web/cm.yaml": CM.format(name="web", v=2)})
    c3 = origin.commit("add api\n\nlonger body", {"apps/api/cm.yaml": CM.format(name="api", v=1)})
    c4 = origin.commit("drop readme", {"README.md": None})

    update = cache.new_commits("main", first)
    assert update.old_head == first and update.new_head == c4
    assert update.force_push is False and update.rewritten == ()
    assert [c.sha for c in update.commits] == [c2, c3, c4]
    second = update.commits[1]
    assert second.parents == (c2,)
    assert second.author.name == "Ada Author" and second.author.email == "ada@example.com"
    assert second.committer.name == "Cole Committer"
    assert second.message.startswith("add api\n\nlonger body") and second.summary == "add api"
    assert second.authored_at.tzinfo is not None
    assert second.changed_paths == (ChangedPath("A", "apps/api/cm.yaml"),)
    assert update.commits[2].changed_paths == (ChangedPath("D", "README.md"),)
    assert {(c.status, c.path) for c in update.changed_paths} == {
        ("M", "apps/web/cm.yaml"), ("A", "apps/api/cm.yaml"), ("D", "README.md")}

    again = cache.new_commits("main", c4)
    assert again.up_to_date and again.commits == ()
    assert cache.fetch().cloned is False


def test_branches_are_followed_and_a_missing_branch_is_a_clear_error(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    base = origin.commit("initial", {"a.yaml": CM.format(name="a", v=1)})
    origin.git("checkout", "-q", "-b", "staging")
    staged = origin.commit("staging change", {"a.yaml": CM.format(name="a", v=2)})
    origin.git("checkout", "-q", "main")
    cache = cache_for(tmp_path, origin.url)
    cache.fetch()
    assert cache.branches() == {"main": base, "staging": staged}
    assert cache.new_commits("staging", base, fetch=False).commits[0].sha == staged

    with pytest.raises(GitBranchNotFoundError) as err:
        cache.new_commits("release", None)
    assert err.value.branch == "release"
    assert "release" in str(err.value) and "main" in str(err.value)
    assert err.value.code == "branch_not_found"

    # a branch deleted on the remote disappears from the cache on the next fetch
    origin.git("branch", "-D", "staging")
    assert "staging" not in cache.fetch().heads


def test_force_push_is_detected_with_the_rewritten_commits(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    base = origin.commit("base", {"a.yaml": CM.format(name="a", v=1)})
    bad1 = origin.commit("bad 1", {"a.yaml": CM.format(name="a", v=2)})
    bad2 = origin.commit("bad 2", {"b.yaml": CM.format(name="b", v=1)})
    cache = cache_for(tmp_path, origin.url)
    cache.fetch()
    origin.git("reset", "-q", "--hard", base)
    fixed = origin.commit("fixed", {"c.yaml": CM.format(name="c", v=1)})

    update = cache.new_commits("main", bad2)
    assert update.force_push is True
    assert update.old_head_known is True
    assert update.rewritten == (bad2, bad1)
    assert [c.sha for c in update.commits] == [fixed]
    # net change from the old head to the new one (git may pair b.yaml -> c.yaml as a rename)
    assert {p for c in update.changed_paths for p in c.paths()} == {"a.yaml", "b.yaml", "c.yaml"}

    # an old head the cache never saw (another worker's cache, gc'd): still reported as force push
    other = cache_for(tmp_path, origin.url, rid="fresh")
    unknown = other.new_commits("main", "f" * 40)
    assert unknown.force_push is True and unknown.old_head_known is False
    assert [c.sha for c in unknown.commits] == [base, fixed]


def test_unreachable_path_and_not_a_repository_errors(tmp_path: Path) -> None:
    missing = cache_for(tmp_path, (tmp_path / "does-not-exist").as_uri())
    with pytest.raises(GitUnreachableError) as err:
        missing.fetch()
    assert "does not exist" in str(err.value)
    assert not missing.path.exists()  # a failed first fetch leaves no half-made cache
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["repo1.lock"]

    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    with pytest.raises(GitNotARepositoryError):
        cache_for(tmp_path, plain_dir.as_uri(), rid="r2").fetch()

    with pytest.raises(GitUnreachableError):  # connection refused on a closed local port
        cache_for(tmp_path, "http://127.0.0.1:9/nothing.git", rid="r3", timeout=20).fetch()


def test_url_validation_and_redaction() -> None:
    with pytest.raises(GitError, match="password"):
        validate_url("https://user:s3cret@example.com/org/repo.git")
    with pytest.raises(GitError, match="scheme"):
        validate_url("ext::sh -c touch% /tmp/pwned")
    with pytest.raises(GitError):
        validate_url("--upload-pack=evil")
    assert validate_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert redact_url("https://u:tok@h.example/x") == "https://u:***@h.example/x"
    scrubbed = scrub("fatal: https://u:tok123@h/x failed tok123", ["tok123"])
    assert scrubbed == "fatal: https://u:***@h/x failed ***"
    with pytest.raises(ValueError):
        RepositoryCache("/tmp/x", "../evil", "file:///tmp/x")


def test_token_auth_over_http_never_writes_or_reveals_the_token(
        tmp_path: Path, make_repo: Any, git_http_server: Any) -> None:
    origin = make_repo("served")
    head = origin.commit("initial", {"a.yaml": CM.format(name="a", v=1)})
    token = "ghp_TESTTOKEN_0123456789abcdef"
    server = git_http_server("x-access-token", token)

    anonymous = cache_for(tmp_path, server.url("served"), rid="anon", timeout=30)
    with pytest.raises(GitAuthError) as err:
        anonymous.fetch()
    assert err.value.code == "auth_failed"

    wrong = cache_for(tmp_path, server.url("served"), rid="wrong", timeout=30,
                      credentials=GitCredentials(kind="token", token="ghp_WRONG_value_987654321"))
    with pytest.raises(GitAuthError) as err:
        wrong.fetch()
    assert "ghp_WRONG_value_987654321" not in str(err.value)
    assert "ghp_WRONG_value_987654321" not in repr(err.value.to_dict())

    good = cache_for(tmp_path, server.url("served"), rid="good", timeout=30,
                     credentials=GitCredentials(kind="token", token=token))
    assert good.fetch().heads == {"main": head}
    assert token not in repr(good.credentials)
    for f in good.path.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    assert any(a.startswith("Basic ") for a in server.seen_auth)


def test_ssh_key_is_a_private_temporary_file_and_host_keys_are_enforced(tmp_path: Path) -> None:
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAnotarealkeybutlongenough\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
    creds = GitCredentials(kind="ssh", ssh_private_key=key,
                           ssh_known_hosts="127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey")
    cache = cache_for(tmp_path, "ssh://git@127.0.0.1:9/org/repo.git", credentials=creds, timeout=20)
    with cache._auth_env() as env:
        cmd = env["GIT_SSH_COMMAND"]
        assert "StrictHostKeyChecking=yes" in cmd and "BatchMode=yes" in cmd
        key_path = Path(cmd.split(" -i ")[1].split()[0])
        hosts = Path(cmd.split("UserKnownHostsFile=")[1].split()[0])
        assert key_path.read_text() == key
        assert oct(key_path.stat().st_mode & 0o777) == "0o600"
        assert "FakeHostKey" in hosts.read_text()
        assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert not key_path.exists() and not key_path.parent.exists()
    with pytest.raises(GitUnreachableError) as err:  # real ssh, nothing listens on port 9
        cache.fetch()
    assert "AAAAnotarealkey" not in str(err.value)
    with pytest.raises(ValueError, match="known_hosts"):
        GitCredentials(kind="ssh", ssh_private_key=key)


_CHILD = """
import logging, sys
sys.path.insert(0, {root!r})
logging.basicConfig(filename={log!r}, level=logging.DEBUG, format="%(message)s")
from fleet.sources.git import RepositoryCache
result = RepositoryCache({cache!r}, "shared", {url!r}, lock_timeout=60).fetch()
print("cloned" if result.cloned else "fetched")
"""


def test_two_processes_fetching_the_same_repository_are_serialized(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    origin.commit("initial", {"a.yaml": CM.format(name="a", v=1)})
    log = tmp_path / "fetch.log"
    log.touch()
    holder = RepositoryCache(tmp_path / "cache", "shared", origin.url)
    script = _CHILD.format(root=str(Path(__file__).resolve().parents[2]), log=str(log),
                           cache=str(tmp_path / "cache"), url=origin.url)
    with holder.lock():
        children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull})
                    for _ in range(2)]
        deadline = time.monotonic() + 60
        while log.read_text().count("waiting for git lock") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text().count("waiting for git lock") == 2
        assert "fetch start" not in log.read_text()  # both blocked while we hold the lock
    outputs = sorted(c.communicate(timeout=120)[0].strip() for c in children)
    assert [c.returncode for c in children] == [0, 0]
    assert outputs == ["cloned", "fetched"]
    events = [(line.split()[2], line.split("pid=")[1].split()[0]) for line in log.read_text().splitlines()
              if line.startswith("git fetch ")]
    assert [e[0] for e in events] == ["start", "done", "start", "done"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1] and events[0][1] != events[2][1]


def test_lock_times_out_with_a_clear_error(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    origin.commit("initial", {"a.yaml": CM.format(name="a", v=1)})
    a = cache_for(tmp_path, origin.url, rid="locked")
    b = cache_for(tmp_path, origin.url, rid="locked", lock_timeout=0.2)
    with a.lock(), pytest.raises(GitLockTimeoutError, match="locked by another worker"):
        b.fetch()
    assert b.fetch().cloned is True  # free again


def test_changed_paths_with_renames_and_affected_mappings(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    body = CM.format(name="web", v="a long enough value so that git sees a rename " * 3)
    old = origin.commit("initial", {"apps/web/cm.yaml": body, "apps/api/cm.yaml": CM.format(name="api", v=1),
                                    "envs/prod/eu/k.yaml": CM.format(name="k", v=1),
                                    "base/cm.yaml": CM.format(name="b", v=1)})
    (origin.path / "apps/frontend").mkdir()
    origin.git("mv", "apps/web/cm.yaml", "apps/frontend/cm.yaml")
    new = origin.commit("rename web to frontend, change prod",
                        {"envs/prod/eu/k.yaml": CM.format(name="k", v=2)})
    cache = cache_for(tmp_path, origin.url)
    cache.fetch()
    changed = cache.changed_paths(old, new)
    assert ChangedPath("R", "apps/frontend/cm.yaml", old_path="apps/web/cm.yaml") in changed
    assert ChangedPath("M", "envs/prod/eu/k.yaml") in changed

    mappings = ["apps/web", "apps/api", "apps/frontend/", "envs/*/eu", "envs/**", "base", ".", "apps/we"]
    assert affected_mappings(mappings, changed) == {"apps/web", "apps/frontend/", "envs/*/eu", "envs/**", "."}
    # a kustomize overlay depending on base/ is affected by a change there
    assert affected_mappings(["overlays/prod"], ["base/cm.yaml"],
                             dependencies={"overlays/prod": ["base"]}) == {"overlays/prod"}
    assert mapping_matches("apps/*", "apps/web/deploy/x.yaml")
    assert not mapping_matches("apps/*/prod", "apps/web/staging/x.yaml")
    with pytest.raises(ValueError):
        mapping_matches("../etc", "x")


def test_export_writes_the_commit_tree_with_symlinks_and_cleans_up(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    origin.write({"apps/web/cm.yaml": CM.format(name="web", v=1)})
    (origin.path / "apps/web/link.yaml").symlink_to("cm.yaml")
    (origin.path / "apps/web/escape.yaml").symlink_to("/etc/passwd")
    origin.git("add", "-A")
    first = origin.commit("initial")
    second = origin.commit("change", {"apps/web/cm.yaml": CM.format(name="web", v=2)})
    cache = cache_for(tmp_path, origin.url)
    cache.fetch()
    with cache.export(first) as tree:
        assert "v: '1'" in (tree / "apps/web/cm.yaml").read_text()
        assert os.readlink(tree / "apps/web/link.yaml") == "cm.yaml"
        assert os.readlink(tree / "apps/web/escape.yaml") == "/etc/passwd"  # kept: the renderer refuses it
        assert not (tree / ".git").exists()
        exported = tree
    assert not exported.exists()
    with cache.export(second, paths=["apps"]) as tree:
        assert "v: '2'" in (tree / "apps/web/cm.yaml").read_text()
    with pytest.raises(GitError):
        with cache.export("0123456789abcdef0123456789abcdef01234567"):
            pass


def test_a_hanging_remote_is_killed_after_the_timeout(tmp_path: Path) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts connections (kernel backlog) and never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.git"
        cache = cache_for(tmp_path, url, timeout=1.5)
        with pytest.raises(GitUnreachableError) as err:
            cache.fetch()
        assert err.value.code == "timeout"
        assert not cache.path.exists()
    finally:
        listener.close()
