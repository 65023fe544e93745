"""Directory layouts of Flux and Argo CD: plain directories with nested kustomizations (Flux's
kustomize-controller), Argo CD's directory options (recurse, include/exclude), .sourceignore and the
renderers Fleetgate does not have (Jsonnet, config-management plugins)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.render import (
    ClusterContext,
    DirectoryOptions,
    RenderError,
    RenderRequest,
    SourceTree,
    compute_input_hash,
    detect_renderer,
    kustomize_dependencies,
    render,
)

CTX = ClusterContext(name="staging-1", labels={"env": "staging"}, group="staging",
                     repository="https://git.example.com/org/fleet.git", commit="c" * 40)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    return root


def cm(name: str, ns: str = "") -> str:
    meta = f"  namespace: {ns}\n" if ns else ""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{meta}"


def flux_ks(name: str, path: str) -> str:
    return f"""\
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: {name}
          namespace: flux-system
        spec:
          interval: 1h
          path: {path}
          prune: true
          sourceRef:
            kind: GitRepository
            name: flux-system
        """


def keys(result: Any) -> list[tuple[str, str, str]]:
    return [(o.kind, o.name, o.source) for o in result.objects]


def run(root: Path, path: str, **kw: Any) -> Any:
    return render(SourceTree(root), RenderRequest(path=path, cluster=CTX, **kw))


# A repository in the layout of fluxcd/flux2-kustomize-helm-example: clusters/<env> holds Flux
# Kustomizations as plain files and flux-system/ with its own kustomization.yaml (labels and a patch);
# apps/<env> are overlays of apps/base; a root .sourceignore excludes everything but the manifest trees.
KUSTOMIZE_HELM_EXAMPLE = {
    ".sourceignore": "# Flux ignore\n/*\n!/apps/\n!/clusters/\n!/infrastructure/\n",
    "scripts/validate.sh": "#!/bin/sh\n",
    "docs/values.yaml": "replicaCount: 1\n",
    "clusters/staging/apps.yaml": flux_ks("apps", "./apps/staging"),
    "clusters/staging/infrastructure.yaml": flux_ks("infra-controllers", "./infrastructure/controllers"),
    "clusters/staging/flux-system/gotk-components.yaml": """\
        apiVersion: v1
        kind: Namespace
        metadata:
          name: flux-system
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: kustomize-controller
          namespace: flux-system
        spec:
          selector: {matchLabels: {app: kustomize-controller}}
          template:
            metadata: {labels: {app: kustomize-controller}}
            spec:
              containers:
                - name: manager
                  image: ghcr.io/fluxcd/kustomize-controller:v1.5.0
                  args: [--watch-all-namespaces]
        """,
    "clusters/staging/flux-system/gotk-sync.yaml": flux_ks("flux-system", "./clusters/staging"),
    "clusters/staging/flux-system/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources:
          - gotk-components.yaml
          - gotk-sync.yaml
        labels:
          - pairs:
              toolkit.fluxcd.io/tenant: sre-team
        patches:
          - patch: |
              - op: add
                path: /spec/template/spec/containers/0/args/-
                value: --concurrent=20
            target:
              kind: Deployment
              name: "(kustomize-controller|helm-controller)"
        """,
    "apps/base/podinfo/kustomization.yaml": "resources: [namespace.yaml, release.yaml]\n",
    "apps/base/podinfo/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: podinfo\n",
    "apps/base/podinfo/release.yaml": """\
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: podinfo
          namespace: podinfo
        spec:
          chart: {spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}}
          values: {replicaCount: 1}
        """,
    "apps/staging/kustomization.yaml": """\
        resources: [../base/podinfo]
        patches:
          - path: podinfo-values.yaml
            target: {kind: HelmRelease}
        """,
    "apps/staging/podinfo-values.yaml": """\
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: podinfo
        spec:
          values: {replicaCount: 2}
        """,
}


def test_flux_cluster_directory_renders_plain_files_and_the_nested_kustomization(tmp_path: Path) -> None:
    root = write(tmp_path, KUSTOMIZE_HELM_EXAMPLE)
    assert detect_renderer(root, "clusters/staging") == "plain"
    result = run(root, "clusters/staging")
    assert keys(result) == [
        ("Namespace", "flux-system", "clusters/staging/flux-system"),
        ("Deployment", "kustomize-controller", "clusters/staging/flux-system"),
        ("Kustomization", "apps", "clusters/staging/apps.yaml"),
        ("Kustomization", "flux-system", "clusters/staging/flux-system"),
        ("Kustomization", "infra-controllers", "clusters/staging/infrastructure.yaml"),
    ]
    by_name = {o.name: o.body for o in result.objects}
    # the nested kustomization's own transformations applied to its objects only
    assert by_name["kustomize-controller"]["metadata"]["labels"] == {"toolkit.fluxcd.io/tenant": "sre-team"}
    assert by_name["kustomize-controller"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--watch-all-namespaces", "--concurrent=20"]
    assert "labels" not in by_name["apps"]["metadata"]
    # the overlay of the apps tree still renders through Kustomize
    apps = run(root, "apps/staging")
    assert apps.renderer == "kustomize"
    release = next(o for o in apps.objects if o.kind == "HelmRelease")
    assert release.body["spec"]["values"] == {"replicaCount": 2}


def test_nested_kustomization_files_are_not_read_twice_and_its_bases_are_watched(tmp_path: Path) -> None:
    # the layout of fluxcd/flux2-multi-tenancy: a cluster directory whose tenants/ overlay has a patch
    # file that is not a whole object, reading a base outside the mapped path
    root = write(tmp_path, {
        "clusters/production/tenants.yaml": flux_ks("tenants", "./tenants/production"),
        "clusters/production/tenants/kustomization.yaml": """\
            namespace: apps
            resources: [../../../tenants/base/dev-team]
            patches:
              - path: dev-team-patch.yaml
            configMapGenerator:
              - name: team-values
                files: [values.yaml]
            """,
        "clusters/production/tenants/dev-team-patch.yaml": """\
            apiVersion: v1
            kind: ServiceAccount
            metadata:
              name: dev-team
              labels: {tier: production}
            """,
        "clusters/production/tenants/values.yaml": "replicaCount: 3\n",  # not a manifest: a generator's input
        "clusters/production/tenants/inner/kustomization.yaml": "resources: [x.yaml]\n",
        "clusters/production/tenants/inner/x.yaml": cm("never-built-twice"),
        "tenants/base/dev-team/kustomization.yaml": "resources: [rbac.yaml]\n",
        "tenants/base/dev-team/rbac.yaml": """\
            apiVersion: v1
            kind: ServiceAccount
            metadata:
              name: dev-team
            """,
    })
    tree = SourceTree(root)
    result = render(tree, RenderRequest(path="clusters/production", cluster=CTX))
    kinds = sorted((o.kind, o.name.split("-")[0], o.namespace) for o in result.objects)
    assert kinds == [("ConfigMap", "team", "apps"), ("Kustomization", "tenants", "flux-system"),
                     ("ServiceAccount", "dev", "apps")]
    sa = next(o for o in result.objects if o.kind == "ServiceAccount")
    assert sa.body["metadata"]["labels"] == {"tier": "production"}
    # the inner kustomization is not listed by the outer one: Flux does not build it on its own either
    assert "never-built-twice" not in {o.name for o in result.objects}
    # a change to the base outside the mapped path changes the input hash and is watched
    assert kustomize_dependencies(tree, "clusters/production") == [
        "clusters/production", "clusters/production/tenants", "tenants/base/dev-team"]
    before = compute_input_hash(tree, RenderRequest(path="clusters/production", cluster=CTX))
    (root / "tenants/base/dev-team/rbac.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: dev-team\n  annotations: {a: b}\n")
    after = compute_input_hash(SourceTree(root), RenderRequest(path="clusters/production", cluster=CTX))
    assert before != after


def test_non_manifest_yaml_is_an_error_unless_flux_would_leave_it_out(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "app/deploy.yaml": cm("web"),
        "app/cloudbuild.yaml": "steps: []\n",  # Flux's default CI exclusions
        "app/.gitlab-ci.yml": "stages: [test]\n",
        "app/values/prod.yaml": "replicaCount: 2\n",
        "app/notes.yaml": "just: settings\n",
    })
    with pytest.raises(RenderError) as err:
        run(root, "app")
    assert err.value.file in ("app/notes.yaml", "app/values/prod.yaml")
    assert "apiVersion" in err.value.message
    # listed in .sourceignore files (gitignore syntax, scoped to their directory) they are left out
    write(root, {"app/.sourceignore": "values/\nnotes.yaml\n"})
    assert keys(run(root, "app")) == [("ConfigMap", "web", "app/deploy.yaml")]
    # a negation in a deeper .sourceignore wins over the root's pattern, as in go-git's matcher
    write(root, {".sourceignore": "/*\n!/app/\n", "app/values/.sourceignore": "!prod.yaml\n"})
    with pytest.raises(RenderError) as err:
        run(root, "app")
    assert err.value.file == "app/values/prod.yaml"


def test_argo_cd_directory_options_recurse_include_exclude(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "guestbook/a.yaml": cm("a"),
        "guestbook/b.yml": cm("b"),
        "guestbook/c.json": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}',
        "guestbook/sub/d.yaml": cm("d"),
        "guestbook/sub/deeper/e.yaml": cm("e"),
        "guestbook/skipped.yaml": cm("skipped") + "# +argocd:skip-file-rendering\n",
        "guestbook/other/kustomization.yaml": "resources: [f.yaml]\n",
        "guestbook/other/f.yaml": cm("f"),
    })

    def names(**opts: Any) -> list[str]:
        return [o.name for o in run(root, "guestbook", directory=DirectoryOptions(**opts)).objects]

    assert names() == ["a", "b", "c", "d", "e", "f"]  # Fleet/Flux: recursive, nested kustomization built
    assert names(recurse=False) == ["a", "b", "c"]  # Argo CD's default
    # Argo's brace syntax; '*' crosses '/' as in gobwas/glob without separators
    assert names(include="{a.yaml,sub/*.yaml}") == ["a", "d", "e"]
    assert names(include="*.yaml", exclude="sub/deeper/*") == ["a", "d", "f"]
    assert names(exclude="{*.json,other/*}") == ["a", "b", "d", "e"]
    assert names(recurse=False, include="*.y*ml") == ["a", "b"]
    tree = SourceTree(root)
    hashes = {compute_input_hash(tree, RenderRequest(path="guestbook", cluster=CTX, directory=d))
              for d in (DirectoryOptions(), DirectoryOptions(recurse=False),
                        DirectoryOptions(include="a.yaml"))}
    assert len(hashes) == 3
    with pytest.raises(RenderError, match="glob"):
        DirectoryOptions(include="a\nb")


@pytest.mark.parametrize(("files", "kind", "named"), [
    ({"app/main.jsonnet": "{}", "app/lib/util.libsonnet": "{}"}, "Jsonnet",
     ["app/lib/util.libsonnet", "app/main.jsonnet"]),
    ({"app/cm.yaml": cm("x"), "app/extra.jsonnet": "{}"}, "Jsonnet", ["app/extra.jsonnet"]),
    ({"app/helmfile.yaml": "releases: []\n"}, "Helmfile", ["app/helmfile.yaml"]),
    ({"app/.argocd-source.yaml": "plugin:\n  env: [{name: X, value: y}]\n", "app/x.ts": "//"},
     "config-management plugin", ["app/.argocd-source.yaml"]),
])
def test_unsupported_renderers_are_refused_by_name(tmp_path: Path, files: dict[str, str], kind: str,
                                                   named: list[str]) -> None:
    root = write(tmp_path, files)
    with pytest.raises(RenderError) as err:
        run(root, "app")
    assert err.value.message.startswith("unsupported renderer")
    assert kind in err.value.message
    for f in named:
        assert f in err.value.message
    assert err.value.renderer == "unsupported"


def test_jsonnet_excluded_by_the_mapping_or_outside_its_scope_is_not_an_error(tmp_path: Path) -> None:
    root = write(tmp_path, {"app/cm.yaml": cm("x"), "app/gen/main.jsonnet": "{}"})
    for options in (DirectoryOptions(recurse=False), DirectoryOptions(exclude="*.jsonnet")):
        assert [o.name for o in run(root, "app", directory=options).objects] == ["x"]
    with pytest.raises(RenderError, match="unsupported renderer: Jsonnet"):
        run(root, "app")


def test_fleetgate_yaml_sets_directory_options_unless_the_mapping_does(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "app/fleetgate.yaml": "directory:\n  recurse: false\n  exclude: 'b.yaml'\n",
        "app/a.yaml": cm("a"), "app/b.yaml": cm("b"), "app/sub/c.yaml": cm("c"),
    })
    assert [o.name for o in run(root, "app").objects] == ["a"]
    # the mapping's own options (anything but the defaults) win over the file's
    assert [o.name for o in run(root, "app", directory=DirectoryOptions(include="{a,sub/c}.yaml")).objects] \
        == ["a", "c"]
    for bad, message in (("directory: {recurse: 'no'}", "recurse must be true or false"),
                         ("directory: {depth: 2}", "recurse, include and/or exclude"),
                         ("directory: {include: 3}", "include must be a glob string")):
        write(root, {"app/fleetgate.yaml": bad + "\n"})
        with pytest.raises(RenderError, match=message) as err:
            run(root, "app")
        assert err.value.file == "app/fleetgate.yaml"


def test_directory_options_that_leave_out_every_manifest_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path, {"app/sub/a.yaml": cm("a"), "app/b.yaml": cm("b")})
    for options in (DirectoryOptions(include="*.yml"), DirectoryOptions(exclude="*"),
                    DirectoryOptions(recurse=False, exclude="b.yaml")):
        with pytest.raises(RenderError, match="leave out every manifest of app") as err:
            run(root, "app", directory=options)
        assert err.value.file in ("app/b.yaml", "app/sub/a.yaml")
    empty = write(tmp_path / "other", {"app/README.md": "# nothing to deploy\n"})
    assert run(empty, "app", directory=DirectoryOptions(include="*.yaml")).objects == ()  # nothing left out


@pytest.mark.django_db
def test_flux_cluster_path_through_fetches_watches_the_bases_its_nested_kustomization_reads(
        origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]) -> None:
    from fleet.sources.models import MappingRender, RenderedManifest
    from fleet.sources.services import fetch_repository

    files = {
        "clusters/production/tenants.yaml": textwrap.dedent(flux_ks("tenants", "./tenants/production")),
        "clusters/production/tenants/kustomization.yaml": "resources: [../../../tenants/base/dev-team]\n",
        "tenants/base/dev-team/kustomization.yaml": "namespace: apps\nresources: [rbac.yaml]\n",
        "tenants/base/dev-team/rbac.yaml": (
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: dev-team\n"),
        "other/cm.yaml": cm("other"),
    }
    origin.commit("tenants", files)
    repo = make_repository(origin)
    mapping = make_mapping(repo, "cluster", "clusters/production", fleet["prod"])
    assert fetch_repository(repo).ok
    mapping.refresh_from_db()
    assert mapping.watched_paths == ["tenants/base/dev-team"]
    stored = RenderedManifest.objects.get(mapping=mapping, cluster=fleet["clusters"]["eu-1"])
    assert sorted((o["kind"], o["name"], o["namespace"]) for o in stored.resources) == [
        ("Kustomization", "tenants", "flux-system"), ("ServiceAccount", "dev-team", "apps")]

    origin.commit("unrelated", {"other/cm.yaml": cm("other-2")})
    fetch_repository(repo)
    assert MappingRender.objects.filter(mapping=mapping).count() == 1  # not affected
    origin.commit("base changes", {"tenants/base/dev-team/rbac.yaml": (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: dev-team\n  labels: {team: dev}\n")})
    fetch_repository(repo)
    latest = MappingRender.objects.filter(mapping=mapping).latest("id")
    assert (latest.status, MappingRender.objects.filter(mapping=mapping).count()) == ("rendered", 2)
    eu = RenderedManifest.objects.get(mapping_render=latest, cluster=fleet["clusters"]["eu-1"])
    sa = next(o for o in eu.resources if o["kind"] == "ServiceAccount")
    assert sa["object"]["metadata"]["labels"] == {"team": "dev"}
