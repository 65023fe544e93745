"""Verified commits: with real keys (gpg, ssh-keygen) and real signed commits, only a head signed by a trusted
key is rendered; unsigned, untrusted, altered, expired and revoked ones are refused with the reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from fleet.audit.models import AuditEvent
from fleet.sources.models import Commit, MappingRender, Repository
from fleet.sources.services import fetch_repository
from fleet.sources.services.signing import normalize_trusted_keys
from tests.sources.origin import Origin, configmap
from tests.sources.signers import OpenPGPKey, SSHKey, signed_commit


@pytest.fixture
def gpg_keys() -> Iterator[Any]:
    made: list[OpenPGPKey] = []

    def make(uid: str, **kwargs: Any) -> OpenPGPKey:
        key = OpenPGPKey(uid, **kwargs)
        made.append(key)
        return key

    yield make
    for key in made:
        key.close()


@pytest.fixture
def world(origin: Origin, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    repo = make_repository(origin, verification_mode="required")
    mapping = make_mapping(repo, "web", "apps/web", fleet["staging"])
    return {"repo": repo, "mapping": mapping, "origin": origin}


def trust(repo: Repository, *keys: tuple[str, str]) -> None:
    repo.trusted_keys = normalize_trusted_keys([{"name": n, "public_key": k} for n, k in keys])
    repo.save()


def commit_signed(origin: Origin, key: Any, message: str, data: str) -> str:
    origin.write({"apps/web/cm.yaml": configmap("web", data)})
    signed_commit(origin.git, key, message)
    return origin.head()


def renders_of(sha: str) -> list[str]:
    return list(MappingRender.objects.filter(commit__sha=sha).values_list("status", flat=True))


def test_keys_are_checked_and_fingerprinted(gpg_keys: Any, tmp_path: Path) -> None:
    alice, bob = gpg_keys("Alice <alice@example.com>"), SSHKey(tmp_path / "ssh", "bob")
    keys = normalize_trusted_keys([{"name": "alice", "public_key": alice.public_key},
                                   {"name": "bob laptop", "public_key": bob.public_key, "kind": "ssh"}])
    assert [(k["name"], k["kind"], k["fingerprint"]) for k in keys] == [
        ("alice", "openpgp", alice.fingerprint), ("bob laptop", "ssh", bob.fingerprint)]
    refusals = {
        "private ssh": [{"name": "x", "public_key": bob.private_key}],
        "garbage": [{"name": "x", "public_key": "hello"}],
        "no name": [{"public_key": bob.public_key}],
        "twice": [{"name": "a", "public_key": bob.public_key}, {"name": "b", "public_key": bob.public_key}],
        "wrong kind": [{"name": "x", "public_key": bob.public_key, "kind": "openpgp"}],
        "not a list": {"name": "x"},
        "control characters": [{"name": "a\x00b", "public_key": bob.public_key}],
        "NUL in the key": [{"name": "x", "public_key": bob.public_key + "\x00"}],
    }
    for case, value in refusals.items():
        with pytest.raises(ValueError, match=r"\S") as info:
            normalize_trusted_keys(value)
        # The message names the entry and the problem, never the key material.
        assert bob.public_key.split()[1] not in str(info.value), case
        assert bob.private_key.splitlines()[1] not in str(info.value), case
    secret = subprocess.run(["gpg", "--homedir", str(alice.home), "--armor", "--export-secret-keys",
                             alice.fingerprint], check=True, capture_output=True, text=True).stdout
    with pytest.raises(ValueError, match="private key"):
        normalize_trusted_keys([{"name": "x", "public_key": secret}])


def test_openpgp_signed_head_is_rendered_and_audited_with_signer_and_fingerprint(
        world: dict[str, Any], gpg_keys: Any) -> None:
    repo, origin = world["repo"], world["origin"]
    alice = gpg_keys("Alice <alice@example.com>")
    trust(repo, ("alice", alice.public_key))
    sha = commit_signed(origin, alice, "signed", "v: 1")
    assert fetch_repository(repo).ok
    commit = Commit.objects.get(sha=sha)
    assert (commit.verification, commit.status) == ("verified", "rendered")
    assert (commit.signature_format, commit.signer, commit.signing_key) == (
        "openpgp", "Alice <alice@example.com>", alice.fingerprint)
    assert renders_of(sha) == ["rendered"]
    event = AuditEvent.objects.get(action="commit.verified")
    assert event.after["signer"] == "Alice <alice@example.com>"
    assert event.after["signing_key"] == alice.fingerprint and event.after["key_name"] == "alice"
    assert "PGP" not in json.dumps(event.after)


def test_unsigned_and_untrusted_heads_are_refused_with_the_reason(
        world: dict[str, Any], gpg_keys: Any, tmp_path: Path) -> None:
    repo, origin = world["repo"], world["origin"]
    alice, mallory = gpg_keys("Alice <alice@example.com>"), gpg_keys("Mallory <m@example.com>")
    eve = SSHKey(tmp_path / "ssh", "eve")
    trust(repo, ("alice", alice.public_key))

    unsigned = origin.commit("unsigned", {"apps/web/cm.yaml": configmap("web", "v: 0")})
    assert fetch_repository(repo).ok
    commit = Commit.objects.get(sha=unsigned)
    assert (commit.status, commit.verification) == ("unverified", "unsigned")
    assert commit.verification_reason == "the commit is not signed"
    assert renders_of(unsigned) == []
    refused = AuditEvent.objects.get(action="commit.refused")
    assert refused.after["verification"] == "unsigned" and "not signed" in refused.message

    by_mallory = commit_signed(origin, mallory, "mallory", "v: 2")
    by_eve = commit_signed(origin, eve, "eve", "v: 3")
    assert fetch_repository(repo).ok
    m, e = Commit.objects.get(sha=by_mallory), Commit.objects.get(sha=by_eve)
    assert (m.status, m.verification, m.signing_key) == ("unverified", "untrusted_key", mallory.fingerprint)
    assert mallory.fingerprint in m.verification_reason
    assert (e.status, e.verification, e.signing_key) == ("unverified", "untrusted_key", eve.fingerprint)
    assert MappingRender.objects.count() == 0
    world["mapping"].refresh_from_db()
    assert world["mapping"].last_rendered_sha == ""


def test_ssh_signatures_and_key_rotation(world: dict[str, Any], gpg_keys: Any, tmp_path: Path) -> None:
    repo, origin = world["repo"], world["origin"]
    bob, carol = SSHKey(tmp_path / "ssh", "bob"), SSHKey(tmp_path / "ssh", "carol")
    trust(repo, ("bob", bob.public_key))
    first = commit_signed(origin, bob, "by bob", "v: 1")
    assert fetch_repository(repo).ok
    commit = Commit.objects.get(sha=first)
    assert (commit.verification, commit.signature_format, commit.signer, commit.signing_key) == (
        "verified", "ssh", "bob", bob.fingerprint)
    assert renders_of(first) == ["rendered"]

    # carol joins: her first commit is refused until her key is trusted ...
    by_carol = commit_signed(origin, carol, "by carol", "v: 2")
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=by_carol).verification == "untrusted_key"
    # ... then the head is checked again with the new keys and rendered, with nothing new fetched.
    trust(repo, ("bob", bob.public_key), ("carol", carol.public_key))
    outcome = fetch_repository(repo)
    assert outcome.ok and not outcome.commits
    commit = Commit.objects.get(sha=by_carol)
    assert (commit.status, commit.verification, commit.signer) == ("rendered", "verified", "carol")
    assert renders_of(by_carol) == ["rendered"]
    # bob's key removed (rotated out): his next commit is refused.
    trust(repo, ("carol", carol.public_key))
    late = commit_signed(origin, bob, "bob again", "v: 3")
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=late).verification == "untrusted_key"
    assert renders_of(late) == []


def test_altered_expired_and_revoked_signatures_are_refused(
        world: dict[str, Any], gpg_keys: Any) -> None:
    repo, origin = world["repo"], world["origin"]
    alice = gpg_keys("Alice <alice@example.com>")
    old = gpg_keys("Old <old@example.com>", expire="1d", faked_time="20200101T000000")
    gone = gpg_keys("Gone <gone@example.com>")
    good = commit_signed(origin, alice, "good", "v: 1")
    # The same signature on a commit whose message was changed afterwards.
    raw = origin.git("cat-file", "commit", good).replace("\ngood", "\nchanged")
    altered = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=origin.path,
                             input=raw + "\n", capture_output=True, text=True, check=True).stdout.strip()
    origin.git("update-ref", "refs/heads/main", altered)
    trust(repo, ("alice", alice.public_key))
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=altered).verification == "bad_signature"

    expired = commit_signed(origin, old, "expired", "v: 2")
    revoked = commit_signed(origin, gone, "revoked", "v: 3")
    gone.revoke()
    trust(repo, ("alice", alice.public_key), ("old", old.public_key), ("gone", gone.public_key))
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=expired).verification == "expired_key"
    assert Commit.objects.get(sha=revoked).verification == "revoked_key"
    assert MappingRender.objects.count() == 0


def test_verification_off_renders_anything_and_leaves_commits_unchecked(
        world: dict[str, Any]) -> None:
    repo, origin = world["repo"], world["origin"]
    sha = origin.commit("unsigned", {"apps/web/cm.yaml": configmap("web")})
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=sha).status == "unverified"
    Repository.objects.filter(pk=repo.pk).update(verification_mode="off")
    assert fetch_repository(repo).ok
    commit = Commit.objects.get(sha=sha)
    assert commit.status == "rendered" and renders_of(sha) == ["rendered"]



def test_turning_verification_on_checks_the_rendered_head_without_undoing_it(world: dict[str, Any]) -> None:
    repo, origin, mapping = world["repo"], world["origin"], world["mapping"]
    Repository.objects.filter(pk=repo.pk).update(verification_mode="off")
    sha = origin.commit("unsigned", {"apps/web/cm.yaml": configmap("web")})
    assert fetch_repository(repo).ok
    assert Commit.objects.get(sha=sha).verification == "unchecked"
    assert renders_of(sha) == ["rendered"]

    Repository.objects.filter(pk=repo.pk).update(verification_mode="required")
    assert fetch_repository(repo).ok
    commit = Commit.objects.get(sha=sha)
    assert (commit.status, commit.verification) == ("rendered", "unsigned")
    assert AuditEvent.objects.filter(action="commit.refused", target_id=str(commit.pk)).count() == 1
    # A changed mapping would re-render the head; a refused head is not rendered again.
    mapping.values = {"replicas": 2}
    mapping.save()
    assert fetch_repository(repo).ok
    assert list(MappingRender.objects.filter(commit=commit).values_list("reason", flat=True)) == ["new"]
    assert AuditEvent.objects.filter(action="commit.refused", target_id=str(commit.pk)).count() == 1

# --------------------------------------------------------------------------- API, RBAC, audit, UI


@pytest.mark.parametrize(
    ("role", "scoped", "expected"),
    [("viewer", False, 403), ("deployer", False, 403), ("approver", False, 403), ("policy-admin", False, 403),
     ("cluster-admin", True, 403), ("cluster-admin", False, 200), ("admin", False, 200)],
)
def test_editing_trusted_keys_needs_repository_change_on_all_clusters(
        world: dict[str, Any], token_client: Any, tmp_path: Path, role: str, scoped: bool,
        expected: int) -> None:
    from tests.sources.test_sources_api import user_with

    repo = world["repo"]
    bob = SSHKey(tmp_path / "ssh", "bob")
    user = user_with(role, world["mapping"].cluster_group if scoped else None)
    response = token_client(user).patch(
        f"/api/repositories/{repo.pk}/",
        {"verification_mode": "required", "trusted_keys": [{"name": "bob", "public_key": bob.public_key}]},
        format="json")
    assert response.status_code == expected, response.content
    repo.refresh_from_db()
    if expected == 200:
        assert repo.trusted_keys[0]["fingerprint"] == bob.fingerprint
        assert response.json()["trusted_keys"][0]["fingerprint"] == bob.fingerprint
    else:
        assert repo.trusted_keys == []
        assert not AuditEvent.objects.filter(action="repository.update").exists()


def test_keys_through_the_api_are_checked_and_audited_without_secrets(
        world: dict[str, Any], admin_client: Any, gpg_keys: Any, tmp_path: Path) -> None:
    repo = world["repo"]
    Repository.objects.filter(pk=repo.pk).update(auth_method="token", token="ghp-token-secret-123456")
    alice, bob = gpg_keys("Alice <alice@example.com>"), SSHKey(tmp_path / "ssh", "bob")
    url = f"/api/repositories/{repo.pk}/"
    bad = admin_client.patch(url, {"trusted_keys": [{"name": "bob", "public_key": bob.private_key}]},
                             content_type="application/json")
    assert bad.status_code == 400
    assert "private key" in bad.json()["trusted_keys"][0]
    assert bob.private_key.splitlines()[1] not in bad.content.decode()
    garbage = admin_client.patch(url, {"trusted_keys": [{"name": "x", "public_key": "nope"}]},
                                 content_type="application/json")
    assert garbage.status_code == 400 and "key 'x'" in garbage.json()["trusted_keys"][0]
    mode = admin_client.patch(url, {"verification_mode": "sometimes"}, content_type="application/json")
    assert mode.status_code == 400 and "verification_mode" in mode.json()

    ok = admin_client.patch(url, {"trusted_keys": [{"name": "alice", "public_key": alice.public_key},
                                                   {"name": "bob", "public_key": bob.public_key}]},
                            content_type="application/json")
    assert ok.status_code == 200, ok.content
    assert [(k["name"], k["kind"], k["fingerprint"]) for k in ok.json()["trusted_keys"]] == [
        ("alice", "openpgp", alice.fingerprint), ("bob", "ssh", bob.fingerprint)]
    event = AuditEvent.objects.filter(action="repository.update").latest("sequence")
    row = json.dumps([event.before, event.after, event.message])
    assert alice.fingerprint in row and bob.fingerprint in row
    assert "ghp-token-secret-123456" not in row and "PRIVATE" not in row


def test_the_commit_api_and_page_say_why_a_commit_was_refused(
        world: dict[str, Any], admin_client: Any, admin_user: Any, gpg_keys: Any) -> None:
    repo, origin = world["repo"], world["origin"]
    alice, mallory = gpg_keys("Alice <alice@example.com>"), gpg_keys("Mallory <m@example.com>")
    trust(repo, ("alice", alice.public_key))
    good = commit_signed(origin, alice, "good", "v: 1")
    assert fetch_repository(repo).ok
    bad = commit_signed(origin, mallory, "bad", "v: 2")
    assert fetch_repository(repo).ok
    body = admin_client.get(f"/api/commits/?repository={repo.pk}&verification=untrusted_key").json()
    assert [c["sha"] for c in body["results"]] == [bad]
    refused = body["results"][0]
    assert (refused["status"], refused["verification"], refused["signing_key"]) == (
        "unverified", "untrusted_key", mallory.fingerprint)
    assert "not a trusted key" in refused["verification_reason"] and refused["renders"] == []
    verified = admin_client.get(f"/api/commits/?sha={good}").json()["results"][0]
    assert (verified["verification"], verified["signer"]) == ("verified", "Alice <alice@example.com>")

    web = Client()
    web.force_login(admin_user)
    page = web.get(f"/commits/{Commit.objects.get(sha=bad).pk}/").content.decode()
    assert "Signed by an untrusted key" in page and mallory.fingerprint in page
    assert "Not rendered and not rolled out" in page
    page = web.get(f"/commits/{Commit.objects.get(sha=good).pk}/").content.decode()
    assert "Alice &lt;alice@example.com&gt;" in page and alice.fingerprint in page
    listing = web.get(f"/repositories/{repo.pk}/").content.decode()
    assert "Signed by an untrusted key" in listing and alice.fingerprint in listing


def test_keys_are_edited_in_the_ui_with_the_change_permission_and_audited(
        world: dict[str, Any], admin_user: Any, tmp_path: Path) -> None:
    from tests.sources.test_sources_api import user_with

    repo = world["repo"]
    bob, carol = SSHKey(tmp_path / "ssh", "bob"), SSHKey(tmp_path / "ssh", "carol")
    url = f"/repositories/{repo.pk}/signing/"
    viewer = Client()
    viewer.force_login(user_with("viewer"))
    assert viewer.get(url).status_code == 403
    assert viewer.post(url, {"verification_mode": "off"}).status_code == 403
    assert "signing/" not in viewer.get(f"/repositories/{repo.pk}/").content.decode()

    web = Client()
    web.force_login(user_with("cluster-admin"))
    refused = web.post(url, {"verification_mode": "required", "new_key_name": "bob",
                             "new_public_key": bob.private_key})
    assert refused.status_code == 200 and "private key" in refused.content.decode()
    assert bob.private_key.splitlines()[1] not in refused.content.decode()
    assert web.post(url, {"verification_mode": "required", "new_key_name": "bob",
                          "new_public_key": bob.public_key}).status_code == 302
    assert web.post(url, {"verification_mode": "required", "new_key_name": "carol",
                          "new_public_key": carol.public_key}).status_code == 302
    assert web.post(url, {"verification_mode": "required", "remove": ["bob"]}).status_code == 302
    repo.refresh_from_db()
    assert [(k["name"], k["fingerprint"]) for k in repo.trusted_keys] == [("carol", carol.fingerprint)]
    events = list(AuditEvent.objects.filter(action="repository.update").order_by("sequence"))
    assert len(events) == 3 and all(e.actor_name == "cluster-admin-all" for e in events)
    assert bob.fingerprint in json.dumps(events[-1].before)
    assert bob.fingerprint not in json.dumps(events[-1].after)


def test_keys_are_checked_in_the_admin(world: dict[str, Any], make_user: Any, tmp_path: Path) -> None:
    repo = world["repo"]
    bob = SSHKey(tmp_path / "ssh", "bob")
    client = Client()
    client.force_login(make_user("root", role="admin", superuser=True))
    form = {"name": repo.name, "url": repo.url, "branch": "main", "auth_method": "none", "username": "",
            "ssh_known_hosts": "", "poll_interval": "60", "enabled": "on", "verification_mode": "required",
            "trusted_keys": json.dumps([{"name": "bob", "public_key": bob.private_key}])}
    url = f"/admin/sources/repository/{repo.pk}/change/"
    response = client.post(url, form)
    assert response.status_code == 200 and "private key" in response.content.decode()
    assert bob.private_key.splitlines()[1] not in response.content.decode()
    repo.refresh_from_db()
    assert repo.trusted_keys == []
    form["trusted_keys"] = json.dumps([{"name": "bob", "public_key": bob.public_key}])
    assert client.post(url, form).status_code == 302
    repo.refresh_from_db()
    assert [(k["name"], k["kind"], k["fingerprint"]) for k in repo.trusted_keys] == [
        ("bob", "ssh", bob.fingerprint)]
    event = AuditEvent.objects.filter(action="repository.update").latest("sequence")
    assert bob.fingerprint in json.dumps(event.after)
