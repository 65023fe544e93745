"""CEL: the library the gate uses, the gate's layer on it, and the alternative it was chosen over.

    .venv/bin/python -m bench cel
    .venv/bin/python -m bench cel -- --objects 4000 --rounds 5

Ten expressions of the kind ValidatingAdmissionPolicies carry (field limits, ``all``/``exists`` over
containers, ``has`` guards, ``matches``, ``filter``) compiled and evaluated on N Deployment-shaped dicts by:

1. ``cel`` (common-expression-language, the Rust crate) called directly: the baseline;
2. ``policies.formats.cel`` (compile_expression / Program.evaluate): the gate's layer (declared-name checks,
   the optional-syntax rewrite, the Kubernetes library functions, error wording) on the same crate;
3. ``celpy`` (cel-python 0.5.0), when it is importable. It is not a dependency of the project; to compare,
   install it into a throwaway environment and put that on ``PYTHONPATH`` (as done for docs/benchmarks.md).

Rounds alternate between the sides so that machine load hits all alike; each figure is the median of the
rounds; ratios are against the crate. Every side must agree on every result, or the run fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import cel

from policies.formats.cel import compile_expression

EXPRESSIONS = [
    "object.spec.replicas <= 5",
    "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    "has(object.metadata.labels) && 'app' in object.metadata.labels",
    "object.spec.template.spec.containers.all(c, !has(c.securityContext) || "
    "!has(c.securityContext.privileged) || c.securityContext.privileged == false)",
    "object.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    "object.spec.template.spec.containers.exists(c, c.name == 'app') && "
    "size(object.spec.template.spec.containers) <= 4",
    "object.spec.template.spec.containers.filter(c, has(c.resources) && has(c.resources.limits)).size() "
    "== object.spec.template.spec.containers.size()",
    "!has(object.spec.template.spec.hostNetwork) || object.spec.template.spec.hostNetwork == false",
    "object.metadata.namespace != 'default' || object.spec.replicas > 2",
    "object.spec.template.spec.containers.all(c, c.name.size() < 20)",
]


def make_object(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"web-{i}",
            "namespace": "default" if i % 3 else "shop",
            "labels": {"app": "web"},
        },
        "spec": {
            "replicas": i % 7,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example.com/web:1",
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                        },
                        {
                            "name": "side",
                            "image": "docker.io/x",
                            "securityContext": {"privileged": i % 2 == 0},
                        },
                    ]
                }
            },
        },
    }


Side = tuple[Callable[[], list[Any]], Callable[[list[Any], dict[str, Any]], list[bool]]]


def sides() -> dict[str, Side]:
    out: dict[str, Side] = {
        "cel (Rust crate), direct": (
            lambda: [cel.compile(e) for e in EXPRESSIONS],
            lambda programs, obj: [p.execute({"object": obj}) for p in programs],
        ),
        "policies.formats.cel": (
            lambda: [compile_expression(e, ["object"]) for e in EXPRESSIONS],
            lambda programs, obj: [p.evaluate({"object": obj}) for p in programs],
        ),
    }
    try:
        import celpy  # type: ignore[import-not-found]
    except ImportError:
        print("cel-python is not importable: compared only the crate and the gate's layer")
        return out
    env = celpy.Environment()
    out["cel-python 0.5.0"] = (
        lambda: [env.program(env.compile(e)) for e in EXPRESSIONS],
        lambda programs, obj: [bool(p.evaluate({"object": celpy.json_to_cel(obj)})) for p in programs],
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cel")
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--compiles", type=int, default=50, help="compilations of the set per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv or [])
    objects = [make_object(i) for i in range(args.objects)]
    compile_us: dict[str, list[float]] = {}
    eval_us: dict[str, list[float]] = {}
    answers: dict[str, list[list[bool]]] = {}
    print(f"load average before: {os.getloadavg()}")
    for _ in range(args.rounds):
        for name, (compile_all, evaluate) in sides().items():
            t = time.perf_counter()
            for _ in range(args.compiles):
                programs = compile_all()
            compile_us.setdefault(name, []).append(
                (time.perf_counter() - t) / (args.compiles * len(EXPRESSIONS)) * 1e6
            )
            t = time.perf_counter()
            results = [evaluate(programs, obj) for obj in objects]
            eval_us.setdefault(name, []).append(
                (time.perf_counter() - t) / (len(objects) * len(EXPRESSIONS)) * 1e6
            )
            answers[name] = results
    reference = next(iter(answers.values()))
    for name, results in answers.items():
        if results != reference:
            raise SystemExit(f"{name} disagrees with the crate on some results")
    base_c = statistics.median(next(iter(compile_us.values())))
    base_e = statistics.median(next(iter(eval_us.values())))
    print(
        f"{len(EXPRESSIONS)} expressions x {len(objects)} objects, {args.rounds} rounds (medians); "
        "all sides agree"
    )
    print(
        f"{'side':28} {'compile us/expr':>16} {'x crate':>8} {'eval us/expr':>13} "
        f"{'evals/s':>9} {'x crate':>8}"
    )
    for name in compile_us:
        c, e = statistics.median(compile_us[name]), statistics.median(eval_us[name])
        print(f"{name:28} {c:16.1f} {c / base_c:8.2f} {e:13.1f} {1e6 / e:9.0f} {e / base_e:8.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
