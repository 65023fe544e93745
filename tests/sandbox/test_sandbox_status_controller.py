"""The status subresource and the workload controller (rollouts that complete, fail or never get ready)."""

from __future__ import annotations

import itertools

import pytest

from clusters.sandbox import FAIL_ANNOTATION, NEVER_READY_ANNOTATION

_n = itertools.count()


@pytest.fixture
def slow_cluster(sandbox_server):
    """A cluster whose controller never gets to run during a test (status stays empty)."""
    c = sandbox_server.add_cluster(f"slow-{next(_n)}", rollout_delay=3600)
    yield c
    sandbox_server.remove_cluster(c.name)


def _conditions(status) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_status_subresource_changes_only_status(slow_cluster, make_client, deployment):
    deps = make_client(slow_cluster).resources.get(api_version="apps/v1", kind="Deployment")
    created = deps.create(body=deployment()).to_dict()
    assert created["status"] == {}  # a new object starts with an empty status, as in kube-apiserver
    obj = deps.get(name="web", namespace="default").to_dict()
    obj["status"] = {"replicas": 9, "observedGeneration": 1}
    obj["spec"]["replicas"] = 7  # ignored on /status
    updated = deps.status.replace(body=obj).to_dict()
    assert updated["status"]["replicas"] == 9 and updated["spec"]["replicas"] == 2
    assert updated["metadata"]["generation"] == 1
    entry = [m for m in updated["metadata"]["managedFields"] if m.get("subresource") == "status"]
    assert entry and "f:status" in entry[0]["fieldsV1"]

    patched = deps.status.patch(
        name="web",
        namespace="default",
        body={"status": {"readyReplicas": 1}},
        content_type="application/merge-patch+json",
    )
    assert patched.status.readyReplicas == 1 and patched.status.replicas == 9
    assert deps.status.get(name="web", namespace="default").status.readyReplicas == 1


def test_main_resource_writes_ignore_status(slow_cluster, make_client, deployment):
    deps = make_client(slow_cluster).resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["status"] = {"replicas": 5}
    assert deps.create(body=body).to_dict()["status"] == {}
    obj = deps.get(name="web", namespace="default").to_dict()
    obj["status"] = {"replicas": 5}
    assert deps.replace(body=obj).to_dict()["status"] == {}
    applied = deps.server_side_apply(
        body=body, name="web", namespace="default", field_manager="f", force_conflicts=True
    )
    assert applied.to_dict()["status"] == {}


def test_status_apply_on_the_subresource(slow_cluster, make_client, deployment):
    deps = make_client(slow_cluster).resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment())
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "status": {"replicas": 3},
    }
    obj = deps.status.server_side_apply(
        body=body, name="web", namespace="default", field_manager="ctl"
    ).to_dict()
    assert obj["status"] == {"replicas": 3} and obj["spec"]["replicas"] == 2


def test_deployment_rollout_completes(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.server_side_apply(
        body=deployment(replicas=3), name="web", namespace="default", field_manager="fleetgate"
    )
    obj = deps.get(name="web", namespace="default").to_dict()
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["replicas"] == status["updatedReplicas"] == status["readyReplicas"] == 3
    assert status["availableReplicas"] == 3
    conds = _conditions(status)
    assert conds["Available"] == ("True", "MinimumReplicasAvailable")
    assert conds["Progressing"] == ("True", "NewReplicaSetAvailable")
    # a spec change moves generation and the controller catches up
    deps.server_side_apply(
        body=deployment(replicas=4), name="web", namespace="default", field_manager="fleetgate"
    )
    obj = deps.get(name="web", namespace="default").to_dict()
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    assert obj["status"]["availableReplicas"] == 4


def test_fail_annotation_makes_the_rollout_exceed_its_deadline(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment(annotations={FAIL_ANNOTATION: "true"}))
    status = deps.get(name="web", namespace="default").to_dict()["status"]
    assert _conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert _conditions(status)["Available"][0] == "False"
    assert "availableReplicas" not in status and status["observedGeneration"] == 1


def test_never_ready_annotation_keeps_the_rollout_unready(dyn, deployment):
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment(annotations={NEVER_READY_ANNOTATION: "true"}))
    status = deps.get(name="web", namespace="default").to_dict()["status"]
    assert (
        status["updatedReplicas"] == 2 and "readyReplicas" not in status and "availableReplicas" not in status
    )
    assert _conditions(status)["Progressing"][1] != "NewReplicaSetAvailable"


def test_cluster_setting_fails_every_rollout(cluster, dyn, deployment):
    cluster.settings.fail_rollouts = True
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment())
    status = deps.get(name="web", namespace="default").to_dict()["status"]
    assert _conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_statefulset_daemonset_and_job_get_status(cluster, dyn):
    cluster.settings.nodes = 3
    template = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "x", "image": "busybox"}]},
    }
    sts = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    sts.create(
        body={
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "x"}},
                "template": template,
            },
        }
    )
    s = sts.get(name="db", namespace="default").status
    assert s.observedGeneration == 1 and s.readyReplicas == 2 and s.availableReplicas == 2
    ds = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    ds.create(
        body={
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template},
        }
    )
    d = ds.get(name="agent", namespace="default").status
    assert d.desiredNumberScheduled == 3 and d.numberReady == 3 and d.updatedNumberScheduled == 3
    jobs = dyn.resources.get(api_version="batch/v1", kind="Job")
    jobs.create(
        body={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", **template["spec"]}}},
        }
    )
    j = jobs.get(name="once", namespace="default").to_dict()["status"]
    assert _conditions(j)["Complete"][0] == "True" and j["succeeded"] == 1


def test_controller_runs_after_the_configured_delay(sandbox_server, make_client, deployment):
    cluster = sandbox_server.add_cluster(f"delayed-{next(_n)}", rollout_delay=0.05)
    try:
        deps = make_client(cluster).resources.get(api_version="apps/v1", kind="Deployment")
        start = deps.get(namespace="default").metadata.resourceVersion
        deps.create(body=deployment())
        # the controller's status write arrives as a MODIFIED event (no sleeping, no timing assertion)
        for event in make_client(cluster).watch(
            deps, namespace="default", resource_version=start, timeout=10
        ):
            if event["type"] == "MODIFIED":
                assert event["object"].status.readyReplicas == 2
                break
        else:
            pytest.fail("the controller never reported status")
    finally:
        sandbox_server.remove_cluster(cluster.name)
