"""Importing Rancher Fleet GitRepos (fleet.cattle.io/v1alpha1) on a repository laid out like
rancher/fleet-examples (``simple/``: plain manifests; ``multi-cluster/manifests``: per-target clusters),
then rendering every imported mapping for every cluster: each cluster receives what Fleet deploys to it."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.sources.gitops_import import import_gitops
from fleet.sources.models import PathMapping, Repository
from tests.sources.gitops_layouts import deployment, mapping_of, members, rendered, service
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db

SIMPLE = {
    "simple/frontend-deployment.yaml": deployment("frontend", "example/guestbook:v5", 3),
    "simple/frontend-service.yaml": service("frontend"),
    "simple/redis-master-deployment.yaml": deployment("redis-master", "redis:7"),
    "simple/redis-master-service.yaml": service("redis-master", 6379),
    "simple/README.md": "# not a manifest\n",
    "multi-cluster/manifests/frontend-deployment.yaml": deployment("frontend", "example/guestbook:v5"),
    "multi-cluster/manifests/frontend-service.yaml": service("frontend"),
}


@pytest.fixture
def clusters(db: Any) -> dict[str, Cluster]:
    made = {}
    for name, env in (("dev-1", "dev"), ("test-1", "test"), ("prod-1", "prod"), ("prod-2", "prod")):
        made[name] = Cluster.objects.create(name=name, api_url=f"https://{name}:6443",
                                            token=f"t-{name}-secret", labels={"env": env})
    ClusterGroup.objects.create(name="default", selector={
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]})
    return made


def gitrepo(origin: Origin, name: str, paths: list[str], targets: str, extra: str = "") -> str:
    return f"""kind: GitRepo
apiVersion: fleet.cattle.io/v1alpha1
metadata:
  name: {name}
  namespace: fleet-default
spec:
  repo: {origin.url}
  branch: main
  paths: {paths}
{extra}  targets:
{targets}
"""


def test_gitrepo_targets_become_groups_and_mappings_that_render_what_fleet_deploys(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    origin.commit("examples", SIMPLE)
    doc = gitrepo(origin, "simple", ["simple"], """  - name: dev
    clusterSelector: {matchLabels: {env: dev}}
  - name: prod
    clusterSelector:
      matchExpressions: [{key: env, operator: In, values: [prod]}]
  - name: one
    clusterName: test-1
""", extra="  pollingInterval: 1m30s\n  clientSecretName: git-auth\n  keepResources: true\n"
          "  correctDrift: {enabled: true}\n")
    outcome = import_gitops(admin_user, [("simple.yaml", doc)])

    assert outcome.created["repositories"] == ["simple"]
    repo = Repository.objects.get(name="simple")
    assert (repo.url, repo.branch, repo.poll_interval) == (origin.url, "main", 90)
    assert sorted(outcome.created["groups"]) == ["simple-dev", "simple-one", "simple-prod"]
    assert members("simple-dev") == ["dev-1"]
    assert members("simple-prod") == ["prod-1", "prod-2"]
    assert members("simple-one") == ["test-1"]
    assert ClusterGroup.objects.get(name="simple-prod").selector == {
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}
    assert PathMapping.objects.filter(repository=repo).count() == 3
    assert all(g.self_heal for g in ClusterGroup.objects.filter(name__startswith="simple-"))  # correctDrift
    # Never silently dropped: the unknown key and the secret are listed by name.
    assert [(f.setting, f.source) for f in outcome.plan.unsupported] == [
        ("spec.keepResources", "GitRepo/simple (simple.yaml)")]
    assert [(s.setting, s.name) for s in outcome.plan.secrets] == [("spec.clientSecretName", "git-auth")]

    # Fleet deploys every manifest of the path (not the README) to each selected cluster, in the
    # bundle's default namespace, "default".
    expected = {("Deployment", "default", "frontend"), ("Service", "default", "frontend"),
                ("Deployment", "default", "redis-master"), ("Service", "default", "redis-master")}
    for group, names in (("simple-dev", ["dev-1"]), ("simple-prod", ["prod-1", "prod-2"]),
                         ("simple-one", ["test-1"])):
        mapping = mapping_of(origin.url, "simple", group)
        for cluster in names:
            objects = rendered(mapping, cluster)
            assert set(objects) == expected
            assert objects[("Deployment", "default", "frontend")]["spec"]["replicas"] == 3


def test_default_target_is_the_default_group_and_existing_groups_are_reused(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    origin.commit("examples", SIMPLE)
    no_targets = f"""kind: GitRepo
apiVersion: fleet.cattle.io/v1alpha1
metadata: {{name: manifests}}
spec:
  repo: {origin.url}
  branch: main
  paths: [multi-cluster/manifests]
"""
    outcome = import_gitops(admin_user, [("m.yaml", no_targets)])
    assert outcome.created["groups"] == [] and outcome.existing["groups"] == ["default"]
    mapping = mapping_of(origin.url, "multi-cluster/manifests", "default")
    assert set(rendered(mapping, "dev-1")) == {("Deployment", "default", "frontend"),
                                               ("Service", "default", "frontend")}
    assert any(n.setting == "spec.targets" and "default" in n.reason for n in outcome.plan.notes)


def test_targets_fleetgate_cannot_express_are_listed_not_dropped(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    doc = gitrepo(origin, "odd", ["simple"], """  - name: by-group-labels
    clusterGroupSelector: {matchLabels: {tier: gold}}
  - name: missing
    clusterGroup: nowhere
  - name: ok
    clusterSelector: {matchLabels: {env: test}}
""", extra="  revision: v1.2.3\n")
    outcome = import_gitops(admin_user, [("odd.yaml", doc)], dry_run=True)
    skipped = {f.setting: f.reason for f in outcome.plan.skipped}
    assert "no cluster group (that you can see) has labels it matches" in skipped[
        "spec.targets[0].clusterGroupSelector"]
    assert "no cluster group named 'nowhere'" in skipped["spec.targets[1].clusterGroup"]
    assert [f.setting for f in outcome.plan.unsupported] == ["spec.revision"]
    assert outcome.created["mappings"] == ["odd/odd-simple"]


def test_dry_run_creates_nothing_and_a_second_import_creates_nothing_new(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    origin.commit("examples", SIMPLE)
    doc = gitrepo(origin, "simple", ["simple", "multi-cluster/manifests"],
                  "  - clusterSelector: {matchLabels: {env: prod}}\n")
    audit_before = AuditEvent.objects.count()
    dry = import_gitops(admin_user, [("s.yaml", doc)], dry_run=True)
    assert dry.created == {"repositories": ["simple"], "groups": ["simple-target-1"],
                           "mappings": ["simple/simple-simple", "simple/simple-multi-cluster-manifests"]}
    assert dry.message().startswith("would create 1 repositories, 1 groups, 2 mappings")
    assert not Repository.objects.exists() and not PathMapping.objects.exists()
    assert not ClusterGroup.objects.filter(name="simple-target-1").exists()
    assert AuditEvent.objects.count() == audit_before  # rolled back, audit rows too

    first = import_gitops(admin_user, [("s.yaml", doc)])
    assert first.created == dry.created
    actions = list(AuditEvent.objects.filter(pk__gt=0).order_by("sequence").values_list("action", flat=True))
    assert actions[-5:] == ["repository.create", "clustergroup.create", "pathmapping.create",
                            "pathmapping.create", "gitops.import"]
    again = import_gitops(admin_user, [("s.yaml", doc)])
    assert again.nothing_new and again.message().startswith("nothing new")
    assert again.existing["mappings"] == ["simple/simple-simple", "simple/simple-multi-cluster-manifests"]
    assert PathMapping.objects.count() == 2 and Repository.objects.count() == 1


MULTI = {
    # multi-cluster/kustomize of fleet-examples: a base, overlays per environment, fleet.yaml picking one
    "multi-cluster/kustomize/base/kustomization.yaml": "resources: [frontend-deployment.yaml, "
                                                       "frontend-service.yaml]\n",
    "multi-cluster/kustomize/base/frontend-deployment.yaml": deployment("frontend", "guestbook:v5"),
    "multi-cluster/kustomize/base/frontend-service.yaml": service("frontend"),
    "multi-cluster/kustomize/overlays/dev/kustomization.yaml": "resources: [../../base]\n",
    "multi-cluster/kustomize/overlays/prod/kustomization.yaml": """resources: [../../base]
patches:
  - target: {kind: Deployment, name: frontend}
    patch: '[{"op": "replace", "path": "/spec/replicas", "value": 3}]'
  - target: {kind: Service, name: frontend}
    patch: '[{"op": "add", "path": "/spec/type", "value": "LoadBalancer"}]'
""",
    "multi-cluster/kustomize/fleet.yaml": """namespace: fleet-mc-kustomize-example
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  kustomize: {dir: overlays/dev}
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  kustomize: {dir: overlays/prod}
""",
    # multi-cluster/manifests: plain manifests with a fleet.yaml of its own
    "multi-cluster/manifests/fleet.yaml": "namespace: fleet-mc-manifest-example\n",
    "multi-cluster/manifests/frontend-service.yaml": service("frontend"),
    "multi-cluster/README.md": "# examples\n",
}


def test_nested_bundles_of_a_path_become_mappings_that_render_their_fleet_yaml(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    origin.commit("multi-cluster", MULTI)
    doc = gitrepo(origin, "multi", ["multi-cluster"], """  - name: dev
    clusterSelector: {matchLabels: {env: dev}}
  - name: prod
    clusterSelector: {matchLabels: {env: prod}}
""")
    outcome = import_gitops(admin_user, [("multi.yaml", doc)])
    # Fleet makes a bundle of each directory holding a fleet.yaml; multi-cluster itself holds no manifest.
    assert sorted(outcome.created["mappings"]) == [
        "multi/multi-multi-cluster-kustomize-1", "multi/multi-multi-cluster-kustomize-2",
        "multi/multi-multi-cluster-manifests-1", "multi/multi-multi-cluster-manifests-2"]
    dev = rendered(mapping_of(origin.url, "multi-cluster/kustomize", "multi-dev"), "dev-1")
    ns = "fleet-mc-kustomize-example"
    # the bundle's namespace is created, as Fleet does
    assert set(dev) == {("Namespace", "", ns), ("Deployment", ns, "frontend"), ("Service", ns, "frontend")}
    assert dev[("Deployment", ns, "frontend")]["spec"]["replicas"] == 1
    for cluster in ("prod-1", "prod-2"):
        prod = rendered(mapping_of(origin.url, "multi-cluster/kustomize", "multi-prod"), cluster)
        assert prod[("Deployment", ns, "frontend")]["spec"]["replicas"] == 3
        assert prod[("Service", ns, "frontend")]["spec"]["type"] == "LoadBalancer"
    manifests = rendered(mapping_of(origin.url, "multi-cluster/manifests", "multi-prod"), "prod-1")
    assert set(manifests) == {("Namespace", "", "fleet-mc-manifest-example"),
                              ("Service", "fleet-mc-manifest-example", "frontend")}


def test_cluster_group_selector_maps_to_every_group_whose_labels_match(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    """Fleet's clusterGroupSelector selects ClusterGroups by their own labels: one mapping per matching
    group, each rendering for that group's clusters; a group without the labels gets none."""
    origin.commit("examples", SIMPLE)
    ClusterGroup.objects.create(name="prod", labels={"tier": "gold", "env": "prod"},
                                selector={"matchLabels": {"env": "prod"}})
    ClusterGroup.objects.create(name="test", labels={"tier": "gold"},
                                selector={"matchLabels": {"env": "test"}})
    ClusterGroup.objects.create(name="dev", labels={"tier": "bronze"},
                                selector={"matchLabels": {"env": "dev"}})
    doc = gitrepo(origin, "gold", ["simple"], """  - name: gold
    clusterGroupSelector: {matchExpressions: [{key: tier, operator: In, values: [gold]}]}
  - name: mixed
    clusterGroupSelector: {matchLabels: {tier: gold}}
    clusterSelector: {matchLabels: {env: prod}}
""")
    outcome = import_gitops(admin_user, [("gold.yaml", doc)])
    assert outcome.created["groups"] == [] and sorted(outcome.existing["groups"]) == ["prod", "test"]
    assert sorted(outcome.created["mappings"]) == ["gold/gold-simple-1", "gold/gold-simple-2"]
    prod = mapping_of(origin.url, "simple", "prod")
    test = mapping_of(origin.url, "simple", "test")
    assert not PathMapping.objects.filter(cluster_group__name="dev").exists()
    assert ("Deployment", "default", "frontend") in rendered(prod, "prod-2")
    assert ("Deployment", "default", "frontend") in rendered(test, "test-1")
    notes = {f.setting: f.reason for f in outcome.plan.notes}
    assert "matches the groups prod, test by their labels" in notes["spec.targets[0].clusterGroupSelector"]
    skipped = {f.setting: f.reason for f in outcome.plan.skipped}
    assert "cannot be expressed" in skipped["spec.targets[1]"]
