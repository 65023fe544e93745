"""conftest-style policies: ``deny``/``violation``/``warn`` rules (with ``_suffix``) in chosen packages.

Semantics follow conftest:

* rules are found by name in each namespace (package; default ``main``): ``deny``, ``violation`` and
  ``warn``, optionally ``deny_<suffix>`` etc. ``deny``/``violation`` are failures, ``warn`` are warnings;
* a result is a string or an object with ``msg`` (other keys are kept as details);
* ``exception[rules]`` (a set of name lists) excuses a failure rule when the rule's suffix (``deny_foo`` ->
  ``foo``; the bare rule -> its own name, ``deny``) is in one of the lists, for that input;
* each object is one ``input``; with ``combine`` the input is ``[{path, contents}]`` for all files, where
  ``contents`` is the document (or the list of documents when a file holds several);
* data files are plain data (``data.<key>``).

Fleetgate addition: a policy that reads ``data.fleetgate.review`` gets, per object, the same admission
review a Gatekeeper policy gets as ``input.review`` (operation, object, oldObject, userInfo, ...), while its
``input`` stays the object (for a DELETE review: the live object about to be pruned). Such a policy is also
evaluated on the objects a sync would prune; a policy that does not read the review is not (conftest only
ever sees the files). With ``combine`` the review is not set.

One entry point evaluates every rule (and ``exception``) of every namespace in one go.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.engine.base import Module, PolicySet
from policies.engine.source import is_identifier_path, package_of, rule_heads
from policies.formats import FormatError

ENTRYPOINT = "results"
RULE_NAME = re.compile(r"^(deny|violation|warn)(_[A-Za-z0-9_]+)?$")
_REVIEW_WORD = re.compile(r"\breview\b")


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
    head, _, rest = rule.partition("_")
    return rest if rest else head


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


def findings(result: Any) -> list[Finding]:
    """Turn the entry point's value (``{namespace: {rule: [value?]}}``) into findings, minus exceptions."""
    out: list[Finding] = []
    if not isinstance(result, Mapping):
        return out
    for ns, rules in sorted(result.items()):
        if not isinstance(rules, Mapping):
            continue
        excused: set[str] = set()
        for value in rules.get("exception") or []:
            for entry in _items(value):
                if isinstance(entry, list):
                    excused.update(str(x) for x in entry)
                elif isinstance(entry, str):
                    excused.add(entry)
        for rule, wrapped in rules.items():
            if rule == "exception" or not wrapped:
                continue
            level = "warning" if rule.startswith("warn") else "failure"
            if level == "failure" and _suffix(rule) in excused:
                continue
            for item in _items(wrapped[0]):
                msg, details = _message(item, rule)
                out.append(Finding(ns, rule, level, msg, details))
    return out


def combined_input(files: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """``--combine`` input: one ``{path, contents}`` per file; contents is a list for multi-document files."""
    return [{"path": path, "contents": docs[0] if len(docs) == 1 else docs} for path, docs in files]


def review_input_json(object_json: str, review_json: str) -> str:
    """The wrapped input of a policy that reads ``data.fleetgate.review`` (pre-encoded parts)."""
    return '{"object":' + object_json + ',"review":' + review_json + "}"
