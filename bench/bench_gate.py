"""Policy gate benchmark: rendered objects x bound policies through the gate, against the engine alone.

    .venv/bin/python -m bench gate                                   # regorus 10,000 objects, OPA 2,000
    .venv/bin/python -m bench gate -- --objects 2000 --opa-objects 500 --engines regorus

For each engine, in one run, on the same 20 policies (saved through the services, bound through
PolicyBindings in a scratch SQLite database) and the same synthetic objects:

1. raw: each policy set prepared once, then the engine's ``evaluate_many`` on pre-encoded inputs (the
   objects for conftest, the Gatekeeper review inputs of the objects each Constraint matches), in one
   evaluation session with the same per-target data: the engine's own cost for the work. For regorus, that
   goes through the pool of worker processes (the hard time and memory limit); "raw in-process" is the
   baseline without it: the same prepared sets and the same encoded inputs, in the same batches, evaluated
   by the worker's own code (``regorus_worker.Worker.handle`` writing to an in-memory stream) in this
   process, with no process boundary and no limits, results decoded as the engine decodes them;
2. gate: ``policies.services.evaluation.evaluate_targets`` (bindings and waivers loaded from the database,
   context, match, inventory, encoding, findings, waivers, decision), not stored; and the same with the
   Evaluation and Violation rows stored (``store``);
3. scaling: the gate over the same objects split into 1 and 2 targets, one worker process each
   (multiprocessing, spawn), timed from a barrier after every worker has loaded and prepared;
4. live reads (``--live-objects``, default 2,000): a sandbox cluster in its own process (``python -m
   clusters.sandbox serve``, so its CPU is the cluster's, not Fleetgate's) holding every other object; the
   reads a rollout's prepare makes (``fleet.rollouts.ports.live_state``: a LIST per kind and namespace
   holding several of the objects, else a GET per object; the prune candidates) timed, with their HTTP
   requests counted; then raw and gate again on the reviews those reads give (UPDATE with oldObject for the
   objects that exist, CREATE for the others). The ratio that matters is (reads + gate) / raw, CPU.

Like with like: raw evaluates exactly the gate's evaluations (the same bound policies, the objects each
Constraint matches, the same review documents with the gate's target context and userInfo, the same
session data, batches of 500) through the same worker pool, and its CPU counts the workers as the gate's
does. What raw leaves out is the gate's own work: loading the bindings, matching, encoding the objects and
reviews, turning results into findings, waivers, the decision. Every figure is the median of interleaved
rounds (``--repeat``).

The ratio gate/raw is the gate's overhead; for regorus, pool/in-process is the cost of the hard limit.
CPU seconds count every process doing the work: this one, the OPA server, and the regorus pool's worker
processes (their /proc/<pid>/stat utime+stime, before and after, plus any worker reaped meanwhile). The 20
policies avoid inventory-wide O(n^2) rules (a unique-ingress-host check compares every Ingress with every
other and dominates any mix; measure such a policy on its own).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_SERVER_PID: int | None = None  # the OPA server, whose CPU time counts as the engine's
_POOL: Any = None  # the regorus worker pool, whose worker processes' CPU time counts as the engine's


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a live process, in seconds (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _pool_pids() -> list[int]:
    if _POOL is None:
        return []
    with _POOL._cond:  # the pool exposes no list of its workers; read its idle and busy sets
        workers = [*_POOL._idle, *_POOL._busy]
    return [w.proc.pid for w in workers if w.proc.poll() is None]


class _Cpu:
    """CPU seconds of this process, the OPA server and the regorus worker processes since ``start``.

    Steadier than wall time on a shared machine. Workers are long-lived, so RUSAGE_CHILDREN alone would miss
    them: each live worker's /proc/<pid>/stat is read before and after (a worker started meanwhile counts
    from zero); a worker killed and reaped meanwhile is counted through RUSAGE_CHILDREN."""

    def __init__(self) -> None:
        self.own = time.process_time()
        self.server = _proc_cpu(_SERVER_PID) or 0.0 if _SERVER_PID is not None else 0.0
        self.workers = {pid: _proc_cpu(pid) or 0.0 for pid in _pool_pids()}
        self.children = self._children()

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def split(self) -> tuple[float, float]:
        """(this process, the engine's other processes) since start."""
        own = time.process_time() - self.own
        other = 0.0
        if _SERVER_PID is not None:
            other += (_proc_cpu(_SERVER_PID) or self.server) - self.server
        live = {pid: _proc_cpu(pid) for pid in _pool_pids()}
        for pid, now in live.items():
            if now is not None:
                other += now - self.workers.get(pid, 0.0)
        gone = [pid for pid in self.workers if live.get(pid) is None]
        reaped = self._children() - self.children  # includes the gone workers' whole lives
        other += max(0.0, reaped - sum(self.workers[pid] for pid in gone))
        return own, other


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


def prepare_work(
    engine: Any, objects: list[dict[str, Any]], entries: list[Any] | None = None, cluster: Any = None
) -> tuple[list[tuple[Any, str, list[str]]], dict]:
    """The raw work: (prepared set, entry point, pre-encoded inputs) per bound policy, and the target data.
    ``entries`` (the gate's RenderedObjects of ``objects``, with operation and old object) make the
    Gatekeeper inputs the reviews of those operations. The target context (``cluster``, default
    ``bench-prod``) is the gate's: the same session data and the same review ``userInfo``."""
    from policies.engine.base import to_json
    from policies.formats import conftest as conftest_fmt
    from policies.formats import gatekeeper as gk
    from policies.formats.kube import build_inventory, labels_of, object_id
    from policies.gate import PolicyStyle
    from policies.services.evaluation import build_bound_set, target_context

    commit, mapping, default_cluster = _load()
    bound = build_bound_set(mapping)
    ctx = target_context(mapping, cluster or default_cluster, commit)
    info = ctx.user_info
    ids = [object_id(o, ctx.default_namespace) for o in objects]
    ns_labels = {
        oid.name: labels_of(o) for o, oid in zip(objects, ids, strict=True) if oid.kind == "Namespace"
    }
    object_json = [to_json(o) for o in objects]
    if entries is None:
        review_json = [
            to_json(gk.review(o, oid, None, user_info=info)) for o, oid in zip(objects, ids, strict=True)
        ]
    else:
        review_json = [
            to_json(
                gk.review(e.obj, oid, None, operation=e.operation, old_object=e.old_object, user_info=info)
            )
            for e, oid in zip(entries, ids, strict=True)
        ]
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
    target_data = {
        "inventory": build_inventory(objects, ctx.default_namespace),
        "fleetgate": {"context": ctx.as_data()},
    }
    return work, target_data


BATCH = 500


def measure_raw(engine: Any, work: list[tuple[Any, str, list[str]]], target_data: dict) -> dict[str, float]:
    """The engine alone: prepared sets, pre-encoded inputs, one session."""
    evaluations = sum(len(w[2]) for w in work)
    start, cpu = time.perf_counter(), _Cpu()
    with engine.open_session(target_data) as session:
        for prepared, entry, inputs in work:
            for s in range(0, len(inputs), BATCH):
                prepared.evaluate_many(entry, inputs[s : s + BATCH], session)
    seconds = time.perf_counter() - start
    own, other = cpu.split()
    return {"seconds": seconds, "cpu": own + other, "cpu_workers": other, "evaluations": evaluations}


class InProcess:
    """A regorus worker's evaluation code in this process, and which sets it has been sent (as the pool
    tracks for its workers): kept between repeats, as a pool worker keeps its compiled sets."""

    def __init__(self) -> None:
        from policies.engine.regorus_worker import Worker
        from policies.engine.sandbox import REGORUS_OVERRIDES

        self.worker = Worker(REGORUS_OVERRIDES)
        self.known: set[str] = set()


def measure_raw_inprocess(
    inproc: InProcess, work: list[tuple[Any, str, list[str]]], target_data: dict
) -> dict[str, float]:
    """regorus without the worker pool: the worker's evaluation code (``Worker.handle``) driven in this
    process on the same prepared sets (their ``set_spec``), session data and encoded inputs, in the same
    batches, writing to an in-memory stream; the results decoded as ``RegorusPreparedSet`` decodes them.
    No process boundary, no time or memory limit. A new session per run (its per-target data sent once and
    cloned into each set that reads it), as ``open_session`` does."""
    from policies.engine.regorus_engine import RegorusSession, _short

    session_full = RegorusSession(target_data).spec()  # the session's data encoded as the engine sends it
    session = {"id": session_full["id"]}
    evaluations = sum(len(w[2]) for w in work)
    start, cpu = time.perf_counter(), _Cpu()
    worker, known = inproc.worker, inproc.known
    first = True
    for prepared, entry, inputs in work:
        spec = prepared.set_spec()
        rule = prepared._rule(entry)
        for s in range(0, len(inputs), BATCH):
            batch = [text.encode("utf-8") for text in inputs[s : s + BATCH]]
            header = {
                "op": "eval",
                "rule": rule,
                "count": len(batch),
                "set": {"digest": spec["digest"]} if spec["digest"] in known else spec,
                "session": session_full if first else session,
                "drop": [],
            }
            first = False
            known.add(spec["digest"])
            out = io.BytesIO()
            worker.handle(header, batch, out)
            buf, pos, values = out.getvalue(), 0, []
            while pos < len(buf):
                (size,) = struct.unpack_from(">I", buf, pos)
                frame = buf[pos + 4 : pos + 4 + size]
                pos += 4 + size
                if frame[:1] != b"R":
                    raise RuntimeError(f"in-process regorus: {_short(frame[1:].decode())}")
                values.append(json.loads(frame[1:]))
            assert len(values) == len(batch)
            values = [v if isinstance(v, list) else [] for v in values]  # as evaluate_many returns them
    seconds = time.perf_counter() - start
    worker.handle({"drop": [session["id"]], "set": {"digest": ""}}, [], io.BytesIO())  # as session close
    own, other = cpu.split()
    return {"seconds": seconds, "cpu": own + other, "cpu_workers": other, "evaluations": evaluations}


def measure_gate(engine: Any, objects: list[dict[str, Any]], *, store: bool) -> dict[str, Any]:
    from policies.services.evaluation import evaluate_targets

    commit, mapping, cluster = _load()
    evaluate_targets(
        commit, mapping, [(cluster, objects[:50], "")], engine=engine, store=False, audit=False
    )  # warm
    start, meter = time.perf_counter(), _Cpu()
    result = evaluate_targets(
        commit, mapping, [(cluster, objects, "")], engine=engine, store=store, audit=store
    )
    seconds = time.perf_counter() - start
    own, other = meter.split()
    cpu = own + other
    d = result.results[0].decision
    return {
        "seconds": seconds,
        "cpu": cpu,
        "cpu_workers": other,
        "evaluations": d.evaluations,
        "violations": len(d.violations),
        "outcome": str(d.outcome),
        "errors": [e.message for e in d.errors][:3],
    }


class _Requests:
    """HTTP requests made by this process (every client request goes through urllib3's connection pool)."""

    count = 0

    @classmethod
    def install(cls) -> None:
        from urllib3.connectionpool import HTTPConnectionPool

        original = HTTPConnectionPool.urlopen

        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.count += 1
            return original(self, *args, **kwargs)

        HTTPConnectionPool.urlopen = counting  # type: ignore[method-assign]


def start_live_cluster(objects: list[dict[str, Any]]) -> tuple[Any, Any]:
    """A sandbox cluster in its own process holding every other object (and their namespaces), registered
    as the Cluster ``bench-live`` in the bench group."""
    import secrets

    from bench.bench_connector import start_sandbox
    from clusters.connector import ClusterCredentials, Connector
    from clusters.models import Cluster

    token = secrets.token_urlsafe(16)
    proc, (url,) = start_sandbox(1, token)
    namespaces = sorted({o["metadata"]["namespace"] for o in objects})
    seed = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces]
    with Connector(ClusterCredentials(name="bench-live", server=url, token=token)) as kube:
        result = kube.apply(seed + objects[::2], mapping="bench-seed")
    assert result.ok, [r.message for r in result.results if r.failed][:3]
    cluster = Cluster.objects.create(
        name="bench-live", api_url=url, token=token, labels={"bench": "yes", "env": "prod"}
    )
    return proc, cluster


def measure_reads(cluster: Any, objects: list[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    """The prepare step's reads of one cluster's live state (a warm connector, as a worker keeps it)."""
    from fleet.rollouts import ports

    _commit, mapping, _cluster = _load()
    before, start, cpu = _Requests.count, time.perf_counter(), _Cpu()
    live = ports.live_state(cluster, mapping, objects, [], True)
    seconds = time.perf_counter() - start
    own, _other = cpu.split()
    return {"seconds": seconds, "cpu": own, "requests": _Requests.count - before}, live


def measure_gate_live(engine: Any, cluster: Any, entries: list[Any]) -> dict[str, Any]:
    from policies.services.evaluation import evaluate_targets
    from policies.services.reviews import TargetReview

    commit, mapping, _cluster = _load()
    reviews = {cluster.pk: TargetReview()}
    start, meter = time.perf_counter(), _Cpu()
    result = evaluate_targets(
        commit, mapping, [(cluster, entries, "")], engine=engine, store=False, audit=False, reviews=reviews
    )
    seconds = time.perf_counter() - start
    own, other = meter.split()
    d = result.results[0].decision
    return {
        "seconds": seconds,
        "cpu": own + other,
        "cpu_workers": other,
        "outcome": str(d.outcome),
        "review": d.review,
    }


def measure_live(engine: Any, cluster: Any, objects: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    """Reads, then raw and gate on the reviews they give; the median of interleaved rounds (raw and gate
    alternate which runs first)."""
    from policies.services.reviews import live_entries

    measure_reads(cluster, objects)  # warm: discovery, the connection pool
    reads_runs, raws, gates = [], [], []
    live = None
    for _ in range(max(1, repeat)):
        reads, live = measure_reads(cluster, objects)
        reads_runs.append(reads)
        entries = live_entries(objects, live)
        work, target_data = prepare_work(engine, objects, entries, cluster)
        measure_raw(engine, [(p, e, i[:50]) for p, e, i in work], target_data)  # warm the new inputs
        if len(raws) % 2:  # alternate which goes first, so neither always follows the reads
            gates.append(measure_gate_live(engine, cluster, entries))
            raws.append(measure_raw(engine, work, target_data))
        else:
            raws.append(measure_raw(engine, work, target_data))
            gates.append(measure_gate_live(engine, cluster, entries))
    reads, raw, gate = _median(reads_runs), _median(raws), _median(gates)
    assert live is not None
    n = len(objects)
    return {
        "objects": n,
        "updates": sum(1 for o in live.objects if o.live is not None),
        "reads_ms_per_cluster": round(reads["seconds"] * 1000, 1),
        "reads_cpu_ms_per_cluster": round(reads["cpu"] * 1000, 1),
        "reads_requests_per_cluster": reads["requests"],
        "reads_cpu_ms_per_object": round(reads["cpu"] * 1000 / n, 3),
        "raw_cpu_seconds": round(raw["cpu"], 3),
        "gate_cpu_seconds": round(gate["cpu"], 3),
        "gate_over_raw_cpu": round(gate["cpu"] / raw["cpu"], 2),
        "reads_and_gate_over_raw_cpu": round((reads["cpu"] + gate["cpu"]) / raw["cpu"], 2),
        "reads_and_gate_over_raw_wall": round((reads["seconds"] + gate["seconds"]) / raw["seconds"], 2),
        "rounds_cpu": {
            "reads": [round(r["cpu"], 3) for r in reads_runs],
            "raw": [round(r["cpu"], 3) for r in raws],
            "raw_workers": [round(r["cpu_workers"], 3) for r in raws],
            "gate": [round(r["cpu"], 3) for r in gates],
            "gate_workers": [round(r["cpu_workers"], 3) for r in gates],
        },
        "gate_review": gate["review"],
        "gate_outcome": gate["outcome"],
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


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of the interleaved rounds, wall and CPU each (other fields: the first round's)."""
    out = {**runs[0], "seconds": median(r["seconds"] for r in runs), "cpu": median(r["cpu"] for r in runs)}
    if "cpu_workers" in runs[0]:
        out["cpu_workers"] = median(r["cpu_workers"] for r in runs)
    return out


def main(argv: list[str] | None = None) -> None:
    global _SERVER_PID, _POOL
    parser = argparse.ArgumentParser(prog="bench gate")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--opa-objects", type=int, default=2_000)
    parser.add_argument("--engines", default="regorus,opa")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument(
        "--live-objects", type=int, default=2_000, help="objects of the live-read runs (0: none)"
    )
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
    live_proc = None
    try:
        populate(_engine(engines[0], opa_url))
        live_objects = make_objects(args.live_objects) if args.live_objects else []
        live_cluster = None
        if live_objects:
            _Requests.install()
            live_proc, live_cluster = start_live_cluster(live_objects)
        for name in engines:
            n = args.objects if name == "regorus" else args.opa_objects
            objects = make_objects(n)
            engine = _engine(name, opa_url)
            _SERVER_PID = server.pid if (server is not None and name == "opa") else None
            _POOL = engine.pool if name == "regorus" else None
            work, target_data = prepare_work(engine, objects)
            raws, gates, stores, inprocs = [], [], [], []
            inproc = InProcess() if name == "regorus" else None
            warm = [(prepared, entry, inputs[:50]) for prepared, entry, inputs in work]
            measure_raw(engine, warm, target_data)  # warm, as the gate is: a worker started, sets compiled
            if inproc is not None:
                measure_raw_inprocess(inproc, warm, target_data)
            for _ in range(max(1, args.repeat)):  # interleaved, so a busy spell hits every variant alike
                if inproc is not None:
                    inprocs.append(measure_raw_inprocess(inproc, work, target_data))
                raws.append(measure_raw(engine, work, target_data))
                gates.append(measure_gate(engine, objects, store=False))
                stores.append(measure_gate(engine, objects, store=True))
            raw, gate, stored = _median(raws), _median(gates), _median(stores)
            scaling = {str(p): measure_processes(workdir, name, opa_url, n, p) for p in (1, 2)}
            extra: dict[str, Any] = {}
            if inprocs:
                base = _median(inprocs)
                extra = {
                    "inprocess_seconds": round(base["seconds"], 3),
                    "inprocess_cpu_seconds": round(base["cpu"], 3),
                    "inprocess_objects_per_second": round(n / base["seconds"]),
                    "raw_worker_cpu_seconds": round(raw["cpu_workers"], 3),
                    "gate_worker_cpu_seconds": round(gate["cpu_workers"], 3),
                    "pool_over_inprocess": round(raw["seconds"] / base["seconds"], 2),
                    "pool_over_inprocess_cpu": round(raw["cpu"] / base["cpu"], 2),
                    "gate_over_inprocess": round(gate["seconds"] / base["seconds"], 2),
                    "gate_over_inprocess_cpu": round(gate["cpu"] / base["cpu"], 2),
                    "inprocess_runs": [(round(r["seconds"], 3), round(r["cpu"], 3)) for r in inprocs],
                    "raw_runs": [(round(r["seconds"], 3), round(r["cpu"], 3)) for r in raws],
                    "gate_runs": [(round(r["seconds"], 3), round(r["cpu"], 3)) for r in gates],
                }
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
                **extra,
            }
            if live_cluster is not None:
                results[name]["live"] = measure_live(engine, live_cluster, live_objects, args.repeat)
            print(json.dumps({name: results[name]}), flush=True)
            r = results[name]
            if extra:
                print(
                    f"{name}, {n} objects: in-process {r['inprocess_seconds']} s wall / "
                    f"{r['inprocess_cpu_seconds']} s CPU; pool {r['raw_seconds']} / {r['raw_cpu_seconds']} "
                    f"(workers {r['raw_worker_cpu_seconds']}); "
                    f"gate {r['gate_seconds']} / {r['gate_cpu_seconds']}; "
                    f"pool/in-process {r['pool_over_inprocess']} wall, {r['pool_over_inprocess_cpu']} CPU; "
                    f"gate/raw {r['overhead_ratio']} wall, {r['overhead_ratio_cpu']} CPU",
                    flush=True,
                )
            if live_cluster is not None:
                lv = r["live"]
                print(
                    f"{name}, live reads of {lv['objects']} objects ({lv['updates']} exist): "
                    f"{lv['reads_ms_per_cluster']} ms wall, {lv['reads_cpu_ms_per_cluster']} ms CPU, "
                    f"{lv['reads_requests_per_cluster']} HTTP requests per cluster; "
                    f"gate/raw {lv['gate_over_raw_cpu']} CPU, "
                    f"(reads + gate)/raw {lv['reads_and_gate_over_raw_cpu']} CPU",
                    flush=True,
                )
    finally:
        if server is not None:
            server.stop()
        if live_proc is not None:
            live_proc.terminate()
            live_proc.wait(timeout=30)
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
