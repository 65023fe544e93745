"""A ValidatingAdmissionPolicy's parameter objects (``paramKind`` + ``paramRef``) that the render does not
hold are read from the target cluster in a live review (issue 17): a ConfigMap the platform team manages
there decides, a missing one follows ``parameterNotFoundAction``, and a cluster whose params cannot be read
cannot be reviewed. One read per param, however many objects the policy matches; a Secret param is masked.

Real parts: a git repository, the rollout services, the connector, the sandbox emulator AND the real
kube-apiserver (``target``)."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from fleet.rollouts.models import Rollout
from fleet.sources.models import Repository
from fleet.sources.services import fetch_repository
from policies import gate
from policies.engine.opa_server import free_port
from policies.models import PolicyBinding
from policies.services.evaluation import evaluate_targets
from policies.services.importing import import_files
from policies.services.reviews import LIVE, TargetReview
from tests.policies import language_library as ll
from tests.policies import review_library as rl
from tests.rollouts.conftest import make_mapping, make_repository
from tests.rollouts.test_rollout_reviews import (  # noqa: F401 - fixtures registered by import
    Target,
    _denials,
    _doc,
    kube_apiserver,
    kube_apiserver_bin_dir,
    target,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _bind_param_vap(
    group: ClusterGroup, name: str, param_ref: dict[str, Any], kind: str = "ConfigMap"
) -> None:
    vap = ll.PARAM_VAP.replace("kind: ConfigMap", f"kind: {kind}")
    binding = ll.vap_binding(name, "max-replicas-param.example.com", ["Deny"], paramRef=param_ref)
    saved = import_files({"vap.yaml": vap + "---\n" + binding}).saved
    policy = next(r.policy for r in saved if r.policy.name == name)
    PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement="")


def _rollout(git_repo: Any, group: ClusterGroup, path: str, tasks: Any, *objects: dict[str, Any]) -> Rollout:
    repo = Repository.objects.first() or make_repository(git_repo)
    mapping = make_mapping(repo, path.replace("/", "-"), path, group)
    git_repo.commit({f"{path}/{o['metadata']['name']}.yaml": _doc(o) for o in objects}, path)
    assert fetch_repository(repo).ok
    tasks.drain()
    return Rollout.objects.get(mapping=mapping)


def test_a_param_configmap_only_on_the_cluster_decides_and_a_missing_one_follows_the_action(
    git_repo: Any,
    target: Target,  # noqa: F811 - the fixture imported above
    tasks: Any,
) -> None:
    ns = target.namespace
    target.put(ll.config_map("replica-limits", ns, {"maxReplicas": "4"}))  # the platform team's, not ours
    # Manual syncs: the gate's decisions are what is tested, and a real kube-apiserver runs no controllers, so
    # an applied Deployment would only wait out the health timeout.
    group = ClusterGroup.objects.create(
        name=f"g-{target.env}", selector={"matchLabels": {"env": target.env}}, sync_mode="manual"
    )
    _bind_param_vap(group, "max-replicas", {"name": "replica-limits", "parameterNotFoundAction": "Deny"})

    rollout = _rollout(
        git_repo,
        group,
        "apps/web",
        tasks,
        rl.deployment("big", replicas=6, ns=ns),
        rl.deployment("small", replicas=2, ns=ns),
    )
    cs = rollout.syncs.get()
    assert (rollout.state, cs.decision) == ("blocked", "blocked"), rollout.reason
    assert _denials(rollout) == ["at most 4 replicas here"]
    assert [v["object"]["name"] for v in cs.evaluation["violations"]] == ["big"]
    assert target.get("v1", "ConfigMap", "replica-limits")["data"] == {"maxReplicas": "4"}  # type: ignore[index]

    # the ConfigMap allows more: the same objects pass
    target.put(ll.config_map("replica-limits", ns, {"maxReplicas": "8"}))
    rollout = _rollout(git_repo, group, "apps/more", tasks, rl.deployment("big2", replicas=6, ns=ns))
    assert rollout.syncs.get().decision == "passed", rollout.syncs.get().evaluation

    # a param found nowhere: Deny blocks (an error, not a guess), Allow lets the objects through
    PolicyBinding.objects.filter(cluster_group=group).delete()
    _bind_param_vap(group, "absent-deny", {"name": "absent", "parameterNotFoundAction": "Deny"})
    rollout = _rollout(git_repo, group, "apps/deny", tasks, rl.deployment("d", replicas=1, ns=ns))
    cs = rollout.syncs.get()
    assert cs.decision == "blocked" and cs.evaluation["outcome"] == "blocked", cs.evaluation
    assert "no params found" in cs.evaluation["errors"][0]["message"]
    PolicyBinding.objects.filter(cluster_group=group).delete()
    _bind_param_vap(group, "absent-allow", {"name": "absent", "parameterNotFoundAction": "Allow"})
    rollout = _rollout(git_repo, group, "apps/allow", tasks, rl.deployment("a", replicas=1, ns=ns))
    assert rollout.syncs.get().decision == "passed", rollout.syncs.get().evaluation


def _live_review(group: ClusterGroup, cluster: Cluster, objects: list[Any]) -> gate.Decision:
    mapping = group.mappings.first()
    result = evaluate_targets(
        None,
        mapping,
        [(cluster, objects, "")],
        store=False,
        audit=False,
        reviews={cluster.pk: TargetReview(LIVE)},
    )
    return result.results[0].decision


def test_one_read_per_param_and_secret_params_masked_and_an_unreadable_param_cannot_be_reviewed(
    git_repo: Any, make_fleet: Any, settings: Any
) -> None:
    settings.FLEETGATE_REGO_ENGINE = "regorus"
    fleet = make_fleet({"one": {"env": "params"}})
    box, cluster = fleet.sandboxes["one"], fleet.clusters["one"]
    box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    box.apply_object(ll.config_map("replica-limits", "apps", {"maxReplicas": "4"}))
    group = ClusterGroup.objects.create(name="params", selector={"matchLabels": {"env": "params"}})
    make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _bind_param_vap(group, "max-replicas", {"name": "replica-limits", "parameterNotFoundAction": "Deny"})

    _live_review(group, cluster, [rl.deployment("warm", replicas=1)])  # discovery read once
    requests = []
    for size in (3, 12):
        before = box.faults.requests
        decision = _live_review(group, cluster, [rl.deployment(f"d{i}", replicas=6) for i in range(size)])
        requests.append(box.faults.requests - before)
        assert len(decision.violations) == size
        assert {v.message for v in decision.violations} == {"at most 4 replicas here"}
    assert requests == [1, 1], requests  # one GET of the ConfigMap, whatever the number of objects

    # a Secret as the param: its values are masked as every live Secret's
    PolicyBinding.objects.filter(cluster_group=group).delete()
    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "limits", "namespace": "apps"},
            "stringData": {"maxReplicas": "4"},
        }
    )
    _bind_param_vap(
        group, "secret-limit", {"name": "limits", "parameterNotFoundAction": "Deny"}, kind="Secret"
    )
    decision = _live_review(group, cluster, [rl.deployment("s", replicas=6)])
    assert decision.outcome is gate.Outcome.BLOCKED
    assert "4" not in " ".join(e.message for e in decision.errors) + " ".join(
        v.message for v in decision.violations
    )
    assert decision.violations or decision.errors  # int('***') fails: the value never reaches the policy

    # the param cannot be read (forbidden): the target cannot be reviewed, it blocks
    PolicyBinding.objects.filter(cluster_group=group).delete()
    _bind_param_vap(group, "max-replicas", {"name": "replica-limits", "parameterNotFoundAction": "Allow"})
    box.faults.fail_next(1, 403)
    decision = _live_review(group, cluster, [rl.deployment("f", replicas=1)])
    assert decision.outcome is gate.Outcome.CANNOT_REVIEW, decision.as_dict()
    assert "the parameter ConfigMap apps/replica-limits could not be read from" in decision.reasons[0]

    # unreachable: the same
    dead = Cluster.objects.create(
        name="params-dead", api_url=f"http://127.0.0.1:{free_port()}", auth_method="token", token="t"
    )
    decision = _live_review(group, dead, [rl.deployment("f", replicas=1)])
    assert decision.outcome is gate.Outcome.CANNOT_REVIEW
    assert "could not be read from params-dead" in decision.reasons[0]
