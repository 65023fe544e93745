"""Rancher Fleet's fleet.yaml read natively: repositories laid out as the fleet-examples are (built here, not
copied), rendered per cluster as Fleet's own fixtures say; every key honoured or reported by name."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.render import ClusterContext, RenderError, RenderRequest, SourceTree, render
from fleet.sources.render.fleetbundle import COMPARE_ANNOTATION, fleet_bundle_name

GUESTBOOK = {
    "frontend-deployment.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: frontend
        spec:
          replicas: 1
          selector:
            matchLabels: {app: guestbook, tier: frontend}
          template:
            metadata:
              labels: {app: guestbook, tier: frontend}
            spec:
              containers:
              - name: php-redis
                image: gb-frontend:v5
        """,
    "frontend-service.yaml": """\
        apiVersion: v1
        kind: Service
        metadata:
          name: frontend
          labels: {app: guestbook, tier: frontend}
        spec:
          type: NodePort
          ports: [{port: 80}]
          selector: {app: guestbook, tier: frontend}
        """,
    "redis-slave-deployment.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: redis-slave
        spec:
          replicas: 2
          selector:
            matchLabels: {app: redis, role: slave}
          template:
            metadata:
              labels: {app: redis, role: slave}
            spec:
              containers:
              - name: slave
                image: redis
        """,
    "redis-slave-service.yaml": """\
        apiVersion: v1
        kind: Service
        metadata:
          name: redis-slave
        spec:
          ports: [{port: 6379}]
          selector: {app: redis, role: slave}
        """,
}

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: guestbook\nversion: 0.0.1\n",
    "values.yaml": "replicas: 1\nserviceType: NodePort\nreplication: true\n",
    "templates/frontend.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: frontend
        spec:
          replicas: {{ .Values.replicas }}
          selector: {matchLabels: {app: guestbook}}
          template:
            metadata: {labels: {app: guestbook}}
            spec:
              containers: [{name: php-redis, image: gb-frontend:v5}]
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: frontend
        spec:
          type: {{ .Values.serviceType }}
          ports: [{port: 80}]
          selector: {app: guestbook}
        """,
    "templates/slave.yaml": """\
        {{ if .Values.replication }}
        apiVersion: v1
        kind: Service
        metadata:
          name: redis-slave
        spec:
          ports: [{port: 6379}]
        {{ end }}
        """,
}


def write(root: Path, files: dict[str, str], prefix: str = "") -> Path:
    for rel, content in files.items():
        p = root / prefix / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    return root


def cluster(env: str, **labels: str) -> ClusterContext:
    return ClusterContext(name=f"{env}-1", labels={"env": env, **labels}, group="fleet", commit="c" * 40,
                          values={"tier": {"size": "large"}})


def run(root: Path, path: str, env: str = "dev", **kw: Any) -> Any:
    return render(SourceTree(root), RenderRequest(path=path, cluster=cluster(env), **kw))


def body(result: Any, kind: str, name: str) -> dict[str, Any]:
    found = [o.body for o in result.objects if o.kind == kind and o.name == name]
    assert found, f"no {kind} {name} in {[(o.kind, o.name) for o in result.objects]}"
    return found[0]


def keys(result: Any) -> list[tuple[str, str | None, str]]:
    return [(o.kind, o.namespace, o.name) for o in result.objects]


# --------------------------------------------------------------------------- layouts of the fleet-examples


def test_single_cluster_manifests_namespace_and_subdirectories(tmp_path: Path) -> None:
    """single-cluster/manifests: fleet.yaml with comments and namespace beside deployments/ and services/."""
    files = {f"deployments/{k}" if "deployment" in k else f"services/{k}": v for k, v in GUESTBOOK.items()}
    write(tmp_path, {**files, "fleet.yaml": "# OPTIONAL\nnamespace: fleet-manifest-example\n"}, "manifests")
    result = run(tmp_path, "manifests")
    assert result.renderer == "plain" and result.namespace_forced
    assert keys(result) == [
        ("Namespace", None, "fleet-manifest-example"),
        ("Service", "fleet-manifest-example", "frontend"),
        ("Service", "fleet-manifest-example", "redis-slave"),
        ("Deployment", "fleet-manifest-example", "frontend"),
        ("Deployment", "fleet-manifest-example", "redis-slave"),
    ]
    assert body(result, "Namespace", "fleet-manifest-example")["metadata"]["annotations"] == {
        "fleetgate.io/prune": "disabled"}  # Fleet keeps the namespace when the bundle goes
    assert result.warnings == ()


def test_hardened_namespace_labels_go_on_the_created_namespace(tmp_path: Path) -> None:
    write(tmp_path, {**GUESTBOOK, "fleet.yaml": """\
        namespace: hardened-fleet-deployments
        namespaceLabels:
          pod-security.kubernetes.io/enforce: baseline
        namespaceAnnotations: {owner: platform}
        deleteNamespace: true
        """}, "hardened")
    ns = body(run(tmp_path, "hardened"), "Namespace", "hardened-fleet-deployments")
    assert ns["metadata"]["labels"] == {"pod-security.kubernetes.io/enforce": "baseline"}
    assert ns["metadata"]["annotations"] == {"owner": "platform"}  # deleteNamespace: pruned like the rest


def test_multi_cluster_manifests_overlays_per_env_as_fleets_fixtures(tmp_path: Path) -> None:
    """multi-cluster/manifests: yaml.overlays; an empty replacement drops an object, _patch files patch."""
    write(tmp_path, {**GUESTBOOK,
                     "overlays/noreplication/redis-slave-deployment.yaml": "",
                     "overlays/noreplication/redis-slave-service_patch.yaml":
                         "spec:\n  selector:\n    role: master\n",
                     "overlays/scale3/frontend-deployment_patch.yaml": "spec:\n  replicas: 3\n",
                     "overlays/servicelb/frontend-service_patch.yaml": "spec:\n  type: LoadBalancer\n",
                     "fleet.yaml": """\
        namespace: fleet-mc-manifest-example
        targetCustomizations:
        - name: dev
          clusterSelector: {matchLabels: {env: dev}}
          yaml: {overlays: [noreplication]}
        - name: test
          clusterSelector: {matchLabels: {env: test}}
          yaml: {overlays: [scale3]}
        - name: prod
          clusterSelector: {matchLabels: {env: prod}}
          yaml: {overlays: [servicelb, scale3]}
        """}, "manifests")
    dev, test, prod = (run(tmp_path, "manifests", env) for env in ("dev", "test", "prod"))
    assert dev.target == "dev" and prod.target == "prod"
    assert ("Deployment", "fleet-mc-manifest-example", "redis-slave") not in keys(dev)
    assert body(dev, "Service", "redis-slave")["spec"]["selector"] == {"app": "redis", "role": "master"}
    assert body(test, "Deployment", "frontend")["spec"]["replicas"] == 3
    assert body(test, "Service", "frontend")["spec"]["type"] == "NodePort"
    assert body(prod, "Service", "frontend")["spec"]["type"] == "LoadBalancer"
    assert body(prod, "Deployment", "frontend")["spec"]["replicas"] == 3
    assert len(keys(prod)) == 5  # 4 objects and the Namespace: overlays/ itself is never deployed


def test_overlay_json_patch_and_missing_base_file(tmp_path: Path) -> None:
    write(tmp_path, {**GUESTBOOK,
                     "overlays/json/frontend-service_patch.yaml":
                         "- {op: replace, path: /spec/type, value: ClusterIP}\n",
                     "overlays/typo/nothere_patch.yaml": "spec: {}\n",
                     "fleet.yaml": "yaml: {overlays: [json]}\n"}, "m")
    assert body(run(tmp_path, "m"), "Service", "frontend")["spec"]["type"] == "ClusterIP"
    (tmp_path / "m/fleet.yaml").write_text("yaml: {overlays: [typo]}\n")
    with pytest.raises(RenderError, match=r"failed to find base file nothere\.yaml to patch"):
        run(tmp_path, "m")
    (tmp_path / "m/fleet.yaml").write_text("yaml: {overlays: [absent]}\n")
    assert any("overlays/absent/ has no files" in w for w in run(tmp_path, "m").warnings)


def test_multi_cluster_helm_values_per_env_as_fleets_fixtures(tmp_path: Path) -> None:
    write(tmp_path, {**CHART, "fleet.yaml": """\
        namespace: fleet-mc-helm-example
        targetCustomizations:
        - name: dev
          helm: {values: {replication: false}}
          clusterSelector: {matchLabels: {env: dev}}
        - name: test
          helm: {values: {replicas: 3}}
          clusterSelector: {matchLabels: {env: test}}
        - name: prod
          helm: {values: {serviceType: LoadBalancer, replicas: 3}}
          clusterSelector: {matchLabels: {env: prod}}
        """}, "helm")
    dev, test, prod = (run(tmp_path, "helm", env) for env in ("dev", "test", "prod"))
    assert dev.renderer == "helm"
    assert ("Service", "fleet-mc-helm-example", "redis-slave") not in keys(dev)
    assert ("Service", "fleet-mc-helm-example", "redis-slave") in keys(test)
    assert body(test, "Deployment", "frontend")["spec"]["replicas"] == 3
    assert body(prod, "Service", "frontend")["spec"]["type"] == "LoadBalancer"


def test_single_cluster_helm_keys_written_at_their_defaults_are_accepted(tmp_path: Path) -> None:
    """single-cluster/helm's fleet.yaml writes chart: "", repo: "", version: "", force: false,
    timeoutSeconds: 0."""
    write(tmp_path, {**CHART, "fleet.yaml": """\
        namespace: fleet-helm-example
        helm:
          releaseName: guestbook
          chart: ""
          repo: ""
          version: ""
          force: false
          timeoutSeconds: 0
          takeOwnership: true
          values:
            replicas: 2
        """}, "helm")
    result = run(tmp_path, "helm")
    assert body(result, "Deployment", "frontend")["spec"]["replicas"] == 2
    assert result.warnings == ()  # takeOwnership: Fleetgate never checks Helm ownership


def test_helm_chart_in_a_directory_values_files_in_fleets_order_and_templates(tmp_path: Path) -> None:
    write(tmp_path, CHART, "bundle/chart")
    write(tmp_path, {
        "values-common.yaml": "replicas: 4\n",
        "values-prod.yaml": "serviceType: ${ .ClusterLabels.lb }\n",
        "fleet.yaml": """\
            defaultNamespace: web
            helm:
              chart: ./chart
              releaseName: gb
              values: {replicas: 1, replication: "${ .ClusterName }"}
              valuesFiles: [values-common.yaml]
            targetCustomizations:
            - name: prod
              clusterName: prod-1
              helm: {valuesFiles: [values-prod.yaml]}
            """}, "bundle")
    prod = cluster("prod", lb="LoadBalancer")
    result = render(SourceTree(tmp_path), RenderRequest(path="bundle", cluster=prod))
    assert result.renderer == "helm" and result.namespace == "web" and not result.namespace_forced
    assert body(result, "Deployment", "frontend")["spec"]["replicas"] == 4  # a block's files over its values
    assert body(result, "Service", "frontend")["spec"]["type"] == "LoadBalancer"
    assert result.values["replication"] == "prod-1"
    (tmp_path / "bundle/values-prod.yaml").write_text("serviceType: ${ .ClusterAnnotations.x }\n")
    with pytest.raises(RenderError, match=r"Fleet template \$\{ .ClusterAnnotations.x \} cannot be resolved"):
        render(SourceTree(tmp_path), RenderRequest(path="bundle", cluster=cluster("prod")))
    (tmp_path / "bundle/fleet.yaml").write_text(
        "helm:\n  chart: ./chart\n  disablePreProcess: true\n  values: {serviceType: '${ .ClusterName }'}\n")
    literal = render(SourceTree(tmp_path), RenderRequest(path="bundle", cluster=cluster("prod")))
    assert body(literal, "Service", "frontend")["spec"]["type"] == "${ .ClusterName }"


def test_values_from_a_configmap_or_secret_of_the_mapped_directory(tmp_path: Path) -> None:
    write(tmp_path, CHART, "b/chart")
    secret_values = base64.b64encode(b"serviceType: ClusterIP\n").decode()
    write(tmp_path, {
        "values/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gb-values}\n"
                          "data:\n  values.yaml: |\n    replicas: 7\n",
        "values/secret.yaml": f"apiVersion: v1\nkind: Secret\nmetadata: {{name: gb-secret}}\n"
                              f"data:\n  custom: {secret_values}\n",
        "fleet.yaml": """\
            helm:
              chart: chart
              values: {replicas: 1}
              valuesFrom:
              - configMapKeyRef: {name: gb-values}
              - secretKeyRef: {name: gb-secret, key: custom}
            """}, "b")
    result = run(tmp_path, "b")
    assert body(result, "Deployment", "frontend")["spec"]["replicas"] == 7
    assert body(result, "Service", "frontend")["spec"]["type"] == "ClusterIP"
    (tmp_path / "b/fleet.yaml").write_text("helm:\n  chart: chart\n  valuesFrom:\n"
                                           "  - configMapKeyRef: {name: elsewhere, namespace: kube-system}\n")
    with pytest.raises(RenderError, match=r"helm\.valuesFrom: ConfigMap kube-system/elsewhere is not in "
                                          "this mapping's files"):
        run(tmp_path, "b")


def test_kustomize_dir_per_target(tmp_path: Path) -> None:
    write(tmp_path, {
        "base/kustomization.yaml": "resources: [cm.yaml]\n",
        "base/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {env: base}\n",
        "overlays/dev/kustomization.yaml": "resources: [../../base]\npatches:\n- path: p.yaml\n",
        "overlays/dev/p.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {env: dev}\n",
        "fleet.yaml": """\
            namespace: fleet-mc-kustomize-example
            kustomize: {dir: ""}
            targetCustomizations:
            - name: dev
              clusterSelector: {matchLabels: {env: dev}}
              kustomize: {dir: overlays/dev}
            """}, "k")
    dev = run(tmp_path, "k", "dev")
    assert dev.renderer == "kustomize" and body(dev, "ConfigMap", "app")["data"] == {"env": "dev"}
    with pytest.raises(RenderError):  # no kustomization at the bundle root, no target for prod
        run(tmp_path, "k", "prod")


def test_target_matching_first_match_all_matches_group_selector_and_do_not_deploy(tmp_path: Path) -> None:
    write(tmp_path, {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "fleet.yaml": """\
        targetCustomizations:
        - name: by-group-labels
          clusterGroupSelector: {matchLabels: {tier: gold}}
          namespace: gold
        - name: by-name
          clusterName: dev-1
          namespace: named
        - name: by-group
          clusterGroup: fleet
          namespace: grouped
        - name: stopped
          clusterSelector: {matchLabels: {env: stopped}}
          doNotDeploy: true
        - name: nothing
          namespace: never
        """}, "t")
    assert run(tmp_path, "t", "dev").target == "by-name"
    assert run(tmp_path, "t", "test").namespace == "grouped"
    gold = ClusterContext(name="x", labels={"env": "x"}, group="fleet", group_labels={"tier": "gold"})
    assert render(SourceTree(tmp_path), RenderRequest(path="t", cluster=gold)).namespace == "gold"
    other = ClusterContext(name="y", labels={"env": "stopped"}, group="other")
    off = render(SourceTree(tmp_path), RenderRequest(path="t", cluster=other))
    assert off.skipped and off.objects == ()
    assert any("targetCustomizations[4] has no clusterName" in w for w in off.warnings)
    fy = tmp_path / "t/fleet.yaml"
    fy.write_text("targetCustomizationMode: AllMatches\n" + fy.read_text().replace("namespace: named\n",
                                                                                 "namespaceLabels: {a: b}\n"))
    both = run(tmp_path, "t", "dev")
    assert both.target == "by-name,by-group" and both.namespace == "grouped"
    assert body(both, "Namespace", "grouped")["metadata"]["labels"] == {"a": "b"}


def test_compare_patches_become_the_drift_annotation(tmp_path: Path) -> None:
    write(tmp_path, {"hook.yaml": """\
        apiVersion: admissionregistration.k8s.io/v1
        kind: MutatingWebhookConfiguration
        metadata: {name: rancher-monitoring-admission}
        webhooks: []
        """, "cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "fleet.yaml": """\
        defaultNamespace: cattle-monitoring-system
        diff:
          comparePatches:
          - apiVersion: admissionregistration.k8s.io/v1
            kind: MutatingWebhookConfiguration
            name: rancher-monitoring-admission
            operations:
            - {"op": "remove", "path": "/webhooks/0/failurePolicy"}
            jsonPointers: [/webhooks/0/sideEffects]
          - kind: ConfigMap
            operations: [{op: ignore}]
        """}, "mon")
    result = run(tmp_path, "mon")
    hook = body(result, "MutatingWebhookConfiguration", "rancher-monitoring-admission")
    assert json.loads(hook["metadata"]["annotations"][COMPARE_ANNOTATION]) == [
        "/webhooks/0/failurePolicy", "/webhooks/0/sideEffects"]
    assert json.loads(body(result, "ConfigMap", "a")["metadata"]["annotations"][COMPARE_ANNOTATION]) == ["*"]
    (tmp_path / "mon/fleet.yaml").write_text("diff: {comparePatches: [{kind: X, operations: [{op: add}]}]}\n")
    with pytest.raises(RenderError, match="op must be remove or ignore"):
        run(tmp_path, "mon")
    # namespace (not defaultNamespace) with a cluster-scoped object: Fleet fails the deployment, so does this
    (tmp_path / "mon/fleet.yaml").write_text("namespace: cattle-monitoring-system\n")
    with pytest.raises(RenderError, match="MutatingWebhookConfiguration rancher-monitoring-admission is "
                                          "cluster-scoped") as err:
        run(tmp_path, "mon")
    assert err.value.file == "mon/hook.yaml"


# --------------------------------------------------------------------------- reporting, refusals


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
REPORTED = """\
name: web-bundle
labels: {app: web}
paused: true
rolloutStrategy: {maxUnavailable: 10%, maxNew: 20, partitions: [{name: canary, clusterName: dev-1}]}
serviceAccount: deployer
keepResources: true
deleteCRDResources: true
correctDrift: {enabled: true}
ignore: {conditions: [{type: Ready}]}
downstreamResources: [{kind: Secret, name: s}]
forceSyncGeneration: 2
overrideTargets: [{clusterSelector: {}}]
imageScans: [{image: nginx, tagName: t}]
dependsOn: [{name: other, acceptedStates: [Ready, Modified]}]
someFutureKey: 1
helm:
  atomic: true
  force: true
  waitForJobs: true
  maxHistory: 3
  timeoutSeconds: 30
  disableDNS: true
  skipSchemaValidation: true
  disableDependencyUpdate: true
  templateValues: {a: b}
  newHelmKey: 1
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  helm: {atomic: true}
"""


def test_every_unhonoured_key_is_reported_by_name(tmp_path: Path) -> None:
    write(tmp_path, {"cm.yaml": CM, "fleet.yaml": REPORTED}, "r")
    result = run(tmp_path, "r")
    text = "\n".join(result.warnings)
    for key in ("rolloutStrategy.maxNew", "serviceAccount", "keepResources", "deleteCRDResources",
                "correctDrift", "ignore", "downstreamResources", "forceSyncGeneration", "overrideTargets",
                "imageScans", "acceptedStates", "someFutureKey", "helm.atomic", "helm.force",
                "helm.waitForJobs", "helm.maxHistory", "helm.timeoutSeconds", "helm.disableDNS",
                "helm.skipSchemaValidation", "helm.disableDependencyUpdate", "helm.templateValues",
                "helm.newHelmKey", "targetCustomizations[dev].helm.atomic", "paused"):
        assert f"{key}" in text, key
    assert result.paused and result.to_dict()["paused"] is True
    # the rest of rolloutStrategy (partitions, maxUnavailable) goes to the mapping's rollouts: not reported
    assert "rolloutStrategy is not honoured" not in text and "rolloutStrategy.partitions" not in text


@pytest.mark.parametrize(("fleet_yaml", "message"), [
    ("namespace: [a]\n", "namespace must be a string"),
    ("helm: {releaseName: Bad_Name}\n", "is not a valid Helm release name"),
    ("targetCustomizationMode: Sometimes\n", "targetCustomizationMode must be FirstMatch or AllMatches"),
    ("dependsOn: [{acceptedStates: [Ready]}]\n", "dependsOn[0]: must specify either 'name' or 'selector'"),
    ("dependsOn: [{name: a, acceptedStates: [Done]}]\n", "invalid state 'Done'"),
    ("yaml: {overlays: [../x]}\n", "yaml.overlays must be a list of names"),
    ("targetCustomizations: [{clusterSelector: {matchLabels: {a: b}, bogus: 1}}]\n", "clusterSelector"),
    ("helm: {valuesFrom: [{}]}\n", "needs one of configMapKeyRef or secretKeyRef"),
    ("- a\n", "fleet.yaml must be a mapping"),
])
def test_values_fleet_itself_refuses_are_errors_naming_the_file(tmp_path: Path, fleet_yaml: str,
                                                                message: str) -> None:
    write(tmp_path, {"cm.yaml": CM, "fleet.yaml": fleet_yaml}, "e")
    with pytest.raises(RenderError) as err:
        run(tmp_path, "e")
    assert message in err.value.message and err.value.file == "e/fleet.yaml"


def test_fleet_yaml_beside_fleetgate_yaml_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
                     "fleet.yaml": "namespace: a\n", "fleetgate.yaml": "namespace: b\n"}, "both")
    with pytest.raises(RenderError, match=r"fleet\.yaml and fleetgate\.yaml in the same directory"):
        run(tmp_path, "both")


def test_a_fleet_yaml_deeper_down_is_a_bundle_of_its_own_never_a_manifest(tmp_path: Path) -> None:
    """A plain mapping of a parent directory leaves out the subdirectories that are bundles (as Fleet)."""
    write(tmp_path, {"top.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: top}\n",
                     "child/fleet.yaml": "namespace: child\n",
                     "child/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: child}\n"}, "parent")
    assert keys(run(tmp_path, "parent")) == [("ConfigMap", None, "top")]
    write(tmp_path, {"fleet.yaml": "defaultNamespace: own\n"}, "parent")
    own = run(tmp_path, "parent")
    assert sorted(keys(own), key=str) == [("ConfigMap", None, "top"), ("Namespace", None, "own")]
    assert own.namespace == "own" and not own.namespace_forced  # applied where objects name no namespace


def test_a_chart_directory_missing_from_the_repository_is_named(tmp_path: Path) -> None:
    """helm.chart without helm.repo is a directory of the repository; a missing one is said to be missing
    (charts from Helm repositories and registries: tests/sources/test_helm_repository.py and
    test_helm_oci.py)."""
    write(tmp_path, {"fleet.yaml": "helm:\n  chart: ./rancher-monitoring\n  version: 104.1.0\n"}, "local")
    with pytest.raises(RenderError) as err:
        run(tmp_path, "local")
    assert err.value.message.startswith(
        "helm.chart './rancher-monitoring' is not a directory of the repository")
    assert err.value.file == "local/fleet.yaml"
    write(tmp_path, {"rancher-monitoring/values.yaml": "a: 1\n"}, "local")
    with pytest.raises(RenderError, match=r"helm.chart './rancher-monitoring' has no Chart\.yaml"):
        run(tmp_path, "local")


def test_bundle_names_as_fleet_generates_them() -> None:
    assert fleet_bundle_name("fleet-examples", "single-cluster/helm") == "fleet-examples-single-cluster-helm"
    assert fleet_bundle_name("Repo", "a_b/C") == "repo-a-b-c"


def test_helm_kustomize_the_charts_output_post_rendered_by_kustomize_dir(tmp_path: Path) -> None:
    """helm-kustomize: a chart (here vendored: helm.chart names its directory) whose output the kustomization
    of kustomize.dir patches, per target, as Fleet's helmdeployer does (fleet-manifests.yaml first)."""
    write(tmp_path, CHART, "hk/chart")
    write(tmp_path, {
        "overlays/dev/kustomization.yaml": "patches:\n- path: slave.yaml\n- path: frontend.yaml\n",
        "overlays/dev/slave.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: redis-slave}\n"
                                   "spec: {selector: {role: master}}\n",
        "overlays/dev/frontend.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: frontend}\n"
                                      "spec: {replicas: 0}\n",
        "fleet.yaml": """\
            namespace: fleet-mc-helm-kustomize-example
            helm: {chart: ./chart}
            targetCustomizations:
            - name: dev
              clusterSelector: {matchLabels: {env: dev}}
              kustomize: {dir: overlays/dev}
            """}, "hk")
    dev = run(tmp_path, "hk", "dev")
    assert dev.renderer == "helm"
    assert body(dev, "Deployment", "frontend")["spec"]["replicas"] == 0
    assert body(dev, "Service", "redis-slave")["spec"]["selector"] == {"role": "master"}
    assert body(dev, "Service", "frontend")["metadata"]["namespace"] == "fleet-mc-helm-kustomize-example"
    prod = run(tmp_path, "hk", "prod")  # no kustomize.dir for prod: the chart as it renders
    assert body(prod, "Deployment", "frontend")["spec"]["replicas"] == 1
