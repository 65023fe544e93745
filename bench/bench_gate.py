"""Policy gate benchmark: rendered objects x bound policies through the gate, against the engine alone.

    .venv/bin/python -m bench gate                                   # regorus 10,000 objects, OPA 2,000
    .venv/bin/python -m bench gate -- --objects 2000 --opa-objects 500 --engines regorus

For each engine, in one run, on the same 20 policies (saved through the services, bound through
PolicyBindings in a scratch SQLite database) and the same synthetic objects:

1. raw: each policy set prepared once, then the engine's ``evaluate_many`` on pre-encoded inputs (the
   objects for conftest, the Gatekeeper review inputs of the objects each Constraint matches), in one
   evaluation session with the same per-target data: the engine's own cost for the work;
2. gate: ``policies.services.evaluation.evaluate_targets`` (bindings and waivers loaded from the database,
   context, match, inventory, encoding, findings, waivers, decision), not stored; and the same with the
   Evaluation and Violation rows stored (``store``);
3. scaling: the gate over the same objects split into 1 and 2 targets, one worker process each
   (multiprocessing, spawn), timed from a barrier after every worker has loaded and prepared.

The ratio gate/raw is the gate's overhead. The 20 policies avoid inventory-wide O(n^2) rules (a
unique-ingress-host check compares every Ingress with every other and dominates any mix; measure such a
policy on its own).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_SERVER_PID: int | None = None  # the OPA server, whose CPU time counts as the engine's


def _cpu() -> float:
    """CPU seconds of this process plus the OPA server's: steadier than wall time on a shared machine."""
    total = time.process_time()
    if _SERVER_PID is not None:
        try:
            fields = Path(f"/proc/{_SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _setup_django(workdir: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["FLEETGATE_VAR_DIR"] = str(workdir / "var")
    os.environ["FLEETGATE_LOG_LEVEL"] = "WARNING"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --------------------------------------------------------------------------------------------- policies


def _template(name: str, kind: str, rego: str, schema: str = "") -> str:
    body = "\n".join("        " + line for line in rego.strip().splitlines())
    validation = f"\n      validation:\n        openAPIV3Schema:\n{schema}" if schema else ""
    return (
        f"apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: {name}\n"
        f"spec:\n  crd:\n    spec:\n      names:\n        kind: {kind}{validation}\n"
        f"  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n{body}\n"
    )


def _constraint(
    kind: str, name: str, params: str = "", kinds: str = '["Deployment"]', groups: str = '["apps"]'
) -> str:
    p = f"  parameters:\n{params}" if params else ""
    return (
        f"apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n"
        f"  match:\n    kinds:\n      - apiGroups: {groups}\n        kinds: {kinds}\n{p}"
    )


LABELS_SCHEMA = (
    "          type: object\n          properties:\n            labels:\n              type: array\n"
    "              items:\n                type: string\n"
)
LABELS = """package k8srequiredlabels
violation[{"msg": msg}] {
  provided := {l | input.review.object.metadata.labels[l]}
  required := {l | l := input.parameters.labels[_]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("missing labels: %v", [missing])
}"""
REPOS_SCHEMA = (
    "          type: object\n          properties:\n            repos:\n              type: array\n"
    "              items:\n                type: string\n"
)
REPOS = """package k8sallowedrepos
violation[{"msg": msg}] {
  c := input.review.object.spec.template.spec.containers[_]
  not startswith_any(c.image, input.parameters.repos)
  msg := sprintf("image %v is not from an allowed repository", [c.image])
}
startswith_any(s, prefixes) { startswith(s, prefixes[_]) }"""


def _gk_check(name: str, field_rule: str, msg: str) -> str:
    return f"""package {name}
violation[{{"msg": msg}}] {{
  c := input.review.object.spec.template.spec.containers[_]
  {field_rule}
  msg := sprintf("{msg}: %v", [c.name])
}}"""


def _conftest(rule: str, body: str, msg: str) -> str:
    return f"""package main
{rule}[msg] {{
  input.kind == "Deployment"
  {body}
  msg := sprintf("%s: {msg}", [input.metadata.name])
}}"""


def policy_specs() -> list[tuple[str, dict[str, Any]]]:
    conftest_rules = [
        (
            "no-latest",
            "deny_latest",
            'c := input.spec.template.spec.containers[_]\n  endswith(c.image, ":latest")',
            "uses :latest",
        ),
        (
            "replicas-prod",
            "deny_replicas",
            'data.fleetgate.context.cluster.labels.env == "prod"\n'
            '  object.get(input.spec, "replicas", 1) < 2',
            "needs 2 replicas in prod",
        ),
        ("no-host-network", "deny_hostnet", "input.spec.template.spec.hostNetwork == true", "host network"),
        ("no-host-pid", "deny_hostpid", "input.spec.template.spec.hostPID == true", "host PID"),
        (
            "probes",
            "warn_probes",
            "c := input.spec.template.spec.containers[_]\n  not c.readinessProbe",
            "no readiness probe",
        ),
        (
            "no-hostpath",
            "deny_hostpath",
            "v := input.spec.template.spec.volumes[_]\n  v.hostPath",
            "hostPath volume",
        ),
        (
            "run-as-nonroot",
            "deny_root",
            "not input.spec.template.spec.securityContext.runAsNonRoot",
            "must run as non-root",
        ),
        (
            "owner-annotation",
            "warn_owner",
            'not input.metadata.annotations["example.com/owner"]',
            "no owner annotation",
        ),
    ]
    specs: list[tuple[str, dict[str, Any]]] = []
    for name, rule, body, msg in conftest_rules:
        specs.append(
            (
                name,
                {
                    "style": "conftest",
                    "modules": [{"path": f"{name}.rego", "source": _conftest(rule, body, msg)}],
                },
            )
        )
    gk_checks = [
        ("k8sprivileged", "K8sPrivileged", "c.securityContext.privileged == true", "privileged"),
        ("k8smemlimits", "K8sMemLimits", "not c.resources.limits.memory", "no memory limit"),
        ("k8scpulimits", "K8sCpuLimits", "not c.resources.limits.cpu", "no cpu limit"),
        (
            "k8sescalation",
            "K8sEscalation",
            "c.securityContext.allowPrivilegeEscalation == true",
            "escalation",
        ),
        (
            "k8sreadonlyfs",
            "K8sReadOnlyFs",
            "not c.securityContext.readOnlyRootFilesystem",
            "writable root fs",
        ),
        ("k8scaps", "K8sCaps", 'c.securityContext.capabilities.add[_] == "SYS_ADMIN"', "SYS_ADMIN"),
    ]
    for name, kind, rule, msg in gk_checks:
        specs.append(
            (
                name,
                {
                    "style": "gatekeeper",
                    "template": _template(name, kind, _gk_check(name, rule, msg)),
                    "constraints": [_constraint(kind, f"{name}-all")],
                },
            )
        )
    labels_tpl = _template("k8srequiredlabels", "K8sRequiredLabels", LABELS, LABELS_SCHEMA)
    for i, label in enumerate(["team", "app", "tier", "cost-center"]):
        specs.append(
            (
                f"labels-{i}",
                {
                    "style": "gatekeeper",
                    "template": labels_tpl.replace("name: k8srequiredlabels", f"name: k8srequiredlabels{i}"),
                    "constraints": [
                        _constraint(
                            "K8sRequiredLabels",
                            f"need-{label}",
                            f'    labels: ["{label}"]\n',
                            kinds='["Deployment", "Service", "ConfigMap"]',
                            groups='["", "apps"]',
                        )
                    ],
                },
            )
        )
    repos_tpl = _template("k8sallowedrepos", "K8sAllowedRepos", REPOS, REPOS_SCHEMA)
    for i, repo in enumerate(["registry.example.com/", "ghcr.io/example/"]):
        specs.append(
            (
                f"repos-{i}",
                {
                    "style": "gatekeeper",
                    "template": repos_tpl.replace("name: k8sallowedrepos", f"name: k8sallowedrepos{i}"),
                    "constraints": [
                        _constraint("K8sAllowedRepos", f"repos-{i}", f'    repos: ["{repo}", "nginx"]\n')
                    ],
                },
            )
        )
    assert len(specs) == 20, len(specs)
    return specs


def make_objects(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        ns = f"team-{i % 25}"
        labels = {"app": f"app-{i}", "team": f"t{i % 7}"} | ({"tier": "web"} if i % 3 else {})
        if i % 5 == 3:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"svc-{i}", "namespace": ns, "labels": labels},
                    "spec": {"ports": [{"port": 80}], "selector": {"app": f"app-{i}"}},
                }
            )
        elif i % 5 == 4:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{i}", "namespace": ns, "labels": labels},
                    "data": {"key": "value" * 5},
                }
            )
        else:
            container: dict[str, Any] = {
                "name": "main",
                "image": "nginx:latest" if i % 50 == 0 else f"registry.example.com/app-{i % 40}:1.{i % 9}",
                "resources": {"limits": {"memory": "128Mi"} | ({"cpu": "100m"} if i % 4 else {})},
                "securityContext": {"readOnlyRootFilesystem": i % 6 != 0, "privileged": i % 97 == 0},
            }
            if i % 2:
                container["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": f"dep-{i}",
                        "namespace": ns,
                        "labels": labels,
                        "annotations": {"example.com/owner": "x"} if i % 3 else {},
                    },
                    "spec": {
                        "replicas": 1 + i % 3,
                        "selector": {"matchLabels": {"app": f"app-{i}"}},
                        "template": {
                            "metadata": {"labels": {"app": f"app-{i}"}},
                            "spec": {
                                "securityContext": {"runAsNonRoot": i % 8 != 0},
                                "containers": [container],
                            },
                        },
                    },
                }
            )
    return out


# --------------------------------------------------------------------------------------------- database


def populate(engine: Any) -> None:
    from django.core.management import call_command

    from clusters.models import Cluster, ClusterGroup
    from fleet.sources.models import Commit, PathMapping, Repository
    from policies.models import PolicyBinding
    from policies.services.definitions import PolicyDefinition, save_policy

    call_command("migrate", verbosity=0)
    group = ClusterGroup.objects.create(name="bench", selector={"matchLabels": {"bench": "yes"}})
    Cluster.objects.create(
        name="bench-prod", api_url="https://127.0.0.1:6443", token="x", labels={"bench": "yes", "env": "prod"}
    )
    repo = Repository.objects.create(name="bench", url="https://git.example.com/bench.git")
    PathMapping.objects.create(repository=repo, name="bench", path="apps", cluster_group=group)
    Commit.objects.create(repository=repo, sha="a" * 40, author_email="bench@example.com")
    for name, content in policy_specs():
        policy = save_policy(name, PolicyDefinition.from_content(content), engine=engine).policy
        PolicyBinding.objects.create(policy=policy, cluster_group=None if len(name) % 2 else group)


def _load() -> tuple[Any, Any, Any]:
    from clusters.models import Cluster
    from fleet.sources.models import Commit, PathMapping

    mapping = PathMapping.objects.select_related("repository", "cluster_group").get(name="bench")
    return Commit.objects.get(sha="a" * 40), mapping, Cluster.objects.get(name="bench-prod")


def _engine(name: str, opa_url: str) -> Any:
    from policies.engine import create_engine

    return create_engine(name, opa_url=opa_url or None, timeout=600)


# --------------------------------------------------------------------------------------------- measurements


def measure_raw(engine: Any, objects: list[dict[str, Any]]) -> dict[str, float]:
    """The engine alone: prepared sets, pre-encoded inputs, one session."""
    from policies.engine.base import to_json
    from policies.formats import conftest as conftest_fmt
    from policies.formats import gatekeeper as gk
    from policies.formats.kube import build_inventory, labels_of, object_id
    from policies.gate import PolicyStyle, TargetContext
    from policies.services.evaluation import build_bound_set

    _commit, mapping, cluster = _load()
    bound = build_bound_set(mapping)
    ctx = TargetContext(cluster=cluster.name, cluster_labels=cluster.labels, group="bench")
    ids = [object_id(o) for o in objects]
    ns_labels = {
        oid.name: labels_of(o) for o, oid in zip(objects, ids, strict=True) if oid.kind == "Namespace"
    }
    object_json = [to_json(o) for o in objects]
    review_json = [to_json(gk.review(o, oid, None)) for o, oid in zip(objects, ids, strict=True)]
    work = []
    for p in bound.policies:
        prepared = engine.prepare(p.policy_set())
        if p.style is PolicyStyle.GATEKEEPER:
            assert p.constraint is not None
            idx = [i for i, oid in enumerate(ids) if p.constraint.match.matches(objects[i], oid, ns_labels)]
            inputs = [gk.input_json(review_json[i], p.constraint.parameters_json) for i in idx]
            work.append((prepared, gk.ENTRYPOINT, inputs))
        else:
            work.append((prepared, conftest_fmt.ENTRYPOINT, object_json))
    target_data = {"inventory": build_inventory(objects), "fleetgate": {"context": ctx.as_data()}}
    evaluations = sum(len(w[2]) for w in work)
    start, cpu = time.perf_counter(), _cpu()
    with engine.open_session(target_data) as session:
        for prepared, entry, inputs in work:
            for s in range(0, len(inputs), 500):
                prepared.evaluate_many(entry, inputs[s : s + 500], session)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu": _cpu() - cpu, "evaluations": evaluations}


def measure_gate(engine: Any, objects: list[dict[str, Any]], *, store: bool) -> dict[str, Any]:
    from policies.services.evaluation import evaluate_targets

    commit, mapping, cluster = _load()
    evaluate_targets(
        commit, mapping, [(cluster, objects[:50], "")], engine=engine, store=False, audit=False
    )  # warm
    start, cpu = time.perf_counter(), _cpu()
    result = evaluate_targets(
        commit, mapping, [(cluster, objects, "")], engine=engine, store=store, audit=store
    )
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu
    d = result.results[0].decision
    return {
        "seconds": seconds,
        "cpu": cpu,
        "evaluations": d.evaluations,
        "violations": len(d.violations),
        "outcome": str(d.outcome),
        "errors": [e.message for e in d.errors][:3],
    }


def _worker(args: tuple[str, str, str, int, int, int, Any, Any]) -> None:
    workdir, engine_name, opa_url, n, part, parts, barrier, queue = args
    _setup_django(Path(workdir))
    from policies.services.evaluation import build_bound_set, run_target, target_context

    engine = _engine(engine_name, opa_url)
    objects = make_objects(n)[part::parts]
    commit, mapping, cluster = _load()
    bound = build_bound_set(mapping)
    for p in bound.policies:
        engine.prepare(p.policy_set())
    barrier.wait()
    start = time.perf_counter()
    run_target(objects, bound, target_context(mapping, cluster, commit), engine=engine)
    queue.put(time.perf_counter() - start)


def measure_processes(workdir: Path, engine_name: str, opa_url: str, n: int, procs: int) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=((str(workdir), engine_name, opa_url, n, i, procs, barrier, queue),))
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for _ in workers:
        queue.get(timeout=3600)
    wall = time.perf_counter() - start
    for w in workers:
        w.join()
    return wall


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    global _SERVER_PID
    parser = argparse.ArgumentParser(prog="bench gate")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--opa-objects", type=int, default=2_000)
    parser.add_argument("--engines", default="regorus,opa")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repeats; the best time is kept")
    args = parser.parse_args(argv or [])
    workdir = Path(tempfile.mkdtemp(prefix="fleetgate-bench-gate-"))
    _setup_django(workdir)
    from policies.engine.opa_server import OpaServer, build_opa

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "policies": 20,
        "load_average_before": os.getloadavg(),
    }
    server = None
    opa_url = ""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "opa" in engines:
        server = OpaServer(build_opa()).start()
        opa_url = server.url
    try:
        populate(_engine(engines[0], opa_url))
        for name in engines:
            n = args.objects if name == "regorus" else args.opa_objects
            objects = make_objects(n)
            engine = _engine(name, opa_url)
            _SERVER_PID = server.pid if (server is not None and name == "opa") else None
            raws, gates, stores = [], [], []
            for _ in range(max(1, args.repeat)):  # interleaved, so a busy spell hits every variant alike
                raws.append(measure_raw(engine, objects))
                gates.append(measure_gate(engine, objects, store=False))
                stores.append(measure_gate(engine, objects, store=True))
            raw = {**raws[0], "seconds": min(r["seconds"] for r in raws), "cpu": min(r["cpu"] for r in raws)}
            gate = {**min(gates, key=lambda r: r["seconds"]), "cpu": min(r["cpu"] for r in gates)}
            stored = {**min(stores, key=lambda r: r["seconds"]), "cpu": min(r["cpu"] for r in stores)}
            scaling = {str(p): measure_processes(workdir, name, opa_url, n, p) for p in (1, 2)}
            results[name] = {
                "objects": n,
                "raw_seconds": round(raw["seconds"], 3),
                "raw_evaluations": raw["evaluations"],
                "gate_seconds": round(gate["seconds"], 3),
                "gate_evaluations": gate["evaluations"],
                "gate_violations": gate["violations"],
                "gate_outcome": gate["outcome"],
                "gate_errors": gate["errors"],
                "overhead_ratio": round(gate["seconds"] / raw["seconds"], 2),
                "raw_cpu_seconds": round(raw["cpu"], 3),
                "gate_cpu_seconds": round(gate["cpu"], 3),
                "stored_cpu_seconds": round(stored["cpu"], 3),
                "overhead_ratio_cpu": round(gate["cpu"] / raw["cpu"], 2),
                "raw_objects_per_second": round(n / raw["seconds"]),
                "gate_objects_per_second": round(n / gate["seconds"]),
                "stored_seconds": round(stored["seconds"], 3),
                "stored_objects_per_second": round(n / stored["seconds"]),
                "processes_seconds": {k: round(v, 3) for k, v in scaling.items()},
                "processes_objects_per_second": {k: round(n / v) for k, v in scaling.items()},
            }
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        if server is not None:
            server.stop()
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
