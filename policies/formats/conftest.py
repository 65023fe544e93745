"""conftest-style policies: ``deny``/``violation``/``warn`` rules (with ``_suffix``) in chosen packages.

Semantics follow conftest (``policy/engine.go``, checked against its examples by
``tools/conformance/conftest_examples.py``):

* rules are found by name in each namespace (package; default ``main``): ``deny``, ``violation`` and
  ``warn``, optionally ``deny_<suffix>`` etc. ``deny``/``violation`` are failures, ``warn`` are warnings;
* a result is a string or an object with ``msg`` (other keys are kept as details);
* ``exception[rules]`` (a set of name lists) excuses a rule, failure or warning, for that input when the
  rule's suffix (``deny_foo`` -> ``foo``; a bare ``deny``/``warn``/``violation`` -> ``""``) is in one of the
  lists: the rule's findings are dropped and each matching list entry counts as one *exception*, as conftest
  reports ``EXCP - data.main.exception[_][_] == "foo"``;
* counts per input follow conftest: every definition of a deny/warn/violation rule is a test; a rule whose
  set is empty is a success; tests = max(definitions, failures + warnings + exceptions + empty rules);
* each object is one ``input``; with ``combine`` the input is ``[{path, contents}]`` with one entry per
  document (a file with several documents gives several entries with the same path), sorted by path;
* data files are plain data (``data.<key>``).

Fleetgate addition: a policy that reads ``data.fleetgate.review`` gets, per object, the same admission
review a Gatekeeper policy gets as ``input.review`` (operation, object, oldObject, userInfo, ...), while its
``input`` stays the object (for a DELETE review: the live object about to be pruned). Such a policy is also
evaluated on the objects a sync would prune; a policy that does not read the review is not (conftest only
ever sees the files). With ``combine`` the review is not set.

One entry point evaluates every rule (and ``exception``) of every namespace in one go.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.engine.base import Module, PolicySet
from policies.engine.source import _KEYWORD_STARTS, _code_tokens, is_identifier_path, package_of, rule_heads
from policies.formats import FormatError

ENTRYPOINT = "results"
RULE_NAME = re.compile(r"^(deny|violation|warn)(_[A-Za-z0-9_]+)?$")
_REVIEW_WORD = re.compile(r"\breview\b")


@functools.lru_cache(maxsize=1024)  # per module source; evaluated for every target
def rule_definitions(source: str) -> dict[str, int]:
    """Top-level rule name -> number of definitions (bodies), as OPA counts ``module.Rules``: each head
    counts, a v0 body that starts a line right after another (``p[x] { a }\n{ b }``) counts again, and an
    ``else`` branch does not."""
    counts: dict[str, int] = {}
    depth = 0
    prev_line = 0
    after_default = False
    last = ""
    for tok in _code_tokens(source):
        first_on_line = tok.line != prev_line
        prev_line = tok.line
        if tok.kind == "op":
            if tok.text == "{" and depth == 0 and first_on_line and last:
                counts[last] += 1
            if tok.text in "([{":
                depth += 1
            elif tok.text in ")]}":
                depth = max(0, depth - 1)
            continue
        if depth or tok.kind != "id":
            after_default = False
            continue
        if after_default or (first_on_line and tok.text not in _KEYWORD_STARTS):
            last = tok.text
            counts[last] = counts.get(last, 0) + 1
            after_default = False
        elif first_on_line and tok.text == "default":
            after_default = True
        elif first_on_line and tok.text in ("package", "import"):
            last = ""
    return counts


@dataclass(frozen=True)
class ConftestPolicy:
    modules: tuple[Module, ...]
    namespaces: tuple[str, ...] = ("main",)
    all_namespaces: bool = False
    combine: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modules:
            raise FormatError("a conftest policy needs at least one Rego module")

    def rules(self) -> dict[str, list[str]]:
        """Namespace -> rule names (including ``exception`` when present) that will be evaluated."""
        by_ns: dict[str, list[str]] = {}
        for module in self.modules:
            try:
                package = package_of(module.source)
            except ValueError as exc:
                raise FormatError(f"{module.path}: no package declaration") from exc
            if not self.all_namespaces and package not in self.namespaces:
                continue
            if not is_identifier_path(package):
                raise FormatError(f"{module.path}: package {package!r} must be a dotted path of identifiers")
            names = by_ns.setdefault(package, [])
            for name in rule_heads(module.source):
                if (RULE_NAME.match(name) or name == "exception") and name not in names:
                    names.append(name)
        return by_ns

    @property
    def reads_review(self) -> bool:
        """Whether the policy reads ``data.fleetgate.review`` (then its input is wrapped, see
        :func:`review_input_json`, and it also sees DELETE reviews). Never with ``combine``."""
        return not self.combine and any(
            "fleetgate" in m.source and _REVIEW_WORD.search(m.source) for m in self.modules
        )

    def rule_counts(self) -> dict[str, dict[str, int]]:
        """Namespace -> deny/warn/violation rule name -> number of definitions (conftest's test count)."""
        counts: dict[str, dict[str, int]] = {}
        for module in self.modules:
            try:
                package = package_of(module.source)
            except ValueError:
                continue
            if not self.all_namespaces and package not in self.namespaces:
                continue
            per_ns = counts.setdefault(package, {})
            for name, n in rule_definitions(module.source).items():  # cached: do not modify
                if RULE_NAME.match(name):
                    per_ns[name] = per_ns.get(name, 0) + n
        return counts

    def policy_set(self) -> PolicySet:
        rules = self.rules()
        if not any(name != "exception" for names in rules.values() for name in names):
            where = "any package" if self.all_namespaces else "package(s) " + ", ".join(self.namespaces)
            raise FormatError(f"no deny, violation or warn rules found in {where}")
        parts = []
        for ns, names in sorted(rules.items()):
            fields = ", ".join(f'"{n}": [x | x := data.{ns}.{n}]' for n in names)
            parts.append(f'"{ns}": {{{fields}}}')
        expr = "{" + ", ".join(parts) + "}"
        if self.reads_review:
            # input stays the object; the review is swapped into data.fleetgate.review per evaluation
            expr = (
                f"[r | r := {expr} with input as input.object with data.fleetgate.review as input.review][0]"
            )
        return PolicySet(self.modules, {ENTRYPOINT: expr}, dict(self.data))


@dataclass(frozen=True)
class Finding:
    namespace: str
    rule: str
    level: str  # "failure" or "warning"
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


def _suffix(rule: str) -> str:
    """conftest's removeRulePrefix: ``deny_foo`` -> ``foo``; a bare rule name -> ``""``."""
    _head, _, rest = rule.partition("_")
    return rest


@dataclass(frozen=True)
class Excused:
    """A rule excused by an ``exception`` rule for one input (conftest counts it as an exception)."""

    namespace: str
    rule: str
    query: str  # conftest's message for it: data.<ns>.exception[_][_] == "<suffix>"


@dataclass
class InputResult:
    """What conftest reports for one input: findings, exceptions and the number of tests."""

    findings: list[Finding]
    exceptions: list[Excused]
    tests: int

    @property
    def successes(self) -> int:
        return self.tests - len(self.findings) - len(self.exceptions)


def _items(value: Any) -> list[Any]:
    """Members of a rule value: a set/array, the keys of an object (``deny[msg] if`` in v1), or a scalar."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        return [k for k, v in value.items() if v is not False and v is not None]
    if value is True:
        return [""]
    if value in (False, None):
        return []
    return [value]


def _message(item: Any, rule: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return (item or rule), {}
    if isinstance(item, Mapping):
        details = {k: v for k, v in item.items() if k != "msg"}
        msg = item.get("msg")
        return (
            msg if isinstance(msg, str) else json.dumps(msg if msg is not None else item, sort_keys=True),
            details,
        )
    return json.dumps(item, sort_keys=True), {}


def _exception_entries(rules: Mapping[str, Any]) -> list[Any]:
    """The values ``exception[_][_]`` iterates: each member of each exception set that is a list."""
    out: list[Any] = []
    wrapped = rules.get("exception") or []
    for member in _items(wrapped[0]) if wrapped else []:
        if isinstance(member, list):
            out.extend(member)
    return out


def check(result: Any, rule_counts: Mapping[str, Mapping[str, int]] | None = None) -> InputResult:
    """The entry point's value (``{namespace: {rule: [value?]}}``) for one input -> conftest's result.

    ``rule_counts`` (:meth:`ConftestPolicy.rule_counts`) gives the number of tests; without it each rule
    name counts once."""
    out = InputResult([], [], 0)
    if not isinstance(result, Mapping):
        return out
    definitions = 0
    empty = 0
    for ns, rules in sorted(result.items()):
        if not isinstance(rules, Mapping):
            continue
        counts = (rule_counts or {}).get(ns, {})
        definitions += sum(counts.values()) if counts else sum(1 for r in rules if r != "exception")
        entries = _exception_entries(rules)
        for rule, wrapped in rules.items():
            if rule == "exception":
                continue
            suffix = _suffix(rule)
            hits = sum(1 for entry in entries if entry == suffix)
            if hits:
                query = f"data.{ns}.exception[_][_] == {json.dumps(suffix)}"
                out.exceptions.extend(Excused(ns, rule, query) for _ in range(hits))
                continue
            if not wrapped:  # undefined (a complete rule whose body failed): neither result nor success
                continue
            items = _items(wrapped[0])
            if not items:
                empty += 1
                continue
            level = "warning" if rule.startswith("warn") else "failure"
            for item in items:
                msg, details = _message(item, rule)
                out.findings.append(Finding(ns, rule, level, msg, details))
    out.tests = max(definitions, len(out.findings) + len(out.exceptions) + empty)
    return out


def findings(result: Any) -> list[Finding]:
    """Turn the entry point's value (``{namespace: {rule: [value?]}}``) into findings, minus exceptions."""
    return check(result).findings


def combined_input(files: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """``--combine`` input as conftest builds it: one ``{path, contents}`` per document (a multi-document
    file gives one entry per document, all with its path), sorted by path (documents keep their order)."""
    entries = [{"path": path, "contents": doc} for path, docs in files for doc in docs]
    return sorted(entries, key=lambda e: e["path"])


def review_input_json(object_json: str, review_json: str) -> str:
    """The wrapped input of a policy that reads ``data.fleetgate.review`` (pre-encoded parts)."""
    return '{"object":' + object_json + ',"review":' + review_json + "}"
