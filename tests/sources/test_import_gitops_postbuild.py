"""Flux's postBuild variable substitution as a render step (fleet/sources/render/postbuild.py), with the
semantics of kustomize-controller's envsubst (fluxcd/pkg), and the mapping option that turns it on."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.render import ClusterContext, RenderError, RenderRequest, render
from fleet.sources.render.postbuild import envsubst, validate_variables

CTX = ClusterContext(name="staging-1", labels={"env": "staging"}, group="staging")


@pytest.mark.parametrize(("text", "expected"), [
    ("name: ${app}", "name: podinfo"),
    ("name: ${missing}", "name: "),  # non-strict: an undefined variable is empty
    ("tier: ${tier:=backend}", "tier: backend"),
    ("tier: ${tier:-backend}", "tier: backend"),
    ("tier: ${tier=backend}", "tier: backend"),
    ("tier: ${empty:=fallback}", "tier: fallback"),  # empty counts as unset
    ("tier: ${app:=other}", "tier: podinfo"),
    ("url: ${host:=${app}.local}", "url: podinfo.local"),  # a default may hold a variable
    ("literal: $${app}", "literal: ${app}"),  # $$ escapes
    ("shell: $HOME and $app", "shell: $HOME and $app"),  # no braces: text
    ("cost: $$5", "cost: $5"),
])
def test_envsubst_like_flux(text: str, expected: str) -> None:
    assert envsubst(text, {"app": "podinfo", "empty": ""}) == expected


@pytest.mark.parametrize("text", ["${#app}", "${app^^}", "${app:1:2}", "${app/a/b}", "${app"])
def test_envsubst_refuses_what_it_does_not_do_like_flux(text: str) -> None:
    with pytest.raises(RenderError):
        envsubst(text, {"app": "podinfo"})


def test_variable_names_are_checked_like_flux() -> None:
    assert validate_variables({"cluster_env": "a\nb"}) == {"cluster_env": "ab"}
    with pytest.raises(ValueError, match="var name is invalid"):
        validate_variables({"cluster-env": "x"})
    with pytest.raises(ValueError, match="must be a string"):
        validate_variables({"replicas": 2})


def _tree(root: Path) -> Path:
    files = {
        "apps/podinfo/kustomization.yaml": """\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources: [deploy.yaml, keep.yaml]
            """,
        "apps/podinfo/deploy.yaml": """\
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: podinfo-${cluster_env}
              labels: {env: "${cluster_env}"}
            spec:
              replicas: ${replicas:=1}
              template:
                spec:
                  containers:
                    - name: web
                      image: ghcr.io/stefanprodan/podinfo:${version:-6.0.0}
            """,
        "apps/podinfo/keep.yaml": """\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: script
              annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}
            data:
              run.sh: echo ${HOME}
            """,
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def test_render_substitutes_after_the_build_and_honours_disabled(tmp_path: Path) -> None:
    _tree(tmp_path)
    result = render(tmp_path, RenderRequest(path="apps/podinfo", cluster=CTX,
                                            postbuild={"cluster_env": "staging", "replicas": "3"}))
    objs = {o.kind: o.body for o in result.objects}
    deploy = objs["Deployment"]
    assert deploy["metadata"]["name"] == "podinfo-staging"
    assert deploy["metadata"]["labels"] == {"env": "staging"}
    assert deploy["spec"]["replicas"] == 3  # a number after substitution, as in Flux
    image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/stefanprodan/podinfo:6.0.0"
    assert objs["ConfigMap"]["data"]["run.sh"] == "echo ${HOME}"


def test_without_postbuild_nothing_is_substituted(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  env: ${cluster_env}\n")
    plain = render(tmp_path, RenderRequest(path="p", cluster=CTX))
    with_vars = render(tmp_path, RenderRequest(path="p", cluster=CTX, postbuild={"cluster_env": "dev"}))
    assert plain.objects[0].body["data"] == {"env": "${cluster_env}"}
    assert with_vars.objects[0].body["data"] == {"env": "dev"}
    assert plain.input_hash != with_vars.input_hash


def test_variables_may_name_the_cluster_and_flux_escapes_survive(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
        "data:\n  who: ${cluster}\n  env: ${env}\n  raw: $${cluster}\n")
    variables = {"cluster": "${cluster.name}", "env": "${cluster.labels.env}"}
    result = render(tmp_path, RenderRequest(path="p", cluster=CTX, postbuild=variables))
    assert result.objects[0].body["data"] == {"who": "staging-1", "env": "staging", "raw": "${cluster}"}
    prod = ClusterContext(name="prod-1", labels={"env": "prod"})
    other = render(tmp_path, RenderRequest(path="p", cluster=prod, postbuild=variables))
    assert other.objects[0].body["data"]["who"] == "prod-1"
    assert other.input_hash != result.input_hash


@pytest.mark.django_db
def test_the_mapping_option_through_the_api_and_the_render_pipeline(
        origin: Any, fleet: dict[str, Any], make_repository: Any, admin_client: Any) -> None:
    from fleet.sources.models import RenderedManifest
    from fleet.sources.services.fetch import fetch_repository

    origin.commit("cm", {"cm/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                       "data: {env: '${cluster_env:=dev}', raw: '$${cluster_env}'}\n"})
    repo = make_repository(origin)
    created = admin_client.post("/api/mappings/", {
        "repository": repo.pk, "name": "cm", "path": "cm", "cluster_group": fleet["staging"].pk,
        "postbuild": {"cluster-env": "x"}}, format="json")
    assert created.status_code == 400
    assert "var name is invalid" in str(created.json()["postbuild"])
    created = admin_client.post("/api/mappings/", {
        "repository": repo.pk, "name": "cm", "path": "cm", "cluster_group": fleet["staging"].pk,
        "postbuild": {"cluster_env": "staging"}}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["postbuild"] == {"cluster_env": "staging"}
    assert fetch_repository(repo).ok
    row = RenderedManifest.objects.get(mapping_id=created.json()["id"], cluster__name="st-1")
    assert row.resources[0]["object"]["data"] == {"env": "staging", "raw": "${cluster_env}"}
