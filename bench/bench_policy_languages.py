"""Policy languages in the gate: 20 ValidatingAdmissionPolicies and 20 Kyverno policies over 10,000 objects,
against the CEL crate called directly on the same objects.

    .venv/bin/python -m bench policy_languages
    .venv/bin/python -m bench policy_languages -- --objects 2000 --rounds 3

The policies are the kinds of checks of the Kubernetes documentation (VAP: replica limits, image registries,
labels, resource limits, privileged and hostNetwork, probes, hostPath, runAsNonRoot, hostPorts, NodePort,
externalIPs...) and of kyverno/policies' best practices (require labels and requests/limits, disallow latest,
privileged, privilege escalation, host namespaces and ports, restrict registries and NodePorts, deny
conditions). The objects are 4,000 Deployments, 3,000 Pods, 2,000 Services and 1,000 ConfigMaps, varied so
that about one check in ten fails.

Sides, each measured in the same child process, rounds interleaved, medians:

* ``gate``: ``policies.gate.evaluate_target`` with the 40 bound policies (VAP then Kyverno, compiled once as
  the services' cache does per stored version), i.e. the whole review: one AdmissionInput per object, each
  policy's own matchConstraints / match, CEL with the Kubernetes variables, Kyverno's pattern engine and
  JMESPath, findings turned into violations;
* ``cel direct``: the ``cel`` crate (common-expression-language) called directly with the same VAP
  expressions, and for each Kyverno policy the CEL expression that makes the same check, on the objects of
  the kind each policy targets (a dict lookup for the match; no gate, no admission request, no messages).

The run fails unless both sides find the same failing (policy, object) pairs. Printed: evaluations (policy
x object reviewed) per second, the ratio gate / direct for each language and together, the one-off compile
time, and the load average before and after. Times are the child's CPU seconds (``time.process_time``; both
sides run in one thread), so the other users of a shared machine do not decide the ratio. Figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated

# ------------------------------------------------------------------------------------------ the policies

# (name, kind, resource, expression that must hold)
VAP_CHECKS: list[tuple[str, str, str, str]] = [
    ("replica-limit", "Deployment", "deployments", "object.spec.replicas <= 50"),
    (
        "trusted-registry",
        "Deployment",
        "deployments",
        "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    ),
    (
        "app-name-label",
        "Deployment",
        "deployments",
        "has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels",
    ),
    (
        "memory-limits",
        "Deployment",
        "deployments",
        "object.spec.template.spec.containers.all(c, has(c.resources) && has(c.resources.limits) "
        "&& has(c.resources.limits.memory))",
    ),
    (
        "no-host-network",
        "Deployment",
        "deployments",
        "!has(object.spec.template.spec.hostNetwork) || !object.spec.template.spec.hostNetwork",
    ),
    (
        "no-privileged",
        "Deployment",
        "deployments",
        "object.spec.template.spec.containers.all(c, !has(c.securityContext) || "
        "!has(c.securityContext.privileged) || !c.securityContext.privileged)",
    ),
    (
        "no-latest",
        "Deployment",
        "deployments",
        "object.spec.template.spec.containers.all(c, !c.image.endsWith(':latest'))",
    ),
    (
        "dns-name",
        "Deployment",
        "deployments",
        "object.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    ),
    (
        "readiness-probe",
        "Deployment",
        "deployments",
        "object.spec.template.spec.containers.all(c, has(c.readinessProbe))",
    ),
    (
        "no-host-path",
        "Deployment",
        "deployments",
        "!has(object.spec.template.spec.volumes) || "
        "object.spec.template.spec.volumes.all(v, !has(v.hostPath))",
    ),
    (
        "run-as-non-root",
        "Pod",
        "pods",
        "object.spec.containers.all(c, has(c.securityContext) && has(c.securityContext.runAsNonRoot) "
        "&& c.securityContext.runAsNonRoot)",
    ),
    (
        "no-privilege-escalation",
        "Pod",
        "pods",
        "object.spec.containers.all(c, !has(c.securityContext) || "
        "!has(c.securityContext.allowPrivilegeEscalation) || !c.securityContext.allowPrivilegeEscalation)",
    ),
    ("no-host-pid", "Pod", "pods", "!has(object.spec.hostPID) || !object.spec.hostPID"),
    (
        "no-host-ports",
        "Pod",
        "pods",
        "object.spec.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))",
    ),
    ("few-containers", "Pod", "pods", "size(object.spec.containers) <= 5"),
    ("no-node-port", "Service", "services", "!has(object.spec.type) || object.spec.type != 'NodePort'"),
    (
        "no-external-ips",
        "Service",
        "services",
        "!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0",
    ),
    (
        "internal-load-balancer",
        "Service",
        "services",
        "!has(object.spec.type) || object.spec.type != 'LoadBalancer' || "
        "(has(object.metadata.annotations) && "
        "'service.beta.kubernetes.io/aws-load-balancer-internal' in object.metadata.annotations)",
    ),
    ("small-config", "ConfigMap", "configmaps", "!has(object.data) || size(object.data) <= 20"),
    (
        "team-label",
        "ConfigMap",
        "configmaps",
        "has(object.metadata.labels) && 'team' in object.metadata.labels",
    ),
]

# (name, kind, validate block, the CEL expression making the same check for the direct side)
KYVERNO_CHECKS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "require-app-name",
        "Deployment",
        {"pattern": {"metadata": {"labels": {"app.kubernetes.io/name": "?*"}}}},
        "has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels",
    ),
    (
        "require-requests-limits",
        "Deployment",
        {
            "pattern": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "resources": {
                                        "requests": {"memory": "?*", "cpu": "?*"},
                                        "limits": {"memory": "?*"},
                                    }
                                }
                            ]
                        }
                    }
                }
            }
        },
        "object.spec.template.spec.containers.all(c, has(c.resources) && has(c.resources.requests) && "
        "has(c.resources.requests.memory) && has(c.resources.requests.cpu) && has(c.resources.limits) && "
        "has(c.resources.limits.memory))",
    ),
    ("min-replicas", "Deployment", {"pattern": {"spec": {"replicas": ">=2"}}}, "object.spec.replicas >= 2"),
    (
        "disallow-host-network",
        "Deployment",
        {"pattern": {"spec": {"template": {"spec": {"=(hostNetwork)": "false"}}}}},
        "!has(object.spec.template.spec.hostNetwork) || !object.spec.template.spec.hostNetwork",
    ),
    (
        "restrict-registries",
        "Deployment",
        {"pattern": {"spec": {"template": {"spec": {"containers": [{"image": "registry.example.com/*"}]}}}}},
        "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    ),
    (
        "disallow-privileged",
        "Deployment",
        {
            "pattern": {
                "spec": {
                    "template": {"spec": {"containers": [{"=(securityContext)": {"=(privileged)": "false"}}]}}
                }
            }
        },
        "object.spec.template.spec.containers.all(c, !has(c.securityContext) || "
        "!has(c.securityContext.privileged) || !c.securityContext.privileged)",
    ),
    (
        "disallow-default-namespace",
        "Deployment",
        {"pattern": {"metadata": {"namespace": "!default"}}},
        "object.metadata.namespace != 'default'",
    ),
    (
        "require-team-label",
        "Deployment",
        {"pattern": {"metadata": {"labels": {"team": "?*"}}}},
        "has(object.metadata.labels) && 'team' in object.metadata.labels",
    ),
    (
        "disallow-latest-tag",
        "Deployment",
        {"pattern": {"spec": {"template": {"spec": {"containers": [{"image": "!*:latest"}]}}}}},
        "object.spec.template.spec.containers.all(c, !c.image.endsWith(':latest'))",
    ),
    (
        "max-replicas",
        "Deployment",
        {
            "deny": {
                "conditions": {
                    "any": [
                        {"key": "{{ request.object.spec.replicas }}", "operator": "GreaterThan", "value": 50}
                    ]
                }
            }
        },
        "object.spec.replicas <= 50",
    ),
    (
        "require-run-as-non-root",
        "Pod",
        {"pattern": {"spec": {"containers": [{"securityContext": {"runAsNonRoot": True}}]}}},
        "object.spec.containers.all(c, has(c.securityContext) && has(c.securityContext.runAsNonRoot) "
        "&& c.securityContext.runAsNonRoot)",
    ),
    (
        "disallow-privilege-escalation",
        "Pod",
        {
            "pattern": {
                "spec": {"containers": [{"=(securityContext)": {"=(allowPrivilegeEscalation)": "false"}}]}
            }
        },
        "object.spec.containers.all(c, !has(c.securityContext) || "
        "!has(c.securityContext.allowPrivilegeEscalation) || !c.securityContext.allowPrivilegeEscalation)",
    ),
    (
        "disallow-host-pid",
        "Pod",
        {"pattern": {"spec": {"=(hostPID)": "false"}}},
        "!has(object.spec.hostPID) || !object.spec.hostPID",
    ),
    (
        "disallow-host-ports",
        "Pod",
        {"pattern": {"spec": {"containers": [{"=(ports)": [{"=(hostPort)": 0}]}]}}},
        "object.spec.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))",
    ),
    (
        "restrict-pod-registries",
        "Pod",
        {"pattern": {"spec": {"containers": [{"image": "registry.example.com/*"}]}}},
        "object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    ),
    (
        "require-pod-requests",
        "Pod",
        {"pattern": {"spec": {"containers": [{"resources": {"requests": {"memory": "?*"}}}]}}},
        "object.spec.containers.all(c, has(c.resources) && has(c.resources.requests) && "
        "has(c.resources.requests.memory))",
    ),
    (
        "restrict-nodeport",
        "Service",
        {"pattern": {"spec": {"=(type)": "!NodePort"}}},
        "!has(object.spec.type) || object.spec.type != 'NodePort'",
    ),
    (
        "restrict-external-ips",
        "Service",
        {"pattern": {"spec": {"X(externalIPs)": "null"}}},
        "!has(object.spec.externalIPs)",
    ),
    (
        "require-service-app-label",
        "Service",
        {"pattern": {"metadata": {"labels": {"app": "?*"}}}},
        "has(object.metadata.labels) && 'app' in object.metadata.labels",
    ),
    (
        "limit-configmap-keys",
        "ConfigMap",
        {
            "deny": {
                "conditions": {
                    "any": [
                        {
                            "key": "{{ length(keys(request.object.data || `{}`)) }}",
                            "operator": "GreaterThan",
                            "value": 20,
                        }
                    ]
                }
            }
        },
        "!has(object.data) || size(object.data) <= 20",
    ),
]


def vap_documents() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for name, _kind, resource, expression in VAP_CHECKS:
        group = "apps" if resource == "deployments" else ""
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": f"{name}.example.com"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": [resource],
                        }
                    ]
                },
                "validations": [{"expression": expression, "message": f"{name} failed"}],
            },
        }
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": f"{name}.example.com", "validationActions": ["Deny"]},
        }
        out.append((policy, binding))
    return out


def kyverno_documents() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "metadata": {
                "name": name,
                "annotations": {"pod-policies.kyverno.io/autogen-controllers": "none"},
            },
            "spec": {
                "validationFailureAction": "Enforce",
                "rules": [
                    {
                        "name": "check",
                        "match": {"any": [{"resources": {"kinds": [kind]}}]},
                        "validate": {"message": f"{name} failed", **validate},
                    }
                ],
            },
        }
        for name, kind, validate, _expression in KYVERNO_CHECKS
    ]


# ------------------------------------------------------------------------------------------ the objects


def _container(i: int, c: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": f"c{c}",
        "image": (
            "docker.io/library/app:latest" if i % 23 == 0 else f"registry.example.com/app{c}:{i % 5}.0"
        ),
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "ports": [{"containerPort": 8080}],
    }
    if i % 17 == 0:
        del container["resources"]["limits"]
    if i % 29 == 0:
        container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    if i % 31 == 0:
        del container["readinessProbe"]
    if i % 37 == 0:
        container["ports"] = [{"containerPort": 80, "hostPort": 80}]
    return container


def make_objects(n: int) -> list[dict[str, Any]]:
    """n objects: 40% Deployments, 30% Pods, 20% Services, 10% ConfigMaps."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        slot = i % 10
        namespace = "default" if i % 19 == 0 else f"team-{i % 8}"
        labels = {"app": f"app-{i}", "team": f"t{i % 8}", "app.kubernetes.io/name": f"app-{i}"}
        if i % 13 == 0:
            labels = {"app": f"app-{i}"}
        meta = {"name": f"obj-{i}" if i % 41 else f"Obj_{i}", "namespace": namespace, "labels": labels}
        containers = [_container(i, c) for c in range(1 + i % 3)]
        if slot < 4:
            spec: dict[str, Any] = {"containers": containers}
            if i % 43 == 0:
                spec["hostNetwork"] = True
            if i % 47 == 0:
                spec["volumes"] = [{"name": "host", "hostPath": {"path": "/var/run"}}]
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": meta,
                    "spec": {
                        "replicas": 1 if i % 11 == 0 else (60 if i % 53 == 0 else 3),
                        "selector": {"matchLabels": {"app": f"app-{i}"}},
                        "template": {"metadata": {"labels": {"app": f"app-{i}"}}, "spec": spec},
                    },
                }
            )
        elif slot < 7:
            spec = {"containers": containers * (3 if i % 59 == 0 else 1)}
            if i % 61 == 0:
                spec["hostPID"] = True
            out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        elif slot < 9:
            spec = {"ports": [{"port": 80, "targetPort": 8080}], "type": "ClusterIP"}
            if i % 7 == 0:
                spec["type"] = "NodePort"
            elif i % 11 == 0:
                spec["type"] = "LoadBalancer"
            if i % 67 == 0:
                spec["externalIPs"] = ["203.0.113.7"]
            out.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
        else:
            data = {f"key{k}": "v" for k in range(25 if i % 3 == 0 else 5)}
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


# ------------------------------------------------------------------------------------------ the child


def _gate_side(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    from policies import gate

    started = time.process_time()
    vap = [gate.BoundPolicy.vap(i, b["metadata"]["name"], p, b) for i, (p, b) in enumerate(vap_documents())]
    kyverno = [
        gate.BoundPolicy.kyverno(100 + i, d["metadata"]["name"], d) for i, d in enumerate(kyverno_documents())
    ]
    compile_seconds = time.process_time() - started
    rendered = [gate.RenderedObject(o, "bench.yaml", i) for i, o in enumerate(objects)]
    return {"vap": vap, "kyverno": kyverno, "rendered": rendered}, compile_seconds


def _run_gate(state: dict[str, Any], language: str) -> set[tuple[str, str]]:
    from policies import gate

    decision = gate.evaluate_target(state["rendered"], state[language])
    if decision.errors:
        raise SystemExit(f"gate errors: {decision.errors[:3]}")
    return {(v.policy_name, v.object.name if v.object else "") for v in decision.violations}


def _direct_side() -> dict[str, list[tuple[str, str, Any]]]:
    import cel

    return {
        "vap": [(name, kind, cel.compile(expr)) for name, kind, _res, expr in VAP_CHECKS],
        "kyverno": [(name, kind, cel.compile(expr)) for name, kind, _v, expr in KYVERNO_CHECKS],
    }


def _run_direct(
    programs: list[tuple[str, str, Any]], by_kind: dict[str, list[dict[str, Any]]]
) -> set[tuple[str, str]]:
    failed = set()
    for name, kind, program in programs:
        for obj in by_kind.get(kind, []):
            if not program.execute({"object": obj}):
                failed.add((name, obj["metadata"]["name"]))
    return failed


def child(args: argparse.Namespace) -> dict[str, Any]:
    objects = make_objects(args.objects)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    state, compile_seconds = _gate_side(objects)
    programs = _direct_side()
    seconds: dict[str, list[float]] = {}
    found: dict[str, set[tuple[str, str]]] = {}
    for _ in range(args.rounds):
        for language in ("vap", "kyverno"):
            for side in ("gate", "direct"):
                t = (
                    time.process_time()
                )  # CPU seconds of this (single-threaded) process: the machine is shared
                if side == "gate":
                    result = _run_gate(state, language)
                else:
                    result = _run_direct(programs[language], by_kind)
                seconds.setdefault(f"{language}/{side}", []).append(time.process_time() - t)
                key = f"{language}/{side}"
                if key in found and found[key] != result:
                    raise SystemExit(f"{key} gave different answers in two rounds")
                found[key] = result
    for language in ("vap", "kyverno"):
        gate_found, direct_found = found[f"{language}/gate"], found[f"{language}/direct"]
        if gate_found != direct_found:
            only_gate = sorted(gate_found - direct_found)[:5]
            only_direct = sorted(direct_found - gate_found)[:5]
            raise SystemExit(
                f"{language}: gate and direct disagree: gate only {only_gate}, direct only {only_direct}"
            )
    profile = ""
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        _run_gate(state, "vap")
        _run_gate(state, "kyverno")
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
        profile = out.getvalue()
    return {
        "objects": len(objects),
        "kinds": {k: len(v) for k, v in sorted(by_kind.items())},
        "policies": {"vap": len(VAP_CHECKS), "kyverno": len(KYVERNO_CHECKS)},
        "failures": {language: len(found[f"{language}/gate"]) for language in ("vap", "kyverno")},
        "compile_seconds": compile_seconds,
        "seconds": {k: statistics.median(v) for k, v in seconds.items()},
        "profile": profile,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench policy_languages")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the gate's cProfile (cumulative)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv or [])
    if args.child:
        print(json.dumps(child(args)))
        return
    print(f"load average before: {[round(x, 2) for x in os.getloadavg()]}")
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--objects", str(args.objects), "--rounds", str(args.rounds)] + (
            ["--profile"] if args.profile else []
        )
        result = isolated.run(
            "bench.bench_policy_languages", ["--child", *extra], isolated.env(Path(tmp)), "policy_languages"
        )
    s = result["seconds"]
    n = result["objects"]
    print(
        f"{result['policies']['vap']} VAPs + {result['policies']['kyverno']} Kyverno policies x {n} objects "
        f"{result['kinds']}, {args.rounds} rounds (medians); failing (policy, object) pairs: "
        f"{result['failures']} - the gate and the direct CEL agree on every one"
    )
    print(f"compile 40 policies once: {result['compile_seconds'] * 1000:.0f} ms")
    print(f"{'language':10} {'side':7} {'CPU s':>8} {'policy x object/s':>18} {'gate / direct':>14}")
    for language in ("vap", "kyverno"):
        evals = result["policies"][language] * n
        for side in ("gate", "direct"):
            t = s[f"{language}/{side}"]
            ratio = f"{t / s[f'{language}/direct']:14.2f}" if side == "gate" else ""
            print(f"{language:10} {side:7} {t:8.3f} {evals / t:18,.0f} {ratio}")
    total_gate = s["vap/gate"] + s["kyverno/gate"]
    total_direct = s["vap/direct"] + s["kyverno/direct"]
    print(
        f"{'both':10} {'gate':7} {total_gate:8.3f} {40 * n / total_gate:18,.0f} "
        f"{total_gate / total_direct:14.2f}"
    )
    print(f"{'both':10} {'direct':7} {total_direct:8.3f} {40 * n / total_direct:18,.0f}")
    if result["profile"]:
        print(result["profile"])
    print(f"load average after: {[round(x, 2) for x in os.getloadavg()]}")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
