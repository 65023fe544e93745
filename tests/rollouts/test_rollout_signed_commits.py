"""Verified commits end to end: a head signed by a trusted key (OpenPGP or SSH, real keys) rolls out to the
sandbox clusters; a force-push that replaces it with an unsigned head is refused, nothing rolls out from it,
and the signed state stays what the clusters run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Rollout, SyncedState
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from fleet.sources.services.signing import normalize_trusted_keys
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository
from tests.sources.signers import OpenPGPKey, SSHKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["openpgp", "ssh"])
def key(request: Any, tmp_path: Path) -> Iterator[OpenPGPKey | SSHKey]:
    made: OpenPGPKey | SSHKey = (OpenPGPKey("Release Bot <release@example.com>") if request.param == "openpgp"
                                 else SSHKey(tmp_path / "ssh", "release-bot"))
    yield made
    made.close()


def test_signed_head_rolls_out_and_a_forced_unsigned_head_does_not(
        git_repo: Any, make_fleet: Any, tasks: Any, key: OpenPGPKey | SSHKey) -> None:
    fleet = make_fleet({"a": {"env": "dev"}, "b": {"env": "dev"}})
    repo = make_repository(git_repo)
    repo.verification_mode = "required"
    repo.trusted_keys = normalize_trusted_keys([{"name": "release-bot", "public_key": key.public_key}])
    repo.save()
    mapping = make_mapping(repo, "web", "apps/web", make_group("dev", "dev"))

    for rel, text in {"apps/web/ns.yaml": NAMESPACE,
                      "apps/web/cm.yaml": configmap("web", {"color": "blue"})}.items():
        (git_repo.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (git_repo.path / rel).write_text(text)
    git_repo.git("add", "-A")
    git_repo.git(*key.git_options(), "commit", "-q", "-S", "-m", "blue, signed")
    signed = git_repo.git("rev-parse", "HEAD")
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "synced", rollout.reason
    assert Commit.objects.get(sha=signed).verification == "verified"
    for short in ("a", "b"):
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}

    # History rewritten: the signed commit is replaced by an unsigned one (git commit --amend, force-push).
    (git_repo.path / "apps/web/cm.yaml").write_text(configmap("web", {"color": "red"}))
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "--amend", "--no-gpg-sign", "-m", "red, unsigned")
    forced = git_repo.git("rev-parse", "HEAD")
    outcome = fetch_repository(repo)
    assert outcome.ok and outcome.force_push and outcome.renders == ()
    tasks.drain()
    commit = Commit.objects.get(sha=forced)
    assert (commit.forced, commit.status, commit.verification) == (True, "unverified", "unsigned")
    assert list(Rollout.objects.filter(mapping=mapping).values_list("commit__sha", flat=True)) == [signed]
    for short in ("a", "b"):
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
        state = SyncedState.objects.get(mapping=mapping, cluster=fleet.clusters[short])
        assert state.commit.sha == signed
    assert AuditEvent.objects.filter(action="repository.force_push").exists()
    refused = AuditEvent.objects.get(action="commit.refused")
    assert refused.target_id == str(commit.pk) and refused.after["verification"] == "unsigned"
