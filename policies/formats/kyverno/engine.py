"""Evaluating a parsed Kyverno policy: the JSON context, one rule on one request, findings for the gate."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput, Finding, ParamsLookup, no_params
from policies.formats.kyverno.conditions import (
    SubstitutionError,
    evaluate_conditions,
    has_variables,
    query,
    substitute,
)
from policies.formats.kyverno.jmes import JMESPathError, NotFound, search
from policies.formats.kyverno.match import Request, selector_matches
from policies.formats.kyverno.pattern import match_pattern
from policies.formats.kyverno.policy import (
    API_VERSIONS,
    CLUSTER_CONTEXT,
    EvalContext,
    Rule,
    RuleResult,
    _load,
    _parse_rule,
    autogen_rules,
)
from policies.formats.kyverno.values import wildcard_match


class RuleError(Exception):
    """The rule cannot be evaluated (Kyverno's ``error`` status)."""


# ------------------------------------------------------------------------------------------ the policy


@dataclass
class KyvernoPolicy:
    name: str
    namespace: str  # "" for a ClusterPolicy
    kind: str
    rules: list[Rule]
    not_applied: list[
        tuple[str, str]
    ]  # (rule name, "mutate" | "generate" | "verifyImages" | "validate.podSecurity" ...)
    failure_action: str = "Audit"
    emit_warning: bool = False
    overrides: list[dict[str, Any]] = field(default_factory=list)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """How kyverno test names it: ``name`` or ``namespace/name`` for a Policy."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def needs_cluster(self) -> dict[str, list[str]]:
        return {r.name: r.needs_cluster() for r in self.rules if r.needs_cluster()}

    # -- the gate's contract ---------------------------------------------------------------------------

    def evaluate(
        self,
        inputs: Sequence[AdmissionInput],
        params: ParamsLookup | None = None,
        exceptions: Sequence[Any] = (),
        *,
        passes: list[tuple[int, str]] | None = None,
    ) -> list[Finding]:
        """Findings for the gate: one per failed rule (``error=True`` for a rule that cannot be evaluated).
        ``params`` finds the parameter objects of ``validate.cel`` rules with ``paramKind``/``paramRef``;
        ``passes``, when given, receives ``(index, rule)`` for each rule whose response is ``pass``."""
        findings: list[Finding] = []
        for index, inp in enumerate(inputs):
            for result in self.apply(inp, exceptions=exceptions, params=params, _shared=_Shared.of(inp)):
                details = {"policy": self.key, "kind": self.kind}
                if result.status == "pass":
                    if passes is not None:
                        passes.append((index, result.rule))
                elif result.status == "fail":
                    findings.append(Finding(index, result.rule, result.message, result.action, details))
                elif result.status == "error":
                    findings.append(
                        Finding(index, result.rule, result.message, result.action, details, error=True)
                    )
        return findings

    # -- one request -----------------------------------------------------------------------------------

    def apply(
        self,
        inp: AdmissionInput,
        *,
        values: Mapping[str, Any] | None = None,
        rule_values: Mapping[str, Mapping[str, Any]] | None = None,
        exceptions: Sequence[Any] = (),
        params: ParamsLookup | None = None,
        _shared: _Shared | None = None,
    ) -> list[RuleResult]:
        """The responses of the rules that match ``inp`` (rules that do not match give none).

        The input's objects are never copied and never changed: every rule reads one context built once
        per input (shared by the policies of one :meth:`evaluate` call too) through a top level of its
        own, and a context entry written below the top level copies each mapping on its way
        (:func:`_set_path`), so no rule sees another rule's context entries or changes the objects."""
        resource = inp.object if inp.object is not None else inp.old_object
        if resource is None:
            return []
        shared = _shared if _shared is not None else _Shared(inp)
        req = shared.request
        if self.namespace and req.namespace != self.namespace:
            return []
        out: list[RuleResult] = []
        for rule in self.rules:
            if not rule.match.matches(req):
                continue
            if rule.exclude is not None and rule.exclude.excludes(req):
                continue
            action = self._action(rule, req)
            matched = [ex for ex in exceptions if ex.matches(self, rule.name, inp)]
            pss_excludes: tuple[Any, ...] = ()
            if matched:
                # exceptions that only exempt Pod Security controls narrow a podSecurity rule instead
                if rule._pss is None or not all(getattr(ex, "pod_security", ()) for ex in matched):
                    out.append(
                        RuleResult(rule.name, "skip", "rule is skipped due to policy exceptions", action)
                    )
                    continue
                pss_excludes = tuple(e for ex in matched for e in ex.pod_security)
            own_values = (rule_values or {}).get(rule.name, {})
            if values or own_values:
                data = build_context(inp, values or {}, own_values)
            else:
                data = dict(shared.context(inp))  # the rule's own top level over the shared context
            supplied = {**(values or {}), **(rule_values or {}).get(rule.name, {})}
            ctx = EvalContext(data, req, resource, inp, supplied, params or no_params, pss_excludes)
            try:
                result = evaluate_rule(self, rule, ctx)
            except RuleError as exc:
                result = RuleResult(rule.name, "error", str(exc))
            except RecursionError:
                result = RuleResult(rule.name, "error", "evaluation too deep")
            if result is None:
                continue
            if (
                result.status == "fail"
                and action == "deny"
                and self._existing_violation(rule, inp, values, rule_values)
            ):
                result = RuleResult(
                    rule.name, "skip", "skipping the rule evaluation as pre-existing violations are allowed"
                )
            result.action = action
            out.append(result)
        return out

    def _existing_violation(
        self,
        rule: Rule,
        inp: AdmissionInput,
        values: Mapping[str, Any] | None,
        rule_values: Mapping[str, Mapping[str, Any]] | None,
    ) -> bool:
        """Kyverno's ``allowExistingViolations`` (default true) for an enforced rule on an UPDATE: the
        rule is skipped when the old object, reviewed as if it were created, fails it too."""
        if inp.operation != "UPDATE" or inp.old_object is None:
            return False
        if rule.validate.get("allowExistingViolations") is False:
            return False
        old = AdmissionInput(
            operation="CREATE",
            id=inp.id,
            object=inp.old_object,
            old_object=None,
            namespace_object=inp.namespace_object,
            user_info=inp.user_info,
            source_file=inp.source_file,
        )
        req = build_request(old)
        if not rule.match.matches(req) or (rule.exclude is not None and rule.exclude.excludes(req)):
            return False
        own = (rule_values or {}).get(rule.name, {})
        vals = {k: v for k, v in (values or {}).items() if k != "request.operation"}
        data = build_context(old, vals, own)
        try:
            prior = evaluate_rule(self, rule, EvalContext(data, req, old.object or {}, old, {**vals, **own}))
        except RuleError:
            return False
        return prior is not None and prior.status == "fail"

    def _action(self, rule: Rule, req: Request) -> str:
        action = str(rule.validate.get("failureAction") or self.failure_action)
        for ov in rule.validate.get("failureActionOverrides") or self.overrides:
            nss = ov.get("namespaces") or []
            sel = ov.get("namespaceSelector")
            if (nss and any(wildcard_match(n, req.namespace) for n in nss)) or (
                sel is not None and selector_matches(sel, req.namespace_labels or {})
            ):
                action = str(ov.get("action") or action)
                break
        if action.lower() == "enforce":
            return "deny"
        return "warn" if self.emit_warning else "dryrun"


def parse_policy(doc: str | bytes | Mapping[str, Any]) -> KyvernoPolicy:
    data = _load(doc, "Kyverno policy")
    kind = data.get("kind")
    if kind not in ("ClusterPolicy", "Policy"):
        raise FormatError(f"Kyverno policy: kind is {kind!r}, expected ClusterPolicy or Policy")
    if data.get("apiVersion") not in API_VERSIONS:
        raise FormatError(
            f"Kyverno policy: apiVersion {data.get('apiVersion')!r} is not one of {', '.join(API_VERSIONS)}"
        )
    meta = data.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise FormatError("Kyverno policy: metadata.name is required")
    spec = data.get("spec")
    if not isinstance(spec, Mapping):
        raise FormatError("Kyverno policy: spec is required")
    raw_rules = spec.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise FormatError("Kyverno policy: spec.rules must be a non-empty list")
    action = str(spec.get("validationFailureAction") or "Audit")
    if action.lower() not in ("enforce", "audit"):
        raise FormatError("Kyverno policy: spec.validationFailureAction must be Enforce or Audit")
    overrides = spec.get("validationFailureActionOverrides") or []
    if not isinstance(overrides, list):
        raise FormatError("Kyverno policy: spec.validationFailureActionOverrides must be a list")
    rules: list[Rule] = []
    not_applied: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        rule, skipped = _parse_rule(raw, i, name)
        rname = rule.name if rule else skipped[0]  # type: ignore[index]
        if rname in seen:
            raise FormatError(f"Kyverno policy: spec.rules[{i}].name {rname!r} is used twice")
        seen.add(rname)
        if rule is not None:
            rules.append(rule)
        elif skipped is not None:
            not_applied.append(skipped)
    annotations = (meta.get("annotations") or {}) if isinstance(meta, Mapping) else {}
    applied = {r.name for r in rules}
    for gen in autogen_rules(raw_rules, annotations):
        source = str(gen.pop("_source"))
        if gen["name"] in seen or source not in applied:
            continue
        index = next(i for i, r in enumerate(raw_rules) if r.get("name") == source)
        try:
            rule, _ = _parse_rule(gen, index, name)
        except FormatError as exc:
            raise FormatError(f"Kyverno policy: auto-generated rule {gen['name']}: {exc}") from exc
        if rule is not None:
            rule.autogen_of = source
            rules.append(rule)
    return KyvernoPolicy(
        name=name,
        namespace=str(meta.get("namespace") or "") if kind == "Policy" else "",
        kind=kind,
        rules=rules,
        not_applied=not_applied,
        failure_action=action,
        emit_warning=bool(spec.get("emitWarning")),
        overrides=[dict(o) for o in overrides if isinstance(o, Mapping)],
        raw=data,
    )


# ----------------------------------------------------------------------------------------- the context


def build_request(inp: AdmissionInput) -> Request:
    resource = inp.object if inp.object is not None else inp.old_object or {}
    meta = resource.get("metadata") or {}
    ns_obj = inp.namespace_object
    ns_labels = None
    if ns_obj is not None:
        ns_meta = ns_obj.get("metadata") or {}
        ns_labels = {str(k): str(v) for k, v in (ns_meta.get("labels") or {}).items()}
        # the API server puts this label on every namespace; a rendered Namespace may not carry it yet
        if ns_meta.get("name"):
            ns_labels.setdefault("kubernetes.io/metadata.name", str(ns_meta["name"]))
    ui = inp.user_info or {}
    return Request(
        api_version=str(resource.get("apiVersion") or inp.id.api_version),
        kind=str(resource.get("kind") or inp.id.kind),
        name=str(meta.get("name") or meta.get("generateName") or inp.id.name),
        namespace=str(meta.get("namespace") or inp.id.namespace or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        operation=inp.operation,
        namespace_labels=ns_labels,
        username=str(ui.get("username") or ""),
        groups=tuple(str(g) for g in ui.get("groups") or ()),
        roles=tuple(str(r) for r in ui.get("roles") or ()),
        cluster_roles=tuple(str(r) for r in ui.get("clusterRoles") or ()),
    )


def _image_info(image: str) -> dict[str, str]:
    name_part, _, digest = image.partition("@")
    tag = ""
    last = name_part.rsplit("/", 1)[-1]
    if ":" in last:
        name_part, tag = name_part.rsplit(":", 1)
    first = name_part.split("/", 1)[0]
    if "/" in name_part and ("." in first or ":" in first or first == "localhost"):
        registry, path = name_part.split("/", 1)
    else:
        registry, path = "docker.io", name_part
    if not tag and not digest:
        tag = "latest"
    ref = f"{registry}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return {
        "registry": registry,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "tag": tag,
        "digest": digest,
        "reference": ref,
        "referenceWithTag": f"{registry}/{path}:{tag}" if tag else ref,
    }


def _images(resource: Mapping[str, Any]) -> dict[str, Any]:
    def dig(doc: Any, *path: str) -> Any:
        for p in path:
            doc = doc.get(p) if isinstance(doc, Mapping) else None
        return doc

    kind = resource.get("kind")
    if kind == "CronJob":
        spec = dig(resource, "spec", "jobTemplate", "spec", "template", "spec")
    elif kind == "Pod":
        spec = dig(resource, "spec")
    else:
        spec = dig(resource, "spec", "template", "spec")
    out: dict[str, Any] = {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        items = spec.get(key) if isinstance(spec, Mapping) else None
        if isinstance(items, list):
            block = {
                str(c.get("name")): _image_info(str(c["image"]))
                for c in items
                if isinstance(c, Mapping) and isinstance(c.get("image"), str)
            }
            if block:
                out[key] = block
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data[a][b]... = value`` for ``a.b...``, copying each mapping below the top level on the way: the
    mappings there may be shared (the reviewed objects, another rule's context, a value taken from them),
    so they are never changed in place."""
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        nxt = dict(nxt) if isinstance(nxt, Mapping) else {}
        cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def build_context(
    inp: AdmissionInput, values: Mapping[str, Any], rule_values: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON context of ``{{ }}`` variables for one input. The objects are referenced, not copied
    (nothing writes into them: :func:`_set_path` copies on write); ``values`` (a kyverno test's values file)
    are set over it."""
    resource = inp.object if inp.object is not None else inp.old_object or {}
    meta = resource.get("metadata") or {}
    api_version = str(resource.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    ui = dict(inp.user_info or {})
    user_info = {k: v for k, v in ui.items() if k not in ("roles", "clusterRoles")}
    request: dict[str, Any] = {
        "operation": inp.operation,
        "object": inp.object,
        "oldObject": inp.old_object,
        "userInfo": user_info,
        "roles": list(ui.get("roles") or []),
        "clusterRoles": list(ui.get("clusterRoles") or []),
        "namespace": str(meta.get("namespace") or inp.id.namespace or ""),
        "name": str(meta.get("name") or ""),
        "kind": {"group": group, "version": version, "kind": str(resource.get("kind") or "")},
        "dryRun": False,
    }
    data: dict[str, Any] = {"request": request}
    username = str(user_info.get("username") or "")
    if username.startswith("system:serviceaccount:"):
        parts = username.split(":")
        if len(parts) >= 4:
            data["serviceAccountNamespace"], data["serviceAccountName"] = parts[2], parts[3]
    else:
        data["serviceAccountName"], data["serviceAccountNamespace"] = "", ""
    images = _images(resource)
    if images:
        data["images"] = images
    if inp.namespace_object is not None:
        data["namespaceObject"] = dict(inp.namespace_object)
    for source in (values, rule_values):
        for k, v in source.items():
            _set_path(data, str(k), copy.deepcopy(v))
    return data


class _Shared:
    """What every rule of every policy reads about one input, built once: the request for matching and the
    JSON context (read-only: a rule's writes go to its own top level or copy on write). Kept in the input's
    ``scratch``, so it lives as long as the input (the gate's target) and no longer."""

    __slots__ = ("_context", "request")

    def __init__(self, inp: AdmissionInput) -> None:
        self.request = build_request(inp)
        self._context: dict[str, Any] | None = None

    @classmethod
    def of(cls, inp: AdmissionInput) -> _Shared:
        shared = inp.scratch.get("kyverno")
        if not isinstance(shared, cls):
            shared = inp.scratch["kyverno"] = cls(inp)
        return shared

    def context(self, inp: AdmissionInput) -> dict[str, Any]:
        if self._context is None:  # only inputs some rule matches need one
            self._context = build_context(inp, {}, {})
        return self._context


def load_context(entries: Sequence[Mapping[str, Any]], ctx: EvalContext) -> None:
    for entry in entries:
        name = str(entry["name"])
        if any(str(k) == name or str(k).startswith(name + ".") for k in ctx.values):
            continue  # supplied from outside (kyverno test's values): already in the context
        if "variable" not in entry:
            kind = next(k for k in CLUSTER_CONTEXT if k in entry)
            raise RuleError(
                f"failed to load context: context entry {name!r} uses {kind}, which needs the cluster; "
                "the gate evaluates offline (give its value in the test's values file)"
            )
        var = entry["variable"]
        value: Any = None
        try:
            if "value" in var:
                value = substitute(copy.deepcopy(var["value"]), ctx.data)
            if var.get("jmesPath"):
                expr = substitute(var["jmesPath"], ctx.data)
                try:
                    value = search(str(expr), value if "value" in var else ctx.data)
                except NotFound:
                    value = None
        except (SubstitutionError, JMESPathError) as exc:
            if "default" not in var:
                raise RuleError(f"failed to load context: {exc}") from exc
            value = None
        if value is None and "default" in var:
            value = substitute(copy.deepcopy(var["default"]), ctx.data)
        if value is None and "default" not in var and "value" not in var:
            raise RuleError(f"failed to load context: variable {name!r}: the JMESPath gave no value")
        _set_path(ctx.data, name, value)


# -------------------------------------------------------------------------------------------- one rule


def _msg(rule_message: Any, ctx: EvalContext) -> str:
    if not rule_message:
        return ""
    try:
        out = substitute(str(rule_message), ctx.data)
    except (SubstitutionError, JMESPathError):
        return str(rule_message)
    return out if isinstance(out, str) else str(out)


def evaluate_rule(policy: Any, rule: Rule, ctx: EvalContext) -> RuleResult | None:
    return _validate(rule, rule.validate, ctx, rule.context, rule.preconditions, nesting=0, element=None)


def _validate(
    rule: Rule,
    v: Mapping[str, Any],
    ctx: EvalContext,
    context_entries: Sequence[Mapping[str, Any]],
    preconditions: Any,
    nesting: int,
    element: Mapping[str, Any] | None,
) -> RuleResult | None:
    load_context(context_entries, ctx)
    try:
        ok, pmsg = evaluate_conditions(preconditions, ctx.data)
    except (SubstitutionError, JMESPathError) as exc:
        raise RuleError(f"failed to evaluate preconditions: {exc}") from exc
    if not ok:
        return RuleResult(rule.name, "skip", "; ".join(x for x in ("preconditions not met", pmsg) if x))
    message = rule.validate.get("message")
    if v.get("deny") is not None:
        try:
            deny, dmsg = evaluate_conditions(v["deny"].get("conditions"), ctx.data)
        except (SubstitutionError, JMESPathError) as exc:
            raise RuleError(f"failed to check deny conditions: {exc}") from exc
        if deny:
            text = "; ".join(x for x in (str(message or ""), dmsg) if x)
            return RuleResult(
                rule.name, "fail", _msg(text, ctx) or f"validation error: rule {rule.name} failed"
            )
        return RuleResult(rule.name, "pass", f"validation rule '{rule.name}' passed.")
    if v.get("pattern") is not None or v.get("anyPattern") is not None:
        target = element if element is not None else ctx.resource
        if ctx.input.operation == "DELETE" and element is None:
            return None
        return _patterns(rule, v, target, ctx, message)
    if v.get("foreach") is not None:
        return _foreach(rule, v["foreach"], ctx, nesting)
    if v.get("podSecurity") is not None and rule._pss is not None:
        found = rule._pss.violations(ctx.resource, ctx.pss_excludes)
        if found is None:
            return RuleResult(rule.name, "skip", "no pod spec")
        if not found:
            if ctx.pss_excludes and rule._pss.violations(ctx.resource):
                return RuleResult(rule.name, "skip", "rule is skipped due to policy exceptions")
            return RuleResult(rule.name, "pass", f"validation rule '{rule.name}' passed.")
        head = _msg(message, ctx) or f"Validation rule '{rule.name}' failed."
        controls = sorted({f.control for f in found})
        details = "; ".join(f.describe() for f in found)
        return RuleResult(
            rule.name,
            "fail",
            f'{head} It violates PodSecurity "{rule._pss.level}:{rule._pss.version}": '
            f"{', '.join(controls)} ({details})",
        )
    if v.get("cel") is not None and rule._cel is not None:
        return rule._cel.evaluate(rule.name, ctx, str(rule.validate.get("message") or ""))
    return RuleResult(rule.name, "pass", "")


def _patterns(rule: Rule, v: Mapping[str, Any], target: Any, ctx: EvalContext, message: Any) -> RuleResult:
    try:
        pattern = _substituted(v.get("pattern"), ctx)
        any_patterns = _substituted(v.get("anyPattern"), ctx)
    except (SubstitutionError, JMESPathError) as exc:
        raise RuleError(f"variable substitution failed: {exc}") from exc
    user_msg = _msg(message, ctx)
    if pattern is not None:
        res = match_pattern(target, pattern)
        if res.ok:
            return RuleResult(rule.name, "pass", f"validation rule '{rule.name}' passed.")
        if res.skip:
            return RuleResult(rule.name, "skip", res.message)
        if not res.path:
            raise RuleError(_fail_message(rule, user_msg, "") + f": {res.message}")
        return RuleResult(rule.name, "fail", _fail_message(rule, user_msg, res.path))
    failed: list[str] = []
    skipped: list[str] = []
    for i, p in enumerate(any_patterns or []):
        res = match_pattern(target, p)
        if res.ok:
            return RuleResult(rule.name, "pass", f"validation rule '{rule.name}' anyPattern[{i}] passed.")
        if res.skip:
            skipped.append(f"rule {rule.name}[{i}] skipped: {res.message}")
        elif res.path:
            failed.append(f"rule {rule.name}[{i}] failed at path {res.path}")
        else:
            failed.append(f"rule {rule.name}[{i}] failed: {res.message}")
    if skipped and not failed:
        return RuleResult(rule.name, "skip", " ".join(skipped))
    # Kyverno's buildAnyPatternErrorMessage: the message (a full stop added when it has none), then each
    # pattern's failure
    errors = " ".join(failed)
    if not user_msg:
        return RuleResult(rule.name, "fail", f"validation error: {errors}")
    sep = " " if user_msg.endswith(".") else ". "
    return RuleResult(rule.name, "fail", f"validation error: {user_msg}{sep}{errors}")


_HAS_VARIABLES: dict[int, tuple[Any, bool]] = {}


def _substituted(document: Any, ctx: EvalContext) -> Any:
    """``document`` with its ``{{ }}`` variables replaced (a new structure; the policy's is not touched)."""
    if document is None:
        return None
    cached = _HAS_VARIABLES.get(id(document))
    if cached is None or cached[0] is not document:
        if len(_HAS_VARIABLES) > 4096:
            _HAS_VARIABLES.clear()
        cached = (document, has_variables(document))
        _HAS_VARIABLES[id(document)] = cached
    return substitute(document, ctx.data) if cached[1] else document


def _fail_message(rule: Rule, user_msg: str, path: str) -> str:
    if not user_msg:
        return f"validation error: rule {rule.name} failed at path {path}"
    if not user_msg.endswith("."):
        user_msg += "."
    return f"validation error: {user_msg} rule {rule.name} failed at path {path}"


def _foreach(
    rule: Rule, loops: Sequence[Mapping[str, Any]], ctx: EvalContext, nesting: int
) -> RuleResult | None:
    applied = 0
    list_error: Exception | None = None
    for fe in loops:
        try:
            expr = substitute(fe["list"], ctx.data)
            elements = query(ctx.data, str(expr))
        except SubstitutionError as exc:
            if "Unknown key" in str(exc):
                continue
            list_error = exc
            continue
        if elements is None:
            elements = []
        if not isinstance(elements, list):
            elements = [elements]
        result, count = _elements(rule, fe, elements, ctx, nesting)
        if result.status != "pass":
            return result
        applied += count
    if applied == 0:
        if list_error is not None:
            raise RuleError(f"failed to evaluate list: {list_error}")
        return None
    return RuleResult(rule.name, "pass", "rule passed")


def _elements(
    rule: Rule, fe: Mapping[str, Any], elements: list[Any], ctx: EvalContext, nesting: int
) -> tuple[RuleResult, int]:
    applied = 0
    saved = copy.copy(ctx.data)
    try:
        for index, element in enumerate(elements):
            if element is None:
                continue
            ctx.data = copy.copy(saved)
            ctx.data["element"] = element
            ctx.data["elementIndex"] = index
            ctx.data[f"element{nesting}"] = element
            ctx.data[f"elementIndex{nesting}"] = index
            scope = fe.get("elementScope")
            scoped = isinstance(element, Mapping) if scope is None else bool(scope)
            if scope and not isinstance(element, Mapping):
                return RuleResult(
                    rule.name,
                    "error",
                    "cannot use elementScope=true foreach rules for elements that are not maps",
                ), applied
            sub = {
                k: fe.get(k) for k in ("pattern", "anyPattern", "deny", "foreach") if fe.get(k) is not None
            }
            try:
                r = _validate(
                    rule,
                    sub,
                    ctx,
                    fe.get("context") or [],
                    fe.get("preconditions"),
                    nesting + 1,
                    element if scoped else None,
                )
            except RuleError as exc:
                if "failed to evaluate preconditions" in str(exc):
                    continue
                return RuleResult(rule.name, "error", f"validation failure: {exc}"), applied
            if r is None or r.status == "skip":
                continue
            if r.status != "pass":
                return RuleResult(rule.name, r.status, f"validation failure: {r.message}"), applied
            applied += 1
    finally:
        ctx.data = saved
    return RuleResult(rule.name, "pass", ""), applied
