"""Importing Flux's GitRepository, Kustomizations and HelmReleases of one cluster (the layout of
fluxcd/flux2-kustomize-helm-example: clusters/<env>/{infrastructure,apps}.yaml over infrastructure/ and
apps/<env> overlays), then rendering every imported mapping for the cluster: it receives the objects
kustomize-controller and helm-controller would apply (the build, then the postBuild substitutions)."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from fleet.sources.gitops_import import import_gitops
from fleet.sources.models import PathMapping
from fleet.sources.services.dependencies import mapping_label
from tests.sources.gitops_layouts import deployment, mapping_of, rendered
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db

LAYOUT = {
    "infrastructure/controllers/kustomization.yaml": "resources: [ingress.yaml]\n",
    "infrastructure/controllers/ingress.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: ingress}\n",
    "infrastructure/configs/kustomization.yaml": "resources: [issuer.yaml]\n",
    "infrastructure/configs/issuer.yaml": """apiVersion: v1
kind: ConfigMap
metadata: {name: issuer, namespace: ingress}
data: {server: '${acme_server:=https://acme-v02.api.letsencrypt.org/directory}'}
""",
    "apps/base/podinfo/kustomization.yaml": "namespace: podinfo\nresources: [namespace.yaml, deploy.yaml]\n",
    "apps/base/podinfo/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: podinfo}\n",
    "apps/base/podinfo/deploy.yaml": deployment("podinfo", "ghcr.io/stefanprodan/podinfo:${podinfo_version}",
                                                extra_labels=", env: '${cluster_env}'"),
    "apps/staging/kustomization.yaml": "resources: [../base/podinfo]\n",
    "charts/redis/Chart.yaml": "apiVersion: v2\nname: redis\nversion: 1.0.0\n",
    "charts/redis/values.yaml": "replicas: 1\n",
    "charts/redis/templates/sts.yaml": """apiVersion: apps/v1
kind: StatefulSet
metadata: {name: '{{ .Release.Name }}', namespace: '{{ .Release.Namespace }}'}
spec:
  replicas: {{ .Values.replicas }}
  serviceName: redis
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec: {containers: [{name: redis, image: redis:7}]}
""",
}


def cluster_docs(origin: Origin) -> list[tuple[str, str]]:
    sync = f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: flux-system, namespace: flux-system}}
spec:
  interval: 1m0s
  ref: {{branch: main}}
  secretRef: {{name: flux-system}}
  url: {origin.url}
"""
    infrastructure = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra-controllers, namespace: flux-system}
spec:
  interval: 1h
  sourceRef: {kind: GitRepository, name: flux-system}
  path: ./infrastructure/controllers
  prune: true
  wait: true
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra-configs, namespace: flux-system}
spec:
  dependsOn: [{name: infra-controllers}]
  interval: 1h
  sourceRef: {kind: GitRepository, name: flux-system}
  path: ./infrastructure/configs
  prune: true
  postBuild:
    substitute: {}
    substituteFrom:
      - {kind: Secret, name: acme-settings, optional: true}
"""
    apps = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  dependsOn: [{name: infra-configs}]
  interval: 10m
  sourceRef: {kind: GitRepository, name: flux-system}
  path: ./apps/staging
  prune: true
  postBuild:
    substitute: {cluster_env: staging, podinfo_version: "6.7.0"}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: redis, namespace: flux-system}
spec:
  interval: 30m
  targetNamespace: cache
  install: {createNamespace: true, remediation: {retries: 3}}
  chart:
    spec:
      chart: ./charts/redis
      sourceRef: {kind: GitRepository, name: flux-system}
  values: {replicas: 2}
  valuesFrom:
    - {kind: ConfigMap, name: redis-tuning}
  dependsOn: [{name: apps}]
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: podinfo}
spec:
  chart:
    spec:
      chart: podinfo
      sourceRef: {kind: HelmRepository, name: podinfo}
"""
    return [("clusters/staging/flux-system/gotk-sync.yaml", sync),
            ("clusters/staging/infrastructure.yaml", infrastructure), ("clusters/staging/apps.yaml", apps)]


@pytest.fixture
def staging(db: Any) -> ClusterGroup:
    Cluster.objects.create(name="staging-1", api_url="https://staging-1:6443", token="t-secret-1",
                           labels={"env": "staging"})
    return ClusterGroup.objects.create(name="staging", selector={"matchLabels": {"env": "staging"}})


def test_flux_cluster_config_imports_and_renders_like_flux(origin: Origin, staging: ClusterGroup,
                                                           admin_user: Any) -> None:
    origin.commit("flux layout", LAYOUT)
    outcome = import_gitops(admin_user, cluster_docs(origin), target_group="staging")

    assert outcome.created["repositories"] == ["flux-system"]
    assert sorted(outcome.created["mappings"]) == ["flux-system/apps", "flux-system/infra-configs",
                                                   "flux-system/infra-controllers", "flux-system/redis"]
    controllers = mapping_of(origin.url, "infrastructure/controllers", "staging")
    configs = mapping_of(origin.url, "infrastructure/configs", "staging")
    apps = mapping_of(origin.url, "apps/staging", "staging")
    redis = mapping_of(origin.url, "charts/redis", "staging")
    # dependsOn -> depends_on between the imported mappings
    assert [mapping_label(m) for m in configs.depends_on.all()] == ["flux-system/infra-controllers"]
    assert [mapping_label(m) for m in apps.depends_on.all()] == ["flux-system/infra-configs"]
    assert [mapping_label(m) for m in redis.depends_on.all()] == ["flux-system/apps"]
    assert apps.postbuild == {"cluster_env": "staging", "podinfo_version": "6.7.0"}
    # secrets named, never imported; what reads the cluster at sync time listed
    assert {(s.setting, s.name) for s in outcome.plan.secrets} == {
        ("spec.secretRef", "flux-system"), ("spec.postBuild.substituteFrom[0]", "acme-settings")}
    unsupported = {f.setting for f in outcome.plan.unsupported}
    assert {"spec.postBuild.substituteFrom[0]", "spec.valuesFrom[0]",
            "spec.install.remediation"} <= unsupported
    assert "spec.install" not in unsupported and "spec.install.createNamespace" not in unsupported
    skipped = {f.source.split(" ")[0]: f.reason for f in outcome.plan.skipped}
    assert "HelmRepository" in skipped["HelmRelease/podinfo"]

    assert set(rendered(controllers, "staging-1")) == {("Namespace", "", "ingress")}
    # postBuild present with no variables: Flux does not substitute; the default stays as written
    issuer = rendered(configs, "staging-1")[("ConfigMap", "ingress", "issuer")]
    assert issuer["data"]["server"] == "${acme_server:=https://acme-v02.api.letsencrypt.org/directory}"
    podinfo = rendered(apps, "staging-1")
    assert set(podinfo) == {("Namespace", "", "podinfo"), ("Deployment", "podinfo", "podinfo")}
    deploy = podinfo[("Deployment", "podinfo", "podinfo")]
    assert deploy["spec"]["template"]["metadata"]["labels"]["env"] == "staging"
    image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/stefanprodan/podinfo:6.7.0"
    # helm-controller: release "<targetNamespace>-<name>" in the target namespace, the release's values;
    # install.createNamespace: the mapping creates the namespace
    assert redis.create_namespace
    sts = rendered(redis, "staging-1")
    assert set(sts) == {("Namespace", "", "cache"), ("StatefulSet", "cache", "cache-redis")}
    assert sts[("StatefulSet", "cache", "cache-redis")]["spec"]["replicas"] == 2


def test_flux_needs_a_target_group_and_dependency_cycles_are_refused(origin: Origin, staging: ClusterGroup,
                                                                     admin_user: Any) -> None:
    outcome = import_gitops(admin_user, cluster_docs(origin), dry_run=True)
    assert outcome.created["mappings"] == []
    assert all("give the target group" in f.reason for f in outcome.plan.skipped
               if f.source.startswith(("Kustomization", "HelmRelease")))
    cyclic = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: a, namespace: flux-system}
spec: {sourceRef: {kind: GitRepository, name: flux-system}, path: ./a, prune: true, dependsOn: [{name: b}]}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: b, namespace: flux-system}
spec: {sourceRef: {kind: GitRepository, name: flux-system}, path: ./b, prune: true, dependsOn: [{name: a}]}
"""
    from fleet.sources.gitops_import import ImportError_

    with pytest.raises(ImportError_, match=r"dependency cycle: flux-system/(a|b) -> flux-system/(a|b)"):
        import_gitops(admin_user, [*cluster_docs(origin)[:1], ("cycle.yaml", cyclic)], target_group="staging")
    assert not PathMapping.objects.exists()


def test_what_a_kustomization_cannot_carry_over_is_listed(origin: Origin, staging: ClusterGroup,
                                                          admin_user: Any) -> None:
    docs = [*cluster_docs(origin)[:1], ("k.yaml", """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: tenant, namespace: flux-system}
spec:
  sourceRef: {kind: GitRepository, name: flux-system}
  path: ./tenants/a
  prune: false
  suspend: true
  targetNamespace: team-a
  images: [{name: podinfo, newTag: 6.7.1}]
  serviceAccountName: team-a
  decryption: {provider: sops, secretRef: {name: sops-age}}
""")]
    outcome = import_gitops(admin_user, docs, target_group="staging", dry_run=True)
    [mapping] = outcome.plan.mappings
    assert (mapping.path, mapping.target_namespace, mapping.enabled) == ("tenants/a", "team-a", False)
    unsupported = {f.setting for f in outcome.plan.unsupported}
    assert {"spec.images", "spec.serviceAccountName", "spec.decryption",
            "targetNamespace forced onto every namespaced object"} <= unsupported
    assert {"spec.prune", "spec.suspend"} <= {n.setting for n in outcome.plan.notes}
    assert ("spec.decryption.secretRef", "sops-age") in {(s.setting, s.name) for s in outcome.plan.secrets}
