"""Kyverno ``ClusterPolicy`` / ``Policy`` (kyverno.io/v1, v2beta1): parsing and the validate rules'
evaluation, following Kyverno's engine (``pkg/engine``) rule by rule.

One rule on one request gives a :class:`RuleResult` (pass, fail, skip, error) or nothing (the rule does not
match). :meth:`KyvernoPolicy.evaluate` turns fails and errors into gate :class:`Finding` values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput, ParamsLookup, no_params
from policies.formats.kyverno.conditions import (
    normalize_operator,
)
from policies.formats.kyverno.match import MatchResources, Request
from policies.formats.kyverno.pattern import refuse_mutate_anchors

API_VERSIONS = ("kyverno.io/v1", "kyverno.io/v2beta1", "kyverno.io/v2")
POD_CONTROLLERS = (
    "DaemonSet",
    "Deployment",
    "Job",
    "StatefulSet",
    "ReplicaSet",
    "ReplicationController",
    "CronJob",
)
CLUSTER_CONTEXT = ("apiCall", "configMap", "imageRegistry", "globalReference")
AUTOGEN_ANNOTATION = "pod-policies.kyverno.io/autogen-controllers"
_RESERVED = {
    "request",
    "serviceAccountName",
    "serviceAccountNamespace",
    "element",
    "elementIndex",
    "images",
    "image",
    "namespaceObject",
    "@",
}
_RULE_TYPES = ("validate", "mutate", "generate", "verifyImages")
_VALIDATE_FIELDS = {
    "message",
    "pattern",
    "anyPattern",
    "deny",
    "foreach",
    "cel",
    "podSecurity",
    "manifests",
    "failureAction",
    "failureActionOverrides",
    "allowExistingViolations",
    "assert",
}


@dataclass
class RuleResult:
    rule: str
    status: str  # "pass" | "fail" | "skip" | "error"
    message: str = ""
    action: str = "dryrun"


@dataclass
class EvalContext:
    """Everything a rule reads: the JSON context of ``{{ }}`` variables and the request for matching."""

    data: dict[str, Any]
    request: Request
    resource: Mapping[str, Any]
    input: AdmissionInput
    # values supplied from outside for context entries (kyverno test's values.yaml), by name
    values: Mapping[str, Any] = field(default_factory=dict)
    # parameter objects for validate.cel paramKind/paramRef (rendered for the target, then live)
    params: ParamsLookup = no_params
    # Pod Security controls exempted by matching PolicyExceptions (spec.podSecurity)
    pss_excludes: tuple[Any, ...] = ()


def _load(doc: str | bytes | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(doc, (str, bytes)):
        try:
            loaded = yaml.safe_load(doc)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise FormatError(f"{what}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    else:
        loaded = doc
    if not isinstance(loaded, Mapping):
        raise FormatError(f"{what}: expected a YAML mapping")
    return loaded


def _conditions(raw: Any, where: str) -> Any:
    """Check and normalise ``{any, all}`` or the legacy list of conditions (operators canonical)."""
    if raw is None:
        return None

    def one(c: Any, w: str) -> dict[str, Any]:
        if not isinstance(c, Mapping) or "operator" not in c:
            raise FormatError(f"{w} needs key, operator and value")
        out = dict(c)
        out["operator"] = normalize_operator(c["operator"], w)
        return out

    if isinstance(raw, list):
        return [one(c, f"{where}[{i}]") for i, c in enumerate(raw)]
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a list or a mapping with any/all")
    unknown = set(raw) - {"any", "all"}
    if unknown:
        raise FormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for block in ("any", "all"):
        if raw.get(block) is not None:
            if not isinstance(raw[block], list):
                raise FormatError(f"{where}.{block} must be a list")
            out[block] = [one(c, f"{where}.{block}[{i}]") for i, c in enumerate(raw[block])]
    return out


def _context_entries(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise FormatError(f"{where} must be a list")
    out = []
    for i, entry in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise FormatError(f"{w} needs a name")
        if str(entry["name"]).split(".")[0] in _RESERVED:
            raise FormatError(f"{w}.name {entry['name']!r} is reserved (request, element, images, ...)")
        kinds = [k for k in ("variable", *CLUSTER_CONTEXT) if k in entry]
        if len(kinds) != 1:
            raise FormatError(f"{w} needs exactly one of variable, {', '.join(CLUSTER_CONTEXT)}")
        if kinds[0] == "variable":
            var = entry["variable"]
            if not isinstance(var, Mapping) or not ("value" in var or "jmesPath" in var):
                raise FormatError(f"{w}.variable needs value or jmesPath")
        out.append(dict(entry))
    return out


@dataclass
class Rule:
    name: str
    match: MatchResources
    exclude: MatchResources | None
    context: list[dict[str, Any]]
    preconditions: Any
    validate: dict[str, Any]
    raw: Mapping[str, Any]
    cel_preconditions: list[dict[str, Any]] = field(default_factory=list)
    autogen_of: str = ""
    _cel: Any = None
    _pss: Any = None

    def needs_cluster(self) -> list[str]:
        out = [f"{e['name']} ({k})" for e in self.context for k in CLUSTER_CONTEXT if k in e]
        for fe in self.validate.get("foreach") or []:
            out += [f"{e['name']} ({k})" for e in fe.get("context") or [] for k in CLUSTER_CONTEXT if k in e]
        return out


def _parse_rule(raw: Any, i: int, policy_name: str) -> tuple[Rule | None, tuple[str, str] | None]:
    where = f"spec.rules[{i}]"
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}.name is required")
    kinds = [k for k in _RULE_TYPES if raw.get(k) is not None]
    if len(kinds) != 1:
        raise FormatError(f"{where} ({name}) needs exactly one of validate, mutate, generate, verifyImages")
    match = MatchResources.parse(raw.get("match"), f"{where}.match")
    if match is None or match.empty:
        raise FormatError(f"{where}.match is required (resources, any or all)")
    exclude = MatchResources.parse(raw.get("exclude"), f"{where}.exclude")
    if kinds[0] != "validate":
        return None, (name, kinds[0])
    validate = raw["validate"]
    if not isinstance(validate, Mapping):
        raise FormatError(f"{where}.validate must be a mapping")
    unknown = set(validate) - _VALIDATE_FIELDS
    if unknown:
        raise FormatError(f"{where}.validate: unknown field(s) {', '.join(sorted(unknown))}")
    forms = [
        k
        for k in ("pattern", "anyPattern", "deny", "foreach", "cel", "podSecurity", "manifests", "assert")
        if validate.get(k) is not None
    ]
    if len(forms) != 1:
        raise FormatError(
            f"{where}.validate needs exactly one of pattern, anyPattern, deny, foreach, cel, podSecurity"
        )
    form = forms[0]
    if form in ("manifests", "assert"):
        return None, (name, f"validate.{form}")
    v = dict(validate)
    if form == "pattern" and not isinstance(v["pattern"], (Mapping, list)):
        raise FormatError(f"{where}.validate.pattern must be a mapping")
    if form == "anyPattern" and (not isinstance(v["anyPattern"], list) or not v["anyPattern"]):
        raise FormatError(f"{where}.validate.anyPattern must be a non-empty list of patterns")
    for key in ("pattern", "anyPattern"):
        if v.get(key) is not None:
            refuse_mutate_anchors(v[key], f"{where}.validate.{key}")
    if form == "deny":
        if not isinstance(v["deny"], Mapping):
            raise FormatError(f"{where}.validate.deny must be a mapping with conditions")
        v["deny"] = {
            "conditions": _conditions(v["deny"].get("conditions"), f"{where}.validate.deny.conditions")
        }
    if form == "foreach":
        v["foreach"] = _parse_foreach(v["foreach"], f"{where}.validate.foreach")
    action = v.get("failureAction")
    if action is not None and str(action).lower() not in ("enforce", "audit"):
        raise FormatError(f"{where}.validate.failureAction must be Enforce or Audit")
    rule = Rule(
        name=name,
        match=match,
        exclude=exclude,
        context=_context_entries(raw.get("context"), f"{where}.context"),
        preconditions=_conditions(raw.get("preconditions"), f"{where}.preconditions"),
        validate=v,
        raw=raw,
        cel_preconditions=list(raw.get("celPreconditions") or []),
    )
    if form == "podSecurity":
        from policies.formats.kyverno.podsecurity import parse_pod_security

        rule._pss = parse_pod_security(v["podSecurity"], f"{where}.validate.podSecurity")
    if form == "cel":
        from policies.formats.kyverno.celrule import compile_cel

        rule._cel = compile_cel(v["cel"], rule.cel_preconditions, f"{where}.validate.cel")
    return rule, None


def _parse_foreach(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise FormatError(f"{where} must be a non-empty list")
    out = []
    for i, fe in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(fe, Mapping) or not isinstance(fe.get("list"), str):
            raise FormatError(f"{w}.list (a JMESPath expression) is required")
        item = dict(fe)
        item["context"] = _context_entries(fe.get("context"), f"{w}.context")
        item["preconditions"] = _conditions(fe.get("preconditions"), f"{w}.preconditions")
        if fe.get("deny") is not None:
            item["deny"] = {
                "conditions": _conditions((fe["deny"] or {}).get("conditions"), f"{w}.deny.conditions")
            }
        if fe.get("foreach") is not None:
            item["foreach"] = _parse_foreach(fe["foreach"], f"{w}.foreach")
        for key in ("pattern", "anyPattern"):
            if fe.get(key) is not None:
                refuse_mutate_anchors(fe[key], f"{w}.{key}")
        if not any(fe.get(k) is not None for k in ("pattern", "anyPattern", "deny", "foreach")):
            raise FormatError(f"{w} needs one of pattern, anyPattern, deny, foreach")
        out.append(item)
    return out


# -------------------------------------------------------------------------------------------- autogen

_POD_REPLACEMENTS = (
    ("request.object.spec", "request.object.spec.template.spec"),
    ("request.oldObject.spec", "request.oldObject.spec.template.spec"),
    ("request.object.metadata", "request.object.spec.template.metadata"),
    ("request.oldObject.metadata", "request.oldObject.spec.template.metadata"),
)
_CRON_REPLACEMENTS = tuple(
    (a, b.replace("spec.template.", "spec.jobTemplate.spec.template.")) for a, b in _POD_REPLACEMENTS
)
_CEL_POD = tuple((a.removeprefix("request."), b.removeprefix("request.")) for a, b in _POD_REPLACEMENTS)
_CEL_CRON = tuple((a.removeprefix("request."), b.removeprefix("request.")) for a, b in _CRON_REPLACEMENTS)


def _can_autogen(rules: Sequence[Mapping[str, Any]]) -> bool:
    needed = False
    for r in rules:
        if r.get("generate") is not None:
            return False
        if (r.get("mutate") or {}).get("patchesJson6902"):
            return False
        for key in ("match", "exclude"):
            block = r.get(key) or {}
            filters = [block.get("resources") or {}] + [
                (f or {}).get("resources") or {} for f in (block.get("any") or []) + (block.get("all") or [])
            ]
            for res in filters:
                kinds = res.get("kinds") or []
                if (
                    res.get("name")
                    or res.get("names")
                    or res.get("selector") is not None
                    or res.get("annotations") is not None
                ):
                    return False
                if len(kinds) > 1 and "Pod" in kinds:
                    return False
                if any(k in ("Pod", *POD_CONTROLLERS) for k in kinds):
                    needed = True
    return needed


def _replace_strings(doc: Any, pairs: Sequence[tuple[str, str]]) -> Any:
    text = json.dumps(doc)
    for a, b in pairs:
        text = text.replace(a, b)
    return json.loads(text)


def _retarget(block: Mapping[str, Any] | None, kinds: list[str], only_pod: bool, exclude: bool) -> Any:
    if block is None:
        return None
    block = copy.deepcopy(dict(block))
    for key in ("any", "all"):
        if block.get(key):
            for f in block[key]:
                res = f.setdefault("resources", {})
                if not only_pod or "Pod" in (res.get("kinds") or []):
                    res["kinds"] = list(kinds)
            return block
    res = block.setdefault("resources", {})
    if not exclude or res.get("kinds"):
        res["kinds"] = list(kinds)
    return block


def _autogen_rule(
    raw: Mapping[str, Any], name: str, kinds: list[str], tpl: str, cron: bool
) -> dict[str, Any] | None:
    validate = raw.get("validate")
    if validate is None:
        return None
    rule = copy.deepcopy(dict(raw))
    rule.setdefault("_source", raw.get("name"))  # the rule it was generated from
    rule["name"] = name[:63]
    rule["match"] = _retarget(raw.get("match"), kinds, not cron, False)
    if raw.get("exclude") is not None:
        rule["exclude"] = _retarget(raw.get("exclude"), kinds, not cron, True)
    v = dict(validate)
    if v.get("pattern") is not None:
        v["pattern"] = {"spec": {tpl: v["pattern"]}}
    elif v.get("anyPattern") is not None:
        v["anyPattern"] = [{"spec": {tpl: p}} for p in v["anyPattern"]]
    elif v.get("podSecurity") is not None or v.get("manifests") is not None:
        pass
    rule["validate"] = v
    return rule


def autogen_rules(
    spec_rules: Sequence[Mapping[str, Any]], annotations: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Kyverno's auto-generated rules for Pod controllers (``autogen-<rule>`` for Deployment, DaemonSet,
    Job, StatefulSet, ReplicaSet, ReplicationController; ``autogen-cronjob-<rule>`` for CronJob), honouring
    the ``pod-policies.kyverno.io/autogen-controllers`` annotation."""
    if not _can_autogen(spec_rules):
        return []
    wanted = str(annotations.get(AUTOGEN_ANNOTATION) or ",".join(POD_CONTROLLERS))
    if wanted == "none":
        return []
    controllers = sorted({c.strip() for c in wanted.split(",") if c.strip()})
    if "all" in controllers:
        controllers = sorted(POD_CONTROLLERS)
    pod_kinds = [c for c in controllers if c in POD_CONTROLLERS and c != "CronJob"]
    out: list[dict[str, Any]] = []
    for raw in spec_rules:
        name = str(raw.get("name") or "")
        if name.startswith("autogen-"):
            continue
        match_kinds = MatchResources.parse(raw.get("match"), "match")
        exclude = MatchResources.parse(raw.get("exclude"), "exclude")
        mk = match_kinds.kinds() if match_kinds else []
        ek = exclude.kinds() if exclude else []
        if "Pod" not in [k.rpartition("/")[2] for k in mk] or (
            ek and "Pod" not in [k.rpartition("/")[2] for k in ek]
        ):
            continue
        if pod_kinds:
            gen = _autogen_rule(raw, f"autogen-{name}", pod_kinds, "template", False)
            if gen is not None:
                cel = (gen.get("validate") or {}).get("cel") is not None
                out.append(_replace_strings(gen, _CEL_POD if cel else _POD_REPLACEMENTS))
        if "CronJob" in controllers:
            base = _autogen_rule(raw, f"autogen-{name}", pod_kinds or ["none"], "template", False)
            if base is not None:
                gen = _autogen_rule(base, f"autogen-cronjob-{name}", ["CronJob"], "jobTemplate", True)
                if gen is not None:
                    cel = (gen.get("validate") or {}).get("cel") is not None
                    out.append(_replace_strings(gen, _CEL_CRON if cel else _CRON_REPLACEMENTS))
    return out
