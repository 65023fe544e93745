"""import_policies and policy_check commands; policies from a Git path versioned by commit; check of a branch.

Real git repositories are made in tmp_path with the git CLI; the repository cache is a real clone."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from fleet.audit.models import AuditEvent
from policies.models import Policy, PolicyBinding, PolicySource
from policies.services.sources import sync_policy_source
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}


class Origin:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def commit(self, files: dict[str, str]) -> str:
        for rel, text in files.items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.git("add", rel)
        self.git("commit", "-q", "-m", "change")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path, settings: Any) -> Origin:
    settings.FLEETGATE_GIT_CACHE = tmp_path / "cache"
    return Origin(tmp_path / "origin")


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_import_policies_command_reads_a_directory(tmp_path: Path, fleet: dict[str, Any]) -> None:
    root = _write(
        tmp_path / "platform",
        {
            "gatekeeper/labels-template.yaml": lib.REQUIRED_LABELS_TEMPLATE,
            "gatekeeper/labels-constraint.yaml": lib.REQUIRED_LABELS_CONSTRAINT,
            "gatekeeper/privileged.yaml": lib.PRIVILEGED_TEMPLATE
            + "---\n"
            + lib.constraint("K8sPrivileged", "no-privileged"),
            "conftest/latest.rego": lib.NO_LATEST,
            "conftest/latest_test.rego": lib.NO_LATEST_TEST,
        },
    )
    out = io.StringIO()
    call_command("import_policies", str(root), "--group", "web", "--enforcement", "deny", stdout=out)
    text = out.getvalue()
    assert "k8srequiredlabels (Rego/Gatekeeper K8sRequiredLabels): v1 created" in text
    assert "platform (Rego/conftest): v1 created, 2/2 tests passed" in text
    assert "bound platform to web (deny)" in text
    assert set(Policy.objects.values_list("name", flat=True)) == {
        "k8srequiredlabels",
        "k8sprivileged",
        "platform",
    }
    assert PolicyBinding.objects.filter(cluster_group=fleet["web"], enforcement="deny").count() == 3
    # Importing the same directory again is idempotent.
    out = io.StringIO()
    call_command("import_policies", str(root), stdout=out)
    assert "v1 unchanged" in out.getvalue()

    _write(root, {"conftest/broken.rego": "package main\n\ndeny[msg] {\n  msg := \n}\n"})
    with pytest.raises(CommandError, match=r"conftest/broken.rego:\d+"):
        call_command("import_policies", str(root))
    with pytest.raises(CommandError, match="no cluster group"):
        call_command("import_policies", str(root), "--group", "nope")


def test_policy_check_command_prints_conftest_output_and_exits_1_when_blocked(
    tmp_path: Path, fleet: dict[str, Any], make_policy: Any, bind: Any
) -> None:
    bind(
        make_policy(
            "prod-replicas", style="conftest", modules=[{"path": "r.rego", "source": lib.PROD_REPLICAS}]
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([lib.deployment("web", replicas=1)]))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all([lib.deployment("web", replicas=3)]))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("policy_check", "--mapping", str(fleet["mapping"].pk), "--file", str(bad), stdout=out)
    assert exit_info.value.code == 1
    text = out.getvalue()
    assert (
        "FAIL - prod-eu-1 - bad.yaml - Deployment/apps/web - prod-replicas (Rego/conftest) - "
        "web needs at least 2 replicas on production cluster prod-eu-1"
    ) in text
    assert "prod-eu-1: blocked - 1 tests, 0 passed, 0 warnings, 1 failures, 0 exceptions" in text
    assert "staging-eu-1: passed - 1 tests, 1 passed, 0 warnings, 0 failures, 0 exceptions" in text
    assert text.rstrip().endswith("2 tests, 1 passed, 0 warnings, 1 failures, 0 exceptions")

    out = io.StringIO()
    call_command("policy_check", "--mapping", "apps/web", "--file", str(good), stdout=out)  # exit 0: no raise
    assert "prod-eu-1: passed" in out.getvalue()


def test_policy_check_of_a_branch_renders_and_checks_each_cluster(
    origin: Origin, fleet: dict[str, Any], make_policy: Any, bind: Any, admin_client: Any
) -> None:
    repo = fleet["repo"]
    repo.url = origin.path.as_uri()
    repo.save()
    origin.commit({"apps/web/deploy.yaml": yaml.safe_dump(lib.deployment("web", replicas=1))})
    bind(
        make_policy(
            "prod-replicas", style="conftest", modules=[{"path": "r.rego", "source": lib.PROD_REPLICAS}]
        )
    )
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("policy_check", "--mapping", "apps/web", "--branch", "main", stdout=out)
    assert exit_info.value.code == 1
    assert "FAIL - prod-eu-1 - apps/web/deploy.yaml - Deployment/apps/web - prod-replicas" in out.getvalue()

    sha = origin.commit({"apps/web/deploy.yaml": yaml.safe_dump(lib.deployment("web", replicas=2))})
    response = admin_client.post(
        "/api/policies/check/", {"repository": repo.pk, "branch": "main"}, format="json"
    )
    assert response.status_code == 200, response.content
    by_name = {m["mapping"]["name"]: m for m in response.json()["mappings"]}
    web = by_name["web"]
    assert web["ref"] == f"main@{sha[:10]}"
    assert {c["cluster"]: c["decision"] for c in web["clusters"]} == {
        "prod-eu-1": "passed",
        "staging-eu-1": "passed",
    }

    unknown = admin_client.post(
        "/api/policies/check/", {"mapping": fleet["mapping"].pk, "branch": "no-such-branch"}, format="json"
    )
    assert unknown.status_code == 400
    assert "branch" in unknown.json()


def test_policy_source_sync_versions_policies_by_commit(origin: Origin, fleet: dict[str, Any]) -> None:
    repo = fleet["repo"]
    repo.url = origin.path.as_uri()
    repo.save()
    sha1 = origin.commit(
        {
            "policies/latest.rego": lib.NO_LATEST,
            "policies/latest_test.rego": lib.NO_LATEST_TEST,
            "policies/gatekeeper/labels.yaml": lib.REQUIRED_LABELS_TEMPLATE
            + "---\n"
            + lib.REQUIRED_LABELS_CONSTRAINT,
            "apps/web/deploy.yaml": "kind: x\n",
        }
    )
    source = PolicySource.objects.create(
        repository=repo,
        path="policies/",
        name="team-policies",
        bind_group=fleet["web"],
        bind_enforcement="warn",
    )
    outcome = sync_policy_source(source, sha1)
    assert outcome.ok, outcome.error
    conftest_policy = Policy.objects.get(name="team-policies")
    assert conftest_policy.current.commit_sha == sha1
    assert conftest_policy.source == source
    assert Policy.objects.get(name="k8srequiredlabels").current.commit_sha == sha1
    assert PolicyBinding.objects.filter(cluster_group=fleet["web"], enforcement="warn").count() == 2
    source.refresh_from_db()
    assert source.last_synced_sha == sha1

    sha2 = origin.commit({"policies/latest.rego": lib.NO_LATEST.replace("uses the", "must not use the")})
    assert sync_policy_source(source, sha2).ok
    conftest_policy.refresh_from_db()
    assert (conftest_policy.current.number, conftest_policy.current.commit_sha) == (2, sha2)
    assert Policy.objects.get(name="k8srequiredlabels").current.number == 1  # unchanged at sha2

    sha3 = origin.commit({"policies/latest.rego": "package main\n\ndeny[msg] {\n  msg := \n}\n"})
    outcome = sync_policy_source(source, sha3)
    assert not outcome.ok
    assert "latest.rego" in outcome.error
    conftest_policy.refresh_from_db()
    assert conftest_policy.current.number == 2  # nothing stored from the broken commit
    source.refresh_from_db()
    assert source.last_synced_sha == sha2
    assert source.last_error
    assert AuditEvent.objects.filter(action="policysource.sync_failed").count() == 1
