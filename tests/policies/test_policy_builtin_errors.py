"""Nothing fails open (issue 16): a built-in that errors blocks the object on both engines.

OPA's default is to make an erroring built-in's expression undefined, so a ``deny`` rule that calls one
quietly passes; Fleetgate queries OPA with ``strict-builtin-errors`` and regorus raises, so on both engines
the error is an engine error of the decision, which blocks. conftest's own example
(``--show-builtin-errors`` with ``net.lookup_ip_addr``) is refused at save and blocks if it
ever reaches evaluation."""

from __future__ import annotations

import pytest

from policies.engine import RegoEngine
from policies.gate import BoundPolicy, Outcome, check_policy, evaluate_target

OBJ = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a(b{"}, "data": {"n": "x"}}

# Each expression errors on the object above (not a number, not a regex, not JSON, not a time, ...).
ERRORING = {
    "to_number": "to_number(input.metadata.name) > 3",
    "regex.match": 'regex.match(input.metadata.name, "x")',
    "json.unmarshal": "json.unmarshal(input.metadata.name)",
    "time.parse_rfc3339_ns": "time.parse_rfc3339_ns(input.metadata.name) > 0",
    "units.parse_bytes": "units.parse_bytes(input.metadata.name) > 0",
    "base64.decode": 'base64.decode(input.metadata.name) == "x"',
    # under `not`, OPA (non-strict) would make the negation true: a deny that fires by accident, or, in an
    # allow-style rule, one that passes by accident. Strict mode makes it an error either way.
    "not to_number": "not to_number(input.metadata.name) > 3",
}


def _policy(rule: str, expr: str) -> BoundPolicy:
    source = f'package main\nimport rego.v1\n\n{rule}_x contains "hit" if {{\n  {expr}\n}}\n'
    return BoundPolicy.conftest(1, "erroring", {"erroring.rego": source})


@pytest.mark.parametrize("builtin", sorted(ERRORING))
@pytest.mark.parametrize("rule", ["deny", "warn"])
def test_an_erroring_builtin_blocks_on_both_engines(engine: RegoEngine, builtin: str, rule: str) -> None:
    decision = evaluate_target([OBJ], [_policy(rule, ERRORING[builtin])], engine=engine)
    assert decision.outcome is Outcome.BLOCKED, decision
    assert decision.violations == []  # no finding: the error itself blocks, even for a warn rule
    assert len(decision.errors) == 1
    error = decision.errors[0]
    assert error.kind == "engine"
    assert error.message.startswith(f"{engine.name}: ")
    assert decision.reasons[0].startswith("engine error: erroring: ")


def test_the_same_policies_pass_when_the_builtins_succeed(engine: RegoEngine) -> None:
    """The control: on an object where every built-in succeeds and no rule fires, the decision is passed."""
    fine = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "1"}}
    exprs = ("to_number(input.metadata.name) > 3", 'regex.match("^[0-9]+$", input.metadata.name) == false')
    for expr in exprs:
        decision = evaluate_target([fine], [_policy("deny", expr)], engine=engine)
        assert decision.outcome is Outcome.PASSED, decision
        assert decision.errors == []


CONFTEST_DNS = """package main
import rego.v1

deny_dnsresolution contains "testing DNS resolution" if {
  net.lookup_ip_addr("not-real-domainxyz")
}
"""


def test_conftest_builtin_error_example_is_refused_and_blocks(engine: RegoEngine) -> None:
    """conftest's example needs --show-builtin-errors to fail; here it cannot pass at all: the network
    built-in is refused when the policy is saved and, if a stored version reaches the gate, it blocks."""
    policy = BoundPolicy.conftest(1, "dns", {"invalid-dns.rego": CONFTEST_DNS})
    errors = check_policy(policy, engine)
    assert [(e["path"], e["line"], e["code"]) for e in errors] == [
        ("invalid-dns.rego", 5, "rego_forbidden_builtin")
    ]
    decision = evaluate_target([OBJ], [policy], engine=engine)
    assert decision.outcome is Outcome.BLOCKED
    assert "net.lookup_ip_addr is not allowed" in decision.errors[0].message
