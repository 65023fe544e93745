"""The gate reviews the change the apply will make: CREATE, UPDATE (with the live object as oldObject) and
DELETE (a prune: object null, oldObject live), in Gatekeeper's admission review shape, on both engines.
Policies written like gatekeeper-library's (tests/policies/review_library.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from policies.engine import RegoEngine
from policies.formats import gatekeeper as gk
from policies.formats.kube import object_id
from policies.gate import BoundPolicy, Decision, Outcome, RenderedObject, TargetContext, evaluate_target
from tests.policies import corpus
from tests.policies import review_library as rl

USER = {"username": "alice", "groups": ["fleetgate:operators", "system:authenticated"]}
CONTEXT = TargetContext(cluster="prod-eu-1", group="web", user_info=USER)


def _gk(name: str, template: str, constraint: str) -> BoundPolicy:
    return BoundPolicy.gatekeeper(name, name, template, constraint)


IMMUTABLE = _gk("immutable", rl.IMMUTABLE_FIELDS_TEMPLATE, rl.IMMUTABLE_FIELDS_CONSTRAINT)
SCALE_DOWN = _gk("scale-down", rl.SCALE_DOWN_TEMPLATE, rl.SCALE_DOWN_CONSTRAINT)
KEEP_VOLUMES = _gk("keep-volumes", rl.PROTECTED_DELETE_TEMPLATE, rl.PROTECTED_DELETE_CONSTRAINT)
ECHO = _gk("echo", rl.ECHO_TEMPLATE, rl.ECHO_CONSTRAINT)
CONFTEST_REVIEW = BoundPolicy.conftest(
    "conftest-review", "conftest-review", {"p.rego": rl.CONFTEST_KEEP_VOLUMES}
)


def _run(engine: RegoEngine, entries: list[RenderedObject], *policies: BoundPolicy) -> Decision:
    return evaluate_target(entries, list(policies), CONTEXT, engine=engine)


def _update(obj: dict[str, Any], live: dict[str, Any]) -> RenderedObject:
    return RenderedObject(obj, "web.yaml", operation="UPDATE", old_object=live)


def _delete(live: dict[str, Any]) -> RenderedObject:
    return RenderedObject(None, "", operation="DELETE", old_object=live)


def test_review_shape_follows_gatekeeper_admission_request() -> None:
    dep = rl.deployment("web")
    oid = object_id(dep)
    create = gk.review(dep, oid)
    assert create == {
        "operation": "CREATE",
        "object": dep,
        "oldObject": None,
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "name": "web",
        "namespace": "apps",
        "userInfo": {"username": "fleetgate", "groups": ["system:authenticated"]},
        "dryRun": False,
    }
    live = rl.deployment("web", replicas=2)
    update = gk.review(dep, oid, operation="UPDATE", old_object=live, user_info=USER)
    assert (update["operation"], update["object"], update["oldObject"]) == ("UPDATE", dep, live)
    assert update["userInfo"] == USER
    delete = gk.review(None, oid, operation="DELETE", old_object=live)
    assert (delete["operation"], delete["object"], delete["oldObject"]) == ("DELETE", None, live)
    with pytest.raises(ValueError, match="UPDATE review needs the old"):
        gk.review(dep, oid, operation="UPDATE")
    with pytest.raises(ValueError, match="not one of"):
        gk.review(dep, oid, operation="PATCH")
    with pytest.raises(ValueError, match="DELETE entry has no object"):
        RenderedObject(dep, operation="DELETE")


@pytest.mark.parametrize("operation", gk.OPERATIONS)
@pytest.mark.parametrize("with_namespace", [False, True])
def test_review_assembled_from_encoded_parts_is_the_review_document(
    operation: str, with_namespace: bool
) -> None:
    """The gate's fast path (review_json from the texts it encoded once) gives the document review() does."""
    dep = rl.deployment("web")
    live = rl.deployment("web", replicas=2)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"a": "b"}}}
    oid = object_id(dep)
    obj = None if operation == "DELETE" else dep
    old = None if operation == "CREATE" else live
    expected = gk.review(
        obj, oid, namespace if with_namespace else None, operation=operation, old_object=old, user_info=USER
    )
    text = gk.review_json(
        oid,
        operation=operation,
        object_json=None if obj is None else json.dumps(obj),
        old_object_json=None if old is None else json.dumps(old),
        user_info_json=gk.user_info_json(USER),
        namespace_object_json=json.dumps(namespace) if with_namespace else None,
    )
    assert json.loads(text) == expected
    cluster_scoped = object_id({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    assert "namespace" not in json.loads(
        gk.review_json(
            cluster_scoped,
            operation="CREATE",
            object_json="{}",
            old_object_json=None,
            user_info_json=gk.user_info_json(),
        )
    )
    if operation != "CREATE":
        with pytest.raises(ValueError, match=f"{operation} review needs the old"):
            gk.review_json(
                oid, operation=operation, object_json="{}", old_object_json=None, user_info_json="{}"
            )
    with pytest.raises(ValueError, match="not one of"):
        gk.review_json(oid, operation="PATCH", object_json="{}", old_object_json=None, user_info_json="{}")


def test_policies_see_operation_old_object_and_user(engine: RegoEngine) -> None:
    live = rl.deployment("web", replicas=2)
    entries = [
        RenderedObject(rl.deployment("new")),
        _update(rl.deployment("web"), live),
        _delete(rl.pvc("data")),
    ]
    decision = _run(engine, entries, ECHO)
    by_name = {v.object.name: v for v in decision.violations if v.object}
    assert {n: v.message for n, v in by_name.items()} == {"new": "CREATE", "web": "UPDATE", "data": "DELETE"}
    web = by_name["web"].details["review"]
    assert web["oldObject"]["spec"]["replicas"] == 2 and web["object"]["spec"]["replicas"] == 4
    assert web["userInfo"] == USER and web["dryRun"] is False
    data = by_name["data"].details["review"]
    assert data["object"] is None and data["oldObject"]["kind"] == "PersistentVolumeClaim"
    assert by_name["new"].details["review"]["oldObject"] is None


def test_update_that_changes_an_immutable_field_is_denied(engine: RegoEngine) -> None:
    live = rl.deployment("web")
    moved = rl.deployment("web")
    moved["spec"]["selector"] = {"matchLabels": {"app": "web-v2"}}
    decision = _run(engine, [_update(moved, live)], IMMUTABLE)
    assert decision.outcome is Outcome.BLOCKED
    assert [v.message.split(":")[0] for v in decision.violations] == ["Deployment web"]
    assert "spec.selector is immutable" in decision.violations[0].message
    # the same object as a CREATE, or an UPDATE that keeps the selector, passes
    assert _run(engine, [RenderedObject(moved)], IMMUTABLE).outcome is Outcome.PASSED
    assert _run(engine, [_update(copy.deepcopy(live), live)], IMMUTABLE).outcome is Outcome.PASSED
    svc = _update(rl.service("web", "10.0.0.9"), rl.service("web", "10.0.0.10"))
    assert [v.message for v in _run(engine, [svc], IMMUTABLE).violations] == [
        "Service web: spec.clusterIP is immutable"
    ]
    # a rendered Service that leaves clusterIP to the server keeps the live one
    unset = _update(rl.service("web"), rl.service("web", "10.0.0.10"))
    assert _run(engine, [unset], IMMUTABLE).outcome is Outcome.PASSED


def test_scale_down_by_more_than_half_is_denied(engine: RegoEngine) -> None:
    live = rl.deployment("web", replicas=10)
    decision = _run(engine, [_update(rl.deployment("web", replicas=4), live)], SCALE_DOWN)
    assert decision.outcome is Outcome.BLOCKED
    assert decision.violations[0].message == (
        "Deployment web: scaling down from 10 to 4 replicas removes more than 50%"
    )
    assert decision.violations[0].details == {"live": 10, "rendered": 4}
    assert (
        _run(engine, [_update(rl.deployment("web", replicas=5), live)], SCALE_DOWN).outcome is Outcome.PASSED
    )
    assert _run(engine, [RenderedObject(rl.deployment("web", replicas=1))], SCALE_DOWN).outcome is (
        Outcome.PASSED
    )


def test_prune_of_a_volume_claim_is_denied_in_both_styles(engine: RegoEngine) -> None:
    entries = [RenderedObject(rl.deployment("web")), _delete(rl.pvc("data")), _delete(rl.deployment("old"))]
    decision = _run(engine, entries, KEEP_VOLUMES, CONFTEST_REVIEW)
    assert decision.outcome is Outcome.BLOCKED
    assert sorted((v.policy_id, v.object.kind, v.message) for v in decision.violations if v.object) == [
        (
            "conftest-review",
            "PersistentVolumeClaim",
            "data: deleting a volume claim needs a person (by alice)",
        ),
        (
            "keep-volumes",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim apps/data must not be deleted (requested by alice)",
        ),
    ]
    # the conftest policy reads data.fleetgate.review on UPDATE too, with input still the object
    shrink = _update(rl.deployment("web", replicas=1), rl.deployment("web", replicas=4))
    assert [v.rule for v in _run(engine, [shrink], CONFTEST_REVIEW).violations] == ["deny_shrink"]


def test_conftest_policies_that_ignore_the_review_do_not_judge_prunes(engine: RegoEngine) -> None:
    no_latest = next(p for p in corpus.all_policies() if p.id == "no-latest")
    pruned_latest = _delete(corpus.deployment("gone", image="r.example/web:latest"))
    assert _run(engine, [pruned_latest], no_latest).outcome is Outcome.PASSED
    rendered_latest = RenderedObject(corpus.deployment("kept", image="r.example/web:latest"))
    assert _run(engine, [rendered_latest, pruned_latest], no_latest).outcome is Outcome.BLOCKED


def test_inventory_holds_what_the_target_will_run_not_the_prunes(engine: RegoEngine) -> None:
    template = rl.ECHO_TEMPLATE.replace("fgechoreview", "fginventory").replace("FgEchoReview", "FgInventory")
    template = template.replace(
        'violation[{"msg": input.review.operation, "details": {"review": input.review}}] {\n          true',
        'violation[{"msg": concat(",", sort(names))}] {\n'
        "          names := [n | data.inventory.namespace[_][_][_][n]]",
    )
    policy = _gk("inventory", template, rl.ECHO_CONSTRAINT.replace("FgEchoReview", "FgInventory"))
    entries = [RenderedObject(rl.deployment("web")), _delete(rl.deployment("old"))]
    messages = {v.message for v in _run(engine, entries, policy).violations}
    assert messages == {"web"}
