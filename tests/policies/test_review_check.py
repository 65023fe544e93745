"""policy_check and the check API review as a chosen operation (--operation, --old) or against what a
registered cluster runs now (--live-cluster / live_cluster), within the caller's scope. A real sandbox
cluster over HTTP holds the live objects; policies in gatekeeper-library's style; both engines."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from clusters.models import Cluster
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.access.models import RoleBinding
from policies.engine import RegoEngine
from policies.models import PolicyBinding
from tests.policies import review_library as rl


@pytest.fixture
def review_policies(
    fleet: dict[str, Any], make_policy: Any, engine: RegoEngine, settings: Any, request: pytest.FixtureRequest
) -> None:
    """The review policies bound to "web", and the gate set to evaluate on ``engine`` (as configured)."""
    settings.FLEETGATE_REGO_ENGINE = engine.name
    if engine.name == "opa":
        settings.FLEETGATE_OPA_URL = request.getfixturevalue("opa_server").url
    for name, template, constraint in (
        ("scale-down", rl.SCALE_DOWN_TEMPLATE, rl.SCALE_DOWN_CONSTRAINT),
        ("keep-volumes", rl.PROTECTED_DELETE_TEMPLATE, rl.PROTECTED_DELETE_CONSTRAINT),
    ):
        policy = make_policy(name, engine, style="gatekeeper", template=template, constraints=[constraint])
        PolicyBinding.objects.create(policy=policy, cluster_group=fleet["web"], enforcement="deny")


@pytest.fixture
def live(fleet: dict[str, Any]) -> Iterator[tuple[Cluster, SandboxCluster]]:
    """A member of the "web" group backed by a sandbox cluster running web with 10 replicas."""
    with SandboxServer() as server:
        box = server.add_cluster("live-web", token="tok-live-secret", rollout_delay=0)
        box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
        box.apply_object(rl.deployment("web", replicas=10))
        cluster = Cluster.objects.create(
            name="live-web",
            api_url=box.url,
            auth_method="token",
            token="tok-live-secret",
            labels={"team": "web", "env": "prod"},
        )
        assert fleet["web"].members.filter(pk=cluster.pk).exists()
        yield cluster, box


def _check(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("policy_check", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_policy_check_reviews_manifests_as_an_update_with_old_objects(
    tmp_path: Path, fleet: dict[str, Any], review_policies: None, engine: RegoEngine
) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(rl.deployment("web", replicas=3)))
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(rl.deployment("web", replicas=8)))
    mapping = str(fleet["mapping"].pk)
    code, out, _ = _check(
        "--mapping", mapping, "--file", str(new), "--operation", "UPDATE", "--old", str(old)
    )
    assert code == 1, out
    assert "Deployment web: scaling down from 8 to 3 replicas removes more than 50%" in out
    assert _check("--mapping", mapping, "--file", str(new))[0] == 0  # as a CREATE: nothing to compare
    code, _, err = _check("--mapping", mapping, "--file", str(new), "--operation", "UPDATE")
    assert code == 2 and "no old object given for Deployment apps/web (an UPDATE needs one)" in err

    claim = tmp_path / "claim.yaml"
    claim.write_text(yaml.safe_dump(rl.pvc("data")))
    code, out, _ = _check("--mapping", mapping, "--file", str(claim), "--operation", "DELETE")
    assert code == 1 and "PersistentVolumeClaim apps/data must not be deleted (requested by fleetgate)" in out


def test_policy_check_reviews_a_branch_against_a_live_cluster(
    tmp_path: Path,
    fleet: dict[str, Any],
    review_policies: None,
    engine: RegoEngine,
    live: tuple[Cluster, SandboxCluster],
) -> None:
    _cluster, box = live
    new = tmp_path / "web.yaml"
    new.write_text(yaml.safe_dump_all([rl.deployment("web", replicas=4), rl.pvc("data")]))
    mapping = str(fleet["mapping"].pk)
    code, out, _ = _check("--mapping", mapping, "--file", str(new), "--live-cluster", "live-web")
    assert code == 1, out
    assert (
        "live-web - web.yaml - Deployment/apps/web - scale-down/scale-down-by-half-at-most "
        "(Rego/Gatekeeper) - Deployment web: scaling down from 10 to 4" in out
    )
    assert "prod-eu-1" not in out  # only the named cluster is reviewed

    box.apply_object(rl.deployment("web", replicas=6))  # what prod runs changed: now allowed
    assert _check("--mapping", mapping, "--file", str(new), "--live-cluster", "live-web")[0] == 0

    code, _, err = _check("--mapping", mapping, "--file", str(new), "--live-cluster", "nope")
    assert code == 2 and "no cluster 'nope' that you may see" in err
    code, _, err = _check("--mapping", mapping, "--file", str(new), "--live-cluster", "other-1")
    assert code == 2 and "is not a member of web" in err


def test_check_api_takes_operation_and_live_cluster_within_the_callers_scope(
    fleet: dict[str, Any],
    review_policies: None,
    engine: RegoEngine,
    live: tuple[Cluster, SandboxCluster],
    make_user: Any,
    token_client: Any,
) -> None:
    mapping = fleet["mapping"].pk
    manifests = yaml.safe_dump(rl.deployment("web", replicas=4))

    def check_live(client: Any) -> Any:
        return client.post(
            "/api/policies/check/",
            {"mapping": mapping, "manifests": manifests, "live_cluster": "live-web"},
            format="json",
        )

    web_viewer = token_client(make_user("web-viewer", role="viewer", scope=fleet["web"]))
    # reading live objects with the cluster's credentials takes the right to start a sync there
    viewing = check_live(web_viewer)
    assert viewing.status_code == 403, viewing.content
    assert "rollout.sync" in viewing.json()["detail"]
    # a deployer elsewhere who views everything may not either
    other_deployer_user = make_user("other-deployer", role="deployer", scope=fleet["other"])
    RoleBinding.objects.create(user=other_deployer_user, role="viewer", scope=None)
    other_deployer = token_client(other_deployer_user)
    elsewhere = check_live(other_deployer)
    assert elsewhere.status_code == 403, elsewhere.content
    web_deployer = token_client(make_user("web-deployer", role="deployer", scope=fleet["web"]))
    response = check_live(web_deployer)
    assert response.status_code == 200, response.content
    (result,) = response.json()["mappings"]
    assert result["blocked"] is True and [c["cluster"] for c in result["clusters"]] == ["live-web"]
    assert result["clusters"][0]["failures"][0]["msg"].startswith("Deployment web: scaling down from 10 to 4")
    assert "(requested by" not in result["clusters"][0]["failures"][0]["msg"]

    # a cluster outside the caller's scope is answered like an unknown one
    other_only = token_client(make_user("other-only", role="deployer", scope=fleet["other"]))
    body = {"mapping": fleet["other_mapping"].pk, "manifests": manifests, "live_cluster": "live-web"}
    refused = other_only.post("/api/policies/check/", body, format="json")
    assert refused.status_code == 400
    assert refused.json()["live_cluster"] == ["no cluster 'live-web' that you may see"]

    old = yaml.safe_dump(rl.deployment("web", replicas=9))
    update = web_viewer.post(
        "/api/policies/check/",
        {"mapping": mapping, "manifests": manifests, "operation": "UPDATE", "old_manifests": old},
        format="json",
    )
    assert update.status_code == 200 and update.json()["blocked"] is True
    both = web_deployer.post(
        "/api/policies/check/",
        {"mapping": mapping, "manifests": manifests, "operation": "UPDATE", "live_cluster": "live-web"},
        format="json",
    )
    assert both.status_code == 400 and "live_cluster" in both.json()


LIVE_SECRET_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgsecretquote
spec:
  crd:
    spec:
      names:
        kind: FgSecretQuote
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgsecretquote

        violation[{"msg": msg, "details": {"old": input.review.oldObject}}] {
          input.review.operation == "UPDATE"
          input.review.kind.kind == "Secret"
          password := input.review.oldObject.data.password
          msg := sprintf("Secret %v: live password is %v", [input.review.name, password])
        }

        violation[{"msg": msg}] {
          input.review.operation == "UPDATE"
          input.review.kind.kind == "Secret"
          not input.review.oldObject.data.username
          msg := sprintf("Secret %v: the live secret has no username key", [input.review.name])
        }
"""

LIVE_SECRET_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgSecretQuote
metadata:
  name: secret-quote
"""


def test_a_live_secret_is_reviewed_with_its_keys_but_never_its_values(
    fleet: dict[str, Any],
    make_policy: Any,
    engine: RegoEngine,
    settings: Any,
    request: pytest.FixtureRequest,
    live: tuple[Cluster, SandboxCluster],
    make_user: Any,
    token_client: Any,
    tmp_path: Path,
) -> None:
    """A policy that quotes oldObject.data of a live Secret in its message shows the mask, in the check
    API's answer and in policy_check's output; a policy on the keys still sees them."""
    settings.FLEETGATE_REGO_ENGINE = engine.name
    if engine.name == "opa":
        settings.FLEETGATE_OPA_URL = request.getfixturevalue("opa_server").url
    policy = make_policy(
        "secret-quote",
        engine,
        style="gatekeeper",
        template=LIVE_SECRET_TEMPLATE,
        constraints=[LIVE_SECRET_CONSTRAINT],
    )
    PolicyBinding.objects.create(policy=policy, cluster_group=fleet["web"], enforcement="deny")
    _cluster, box = live
    value = base64.b64encode(b"hunter2-live-value").decode()
    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "apps"},
            "data": {"password": value},
        }
    )
    manifests = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "apps"},
            "stringData": {"password": "from-git"},
        }
    )
    deployer = token_client(make_user("web-deployer", role="deployer", scope=fleet["web"]))
    response = deployer.post(
        "/api/policies/check/",
        {"mapping": fleet["mapping"].pk, "manifests": manifests, "live_cluster": "live-web"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert value.encode() not in response.content and b"hunter2" not in response.content
    (result,) = response.json()["mappings"]
    messages = sorted(f["msg"] for f in result["clusters"][0]["failures"])
    assert messages == [
        "Secret db: live password is ***",
        "Secret db: the live secret has no username key",
    ]

    uploaded = tmp_path / "secret.yaml"
    uploaded.write_text(manifests)
    for output in ("text", "json"):
        code, out, _ = _check(
            "--mapping",
            str(fleet["mapping"].pk),
            "--file",
            str(uploaded),
            "--live-cluster",
            "live-web",
            "--output",
            output,
        )
        assert code == 1 and "Secret db: live password is ***" in out
        assert value not in out and "hunter2" not in out


def test_create_only_review_is_a_group_setting_with_the_group_rights_and_audited(
    fleet: dict[str, Any], make_user: Any, token_client: Any, admin_user: Any
) -> None:
    from django.test import Client

    from fleet.audit.models import AuditEvent

    web = fleet["web"]
    assert web.create_only_review is False  # fail closed unless a group says otherwise
    viewer = token_client(make_user("web-viewer", role="viewer", scope=web))
    assert (
        viewer.patch(f"/api/groups/{web.pk}/", {"create_only_review": True}, format="json").status_code == 403
    )
    other_admin = token_client(make_user("other-admin", role="cluster-admin", scope=fleet["other"]))
    refused = other_admin.patch(f"/api/groups/{web.pk}/", {"create_only_review": True}, format="json")
    assert refused.status_code in (403, 404)
    web.refresh_from_db()
    assert web.create_only_review is False

    web_admin = token_client(make_user("web-admin", role="cluster-admin", scope=web))
    changed = web_admin.patch(f"/api/groups/{web.pk}/", {"create_only_review": True}, format="json")
    assert changed.status_code == 200 and changed.json()["create_only_review"] is True
    event = AuditEvent.objects.filter(target_id=str(web.pk), action__endswith=".update").latest("sequence")
    assert (event.before["create_only_review"], event.after["create_only_review"]) == (False, True)

    browser = Client()
    browser.force_login(admin_user)
    page = browser.get(f"/groups/{web.pk}/").content.decode()
    assert "reviewed as CREATE (create-only review allowed)" in page
    form = browser.get(f"/groups/{web.pk}/edit/").content.decode()
    assert 'name="create_only_review"' in form
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = admin_user
    model_admin = admin.site._registry[type(web)]
    assert "create_only_review" in model_admin.get_form(request, web).base_fields
    assert "create_only_review" in model_admin.list_display
