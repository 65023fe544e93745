"""Kyverno policies in the gate: ``ClusterPolicy``/``Policy`` validate rules and ``PolicyException``.

    policy = parse_policy(yaml_text_or_mapping)      # FormatError naming the field on bad input
    policy.not_applied                               # [(rule name, "mutate" | "generate" | ...)]
    policy.evaluate(inputs)                          # [Finding] for the gate (policies.formats.admission)
    policy.apply(input)                              # [RuleResult] per matching rule (pass/fail/skip/error)
    exception = parse_exception(doc); exception.matches(policy, rule_name, input)

Pure: no Django, no I/O. See docs/policies.md (Kyverno) for what is supported.
"""

from policies.formats.kyverno.engine import KyvernoPolicy, parse_policy
from policies.formats.kyverno.exceptions import KyvernoException, parse_exception
from policies.formats.kyverno.policy import RuleResult

__all__ = ["KyvernoException", "KyvernoPolicy", "RuleResult", "parse_exception", "parse_policy"]
