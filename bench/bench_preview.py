"""Impact preview benchmark: a new deny policy replayed over a synthetic fleet's stored renders.

    .venv/bin/python -m bench preview                              # 1,000 clusters x 20 mappings
    .venv/bin/python -m bench preview -- --clusters 100 --mappings 5

In a scratch SQLite database: one cluster group, ``--clusters`` clusters, ``--mappings`` path mappings to the
group, one commit, and for every (mapping, cluster) a SyncedState at that commit and its stored render
(RenderedManifest, ``--objects`` objects: Deployments, some on ``:latest``, ConfigMaps, Services). Three
conftest policies are bound (deny, warn, deny); the proposal binds a fourth, new, deny policy to the group.

Measured in one run, on the same targets and objects:

1. raw gate: ``policies.gate.evaluate_target`` of the proposed policy set (the three bound policies and the
   new one) on each target's objects, with the waivers in force: what the gate itself costs for the same
   objects (the renders are already decoded, nothing is read from the database);
2. preview: ``policies.services.preview.compute`` (bindings, waivers and renders read from the database in
   chunks, today's and the proposed decisions, the diff, the report), without live reads (``live=False``):
   the live reads are the gate's own (``fleet.rollouts.ports.live_state``), measured per cluster by
   ``python -m bench gate`` (its "live reads" section), and here on a sample (``--live-clusters``, default
   10): a second, small fleet of sandbox clusters (in their own process) holding every target's objects,
   previewed with and without the reads; the difference per target is the reads' cost.

Printed: targets, wall and CPU seconds (this process plus the regorus pool's worker processes), per-target
cost, and the ratio preview / raw gate. The preview evaluates the unchanged policies once per target and the
changed one on each side, so its ratio to the raw gate is about 1 plus the renders' decoding and the report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

NO_LATEST = """package main
import rego.v1
deny contains msg if {
    input.kind == "Deployment"
    some c in input.spec.template.spec.containers
    endswith(c.image, ":latest")
    msg := sprintf("%s uses a latest image", [input.metadata.name])
}
"""
REQUESTS = """package main
import rego.v1
warn contains msg if {
    input.kind == "Deployment"
    some c in input.spec.template.spec.containers
    not c.resources.requests.cpu
    msg := sprintf("%s: container %s has no cpu request", [input.metadata.name, c.name])
}
"""
LABELS = """package main
import rego.v1
deny contains msg if {
    not input.metadata.labels.app
    msg := sprintf("%s %s has no app label", [input.kind, input.metadata.name])
}
"""
NEW_POLICY = """package main
import rego.v1
deny contains msg if {
    input.kind == "Deployment"
    input.spec.replicas < 2
    msg := sprintf("%s runs %d replica(s), 2 are required", [input.metadata.name, input.spec.replicas])
}
"""


def _objects(i: int, count: int, namespace: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(count):
        name = f"app-{n}"
        if n % 3 == 0:
            obj: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "spec": {
                    "replicas": 1 + (i + n) % 3,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "nginx:latest" if (i + n) % 7 == 0 else "nginx:1.27",
                                    "resources": {"requests": {"cpu": "100m"}} if n % 2 else {},
                                }
                            ]
                        },
                    },
                },
            }
        elif n % 3 == 1:
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "data": {"key": str(i)},
            }
        else:
            obj = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
            }
        out.append(obj)
    return out


def build_fleet(*, clusters: int, mappings: int, prefix: str = "b", objects: int = 5) -> Any:
    """Synthetic rows: a group of ``clusters`` clusters, ``mappings`` mappings, a synced commit with a stored
    render per target, three bound policies; returns the proposal (a new deny policy bound to the group)."""
    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts.models import SyncedState
    from fleet.sources.models import Commit, MappingRender, PathMapping, RenderedManifest, Repository
    from policies.models import PolicyBinding
    from policies.services import preview as pv
    from policies.services.definitions import PolicyDefinition, save_policy

    group = ClusterGroup.objects.create(name=f"{prefix}-fleet", selector={"matchLabels": {"fleet": prefix}})
    repo = Repository.objects.create(name=f"{prefix}-apps", url="file:///nonexistent", branch="main")
    commit = Commit.objects.create(repository=repo, sha=f"{abs(hash(prefix)):x}".ljust(40, "0")[:40])
    rows = [
        Cluster(name=f"{prefix}-c{i}", api_url=f"https://{prefix}-c{i}.invalid", labels={"fleet": prefix})
        for i in range(clusters)
    ]
    made = Cluster.objects.bulk_create(rows, batch_size=500)
    maps = [
        PathMapping.objects.create(
            repository=repo, name=f"{prefix}-m{m}", path=f"apps/m{m}", cluster_group=group
        )
        for m in range(mappings)
    ]
    for m, mapping in enumerate(maps):
        render = MappingRender.objects.create(commit=commit, mapping=mapping, status="ok")
        manifests = []
        states = []
        for i, cluster in enumerate(made):
            ns = f"ns-{m}"
            resources = [
                {
                    "apiVersion": o["apiVersion"],
                    "kind": o["kind"],
                    "name": o["metadata"]["name"],
                    "namespace": ns,
                    "source": f"apps/m{m}/{o['metadata']['name']}.yaml",
                    "document": 0,
                    "object": o,
                }
                for o in _objects(i + m, objects, ns)
            ]
            manifests.append(
                RenderedManifest(
                    commit=commit,
                    mapping=mapping,
                    cluster=cluster,
                    mapping_render=render,
                    namespace=ns,
                    resources=resources,
                    object_count=len(resources),
                )
            )
            states.append(SyncedState(mapping=mapping, cluster=cluster, commit=commit))
        RenderedManifest.objects.bulk_create(manifests, batch_size=500)
        SyncedState.objects.bulk_create(states, batch_size=500)
    for name, source, enforcement in (
        ("no-latest", NO_LATEST, "deny"),
        ("requests", REQUESTS, "warn"),
        ("labels", LABELS, "deny"),
    ):
        definition = PolicyDefinition(style="conftest", modules=((f"{name}.rego", source),))
        policy = save_policy(f"{prefix}-{name}", definition).policy
        PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement=enforcement)
    new = PolicyDefinition(style="conftest", modules=(("replicas.rego", NEW_POLICY),))
    return pv.Proposal(None, f"{prefix}-replicas", new.as_content(), pv.BindingChange(None, group.pk, "deny"))


def _setup_django(workdir: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["FLEETGATE_VAR_DIR"] = str(workdir / "var")
    os.environ["FLEETGATE_LOG_LEVEL"] = "WARNING"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _cpu(pids: list[int]) -> float:
    """CPU seconds of this process and the given (pool worker) processes."""
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _pool_pids() -> list[int]:
    try:
        from policies.engine import regorus_pool
    except ImportError:
        return []
    pids: list[int] = []
    for pool in list(regorus_pool._POOLS.values()):
        with pool._cond:  # the pool exposes no list of its workers (as bench_gate reads it)
            workers = [*pool._idle, *pool._busy]
        pids += [w.proc.pid for w in workers if w.proc.poll() is None]
    return pids


def raw_gate(proposal: Any) -> int:
    """The gate on the proposed policy set, per target, on the same decoded objects: the baseline."""
    from fleet.rollouts.models import SyncedState
    from fleet.sources.models import PathMapping, RenderedManifest
    from policies import gate
    from policies.engine import get_engine
    from policies.services.definitions import PolicyDefinition, definition_of
    from policies.services.evaluation import (
        bindings_in_scope,
        gate_waivers,
        rendered_objects,
        target_context,
    )
    from policies.services.preview import Proposal

    assert isinstance(proposal, Proposal)
    engine = get_engine()
    group_id = proposal.binding.cluster_group_id if proposal.binding else None
    policies: list[gate.BoundPolicy] = []
    for b in bindings_in_scope(group_id):
        version = b.pinned_version or b.policy.current
        policies += definition_of(version).bound(b.policy_id, b.policy.name, b.enforcement or None)
    policies += PolicyDefinition.from_content(proposal.content or {}).bound(
        "new", proposal.policy_name, "deny"
    )
    mappings = {
        m.pk: m
        for m in PathMapping.objects.filter(cluster_group_id=group_id).select_related(
            "cluster_group", "repository"
        )
    }
    states = {
        (s.mapping_id, s.cluster_id): s
        for s in SyncedState.objects.filter(mapping_id__in=list(mappings)).select_related("cluster", "commit")
    }
    manifests = list(
        RenderedManifest.objects.filter(mapping_id__in=list(mappings)).values_list(
            "mapping_id", "cluster_id", "resources", "namespace"
        )
    )
    decoded = [(m, c, rendered_objects(r), ns) for m, c, r, ns in manifests]  # decoded before timing
    waivers = gate_waivers([], "")
    for m, c, objects, _ns in decoded[:5]:  # warm: the engine prepares each policy set once
        s = states[(m, c)]
        gate.evaluate_target(objects, policies, target_context(mappings[m], s.cluster, s.commit), waivers)
    start_cpu, start = _cpu(_pool_pids()), time.perf_counter()
    for m, c, objects, ns in decoded:
        s = states[(m, c)]
        ctx = target_context(mappings[m], s.cluster, s.commit, namespace=ns)
        gate.evaluate_target(objects, policies, ctx, waivers, engine=engine)
    raw_gate.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    raw_gate.cpu = _cpu(_pool_pids()) - start_cpu  # type: ignore[attr-defined]
    return len(decoded)


def live_sample(clusters: int, mappings: int, objects: int) -> dict[str, float]:
    """The live reads' cost: a small fleet of ``clusters`` sandbox clusters (in their own process, so their
    CPU is the clusters', not Fleetgate's) holding every target's objects, previewed with and without the
    live reads. Returns ms per target for each and the difference (the reads, per target)."""
    import secrets

    from bench.bench_connector import start_sandbox
    from clusters.connector import ClusterCredentials, Connector
    from clusters.models import Cluster
    from fleet.rollouts import ports
    from fleet.sources.models import RenderedManifest
    from policies.services import preview as pv

    proposal = build_fleet(clusters=clusters, mappings=mappings, prefix="live", objects=objects)
    token = secrets.token_urlsafe(16)
    proc, urls = start_sandbox(clusters, token)
    try:
        for cluster, url in zip(
            Cluster.objects.filter(name__startswith="live-").order_by("pk"), urls, strict=True
        ):
            cluster.api_url, cluster.token = url, token
            cluster.save()
            manifests = RenderedManifest.objects.filter(cluster=cluster).select_related("mapping__repository")
            with Connector(ClusterCredentials(name=cluster.name, server=url, token=token)) as kube:
                for m in manifests:
                    objs = [r["object"] for r in m.resources]
                    seed = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": m.namespace}}]
                    result = kube.apply(seed + objs, mapping=ports.mapping_key(m.mapping))
                    assert result.ok, [r.message for r in result.results if r.failed][:3]
        pv.compute(proposal, live=True)  # warm: discovery, connection pools
        out: dict[str, float] = {}
        for live in (False, True):
            start = time.perf_counter()
            report = pv.compute(proposal, live=live)
            out["live" if live else "stored"] = 1000 * (time.perf_counter() - start) / clusters / mappings
            assert report["counts"]["unreachable"] == 0, report["counts"]
        out["reads"] = out["live"] - out["stored"]
        return out
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench preview")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--mappings", type=int, default=20)
    parser.add_argument("--objects", type=int, default=5, help="objects per target")
    parser.add_argument(
        "--live-clusters", type=int, default=10, help="sandbox clusters for the live reads' sample (0: none)"
    )
    args = parser.parse_args(argv or [])
    workdir = Path(tempfile.mkdtemp(prefix="fleetgate-bench-preview-"))
    _setup_django(workdir)
    from django.core.management import call_command

    from policies.engine import get_engine
    from policies.services import preview as pv

    call_command("migrate", verbosity=0)
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load}")
    print(f"engine: {get_engine().name}")
    t = time.perf_counter()
    proposal = build_fleet(clusters=args.clusters, mappings=args.mappings, objects=args.objects)
    print(f"built {args.clusters} clusters x {args.mappings} mappings in {time.perf_counter() - t:.1f}s")

    targets = raw_gate(proposal)
    raw_s, raw_cpu = raw_gate.seconds, raw_gate.cpu  # type: ignore[attr-defined]
    start_cpu, start = _cpu(_pool_pids()), time.perf_counter()
    report = pv.compute(proposal, live=False)
    wall = time.perf_counter() - start
    cpu = _cpu(_pool_pids()) - start_cpu
    counts = report["counts"]
    assert counts["targets"] == targets, (counts, targets)
    print(f"targets: {targets} ({targets * args.objects} objects); {pv.summary_text(counts)}")
    print(f"raw gate: {raw_s:.2f}s wall, {raw_cpu:.2f}s CPU, {1000 * raw_s / targets:.2f} ms/target")
    print(f"preview:  {wall:.2f}s wall, {cpu:.2f}s CPU, {1000 * wall / targets:.2f} ms/target")
    print(f"ratio preview/raw gate: {wall / raw_s:.2f} wall, {cpu / raw_cpu if raw_cpu else 0:.2f} CPU")
    if args.live_clusters:
        sample = live_sample(args.live_clusters, args.mappings, args.objects)
        print(
            f"live reads (sample: {args.live_clusters} sandbox clusters x {args.mappings} mappings, every "
            f"object present, so each is an UPDATE): preview {sample['live']:.2f} ms/target with the reads, "
            f"{sample['stored']:.2f} without; the reads {sample['reads']:.2f} ms/target"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
