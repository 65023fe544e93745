"""The Rego engines behind one protocol: compile errors with lines, v0/v1, tests, sessions, failures.

Every test taking ``engine`` runs on the in-process regorus engine and on a real OPA server.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from policies.engine import (
    EngineError,
    EngineUnavailable,
    Module,
    PolicyCompileError,
    PolicySet,
    RegoEngine,
    create_engine,
    engine_settings,
    get_engine,
)
from policies.engine.opa_engine import OpaEngine
from policies.engine.opa_server import free_port
from policies.engine.regorus_engine import RegorusEngine

V0_MODULE = """\
package demo

violation[{"msg": msg}] {
  input.replicas < 2
  msg := sprintf("only %v replica(s)", [input.replicas])
}
"""

V1_MODULE = """\
package demo1

deny contains msg if {
  some c in input.containers
  startswith(c, "bad")
  msg := sprintf("bad container %s", [c])
}
"""


def test_syntax_error_is_reported_with_its_file_and_line(engine: RegoEngine) -> None:
    good = Module("ok.rego", V0_MODULE)
    bad = Module("broken.rego", "package broken\n\nallow {\n  true\n}\n\ndeny[msg {\n  msg := 1\n}\n")
    errors = engine.check([good, bad])
    assert errors, "an invalid module must be refused"
    assert {(e.path, e.line) for e in errors} == {("broken.rego", 7)}
    stray = engine.check([Module("stray.rego", "package stray\n\nallow {\n  input.x == 1\n  )\n}\n")])
    assert [(e.path, e.line) for e in stray] == [("stray.rego", 5)]


def test_unsafe_variable_is_reported_with_its_line(engine: RegoEngine) -> None:
    errors = engine.check([Module("unsafe.rego", "package unsafe\n\nallow {\n  x == input.y\n}\n")])
    assert [(e.path, e.line) for e in errors] == [("unsafe.rego", 4)]
    assert "unsafe" in errors[0].message


def test_valid_v0_and_v1_modules_check_clean(engine: RegoEngine) -> None:
    assert engine.check([Module("a.rego", V0_MODULE), Module("b.rego", V1_MODULE)]) == []


def test_prepare_refuses_an_invalid_set_with_lines(engine: RegoEngine) -> None:
    bad = Module("p.rego", "package p\n\nx := {\n")
    with pytest.raises(PolicyCompileError) as info:
        engine.prepare(PolicySet((bad,), {"x": "data.p.x"}))
    assert info.value.errors and info.value.errors[0].path == "p.rego"
    assert info.value.errors[0].line >= 3


def test_v0_and_v1_modules_evaluate_in_one_set(engine: RegoEngine) -> None:
    prepared = engine.prepare(
        PolicySet(
            (Module("a.rego", V0_MODULE), Module("b.rego", V1_MODULE)),
            {"v0": "[v | some v; data.demo.violation[v]]", "v1": "[v | some v; data.demo1.deny[v]]"},
        )
    )
    doc = {"replicas": 1, "containers": ["good", "bad-one"]}
    assert prepared.evaluate("v0", doc) == [[{"msg": "only 1 replica(s)"}]]
    assert prepared.evaluate("v1", doc) == [["bad container bad-one"]]
    ok = {"replicas": 3, "containers": ["good"]}
    assert prepared.evaluate_many("v0", ['{"replicas": 3}', '{"replicas": 0}'])[0] == [[]]
    assert prepared.evaluate("v1", ok) == [[]]


def test_v0_rule_with_several_bodies(engine: RegoEngine) -> None:
    module = Module("m.rego", "package multi\n\nnames[n] {\n  n := input.a[_]\n} {\n  n := input.b[_]\n}\n")
    prepared = engine.prepare(PolicySet((module,), {"n": "data.multi.names"}))
    assert sorted(prepared.evaluate("n", {"a": ["x"], "b": ["y", "z"]})[0]) == ["x", "y", "z"]


def test_undefined_entry_point_is_an_empty_list(engine: RegoEngine) -> None:
    prepared = engine.prepare(
        PolicySet((Module("u.rego", "package u\n\nx := 1 {\n  input.on\n}\n"),), {"x": "data.u.x"})
    )
    assert prepared.evaluate("x", {"on": True}) == [1]
    assert prepared.evaluate("x", {"on": False}) == []


def test_runtime_error_raises_instead_of_answering(engine: RegoEngine) -> None:
    module = Module("c.rego", "package c\n\nx = input.a {\n  true\n}\n\nx = input.b {\n  true\n}\n")
    prepared = engine.prepare(PolicySet((module,), {"x": "data.c.x"}))
    assert prepared.evaluate("x", {"a": 1, "b": 1}) == [1]
    with pytest.raises(EngineError):
        prepared.evaluate("x", {"a": 1, "b": 2})


def test_two_policies_in_the_same_package_do_not_mix(engine: RegoEngine) -> None:
    first = PolicySet(
        (Module("one.rego", 'package main\n\ndeny["one"] {\n  true\n}\n'),),
        {"d": "[m | some m; data.main.deny[m]]"},
    )
    second = PolicySet(
        (Module("two.rego", 'package main\n\ndeny["two"] {\n  true\n}\n'),),
        {"d": "[m | some m; data.main.deny[m]]"},
    )
    assert engine.prepare(first).evaluate("d", {}) == [["one"]]
    assert engine.prepare(second).evaluate("d", {}) == [["two"]]


def test_sessions_carry_per_target_inventory_and_context(engine: RegoEngine) -> None:
    module = Module(
        "i.rego",
        "package inv\n\nnames := [n | data.inventory.cluster.v1.Namespace[n]]\n"
        "cluster := data.fleetgate.context.cluster.name\n",
    )
    prepared = engine.prepare(
        PolicySet((module,), {"names": "data.inv.names", "cluster": "data.inv.cluster"})
    )
    first = {
        "inventory": {"cluster": {"v1": {"Namespace": {"apps": {}}}}},
        "fleetgate": {"context": {"cluster": {"name": "eu-1"}}},
    }
    second = {
        "inventory": {"cluster": {"v1": {"Namespace": {"batch": {}, "web": {}}}}},
        "fleetgate": {"context": {"cluster": {"name": "us-2"}}},
    }
    with engine.open_session(first) as s1, engine.open_session(second) as s2:
        assert prepared.evaluate("names", None, s1) == [["apps"]]
        assert prepared.evaluate("names", None, s2) == [["batch", "web"]]
        assert prepared.evaluate_many("cluster", ["{}"], s2) == [["us-2"]]
        assert prepared.evaluate("cluster", {}, s1) == ["eu-1"]
    assert prepared.evaluate("names", None) == [[]]


def test_static_data_and_ad_hoc_query(engine: RegoEngine) -> None:
    module = Module("d.rego", "package cfg\n\nallowed[r] {\n  r := data.registries[_]\n}\n")
    prepared = engine.prepare(
        PolicySet((module,), {"a": "data.cfg.allowed"}, {"registries": ["a.io", "b.io"]})
    )
    assert sorted(prepared.evaluate("a", {})[0]) == ["a.io", "b.io"]
    assert prepared.query('data.cfg.allowed["a.io"]') == ["a.io"]
    assert prepared.query("input.n + 1", {"n": 41}) == [42]
    assert prepared.query("input.missing", {}) == []


def test_run_tests_reports_pass_and_fail_per_rule(engine: RegoEngine) -> None:
    policy = Module("p.rego", V0_MODULE)
    tests = Module(
        "p_test.rego",
        """\
package demo_test

import data.demo

test_two_replicas_pass {
  count(demo.violation) == 0 with input as {"replicas": 2}
}

test_one_replica_fails {
  count(demo.violation) == 1 with input as {"replicas": 1}
}

test_wrong_expectation {
  count(demo.violation) == 0 with input as {"replicas": 1}
}
""",
    )
    results = {r.name: r.passed for r in engine.run_tests([policy, tests])}
    assert results == {
        "test_two_replicas_pass": True,
        "test_one_replica_fails": True,
        "test_wrong_expectation": False,
    }


def test_regorus_prepared_set_works_from_another_thread(regorus_engine: RegorusEngine) -> None:
    prepared = regorus_engine.prepare(
        PolicySet((Module("a.rego", V0_MODULE),), {"v": "[v | some v; data.demo.violation[v]]"})
    )
    seen: list[object] = []

    def worker() -> None:
        try:
            seen.append(prepared.evaluate("v", {"replicas": 0}))
        except BaseException as exc:  # a PanicException is a BaseException
            seen.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [[[{"msg": "only 0 replica(s)"}]]]


def test_rust_backtrace_is_not_set_in_the_process() -> None:
    RegorusEngine()
    assert "RUST_BACKTRACE" not in os.environ


def test_unreachable_opa_raises_engine_unavailable() -> None:
    engine = OpaEngine(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(EngineUnavailable):
        engine.prepare(PolicySet((Module("a.rego", V0_MODULE),), {"v": "data.demo.violation"}))
    with pytest.raises(EngineUnavailable):
        engine.open_session({})


def test_engine_settings_come_from_the_django_settings(settings: Any) -> None:
    for name in ("FLEETGATE_REGO_ENGINE", "FLEETGATE_OPA_URL", "FLEETGATE_REGO_TIMEOUT"):
        setattr(settings, name, "")
    defaults = engine_settings()
    assert (defaults.engine, defaults.opa_url, defaults.timeout) == ("regorus", "http://127.0.0.1:8181", 10.0)
    settings.FLEETGATE_REGO_ENGINE = "opa"
    settings.FLEETGATE_OPA_URL = "http://127.0.0.1:9"
    engine = get_engine()
    assert isinstance(engine, OpaEngine) and engine.url == "http://127.0.0.1:9"
    assert get_engine() is engine
    settings.FLEETGATE_REGO_ENGINE = "nonsense"
    with pytest.raises(ValueError, match="unknown Rego engine"):
        create_engine()
    settings.FLEETGATE_REGO_TIMEOUT = "soon"
    with pytest.raises(ValueError, match="FLEETGATE_REGO_TIMEOUT"):
        engine_settings()
