"""Repositories laid out as the public examples of Fleet (rancher/fleet-examples), Argo CD
(argoproj/argocd-example-apps) and Flux (fluxcd/flux2-kustomize-helm-example), written by the tests
themselves (the same directory shapes, our own small manifests), and helpers to import and render them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusters.models import Cluster
from fleet.sources.models import PathMapping, Repository
from fleet.sources.services.fetch import fetch_repository
from fleet.sources.services.preview import preview_render

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def deployment(name: str, image: str, replicas: int = 1, extra_labels: str = "") -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}{extra_labels}}}
    spec:
      containers:
        - name: {name}
          image: {image}
"""


def service(name: str, port: int = 80, type_: str = "") -> str:
    type_line = f"  type: {type_}\n" if type_ else ""
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
{type_line}  ports:
    - port: {port}
  selector: {{app: {name}}}
"""


def rendered(mapping: PathMapping, cluster: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What ``cluster`` receives from ``mapping`` at the repository's head: (kind, namespace, name) ->
    object."""
    repo = mapping.repository
    if not repo.head_sha:
        outcome = fetch_repository(repo, render=False)
        assert outcome.ok, outcome.to_dict()
        repo.refresh_from_db()
    preview = preview_render(repo, "head", mapping, cluster)
    assert preview.ok, (mapping.name, cluster, preview.error)
    # An object that names no namespace is applied in the render's namespace (cluster-scoped kinds: none).
    return {(o["kind"], o["namespace"] or ("" if o["kind"] in CLUSTER_SCOPED
                                           else preview.namespace or "default"), o["name"]):
            o["object"] for o in preview.objects}


def kinds_and_names(objects: dict[tuple[str, str, str], Any]) -> set[tuple[str, str, str]]:
    return set(objects)


def mapping_of(repo_url: str, path: str, group: str) -> PathMapping:
    return PathMapping.objects.select_related("repository", "cluster_group").get(
        repository__url=repo_url, path=path, cluster_group__name=group)


def members(group: str) -> list[str]:
    return sorted(Cluster.objects.filter(groups__name=group).values_list("name", flat=True))


def files(*pairs: tuple[str, str]) -> Sequence[tuple[str, str]]:
    return list(pairs)


def repository(url: str) -> Repository:
    return Repository.objects.get(url=url)
