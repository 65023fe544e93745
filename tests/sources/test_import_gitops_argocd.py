"""Importing Argo CD Applications and an ApplicationSet (matrix of a git directory generator and a cluster
generator) on a repository laid out like argoproj/argocd-example-apps, then rendering every imported
mapping for every cluster: each receives the objects Argo CD would sync to it."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from fleet.sources.gitops_import import import_gitops
from fleet.sources.models import PathMapping
from tests.sources.gitops_layouts import deployment, mapping_of, members, rendered, service
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db

CHART = {
    "helm-guestbook/Chart.yaml": "apiVersion: v2\nname: helm-guestbook\nversion: 0.1.0\n",
    "helm-guestbook/values.yaml": "replicaCount: 1\nimage: {repository: gb-frontend, tag: v5}\n",
    "helm-guestbook/values-production.yaml": "replicaCount: 3\n",
    "helm-guestbook/templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-helm-guestbook
  labels: {release: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicaCount }}
  selector: {matchLabels: {app: helm-guestbook}}
  template:
    metadata: {labels: {app: helm-guestbook}}
    spec:
      containers:
        - name: helm-guestbook
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
""",
}
LAYOUT = {
    "guestbook/guestbook-ui-deployment.yaml": deployment("guestbook-ui", "heptio/ks-guestbook-demo:0.2"),
    "guestbook/guestbook-ui-svc.yaml": service("guestbook-ui"),
    # Not read by Argo CD: directory.recurse is off by default.
    "guestbook/extras/debug-pod.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: debug}\n",
    "kustomize-guestbook/kustomization.yaml": "namePrefix: kustomize-\nresources:\n"
                                              "  - guestbook-ui-deployment.yaml\n  - guestbook-ui-svc.yaml\n",
    "kustomize-guestbook/guestbook-ui-deployment.yaml": deployment("guestbook-ui", "ks-guestbook-demo:0.1"),
    "kustomize-guestbook/guestbook-ui-svc.yaml": service("guestbook-ui"),
    **CHART,
    # the ApplicationSet's git directory generator walks apps/*
    "apps/billing/deploy.yaml": deployment("billing", "billing:1"),
    "apps/orders/deploy.yaml": deployment("orders", "orders:2"),
    "apps/orders/svc.yaml": service("orders"),
    "apps/legacy/deploy.yaml": deployment("legacy", "legacy:0"),
}


@pytest.fixture
def clusters(db: Any) -> dict[str, Cluster]:
    made = {}
    for name, env in (("east", "prod"), ("west", "prod"), ("lab", "dev")):
        made[name] = Cluster.objects.create(name=name, api_url=f"https://{name}.example:6443",
                                            token=f"t-{name}-secret", labels={"env": env, "region": name})
    ClusterGroup.objects.create(name="argocd-home", selector={"matchLabels": {"region": "lab"}})
    return made


def application(origin: Origin, name: str, path: str, dest: str, extra: str = "", sync: str = "") -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: {name}, namespace: argocd}}
spec:
  project: default
  source:
    repoURL: {origin.url}
    targetRevision: HEAD
    path: {path}
{extra}  destination:
{dest}
{sync}"""


def test_applications_render_what_argo_cd_syncs(origin: Origin, clusters: dict[str, Cluster],
                                                admin_user: Any) -> None:
    origin.commit("examples", LAYOUT)
    docs = "---\n".join([
        application(origin, "guestbook", "guestbook", "    name: east\n    namespace: guestbook",
                    sync="  syncPolicy:\n    automated: {prune: true, selfHeal: true}\n"
                         "    syncOptions: [CreateNamespace=true]\n"),
        application(origin, "kustomize-guestbook", "kustomize-guestbook",
                    "    server: https://west.example:6443\n    namespace: kust"),
        application(origin, "helm-guestbook", "helm-guestbook",
                    "    server: https://kubernetes.default.svc\n    namespace: helm",
                    extra="""    helm:
      values: |
        image: {tag: v6}
      parameters:
        - {name: replicaCount, value: "2"}
"""),
    ])
    outcome = import_gitops(admin_user, [("apps.yaml", docs)], target_group="argocd-home")

    assert outcome.created["repositories"] == [origin.path.name]
    repo_branch = PathMapping.objects.first().repository.branch  # HEAD: the remote's default branch
    assert repo_branch == "main"
    gb = mapping_of(origin.url, "guestbook", "east")
    assert members("east") == ["east"]
    assert gb.cluster_group.prune and gb.cluster_group.self_heal
    assert gb.directory_recurse is False and gb.target_namespace == "guestbook"
    unsupported = {f.setting for f in outcome.plan.unsupported}
    assert "spec.syncPolicy.syncOptions[CreateNamespace=true]" not in unsupported
    assert gb.create_namespace  # CreateNamespace=true

    # directory, recurse off: the two top-level manifests, not extras/, in the destination namespace, which
    # the sync creates first
    assert set(rendered(gb, "east")) == {("Namespace", "", "guestbook"),
                                         ("Deployment", "guestbook", "guestbook-ui"),
                                         ("Service", "guestbook", "guestbook-ui")}
    # kustomize: the build, in the destination namespace of the west cluster (found by its API URL)
    kust = mapping_of(origin.url, "kustomize-guestbook", "west")
    assert set(rendered(kust, "west")) == {("Deployment", "kust", "kustomize-guestbook-ui"),
                                           ("Service", "kust", "kustomize-guestbook-ui")}
    # helm, in-cluster destination -> the target group; release name = the Application's name;
    # values then parameters over the chart's values
    helm = mapping_of(origin.url, "helm-guestbook", "argocd-home")
    assert helm.values == {"image": {"tag": "v6"}, "replicaCount": 2}
    objects = rendered(helm, "lab")
    deploy = objects[("Deployment", "helm", "helm-guestbook-helm-guestbook")]
    assert deploy["spec"]["replicas"] == 2
    assert deploy["metadata"]["labels"]["release"] == "helm-guestbook"
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "gb-frontend:v6"


APPSET = """apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: fleet-apps, namespace: argocd}}
spec:
  generators:
    - matrix:
        generators:
          - git:
              repoURL: {url}
              revision: HEAD
              directories:
                - path: apps/*
                - path: apps/legacy
                  exclude: true
          - clusters:
              selector:
                matchLabels: {{env: prod}}
  template:
    metadata:
      name: '{{{{path.basename}}}}-{{{{name}}}}'
    spec:
      project: default
      source:
        repoURL: {url}
        targetRevision: HEAD
        path: '{{{{path}}}}'
      destination:
        name: '{{{{name}}}}'
        namespace: '{{{{path.basename}}}}'
      syncPolicy:
        automated: {{prune: true}}
"""


def test_applicationset_matrix_of_git_directories_and_clusters(origin: Origin, clusters: dict[str, Cluster],
                                                               admin_user: Any) -> None:
    origin.commit("examples", LAYOUT)
    outcome = import_gitops(admin_user, [("appset.yaml", APPSET.format(url=origin.url))])

    # Argo CD would generate billing-east, billing-west, orders-east, orders-west: one mapping per directory,
    # its group the cluster generator's selector (a cluster labelled env=prod later joins it too).
    assert sorted(outcome.created["mappings"]) == [f"{origin.path.name}/fleet-apps-apps-billing",
                                                   f"{origin.path.name}/fleet-apps-apps-orders"]
    assert outcome.created["groups"] == ["fleet-apps-clusters"]
    assert ClusterGroup.objects.get(name="fleet-apps-clusters").selector == {"matchLabels": {"env": "prod"}}
    assert members("fleet-apps-clusters") == ["east", "west"]
    for cluster in ("east", "west"):
        billing = rendered(mapping_of(origin.url, "apps/billing", "fleet-apps-clusters"), cluster)
        orders = rendered(mapping_of(origin.url, "apps/orders", "fleet-apps-clusters"), cluster)
        assert set(billing) == {("Deployment", "billing", "billing")}
        assert set(orders) == {("Deployment", "orders", "orders"), ("Service", "orders", "orders")}
    assert not PathMapping.objects.filter(path="apps/legacy").exists()


def test_cluster_parameters_in_the_source_split_the_mapping_per_cluster(
        origin: Origin, clusters: dict[str, Cluster], admin_user: Any) -> None:
    origin.commit("examples", LAYOUT)
    appset = f"""apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: per-region}}
spec:
  generators:
    - clusters: {{selector: {{matchLabels: {{env: prod}}}}}}
  template:
    metadata: {{name: 'gb-{{{{metadata.labels.region}}}}'}}
    spec:
      source:
        repoURL: {origin.url}
        targetRevision: main
        path: helm-guestbook
        helm:
          parameters:
            - {{name: image.tag, value: '{{{{metadata.labels.region}}}}'}}
      destination: {{server: '{{{{server}}}}', namespace: web}}
"""
    outcome = import_gitops(admin_user, [("r.yaml", appset)])
    assert sorted(outcome.created["groups"]) == ["east", "west"]
    for cluster in ("east", "west"):
        deploy = rendered(mapping_of(origin.url, "helm-guestbook", cluster), cluster)[
            ("Deployment", "web", f"gb-{cluster}-helm-guestbook")]
        assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == f"gb-frontend:{cluster}"


def test_applicationset_files_and_list_generators(origin: Origin, clusters: dict[str, Cluster],
                                                  admin_user: Any) -> None:
    origin.commit("examples", {
        **LAYOUT,
        # the git files generator: one config file per environment, its keys become parameters
        "cluster-config/prod/config.json": '{"cluster": {"name": "east", "tag": "v7"}}',
        "cluster-config/lab/config.json": '{"cluster": {"name": "lab", "tag": "v1"}}',
    })
    files = f"""apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: by-config}}
spec:
  generators:
    - git:
        repoURL: {origin.url}
        revision: HEAD
        files: [{{path: "cluster-config/**/config.json"}}]
  template:
    metadata: {{name: 'gb-{{{{cluster.name}}}}'}}
    spec:
      source:
        repoURL: {origin.url}
        targetRevision: HEAD
        path: helm-guestbook
        helm: {{releaseName: guestbook, parameters: [{{name: image.tag, value: '{{{{cluster.tag}}}}'}}]}}
      destination: {{name: '{{{{cluster.name}}}}', namespace: '{{{{path.basename}}}}'}}
---
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: listed}}
spec:
  generators:
    - list:
        elements:
          - {{cluster: west, app: billing}}
  template:
    metadata: {{name: '{{{{app}}}}'}}
    spec:
      source: {{repoURL: {origin.url}, targetRevision: main, path: 'apps/{{{{app}}}}'}}
      destination: {{name: '{{{{cluster}}}}', namespace: '{{{{app}}}}'}}
"""
    outcome = import_gitops(admin_user, [("sets.yaml", files)])
    assert sorted(outcome.created["mappings"]) == [
        f"{origin.path.name}/by-config-helm-guestbook", f"{origin.path.name}/by-config-helm-guestbook-2",
        f"{origin.path.name}/listed-apps-billing"]
    east = rendered(mapping_of(origin.url, "helm-guestbook", "east"), "east")
    assert east[("Deployment", "prod", "guestbook-helm-guestbook")]["spec"]["template"]["spec"][
        "containers"][0]["image"] == "gb-frontend:v7"
    lab = rendered(mapping_of(origin.url, "helm-guestbook", "lab"), "lab")
    assert lab[("Deployment", "lab", "guestbook-helm-guestbook")]["spec"]["template"]["spec"][
        "containers"][0]["image"] == "gb-frontend:v1"
    assert set(rendered(mapping_of(origin.url, "apps/billing", "west"), "west")) == {
        ("Deployment", "billing", "billing")}


def test_directory_include_and_exclude_map_onto_the_mapping(origin: Origin, clusters: dict[str, Cluster],
                                                            admin_user: Any) -> None:
    origin.commit("examples", LAYOUT)
    dest = "    name: lab\n    namespace: gb"
    doc = application(origin, "filtered", "guestbook", dest, extra="""    directory:
      recurse: true
      include: '*.yaml'
      exclude: '{extras/*,*-svc.yaml}'
""")
    import_gitops(admin_user, [("f.yaml", doc)])
    mapping = mapping_of(origin.url, "guestbook", "lab")
    assert (mapping.directory_recurse, mapping.directory_include, mapping.directory_exclude) == (
        True, "*.yaml", "{extras/*,*-svc.yaml}")
    assert set(rendered(mapping, "lab")) == {("Deployment", "gb", "guestbook-ui")}
