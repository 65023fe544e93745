"""A tree of Rancher Fleet bundles rendered for a fleet of clusters, against the raw tools' own work.

    .venv/bin/python -m bench render_tree                      # 200 bundles x 10 clusters
    .venv/bin/python -m bench render_tree -- --bundles 60 --clusters 4

A child process (its own SQLite database and git cache, ``bench.isolated``) builds a git repository of N
Fleet bundles, each a directory with a ``fleet.yaml`` and manifests, in three kinds taken in turn:

* ``plain``: three manifests; ``defaultNamespace``; a ``targetCustomizations`` entry for ``env=prod``
  clusters moves the bundle into another namespace;
* ``kustomize``: ``base/`` and two overlays ``envs/dev`` and ``envs/prod``; ``kustomize.dir`` picks dev, the
  ``prod`` target picks prod (Kustomize runs through ``kubectl kustomize``);
* ``overlay``: three manifests and Fleet's ``yaml.overlays`` for the ``prod`` target (a ``_patch`` file);

one mapping per bundle to a group of M clusters (half labelled ``env=prod``), and measures:

1. first: ``fetch_repository()`` on the first commit renders every bundle for every cluster (sources alone:
   the rollouts app's next stage is not wired);
2. one path: a commit touching 1 of the N bundles re-renders only that bundle (asserted: one mapping
   rendered, the others not even hashed again);
3. baseline, in the same run: what the tools themselves must do at least, without Fleetgate: every
   manifest file loaded with ``yaml.safe_load_all`` once per bundle and target, and ``kubectl kustomize``
   run once per kustomize bundle and overlay (dev and prod): no per-cluster work, no hashing, no database.

The ratio is Fleetgate's CPU (its process and the kubectl children it runs) over the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated

KINDS = ("plain", "kustomize", "overlay")


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={**os.environ, **isolated.GIT_ENV}, check=True,
                   capture_output=True)


def _manifests(name: str, rev: int = 0) -> dict[str, str]:
    return {
        "deployment.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: registry.example.com/{name}:1.{rev}
""",
        "service.yaml": f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - port: 80
""",
        "configmap.yaml": f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  level: info
  revision: "{rev}"
""",
    }


def bundle_files(i: int, rev: int = 0) -> dict[str, str]:
    """The files of bundle ``i`` (relative to its directory)."""
    name = f"app-{i:03d}"
    kind = KINDS[i % len(KINDS)]
    prod = "  - name: prod\n    clusterSelector: {matchLabels: {env: prod}}\n"
    if kind == "plain":
        return {"fleet.yaml": f"defaultNamespace: {name}\ntargetCustomizations:\n{prod}"
                              f"    namespace: {name}-prod\n", **_manifests(name, rev)}
    if kind == "overlay":
        return {"fleet.yaml": f"defaultNamespace: {name}\ntargetCustomizations:\n{prod}"
                              "    yaml: {overlays: [prod]}\n",
                "overlays/prod/configmap_patch.yaml": "data:\n  level: warn\n", **_manifests(name, rev)}
    base = {f"base/{k}": v for k, v in _manifests(name, rev).items()}
    return {
        "fleet.yaml": f"defaultNamespace: {name}\nkustomize: {{dir: envs/dev}}\ntargetCustomizations:\n{prod}"
                      "    kustomize: {dir: envs/prod}\n",
        **base,
        "base/kustomization.yaml": "resources: [deployment.yaml, service.yaml, configmap.yaml]\n",
        "envs/dev/kustomization.yaml": "resources: [../../base]\nnameSuffix: -dev\n",
        "envs/prod/kustomization.yaml": "resources: [../../base]\nnameSuffix: -prod\nreplicas:\n"
                                        f"- name: {name}\n  count: 3\n",
    }


def write_bundle(root: Path, i: int, rev: int = 0) -> None:
    for rel, text in bundle_files(i, rev).items():
        p = root / "bundles" / f"app-{i:03d}" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def baseline(root: Path, bundles: list[int], kubectl: str) -> dict[str, Any]:
    """The raw tools' work: YAML loads and kustomize builds once per bundle and target, no Fleetgate."""
    import yaml

    started, cpu = time.perf_counter(), _cpu()
    builds = loads = 0
    for i in bundles:
        d = root / "bundles" / f"app-{i:03d}"
        if KINDS[i % len(KINDS)] == "kustomize":
            for env in ("dev", "prod"):
                subprocess.run([kubectl, "kustomize", str(d / "envs" / env)], check=True, capture_output=True)
                builds += 1
        else:
            for _target in ("dev", "prod"):
                for f in sorted(d.glob("*.yaml")):
                    if f.name != "fleet.yaml":
                        list(yaml.safe_load_all(f.read_text()))
                        loads += 1
    return {"seconds": time.perf_counter() - started, "cpu": _cpu() - cpu, "kustomize_builds": builds,
            "yaml_loads": loads}


# --- child ------------------------------------------------------------------------------------------------


def child(n_bundles: int, n_clusters: int, workdir: Path) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts import pipeline
    from fleet.sources.models import MappingRender, PathMapping, RenderedManifest, Repository
    from fleet.sources.render import find_kubectl
    from fleet.sources.services import fetch_repository
    from fleet.sources.services.fetch import FetchStages, set_fetch_stages

    set_fetch_stages(FetchStages(commits_recorded=pipeline.commits_recorded))  # sources alone
    origin = workdir / "origin"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    for i in range(n_bundles):
        write_bundle(origin, i)
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "bundles")

    group = ClusterGroup.objects.create(name="fleet", selector={"matchLabels": {"bench": "yes"}})
    for j in range(n_clusters):
        Cluster.objects.create(name=f"c-{j:02d}", api_url=f"https://10.0.0.{j + 1}:6443", token="bench-token",
                               labels={"bench": "yes", "env": "prod" if j % 2 else "dev"})
    repo = Repository.objects.create(name="fleet", url=origin.as_uri())
    PathMapping.objects.bulk_create([
        PathMapping(repository=repo, name=f"app-{i:03d}", path=f"bundles/app-{i:03d}", cluster_group=group)
        for i in range(n_bundles)])

    def measure(label: str) -> dict[str, Any]:
        started, cpu = time.perf_counter(), _cpu()
        outcome = fetch_repository(repo)
        result = {"seconds": time.perf_counter() - started, "cpu": _cpu() - cpu,
                  "mappings": len(outcome.renders), "renders": sum(r.rendered for r in outcome.renders),
                  "reused": sum(r.reused for r in outcome.renders),
                  "failed": [r.error for r in outcome.renders if r.status == "failed"][:3]}
        if not outcome.ok or result["failed"]:
            raise RuntimeError(f"{label}: {outcome.error or result['failed']}")
        return result

    first = measure("first")
    manifests = RenderedManifest.objects.count()
    # what the prod clusters received: the target customizations applied (namespace, overlay, patch)
    prod = {m.mapping.name: m.resources for m in RenderedManifest.objects.filter(cluster__name="c-01")
            .select_related("mapping")}
    checks = {
        "app-000": any(o["namespace"] == "app-000-prod" for o in prod["app-000"]),
        "app-001": {o["name"] for o in prod["app-001"]} >= {"app-001-prod"},
        "app-002": any(o["object"].get("data", {}).get("level") == "warn" for o in prod["app-002"]),
    }
    if not all(checks.values()):
        raise RuntimeError(f"prod customizations not applied: {checks}")
    touched = 4  # a kustomize bundle: its base changes
    write_bundle(origin, touched, rev=1)
    _git(origin, "commit", "-q", "-am", "touch one bundle")
    one = measure("one path")
    rendered_again = list(MappingRender.objects.filter(commit__repository=repo).order_by("-id")
                          .values_list("mapping__name", flat=True)[:one["mappings"]])
    if one["mappings"] != 1 or rendered_again != [f"app-{touched:03d}"]:
        raise RuntimeError(f"a commit touching one bundle re-rendered {rendered_again}")
    kubectl = find_kubectl()
    return {
        "bundles": n_bundles, "clusters": n_clusters, "first": first, "one": one,
        "rendered_manifests": manifests,
        "rendered_manifests_added": RenderedManifest.objects.count() - manifests,
        "baseline_full": baseline(origin, list(range(n_bundles)), kubectl),
        "baseline_one": baseline(origin, [touched], kubectl),
        "load": os.getloadavg(),
    }


# --- parent -----------------------------------------------------------------------------------------------


def report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['bundles']} Fleet bundles (fleet.yaml; plain, kustomize overlays and yaml.overlays in turn, "
        f"each with a prod target customization) x {r['clusters']} clusters (half env=prod); SQLite; load "
        f"average {r['load'][0]:.2f} during the run.",
        "",
        "| run | wall | CPU (Fleetgate + kubectl) | mappings rendered | renders (reused) "
        "| baseline wall / CPU | ratio CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m, b in (("first fetch, every bundle", r["first"], r["baseline_full"]),
                        ("commit touching 1 bundle", r["one"], r["baseline_one"])):
        lines.append(
            f"| {label} | {m['seconds']:.2f} s | {m['cpu']:.2f} s | {m['mappings']} | {m['renders']} "
            f"({m['reused']}) | {b['seconds']:.2f} s / {b['cpu']:.2f} s ({b['kustomize_builds']} kustomize "
            f"builds, {b['yaml_loads']} YAML files) | {m['cpu'] / b['cpu']:.2f}x |")
    lines += ["", f"Rendered manifests stored: {r['rendered_manifests']} (first), "
                  f"{r['rendered_manifests_added']} added by the one-bundle commit."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench render_tree")
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.child:
        print(json.dumps(child(args.bundles, args.clusters, Path(args.workdir))))
        return
    with tempfile.TemporaryDirectory(prefix="fleetgate-bench-render-tree-") as tmp:
        work = Path(tmp)
        result = isolated.run("bench.bench_render_tree",
                              ["--child", "--bundles", str(args.bundles), "--clusters", str(args.clusters),
                               "--workdir", str(work)], isolated.env(work), name="bench render_tree")
    print(report(result))


if __name__ == "__main__":
    main(sys.argv[1:])
