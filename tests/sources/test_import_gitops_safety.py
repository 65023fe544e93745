"""What the GitOps import reads, and how it fails (issue 15 review): an ApplicationSet's git generator never
reads through a symlink leaving its repository, never fetches a URL a Repository could not have (file://
when disabled, a denied address) or one the user may not have read, reads its files and inline values with
the limits of every YAML Fleetgate reads, and malformed documents answer 400 naming the file, the document
and the setting, never 500 (and create nothing). Argo CD's CreateNamespace=true (and managedNamespaceMetadata)
become the mapping's create_namespace options."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from clusters.models import Cluster, ClusterGroup
from fleet.sources.gitops_import import ImportError_, make_plan
from fleet.sources.gitops_import.environment import ClusterInfo, Environment
from fleet.sources.models import PathMapping, Repository
from tests.sources.gitops_layouts import deployment
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db
URL = "/api/import/gitops/"
SECRET = "s3cr3t-from-the-server"
BOMB = "".join(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10 if i else ['"x"'] * 10) + "]\n"
               for i in range(7)) + "top: *a6\n"  # 10**7 strings from about 400 bytes


@pytest.fixture
def groups(db: Any) -> dict[str, ClusterGroup]:
    Cluster.objects.create(name="c1", api_url="https://c1:6443", token="t-c1-secret", labels={"env": "prod"})
    return {"prod": ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})}


def appset(url: str, generator: str = "files: [{path: 'apps/*.yaml'}]",
           values: str = "{leak: '{{token}}', pw: '{{nested.password}}'}", dest: str = "{name: c1}") -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: s}}
spec:
  generators:
  - git: {{repoURL: '{url}', revision: main, {generator}}}
  template:
    metadata: {{name: 'app-{{{{path.basename}}}}'}}
    spec:
      source:
        {{repoURL: '{url}', targetRevision: main, path: '{{{{path}}}}', helm: {{valuesObject: {values}}}}}
      destination: {dest}
"""


def dry_run(client: Any, documents: str, name: str = "appset.yaml", **more: Any) -> Any:
    return client.post(URL, {"files": [{"name": name, "content": documents}], "dry_run": True, **more},
                       format="json")


# ----------------------------------------------------------------------------------- 1. symlinks


def test_a_generator_file_symlinked_out_of_the_repository_is_refused(origin: Origin, tmp_path: Path,
                                                                      groups: Any, admin_client: Any) -> None:
    outside = tmp_path / "server-secret.yaml"
    outside.write_text(f"token: {SECRET}\nnested: {{password: hunter2}}\n")
    origin.commit("apps", {"apps/web/deploy.yaml": deployment("web", "web:1"),
                           "apps/web.yaml": "token: plain\nnested: {password: none}\n"})
    os.symlink(outside, origin.path / "apps" / "leak.yaml")
    origin.git("add", "apps/leak.yaml")
    origin.commit("a link out of the repository")

    answer = dry_run(admin_client, appset(origin.url))
    assert answer.status_code == 400, answer.json()
    [message] = answer.json()["documents"]
    assert message.startswith("appset.yaml:1 ApplicationSet/s: spec.generators.git: ")
    assert "apps/leak.yaml: symlink points outside the repository" in message
    assert SECRET not in answer.content.decode() and "hunter2" not in answer.content.decode()
    assert not Repository.objects.exists()


def test_a_symlink_inside_the_generator_repository_is_followed(origin: Origin, groups: Any,
                                                               admin_client: Any) -> None:
    origin.commit("apps", {"apps/web/deploy.yaml": deployment("web", "web:1"),
                           "config/web.yaml": "token: plain\nnested: {password: none}\n"})
    os.symlink("../config/web.yaml", origin.path / "apps" / "web.yaml")
    origin.git("add", "apps/web.yaml")
    origin.commit("a link inside the repository")

    answer = dry_run(admin_client, appset(origin.url))
    assert answer.status_code == 200, answer.json()
    [mapping] = answer.json()["mappings"]
    assert mapping["values"] == {"leak": "plain", "pw": "none"}


# ----------------------------------------------------------------------------------- 2. URLs and rights


def test_a_file_url_is_not_fetched_when_file_repositories_are_disabled(origin: Origin, groups: Any,
                                                                        admin_client: Any,
                                                                        settings: Any) -> None:
    origin.commit("apps", {"apps/web.yaml": f"token: {SECRET}\n"})
    settings.FLEETGATE_ALLOW_FILE_REPOSITORIES = False
    answer = dry_run(admin_client, appset(origin.url))
    assert answer.status_code == 400, answer.json()
    [message] = answer.json()["documents"]
    assert message == ("appset.yaml:1 ApplicationSet/s: spec.generators.git.repoURL: repository URL refused: "
                       "file:// repositories are disabled (FLEETGATE_ALLOW_FILE_REPOSITORIES).")
    assert SECRET not in answer.content.decode()

    application = f"""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: a}}
spec:
  source: {{repoURL: '{origin.url}', targetRevision: main, path: apps}}
  destination: {{name: c1}}
"""
    answer = dry_run(admin_client, application, "app.yaml")
    assert answer.status_code == 400
    assert answer.json()["documents"] == ["app.yaml:1 Application/a: spec.source.repoURL: repository URL "
                                          "refused: file:// repositories are disabled "
                                          "(FLEETGATE_ALLOW_FILE_REPOSITORIES)."]


@pytest.mark.parametrize("url", ["https://169.254.169.254/org/apps.git", "http://metadata.google.internal/x",
                                 "/srv/git/other-tenant", "ext::sh -c id"])
def test_a_generator_url_a_repository_could_not_have_is_refused(url: str, groups: Any,
                                                                admin_client: Any) -> None:
    answer = dry_run(admin_client, appset(url))
    assert answer.status_code == 400, answer.json()
    assert "spec.generators.git.repoURL: repository URL refused: " in answer.json()["documents"][0]


def test_reading_a_repository_needs_the_right_to_add_it_or_to_see_it(origin: Origin, groups: Any,
                                                                     make_user: Callable[..., Any],
                                                                     token_client: Callable[[Any], Any]
                                                                     ) -> None:
    origin.commit("apps", {"apps/web/deploy.yaml": deployment("web", "web:1"),
                           "apps/web.yaml": "token: plain\nnested: {password: none}\n"})
    # a cluster admin of prod may add mappings there, not repositories (a write on all clusters)
    prod_admin = token_client(make_user("prod-admin", "cluster-admin", groups["prod"]))
    refused = dry_run(prod_admin, appset(origin.url))
    assert refused.status_code == 403, refused.json()
    assert "spec.generators.git.repoURL: you may not have this repository read" in refused.json()["detail"]

    other = Repository.objects.create(name="apps", url=origin.url, branch="main")
    assert dry_run(prod_admin, appset(origin.url)).status_code == 403  # one they cannot see
    # a repository that a mapping of their group deploys: one they can see
    PathMapping.objects.create(repository=other, name="web", path="apps/web", cluster_group=groups["prod"])
    in_prod = appset(origin.url, dest="{server: 'https://kubernetes.default.svc'}")
    allowed = dry_run(prod_admin, in_prod, group="prod")
    assert allowed.status_code == 200, allowed.json()
    assert [m["values"] for m in allowed.json()["mappings"]] == [{"leak": "plain", "pw": "none"}]


# ----------------------------------------------------------------------------------- 3. YAML limits


def test_a_yaml_bomb_in_a_generator_file_is_refused(origin: Origin, groups: Any, admin_client: Any) -> None:
    origin.commit("apps", {"apps/web/deploy.yaml": deployment("web", "web:1"), "apps/web.yaml": BOMB})
    answer = dry_run(admin_client, appset(origin.url))
    assert answer.status_code == 400
    [message] = answer.json()["documents"]
    assert "spec.generators.git.files: " in message and "apps/web.yaml:" in message
    assert "refused YAML: aliases expand to more than 10000 nodes (YAML bomb?)" in message
    assert len(answer.content) < 2000


def test_a_yaml_bomb_in_inline_helm_values_is_refused(groups: Any, admin_client: Any) -> None:
    values = "".join("        " + line + "\n" for line in BOMB.splitlines())
    doc = f"""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: a}}
spec:
  source:
    repoURL: https://git.example.com/org/apps.git
    path: web
    helm:
      values: |
{values}  destination: {{name: c1}}
"""
    answer = dry_run(admin_client, doc, "app.yaml")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["documents"][0].startswith(
        "app.yaml:1 Application/a: spec.source.helm.values: line ")
    assert "refused YAML: aliases expand to more than 10000 nodes" in answer.json()["documents"][0]


def test_generated_parameter_sets_are_limited(groups: Any, admin_client: Any) -> None:
    elements = ", ".join(f"{{n: '{i}'}}" for i in range(40))
    doc = f"""apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: s}}
spec:
  generators:
  - matrix:
      generators:
      - list: {{elements: [{elements}]}}
      - list: {{elements: [{elements.replace("n:", "m:")}]}}
  template:
    metadata: {{name: 'a-{{{{n}}}}-{{{{m}}}}'}}
    spec:
      source: {{repoURL: 'https://git.example.com/org/apps.git', targetRevision: main, path: '{{{{n}}}}'}}
      destination: {{name: c1}}
"""
    answer = dry_run(admin_client, doc)
    assert answer.status_code == 200
    [skipped] = answer.json()["skipped"]
    assert skipped["reason"].startswith("the generators make 1600 parameter sets, more than the import's "
                                        "limit of 1000")
    assert answer.json()["mappings"] == []


# ----------------------------------------------------------------------------------- 4. malformed input

APP = "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
SET = "apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\nmetadata: {name: s}\n"
SRC = "{repoURL: 'https://git.example.com/r.git', path: x"
MALFORMED = [
    (APP + "spec: oops\n", "Application/a: spec: must be an object, not a string"),
    (APP + f"spec: {{source: {SRC}}}, destination: x}}\n",
     "Application/a: spec.destination: must be an object, not a string"),
    (APP + f"spec: {{source: {SRC}, helm: {{values: 'a: [1'}}}}, destination: {{name: c1}}}}\n",
     "Application/a: spec.source.helm.values: line 2: invalid YAML"),
    (APP + f"spec: {{source: {SRC}, helm: x}}, destination: {{name: c1}}}}\n",
     "Application/a: spec.source.helm: must be an object, not a string"),
    (APP + f"spec: {{source: {SRC}, helm: {{parameters: x}}}}, destination: {{name: c1}}}}\n",
     "Application/a: spec.source.helm.parameters: must be a list, not a string"),
    (APP + f"spec: {{source: {SRC}, helm: {{valueFiles: 3}}}}, destination: {{name: c1}}}}\n",
     "Application/a: spec.source.helm.valueFiles: must be a list, not a number"),
    (APP + f"spec: {{source: {SRC}}}, destination: {{name: c1}}, syncPolicy: [1]}}\n",
     "Application/a: spec.syncPolicy: must be an object, not a list"),
    (APP + f"spec: {{source: {SRC}}}, destination: {{name: c1}}, syncPolicy: {{syncOptions: x}}}}\n",
     "Application/a: spec.syncPolicy.syncOptions: must be a list, not a string"),
    (SET + "spec: [1]\n", "ApplicationSet/s: spec: must be an object, not a list"),
    (SET + "spec: {generators: [{list: {elements: x}}], template: {metadata: {name: a}, spec: {}}}\n",
     "ApplicationSet/s: spec.generators.list.elements: must be a list, not a string"),
    (SET + "spec: {generators: [{list: {elements: [x]}}], template: {metadata: {name: a}, spec: {}}}\n",
     "ApplicationSet/s: spec.generators.list.elements[0]: must be an object, not a string"),
    (SET + "spec: {generators: [{list: x}], template: {metadata: {name: a}, spec: {}}}\n",
     "ApplicationSet/s: spec.generators.list: must be an object, not a string"),
    (SET + "spec: {generators: [{clusters: {selector: x}}], template: {spec: {}}}\n",
     "ApplicationSet/s: spec.generators.clusters.selector: must be an object, not a string"),
    (SET + "spec: {generators: [{clusters: {values: [1]}}], template: {spec: {}}}\n",
     "ApplicationSet/s: spec.generators.clusters.values: must be an object, not a list"),
    (SET + "spec: {generators: [{matrix: {generators: x}}], template: {spec: {}}}\n",
     "ApplicationSet/s: spec.generators.matrix.generators: must be a list, not a string"),
    (SET + "spec: {generators: [{list: {elements: [{a: 1}]}}], template: {metadata: x, spec: {}}}\n",
     "ApplicationSet/s: spec.template.metadata: must be an object, not a string"),
    (SET + "spec: {generators: [{list: {elements: [{a: 1}]}}], template: {metadata: {}, spec: x}}\n",
     "ApplicationSet/s: spec.template.spec: must be an object, not a string"),
    (SET + "spec: {syncPolicy: x, generators: [], template: {}}\n",
     "ApplicationSet/s: spec.syncPolicy: must be an object, not a string"),
]


@pytest.mark.parametrize(("documents", "message"), MALFORMED)
def test_malformed_documents_are_400_naming_file_document_and_setting(groups: Any, admin_client: Any,
                                                                      documents: str, message: str) -> None:
    answer = admin_client.post(URL, {"files": [{"name": "apps/f.yaml", "content": "---\n" + documents}],
                                     "group": "prod"}, format="json")
    assert answer.status_code == 400, answer.content
    [text] = answer.json()["documents"]
    assert text.startswith(f"apps/f.yaml:2 {message}"), text
    assert not Repository.objects.exists() and not PathMapping.objects.exists()


def test_the_command_exits_non_zero_naming_the_setting(groups: Any, tmp_path: Path) -> None:
    path = tmp_path / "apps.yaml"
    path.write_text(APP + "spec: {source: {repoURL: 'https://git.example.com/r.git', path: x}, "
                    "destination: x}\n")
    with pytest.raises(CommandError) as refused:
        call_command("import_gitops", str(path), stdout=io.StringIO())
    assert str(refused.value) == f"{path}:1 Application/a: spec.destination: must be an object, not a string"
    assert not Repository.objects.exists()


VALID = [
    APP + """spec:
  project: default
  source:
    repoURL: https://git.example.com/org/apps.git
    targetRevision: main
    path: web
    directory: {recurse: true, include: '*.yaml'}
    helm: {releaseName: web, values: 'a: 1', valuesObject: {b: [1, 2]}, parameters: [{name: c.d, value: '3'}],
           valueFiles: [v.yaml]}
  destination: {name: c1, namespace: web}
  syncPolicy: {automated: {prune: true, selfHeal: true}, syncOptions: [CreateNamespace=true]}
""",
    SET + """spec:
  generators:
  - matrix:
      generators:
      - list: {elements: [{env: prod, n: {x: 1}}, {env: dev}]}
      - clusters: {selector: {matchLabels: {env: prod}}, values: {tier: gold}}
  template:
    metadata: {name: '{{env}}-{{name}}'}
    spec:
      source: {repoURL: 'https://git.example.com/org/apps.git', targetRevision: main, path: 'envs/{{env}}'}
      destination: {server: '{{server}}', namespace: '{{values.tier}}'}
      syncPolicy: {automated: {}}
""",
    """apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: r, namespace: flux-system}
spec: {url: 'https://git.example.com/org/flux.git', ref: {branch: main}, secretRef: {name: key}, interval: 1m}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: k, namespace: flux-system}
spec:
  sourceRef: {kind: GitRepository, name: r}
  path: ./apps
  targetNamespace: apps
  dependsOn: [{name: h}]
  postBuild: {substitute: {a: b}, substituteFrom: [{kind: Secret, name: vars}]}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: h, namespace: flux-system}
spec:
  chart: {spec: {chart: ./charts/h, sourceRef: {kind: GitRepository, name: r}}}
  values: {replicas: 2}
  valuesFrom: [{kind: ConfigMap, name: cm}]
""",
    """apiVersion: fleet.cattle.io/v1alpha1
kind: GitRepo
metadata: {name: g}
spec:
  repo: https://git.example.com/org/fleet.git
  branch: main
  paths: [web, db]
  targets: [{name: prod, clusterSelector: {matchLabels: {env: prod}}}, {clusterName: c1}]
  correctDrift: {enabled: true}
""",
]
SHAPES: list[Any] = ["x", 3, True, [], [1], {}, {"x": [1]}, None, [{"a": {"b": "c"}}], "{{path}}"]


def _mutations(data: Any, rng: random.Random) -> Any:
    """``data`` with one value somewhere replaced by a value of another shape."""
    if isinstance(data, dict) and data:
        key = rng.choice(sorted(data))
        out = dict(data)
        out[key] = rng.choice(SHAPES) if rng.random() < 0.4 else _mutations(data[key], rng)
        return out
    if isinstance(data, list) and data:
        i = rng.randrange(len(data))
        replaced = rng.choice(SHAPES) if rng.random() < 0.4 else _mutations(data[i], rng)
        return [*data[:i], replaced, *data[i + 1:]]
    return rng.choice(SHAPES)


@pytest.mark.parametrize("index", range(len(VALID)))
def test_fuzz_every_shape_is_planned_or_refused_with_a_message(index: int) -> None:
    """Replace values of valid documents by values of other shapes, many times: the plan is made, or the
    importer's own error names the file and the document. Never another exception (a 500)."""
    import yaml

    from fleet.sources.render.yamlsafe import load_documents

    env = Environment(clusters=[ClusterInfo("c1", "https://c1:6443", {"env": "prod"})], target_group="prod")
    docs = [d.data for d in load_documents(VALID[index], file="v.yaml")]
    make_plan([("v.yaml", VALID[index])], env)  # the unmutated documents plan
    rng = random.Random(1500 + index)
    refused = 0
    for _ in range(300):
        mutated = [_mutations(d, rng) if rng.random() < 0.7 else d for d in docs]
        text = yaml.safe_dump_all(mutated)
        try:
            make_plan([("m.yaml", text)], env)
        except ImportError_ as exc:
            refused += 1
            assert exc.message.startswith("m.yaml"), exc.message
    assert refused  # the shapes did reach the checks


# ----------------------------------------------------------------------------------- 5. CreateNamespace


def test_create_namespace_and_managed_metadata_become_the_mappings_options(groups: Any,
                                                                         admin_client: Any) -> None:
    doc = APP + """spec:
  source: {repoURL: 'https://git.example.com/org/apps.git', targetRevision: main, path: web}
  destination: {name: c1, namespace: web}
  syncPolicy:
    syncOptions: [CreateNamespace=true]
    managedNamespaceMetadata:
      labels: {team: web}
      annotations: {owner: platform}
"""
    answer = dry_run(admin_client, doc, "app.yaml")
    assert answer.status_code == 200, answer.json()
    assert not [f for f in answer.json()["unsupported"] if "amespace" in f["setting"]]
    [mapping] = answer.json()["mappings"]
    assert mapping["target_namespace"] == "web"
    assert (mapping["options"]["create_namespace"], mapping["options"]["namespace_labels"],
            mapping["options"]["namespace_annotations"]) == (True, {"team": "web"}, {"owner": "platform"})
