"""regorus answers like OPA on the constructs where the two were measured to differ
(policies/engine/README.md, "Where regorus differs from OPA"): the source rewrites keep lines, and both
engines give the same values."""

from __future__ import annotations

from typing import Any

import pytest

from policies.engine import Module, PolicySet, RegoEngine
from policies.engine.regorus_compat import regorus_compatible, split_multi_body_rules
from policies.engine.regorus_engine import RegorusEngine

# v0, in the style of gatekeeper-library's k8spspseccomp: a function whose value is an object literal,
# several definitions, a rule with several bodies (one commented with braces), an else with an object value.
OBJECT_HEADS = """package compat

get_profile(c) = {"profile": p, "location": "container"} {
    p := c.securityContext.seccompProfile.type
}

get_profile(c) = {"profile": "not configured", "location": "no explicit profile found"} {
    not c.securityContext
}

profiles = [get_profile({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}), get_profile({})]

several[{"msg": m}] {
  m := "one" # a comment { with braces }
} {
  m := "two" # "} {"
}

value = 5 { false } { true }

fallback = 1 { false } else = {"k": 2} { true }
"""

# horizontalpodautoscaler's shapes: a line that starts with "(" and a sprintf with fewer arguments than verbs.
HPA_SHAPES = """package compat

spread_ok {
    input.minimumReplicaSpread
    (input.max - input.min) >= input.minimumReplicaSpread
}

missing := sprintf("The %v <%v> minReplicas %v is not allowed: %v. Allowed: %5.2f", ["HPA", "web", 1])
"""

# users' shape: not of a call whose argument is undefined makes the body fail in OPA.
NEGATIONS = """package compat

import future.keywords.in

accept(rule, _, _) { rule == "RunAsAny" }
f(x) { x == 1 }
nothing = x { x := input.missing }

call_arg { params := input.params; not accept(params.rule, 1, params.ranges) }
builtin_arg { not startswith(input.missing, "a") }
nested_call { not count(input.missing) == 0 }
comparison { not input.missing != 1 }
equality { not input.missing == 1 }
naked { not input.missing }
index { not input.obj[input.missing] }
rule_arg { not f(nothing) }
array_side { not [input.missing] == [1] }
defined { not f(input.obj.x) }
with_mod { not f(input.missing) with input.other as 1 }
membership { not input.missing in {"a"} }
member_defined { not input.obj.x in [2] }
"""

QUERIES: list[tuple[str, str]] = [
    (OBJECT_HEADS, "data.compat.profiles"),
    (OBJECT_HEADS, "data.compat.several"),
    (OBJECT_HEADS, "data.compat.value"),
    (OBJECT_HEADS, "data.compat.fallback"),
    (HPA_SHAPES, "data.compat.spread_ok"),
    (HPA_SHAPES, "data.compat.missing"),
    *[
        (NEGATIONS, f"data.compat.{rule}")
        for rule in (
            "call_arg",
            "builtin_arg",
            "nested_call",
            "comparison",
            "equality",
            "naked",
            "index",
            "rule_arg",
            "array_side",
            "defined",
            "with_mod",
            "membership",
            "member_defined",
        )
    ],
]

EXPECTED: dict[str, Any] = {
    "data.compat.profiles": [
        {"profile": "RuntimeDefault", "location": "container"},
        {"profile": "not configured", "location": "no explicit profile found"},
    ],
    "data.compat.several": [{"msg": "one"}, {"msg": "two"}],
    "data.compat.value": 5,
    "data.compat.fallback": {"k": 2},
    "data.compat.spread_ok": True,
    "data.compat.missing": (
        "The HPA <web> minReplicas 1 is not allowed: %!v(MISSING). Allowed: %!f(MISSING)"
    ),
    "data.compat.equality": True,
    "data.compat.naked": True,
    "data.compat.member_defined": True,
}

INPUT = {"params": {"rule": "RunAsAny"}, "minimumReplicaSpread": 1, "min": 1, "max": 3, "obj": {"x": 1}}


def _value(engine: RegoEngine, source: str, query: str) -> Any:
    prepared = engine.prepare(PolicySet((Module("compat.rego", source),), {"q": query}))
    out = prepared.evaluate("q", INPUT)
    if not out:
        return "undefined"
    value = out[0]
    return sorted(value, key=repr) if isinstance(value, list) and query.endswith("several") else value


@pytest.mark.parametrize(("source", "query"), QUERIES, ids=[q for _, q in QUERIES])
def test_both_engines_give_opas_answer(engine: RegoEngine, source: str, query: str) -> None:
    assert _value(engine, source, query) == EXPECTED.get(query, "undefined")


@pytest.mark.parametrize("source", [OBJECT_HEADS, HPA_SHAPES, NEGATIONS])
def test_rewrites_keep_every_line(source: str) -> None:
    out = regorus_compatible(source, v0=True)
    assert out != source
    assert out.count("\n") == source.count("\n")
    for original, rewritten in zip(source.splitlines(), out.splitlines(), strict=True):
        if original.startswith("get_profile"):  # object-literal heads are left as written
            assert original == rewritten


def test_an_object_literal_head_is_not_a_second_body() -> None:
    assert split_multi_body_rules(OBJECT_HEADS.split("several")[0]) == OBJECT_HEADS.split("several")[0]
    out = split_multi_body_rules(OBJECT_HEADS)
    assert '} several[{"msg": m}] {\n  m := "two"' in out
    assert "value = 5 { false } value = 5 { true }" in out
    assert 'else = {"k": 2} { true }' in out  # an else with an object value is left alone


def test_an_error_names_the_users_line_once() -> None:
    broken = OBJECT_HEADS + "\nbad[msg] {\n  msg := \n}\n"
    errors = RegorusEngine().check([Module("compat.rego", broken)])
    assert len(errors) == 1
    bad_line = broken.splitlines().index("bad[msg] {") + 1
    assert errors[0].path == "compat.rego"
    assert bad_line <= errors[0].line <= bad_line + 2


# sprintf: regorus runs OPA's (policies/engine/gofmt.py) instead of its own, which raised on flags, precision,
# %T, %#v and surplus arguments and printed other text for %f/%e/%g/%o and mismatched types.
SPRINTF_CASES: list[tuple[str, list[Any]]] = [
    ("%v|%g|%e|%f|%.2f|%8.3f|%G", [1234567.5] * 7),
    ("%v|%g|%e|%f|%.2f|%8.3f|%G", [0.00001] * 7),
    ("%v|%e|%f", [2.5, 2.5, 2.5]),
    (
        "%x|%X|%q|%5s|%-5s|%.2s|%+d|% d|%05d|%o|%O|%b|%c|%U|%#x|%#o",
        [
            "hi",
            "hi",
            'x"y',
            "a",
            "a",
            "abc",
            5,
            5,
            -5,
            8,
            8,
            5,
            65,
            65,
            255,
            8,
        ],
    ),
    ("%d|%s|%t|%e|%T|%T|%#v", ["a", 5, True, 1000, 1, 1.5, "a"]),
    ("%v %v %d", [1]),
    ("%v", [1, "a", 2.5]),
    ("%v|%v|%v|%v|%v|%s", [[1, "a"], {"b": 1, "a": None}, True, None, 10, ["x"]]),
    ("%d%%|%5.1f%%", [50, 99.44]),
]


@pytest.mark.parametrize(("fmt", "args"), SPRINTF_CASES, ids=[f for f, _ in SPRINTF_CASES])
def test_sprintf_prints_what_opa_prints(
    regorus_engine: RegoEngine, opa_engine: RegoEngine, fmt: str, args: list[Any]
) -> None:
    import json

    source = f"package compat\n\nm := sprintf({json.dumps(fmt)}, {json.dumps(args)})\n"
    opa = _value(opa_engine, source, "data.compat.m")
    assert isinstance(opa, str)
    assert _value(regorus_engine, source, "data.compat.m") == opa


def test_plain_verbs_stay_on_regorus_sprintf_for_values_an_extension_cannot_take(
    regorus_engine: RegoEngine, opa_engine: RegoEngine
) -> None:
    source = 'package compat\n\nm := sprintf("%v and %s", [{{"a": 1}, {"b": [2]}}, "x"])\n'
    assert "__fleetgate_sprintf" not in regorus_compatible(source, v0=True)
    opa = _value(opa_engine, source, "data.compat.m")
    assert opa == '{{"a": 1}, {"b": [2]}} and x'
    assert _value(regorus_engine, source, "data.compat.m") == opa
    routed = 'package compat\n\nm := sprintf("%-4s|%v", ["a", 1.5])\n'
    assert "__fleetgate_sprintf(" in regorus_compatible(routed, v0=True)
    assert _value(regorus_engine, routed, "data.compat.m") == _value(opa_engine, routed, "data.compat.m")


def test_an_error_on_a_rewritten_line_names_the_users_column() -> None:
    source = "package p\n\nf(x) { x }\nr { o := input.o; not f(o.a); y := ) }\n"
    (error,) = RegorusEngine().check([Module("p.rego", source)])
    assert (error.line, error.column) == (4, source.splitlines()[3].rindex(")") + 1)
