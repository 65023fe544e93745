"""Resource exhaustion while rendering, and objects Kubernetes itself would refuse.

A repository is input from whoever can push to it.  A YAML alias bomb ("billion laughs"), a document
nested thousands of levels deep, a huge file, tens of thousands of objects, a Helm chart that expands into
gigabytes or a compressed subchart that decompresses into one must fail that render with a clear error
(file, line where known) and take nothing else down: other mappings still render, the last good render
stays.  Objects that break Kubernetes' own metadata limits (a 100 KB label value, a 64-character label
name, 300 KiB of annotations, a name of 254 characters) fail the render too, instead of passing the
policy gate and failing half-way through a rollout.

Peers had this class: Helm CVE-2025-32386 (a chart archive that decompresses into a huge file exhausted
memory) and CVE-2025-32387 (a deeply nested JSON schema overflowed the stack); Flux kustomize-controller
CVE-2022-24878 (denial of service through Kustomization files); Argo CD had several 2022-2024 advisories
about its repo-server being exhausted by large or crafted manifests and Helm charts; Kubernetes' own
CVE-2019-11253 (YAML/JSON "billion laughs" parsing in kube-apiserver).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.choices import RenderStatus
from fleet.sources.git import RepositoryCache
from fleet.sources.models import MappingRender, RenderedManifest
from fleet.sources.render import ClusterContext, RenderError, RenderRequest, RenderResult, render
from fleet.sources.services import fetch_repository
from tests.sources.origin import (  # noqa: F401 - fixtures used by the tests below
    Origin,
    _git_cache,
    configmap,
    fleet,
    make_mapping,
    make_repository,
    origin,
)

CTX = ClusterContext(name="eu-1", labels={"env": "prod"}, group="prod", repository="r", commit="0" * 40)
CHART = "apiVersion: v2\nname: app\nversion: 0.1.0\n"

BILLION_LAUGHS = "\n".join([
    "apiVersion: v1",
    "kind: ConfigMap",
    "metadata:",
    "  name: lol",
    "data:",
    '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *[f"  {c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)],
]) + "\n"


def commit(origin: Origin, files: dict[str, str | bytes]) -> str:  # noqa: F811
    for rel, content in files.items():
        p = origin.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        origin.git("add", rel)
    return origin.commit("tree")


@pytest.fixture
def export(origin: Origin, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    cache = RepositoryCache(tmp_path / "cache", "exhaustion", origin.url)
    opened: list[Any] = []

    def run(sha: str) -> Path:
        cache.fetch()
        ctx = cache.export(sha)
        opened.append(ctx)
        return ctx.__enter__()

    yield run
    for ctx in opened:
        ctx.__exit__(None, None, None)


def render_path(tree: Path, path: str, **kwargs: Any) -> RenderResult:
    return render(tree, RenderRequest(path=path, cluster=CTX, **kwargs))


def refused(tree: Path, path: str) -> RenderError:
    with pytest.raises(RenderError) as caught:
        render_path(tree, path)
    return caught.value


def obj(kind: str = "ConfigMap", name: str = "cm", meta: str = "", body: str = "") -> str:
    return f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n{meta}{body}"


# --------------------------------------------------------------------------- YAML bombs and sizes


def test_yaml_bombs_huge_files_and_deep_nesting_fail_with_file_and_line(
    origin: Origin, export: Any  # noqa: F811
) -> None:
    deep_block = obj(body="data:\n") + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(150)) + \
        "  " * 151 + "x\n"
    deep_flow = obj(body="data:\n  x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    aliases = obj(body="data:\n  a: &a x\n  b: [" + ",".join(["*a"] * 200) + "]\n")
    recursive = "a: &a [*a]\n"
    huge_document = obj(body="data:\n  big: " + "x" * (2 * 1024 * 1024 + 10) + "\n")
    huge_file = "---\n".join(obj(name=f"cm-{i}", body="data:\n  v: " + "y" * 1_100_000 + "\n")
                             for i in range(8))
    sha = commit(origin, {
        "bomb/laughs.yaml": BILLION_LAUGHS,
        "deep/block.yaml": deep_block,
        "flow/deep.yaml": deep_flow,
        "aliases/many.yaml": aliases,
        "recursive/self.yaml": recursive,
        "document/huge.yaml": huge_document,
        "file/huge.yaml": huge_file,
    })
    tree = export(sha)
    expected = {
        "bomb": ("bomb/laughs.yaml", "refused YAML: aliases expand to more than"),
        "deep": ("deep/block.yaml", "nested more than 100 levels"),
        "flow": ("flow/deep.yaml", "nesting depth"),
        "aliases": ("aliases/many.yaml", "more than 100 aliases"),
        "recursive": ("recursive/self.yaml", "recursive alias"),
        "document": ("document/huge.yaml", "document is larger than the limit"),
        "file": ("file/huge.yaml", "more than the limit of 8388608"),
    }
    for path, (file, message) in expected.items():
        error = refused(tree, path)
        assert error.file == file and message in error.message, (path, error)
        if path in ("bomb", "deep", "aliases"):
            assert error.line is not None and error.line > 1


def test_too_many_objects_and_too_many_bytes_in_one_render_are_refused(
    origin: Origin, export: Any  # noqa: F811
) -> None:
    many = "---\n".join(obj(name=f"cm-{i}") for i in range(10_001))
    big_value = "z" * (2 * 1024 * 1024 - 200)
    chunk = "---\n".join(obj(name=f"cm-{i}", body=f"data:\n  v: {big_value}\n") for i in range(3))
    files: dict[str, str | bytes] = {"many/objects.yaml": many}
    files.update({f"bytes/part-{i:02d}.yaml": chunk.replace("cm-", f"cm{i}-") for i in range(11)})
    tree = export(commit(origin, files))
    error = refused(tree, "many")
    assert "rendered 10001 objects, more than the limit of 10000" in error.message
    error = refused(tree, "bytes")
    assert "more than 67108864 bytes together" in error.message and error.file.startswith("bytes/part-")


def test_helm_charts_that_expand_too_far_are_refused(origin: Origin, export: Any) -> None:  # noqa: F811
    loop = ("{{ range $i := until 10001 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: cm-{{ $i }}\n{{ end }}\n")
    repeat = obj(body='data:\n  big: {{ "x" | repeat 9000000 | quote }}\n')
    deep_values = "a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(120)) + "  " * 121 + "v: 1\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("sub/Chart.yaml", b"apiVersion: v2\nname: sub\nversion: 0.1.0\n"),
                           ("sub/templates/big.txt", b"a" * (6 * 1024 * 1024))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert len(archive.getvalue()) < 64 * 1024  # small in git, 6 MiB once decompressed
    sha = commit(origin, {
        "loop/Chart.yaml": CHART, "loop/templates/cms.yaml": loop,
        "repeat/Chart.yaml": CHART, "repeat/templates/big.yaml": repeat,
        "values/Chart.yaml": CHART, "values/values.yaml": deep_values,
        "values/templates/cm.yaml": obj(body="data:\n  deep: {{ toJson .Values.a }}\n"),
        "tgz/Chart.yaml": CHART + "dependencies:\n  - name: sub\n    version: 0.1.0\n    repository: file://sub\n",
        "tgz/charts/sub-0.1.0.tgz": archive.getvalue(),
    })
    tree = export(sha)
    assert "more than the limit of 10000" in refused(tree, "loop").message
    error = refused(tree, "repeat")
    assert error.file == "repeat/templates/big.yaml" and "more than the limit of 8388608" in error.message
    error = refused(tree, "values")
    assert error.file == "values/templates/cm.yaml" and "nested more than 100 levels" in error.message
    error = refused(tree, "tgz")
    assert error.file == "tgz/Chart.yaml" and "larger than the maximum file size" in error.message


def diamond(levels: int, fan_out: int, base_bytes: int) -> dict[str, str | bytes]:
    """Overlays of overlays: level N includes ``fan_out`` prefixed copies of level N-1, down to a base."""
    files: dict[str, str | bytes] = {
        "d/base/kustomization.yaml": "resources: [cm.yaml]\n",
        "d/base/cm.yaml": obj(body="data:\n  v: " + "x" * base_bytes + "\n"),
    }
    below = "base"
    for level in range(1, levels + 1):
        files[f"d/l{level}/kustomization.yaml"] = "resources:\n" + "".join(
            f"  - ../l{level}-{i}\n" for i in range(fan_out))
        for i in range(fan_out):
            files[f"d/l{level}-{i}/kustomization.yaml"] = f"namePrefix: p{i}-\nresources:\n  - ../{below}\n"
        below = f"l{level}"
    return files


def test_kustomize_bases_included_through_too_many_paths_are_refused_before_kustomize_runs(
    origin: Origin, export: Any  # noqa: F811
) -> None:
    """Ten overlays of ten overlays of ten overlays of one base: Kustomize would build the base a
    thousand times (minutes and gigabytes); two levels of a 3 MB base would read 300 MB."""
    files = {**diamond(3, 10, 100), **{f"big/{k.removeprefix('d/')}": v
                                        for k, v in diamond(2, 10, 3_000_000).items()}}
    tree = export(commit(origin, files))
    error = refused(tree, "d/l3")
    assert error.file == "d/l3/kustomization.yaml"
    assert "build more than 1000 kustomizations" in error.message
    error = refused(tree, "big/l2")
    assert "read more than 268435456 bytes" in error.message
    assert len(render_path(tree, "d/l2").objects) == 100  # a hundred copies are fine


# --------------------------------------------------------------------------- Kubernetes' metadata limits


LIMIT_CASES = {
    "label-value-100k": (obj(meta="  labels:\n    team: " + "v" * 100_000 + "\n"),
                         "100000 characters, more than Kubernetes' 63"),
    "label-value-64": (obj(meta="  labels:\n    team: " + "v" * 64 + "\n"), "more than Kubernetes' 63"),
    "label-value-chars": (obj(meta="  labels:\n    team: 'a b'\n"), "must consist of letters"),
    "label-value-int": (obj(meta="  labels:\n    replicas: 3\n"), "must be a string"),
    "label-key-name": (obj(meta="  labels:\n    " + "k" * 64 + ": x\n"), "the name part is 64 characters"),
    "label-key-prefix": (obj(meta="  labels:\n    " + "p" * 254 + ".io/x: y\n"), "prefix before '/'"),
    "label-key-chars": (obj(meta="  labels:\n    'bad key': y\n"), "must consist of letters"),
    "annotation-key": (obj(meta="  annotations:\n    'Example.com/x': y\n"), "prefix before '/'"),
    "annotations-total": (obj(meta="  annotations:\n    a: " + "a" * 140_000 + "\n    b: " + "b" * 140_000
                              + "\n"), "more than Kubernetes' 262144"),
    "annotation-int": (obj(meta="  annotations:\n    count: 3\n"), "must be a string"),
    "name-254": (obj(kind="MyThing", name="n" * 254), "254 characters, more than Kubernetes' 253"),
    "name-slash": (obj(kind="MyThing", name="a/b"), "may not be '.' or '..' or contain '/'"),
    "configmap-upper": (obj(name="Web"), "DNS-1123 subdomain"),
    "namespace-dot": (obj(kind="Namespace", name="team.a"), "DNS-1123 label"),
    "service-digit": (obj(kind="Service", name="1web"), "DNS-1035 label"),
    "cronjob-53": (obj(kind="CronJob", name="c" * 53), "more than Kubernetes' 52"),
    "namespace-field": (obj(meta="  namespace: Team_A\n"), "metadata.namespace"),
    "pod-template": ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
                     "    metadata:\n      labels:\n        app: " + "w" * 100 + "\n",
                     "spec.template.metadata.labels"),
}


def test_objects_breaking_kubernetes_metadata_limits_fail_the_render_with_file_and_line(
    origin: Origin, export: Any  # noqa: F811
) -> None:
    files: dict[str, str | bytes] = {
        f"limits/{name}/objects.yaml": obj(name="first-ok") + "---\n" + body.replace("name: cm", "name: cm2")
        for name, (body, _) in LIMIT_CASES.items()
    }
    tree = export(commit(origin, files))
    for name, (_, message) in LIMIT_CASES.items():
        error = refused(tree, f"limits/{name}")
        assert message in error.message, (name, error.message[:300])
        assert error.file == f"limits/{name}/objects.yaml" and error.document == 1
        assert error.line == 6, (name, error.line)  # the second document starts on line 6
        assert len(error.message) < 1000  # the offending 100 KB value is not echoed back


def test_metadata_within_the_limits_renders(origin: Origin, export: Any) -> None:  # noqa: F811
    ok = "---\n".join([
        obj(name="web.v1", meta="  labels:\n    app.kubernetes.io/name: web\n    empty: ''\n    v: "
            + "v" * 63 + "\n  annotations:\n    example.com/blob: " + "b" * 200_000 + "\n    note: '3'\n"),
        obj(kind="ClusterRole", name="system:controller:fleetgate"),
        obj(kind="MyThing", name="Mixed_Case.Name"),
        obj(kind="Namespace", name="team-a"),
        obj(kind="Service", name="web"),
        obj(kind="CronJob", name="c" * 52),
    ])
    result = render_path(export(commit(origin, {"fine/objects.yaml": ok})), "fine")
    assert len(result.objects) == 6


def test_kustomize_and_helm_output_is_held_to_the_same_limits(origin: Origin, export: Any) -> None:  # noqa: F811
    sha = commit(origin, {
        "k/kustomization.yaml": "resources: [cm.yaml]\nlabels:\n  - pairs:\n      team: " + "t" * 100 + "\n",
        "k/cm.yaml": obj(),
        "h/Chart.yaml": CHART,
        "h/templates/cm.yaml": obj(meta="  labels:\n    team: {{ .Values.team | quote }}\n"),
        "h/values.yaml": "team: " + "t" * 100 + "\n",
    })
    tree = export(sha)
    assert "more than Kubernetes' 63" in refused(tree, "k").message
    error = refused(tree, "h")
    assert error.file == "h/templates/cm.yaml" and "more than Kubernetes' 63" in error.message


# --------------------------------------------------------------------------- through the service


@pytest.mark.django_db
def test_a_bomb_fails_only_its_mapping_and_the_last_good_render_stays(
    origin: Origin, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]  # noqa: F811
) -> None:
    first = origin.commit("initial", {"apps/web/cm.yaml": configmap("web"),
                                      "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    api = make_mapping(repo, "api", "apps/api", fleet["prod"])
    assert fetch_repository(repo).ok

    label = configmap("web") + "---\n" + obj(name="labelled",
                                             meta="  labels:\n    team: " + "v" * 100_000 + "\n")
    bad_label = commit(origin, {"apps/web/cm.yaml": label, "apps/api/cm.yaml": configmap("api", "v: 2")})
    bomb = commit(origin, {"apps/web/bomb.yaml": BILLION_LAUGHS,
                           "apps/api/cm.yaml": configmap("api", "v: 3")})
    outcome = fetch_repository(repo)
    assert outcome.ok

    labelled = MappingRender.objects.get(commit__sha=bad_label, mapping=web)
    assert labelled.status == RenderStatus.FAILED
    assert labelled.error_file == "apps/web/cm.yaml" and labelled.error_line == 8
    assert "more than Kubernetes' 63" in labelled.error_message and len(labelled.error_message) < 1000
    bombed = MappingRender.objects.get(commit__sha=bomb, mapping=web)
    assert bombed.status == RenderStatus.FAILED and bombed.error_file == "apps/web/bomb.yaml"
    assert "refused YAML" in bombed.error_message
    for sha in (bad_label, bomb):
        assert not RenderedManifest.objects.filter(commit__sha=sha, mapping=web, status="ok").exists()
        assert MappingRender.objects.get(commit__sha=sha, mapping=api).status == RenderStatus.RENDERED
    web.refresh_from_db()
    api.refresh_from_db()
    assert web.last_rendered_sha == first and api.last_rendered_sha == bomb
    assert RenderedManifest.objects.filter(commit__sha=first, mapping=web, status="ok").count() == 2
