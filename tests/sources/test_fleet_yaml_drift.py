"""fleet.yaml ``diff.comparePatches`` fed into drift detection: the fields it removes are not drift, on the
sandbox cluster through the connector (the same path as a drift check), while any other change still is."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
from tests.connector.conftest import Backend, sandbox_backend  # noqa: F401 - the fixture, used by name
from tests.kube_backends import sandbox_backend_server  # noqa: F401 - the fixture sandbox_backend needs

FLEET_YAML = """\
diff:
  comparePatches:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    operations:
    - {"op": "remove", "path": "/spec/replicas"}
    jsonPointers: [/spec/template/spec/containers/0/image]
  - kind: ConfigMap
    name: runtime
    operations: [{op: ignore}]
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: runtime}
data: {mode: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: watched}
data: {mode: a}
"""


def test_compare_patches_are_not_drift_other_changes_are(tmp_path: Path,
                                                          sandbox_backend: Backend) -> None:  # noqa: F811
    backend, ns = sandbox_backend, sandbox_backend.namespace
    (tmp_path / "app").mkdir()
    (tmp_path / "app/fleet.yaml").write_text(textwrap.dedent(FLEET_YAML))
    (tmp_path / "app/objects.yaml").write_text(DEPLOYMENT)
    result = render(SourceTree(tmp_path), RenderRequest(path="app", cluster=ClusterContext(name="c1")))
    bodies = [o.body for o in result.objects]
    with backend.connector() as kube:
        sync = kube.apply(bodies, mapping="app", default_namespace=ns)
        assert sync.ok
        assert not kube.drift(sync.applied, default_namespace=ns).drifted

        # An HPA scales, an image updater bumps the tag, an operator rewrites the ignored ConfigMap:
        scaled = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": ns},
                  "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
        backend.apply_as("hpa", scaled)
        backend.apply_as("operator", {"apiVersion": "v1", "kind": "ConfigMap", "data": {"mode": "b"},
                                      "metadata": {"name": "runtime", "namespace": ns}})
        assert not kube.drift(sync.applied, default_namespace=ns).drifted

        # ... but a change comparePatches does not name is drift, as before.
        backend.apply_as("someone", {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "watched", "namespace": ns}, "data": {"mode": "b"}})
        report = kube.drift(sync.applied, default_namespace=ns)
    assert report.drifted
    assert [(o.ref.kind, o.ref.name) for o in report.objects] == [("ConfigMap", "watched")]
    assert [f.path for f in report.objects[0].fields] == [".data.mode"]
