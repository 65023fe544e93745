"""The demo repository renders with the real renderers and tells its story under the real Rego engine."""

from __future__ import annotations

from pathlib import Path

from git import Repo

from fleet.demo import repository
from fleet.demo.content import STORY
from fleet.sources.git import RepositoryCache
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
from policies.gate import BoundPolicy, RenderedObject, TargetContext, evaluate_target

CLUSTERS = {
    "dev-eu-1": {"env": "dev", "region": "eu"},
    "prod-eu-1": {"env": "prod", "region": "eu"},
    "prod-us-1": {"env": "prod", "region": "us"},
}


def _render_all(tree_dir: Path, sha: str) -> dict[str, list[dict]]:
    tree = SourceTree(tree_dir)
    out: dict[str, list[dict]] = {}
    for name, labels in CLUSTERS.items():
        objects = []
        for path in ("apps/guestbook", "apps/podinfo", "charts/cache"):
            request = RenderRequest(
                path=path,
                cluster=ClusterContext(
                    name=name, labels=labels, group=labels["env"], repository="demo", commit=sha
                ),
            )
            objects += [o.body for o in render(tree, request).objects]
        out[name] = objects
    return out


def _policies(tree_dir: Path) -> list[BoundPolicy]:
    policies = []
    for rego in sorted((tree_dir / "policies").glob("*.rego")):
        policies.append(BoundPolicy.conftest(rego.stem, rego.stem, {rego.name: rego.read_text()}))
    template = (tree_dir / "policies/required-labels/template.yaml").read_text()
    constraint = (tree_dir / "policies/required-labels/constraint.yaml").read_text()
    policies.append(BoundPolicy.gatekeeper("required-labels", "required-labels", template, constraint))
    return policies


def test_the_story_passes_then_blocks_prod_only_then_passes(tmp_path: Path) -> None:
    shas = repository.create(tmp_path / "demo")
    assert len(shas) == len(STORY)
    assert repository.create(tmp_path / "demo") == []  # idempotent
    cache = RepositoryCache(tmp_path / "cache", 1, f"file://{tmp_path / 'demo'}")
    cache.fetch()
    outcomes = []
    for sha in shas:
        with cache.export(sha) as tree_dir:
            rendered = _render_all(Path(tree_dir), sha)
            policies = _policies(Path(tree_dir))
            step = {}
            for name, objects in rendered.items():
                context = TargetContext(
                    cluster=name, cluster_labels=CLUSTERS[name], group=CLUSTERS[name]["env"]
                )
                decision = evaluate_target([RenderedObject(o) for o in objects], policies, context)
                step[name] = decision.outcome.value
                if decision.outcome == "blocked":
                    assert any("prod needs at least 2" in v.message for v in decision.blocking)
            outcomes.append(step)
    assert outcomes[0] == {"dev-eu-1": "passed", "prod-eu-1": "passed", "prod-us-1": "passed"}
    assert outcomes[1] == {"dev-eu-1": "passed", "prod-eu-1": "blocked", "prod-us-1": "blocked"}
    assert outcomes[2] == outcomes[0]


def test_per_cluster_values_and_overlays(tmp_path: Path) -> None:
    repository.create(tmp_path / "demo", steps=1)
    sha = Repo(tmp_path / "demo").head.commit.hexsha
    rendered = _render_all(tmp_path / "demo", sha)

    def find(cluster: str, kind: str, name: str) -> dict:
        return next(o for o in rendered[cluster] if o["kind"] == kind and o["metadata"]["name"] == name)

    assert find("prod-eu-1", "Deployment", "cache")["spec"]["replicas"] == 3
    assert find("dev-eu-1", "Deployment", "cache")["spec"]["replicas"] == 1
    assert find("prod-us-1", "ConfigMap", "guestbook-settings")["data"] == {
        "cluster": "prod-us-1",
        "region": "us",
    }
    assert find("dev-eu-1", "Deployment", "podinfo")["metadata"]["labels"]["environment"] == "dev"
    assert find("prod-eu-1", "Deployment", "podinfo")["metadata"]["namespace"] == "podinfo"
