"""Kubernetes ValidatingAdmissionPolicy (``admissionregistration.k8s.io/v1``) and its bindings, evaluated
offline with the gate's CEL (policies/formats/cel), as the API server's admission plugin does.

API::

    policy = parse_policy(doc)                # FormatError naming the field; every expression compiled
    binding = parse_binding(doc)
    compiled = compile(policy, binding)       # binding None only in tests (the gate always has one)
    findings = compiled.evaluate(inputs, params=lookup)   # list[Finding] (policies.formats.admission)

What is evaluated: ``matchConstraints`` and the binding's ``matchResources`` (both must match: resourceRules
with apiGroups/apiVersions/resources incl. ``*`` and subresources, operations, resourceNames, scope,
namespaceSelector, objectSelector, excludeResourceRules, matchPolicy), ``matchConditions``, ``variables``
(lazy), ``validations`` (message, messageExpression, reason), ``auditAnnotations`` (recorded in the
finding's details), ``paramKind`` + ``paramRef`` (one evaluation per param object),
``failurePolicy``, ``validationActions`` (Deny -> "deny", Warn -> "warn", Audit -> "dryrun"; several:
the strongest). Objects are what the gate renders, not what the API server stores after defaulting: a
field the server would default (``spec.replicas`` of a Deployment...) is absent unless the manifest sets it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput, Finding, ParamsLookup, no_params
from policies.formats.cel import CelError, CelEvalError, Program, compile_expression, member_references
from policies.formats.kube import CLUSTER_SCOPED_KINDS, LabelSelector, labels_of

API_VERSIONS = ("admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1beta1")
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"
VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "variables", "authorizer")
ACTIONS = {"Deny": "deny", "Warn": "warn", "Audit": "dryrun"}
_STRENGTH = {"deny": 3, "warn": 2, "dryrun": 1}
_OPERATIONS = {"CREATE", "UPDATE", "DELETE", "CONNECT", "*"}

#: kind -> resource (plural) of the built-in kinds whose plural the general rule gets wrong or that a
#: policy commonly names; everything else (CRDs included) follows Kubernetes' own guess
#: (``meta.UnsafeGuessKindToResource``: lower-case, ``s`` -> ``ses``, ``y`` -> ``ies``, else ``s``).
_RESOURCES = {
    "Endpoints": "endpoints",
    "ComponentStatus": "componentstatuses",
    "Ingress": "ingresses",
    "IngressClass": "ingressclasses",
    "StorageClass": "storageclasses",
    "PriorityClass": "priorityclasses",
    "RuntimeClass": "runtimeclasses",
    "NetworkPolicy": "networkpolicies",
    "PodSecurityPolicy": "podsecuritypolicies",
}

#: Groups a resource is served from under ``matchPolicy: Equivalent`` besides its own.
_EQUIVALENT_GROUPS = {
    ("apps", "deployments"): {"extensions"},
    ("apps", "daemonsets"): {"extensions"},
    ("apps", "replicasets"): {"extensions"},
    ("networking.k8s.io", "ingresses"): {"extensions"},
    ("networking.k8s.io", "networkpolicies"): {"extensions"},
    ("policy", "podsecuritypolicies"): {"extensions"},
}


def resource_of(kind: str) -> str:
    if kind in _RESOURCES:
        return _RESOURCES[kind]
    plural = kind.lower()
    if plural.endswith("s"):
        return plural + "es"
    if plural.endswith("y"):
        return plural[:-1] + "ies"
    return plural + "s"


# ---------------------------------------------------------------- parsed documents


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a mapping")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise FormatError(f"{where} must be a list")
    return raw


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    items = _list(raw, where)
    if not all(isinstance(i, str) for i in items):
        raise FormatError(f"{where} must be a list of strings")
    return tuple(items)


def _compile(source: Any, where: str, defined: Sequence[str]) -> Program:
    """Compile one expression; ``variables.x`` must name one of ``defined`` (the variables before it)."""
    if not isinstance(source, str) or not source.strip():
        raise FormatError(f"{where} is required (a CEL expression)")
    try:
        program = compile_expression(source, VARIABLES, lazy=("variables",))
    except CelError as exc:
        raise FormatError(f"{where}: {exc}") from None
    for name, line, column in member_references(source, "variables"):
        if name not in defined:
            raise FormatError(
                f"{where}: undefined variable '{name}' (an expression can use the variables defined "
                f"before it: {', '.join(defined) or 'none'}) (line {line}, column {column})"
            )
    return program


@dataclass(frozen=True)
class ResourceRule:
    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    operations: tuple[str, ...]
    resource_names: tuple[str, ...]
    scope: str

    @classmethod
    def parse(cls, raw: Any, where: str) -> ResourceRule:
        raw = _mapping(raw, where)
        operations = _strings(raw.get("operations"), f"{where}.operations")
        for op in operations:
            if op not in _OPERATIONS:
                raise FormatError(
                    f"{where}.operations: {op!r} is not one of CREATE, UPDATE, DELETE, CONNECT, *"
                )
        scope = raw.get("scope", "*")
        if scope not in ("*", "Cluster", "Namespaced"):
            raise FormatError(f"{where}.scope must be *, Cluster or Namespaced")
        resources = _strings(raw.get("resources"), f"{where}.resources")
        if not resources:
            raise FormatError(f"{where}.resources is required")
        return cls(
            _strings(raw.get("apiGroups"), f"{where}.apiGroups"),
            _strings(raw.get("apiVersions"), f"{where}.apiVersions"),
            resources,
            operations,
            _strings(raw.get("resourceNames"), f"{where}.resourceNames"),
            str(scope),
        )

    def matches(
        self,
        operation: str,
        group: str,
        version: str,
        resource: str,
        name: str,
        namespaced: bool,
        exact: bool,
    ) -> bool:
        if "*" not in self.operations and operation not in self.operations:
            return False
        if (self.scope == "Cluster" and namespaced) or (self.scope == "Namespaced" and not namespaced):
            return False
        if self.resource_names and name not in self.resource_names:
            return False
        # the gate reviews the main resource only (subresource ""): "pods" and "*" and "*/*" match it
        if not any(r in ("*", "*/*", resource) for r in self.resources):
            return False
        groups = {group} if exact else {group} | _EQUIVALENT_GROUPS.get((group, resource), set())
        if "*" not in self.api_groups and not groups & set(self.api_groups):
            return False
        return exact is False or "*" in self.api_versions or version in self.api_versions


@dataclass(frozen=True)
class MatchResources:
    namespace_selector: LabelSelector | None
    object_selector: LabelSelector | None
    resource_rules: tuple[ResourceRule, ...]
    exclude_resource_rules: tuple[ResourceRule, ...]
    exact: bool

    @classmethod
    def parse(cls, raw: Any, where: str) -> MatchResources:
        raw = _mapping(raw, where)
        policy = raw.get("matchPolicy", "Equivalent")
        if policy not in ("Equivalent", "Exact"):
            raise FormatError(f"{where}.matchPolicy must be Equivalent or Exact")
        return cls(
            LabelSelector.parse(raw.get("namespaceSelector"), f"{where}.namespaceSelector"),
            LabelSelector.parse(raw.get("objectSelector"), f"{where}.objectSelector"),
            tuple(
                ResourceRule.parse(r, f"{where}.resourceRules[{i}]")
                for i, r in enumerate(_list(raw.get("resourceRules"), f"{where}.resourceRules"))
            ),
            tuple(
                ResourceRule.parse(r, f"{where}.excludeResourceRules[{i}]")
                for i, r in enumerate(_list(raw.get("excludeResourceRules"), f"{where}.excludeResourceRules"))
            ),
            policy == "Exact",
        )

    def matches(
        self, item: AdmissionInput, request: Mapping[str, Any], namespace_object: Mapping[str, Any] | None
    ) -> bool:
        res = request["resource"]
        namespaced = not item.id.cluster_scoped
        if self.namespace_selector is not None:
            if item.id.kind == "Namespace" and res["group"] == "":
                ns_labels = labels_of(item.subject)
            elif namespaced:
                ns_labels = labels_of(namespace_object or {})
            else:
                ns_labels = None  # other cluster-scoped objects: the namespace selector does not apply
            if ns_labels is not None and not self.namespace_selector.matches(ns_labels):
                return False
        if self.object_selector is not None:
            candidates = [o for o in (item.object, item.old_object) if o is not None]
            if not any(self.object_selector.matches(labels_of(o)) for o in candidates):
                return False
        args = (item.operation, res["group"], res["version"], res["resource"], item.id.name, namespaced)
        if self.resource_rules and not any(r.matches(*args, self.exact) for r in self.resource_rules):
            return False
        return not any(r.matches(*args, self.exact) for r in self.exclude_resource_rules)


@dataclass(frozen=True)
class Validation:
    index: int
    expression: Program
    message: str
    message_expression: Program | None
    reason: str


@dataclass(frozen=True)
class Policy:
    name: str
    failure_policy: str  # "Fail" | "Ignore"
    param_kind: tuple[str, str] | None  # (apiVersion, kind)
    match_constraints: MatchResources
    match_conditions: tuple[tuple[str, Program], ...]
    variables: tuple[tuple[str, Program], ...]
    validations: tuple[Validation, ...]
    audit_annotations: tuple[tuple[str, Program], ...]


@dataclass(frozen=True)
class ParamRef:
    name: str
    namespace: str
    selector: Mapping[str, Any] | None
    not_found_action: str  # "Deny" | "Allow"


@dataclass(frozen=True)
class Binding:
    name: str
    policy_name: str
    param_ref: ParamRef | None
    match_resources: MatchResources | None
    action: str  # the strongest of validationActions, as the gate's enforcement


def _header(doc: Any, kind: str) -> tuple[Mapping[str, Any], str, Mapping[str, Any]]:
    if not isinstance(doc, Mapping):
        raise FormatError(f"a {kind} must be a mapping")
    if doc.get("kind") != kind:
        raise FormatError(f"kind must be {kind}, not {doc.get('kind')!r}")
    if doc.get("apiVersion") not in API_VERSIONS:
        raise FormatError(
            f"apiVersion must be admissionregistration.k8s.io/v1, not {doc.get('apiVersion')!r}"
        )
    name = _mapping(doc.get("metadata"), "metadata").get("name")
    if not isinstance(name, str) or not name:
        raise FormatError("metadata.name is required")
    return doc, name, _mapping(doc.get("spec"), "spec")


def _named(raw: Any, where: str, key: str) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    seen: set[str] = set()
    for i, item in enumerate(_list(raw, where)):
        item = _mapping(item, f"{where}[{i}]")
        name = item.get(key)
        if not isinstance(name, str) or not name:
            raise FormatError(f"{where}[{i}].{key} is required")
        if name in seen:
            raise FormatError(f"{where}[{i}].{key}: {name!r} appears twice")
        seen.add(name)
        yield i, name, item


def parse_policy(doc: Any) -> Policy:
    _, name, spec = _header(doc, POLICY_KIND)
    failure = spec.get("failurePolicy", "Fail")
    if failure not in ("Fail", "Ignore"):
        raise FormatError("spec.failurePolicy must be Fail or Ignore")
    param_kind = None
    if spec.get("paramKind") is not None:
        pk = _mapping(spec.get("paramKind"), "spec.paramKind")
        if not pk.get("apiVersion") or not pk.get("kind"):
            raise FormatError("spec.paramKind needs apiVersion and kind")
        param_kind = (str(pk["apiVersion"]), str(pk["kind"]))
    if spec.get("matchConstraints") is None:
        raise FormatError("spec.matchConstraints is required")
    constraints = MatchResources.parse(spec.get("matchConstraints"), "spec.matchConstraints")
    if not constraints.resource_rules:
        raise FormatError("spec.matchConstraints.resourceRules is required")
    defined: list[str] = []
    variables_list = []
    for i, n, v in _named(spec.get("variables"), "spec.variables", "name"):
        where = f"spec.variables[{i}].expression"
        variables_list.append((n, _compile(v.get("expression"), where, defined)))
        defined.append(n)
    variables = tuple(variables_list)

    def compiled(source: Any, where: str) -> Program:
        return _compile(source, where, defined)

    conditions = tuple(
        (n, compiled(c.get("expression"), f"spec.matchConditions[{i}].expression"))
        for i, n, c in _named(spec.get("matchConditions"), "spec.matchConditions", "name")
    )
    validations = []
    for i, raw in enumerate(_list(spec.get("validations"), "spec.validations")):
        raw = _mapping(raw, f"spec.validations[{i}]")
        message = raw.get("message", "")
        if not isinstance(message, str):
            raise FormatError(f"spec.validations[{i}].message must be a string")
        msg_expr = raw.get("messageExpression")
        reason = raw.get("reason", "Invalid")
        if reason not in ("Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"):
            raise FormatError(
                f"spec.validations[{i}].reason must be Unauthorized, Forbidden, Invalid "
                "or RequestEntityTooLarge"
            )
        validations.append(
            Validation(
                i,
                compiled(raw.get("expression"), f"spec.validations[{i}].expression"),
                message,
                compiled(msg_expr, f"spec.validations[{i}].messageExpression")
                if msg_expr is not None
                else None,
                str(reason),
            )
        )
    annotations = tuple(
        (k, compiled(a.get("valueExpression"), f"spec.auditAnnotations[{i}].valueExpression"))
        for i, k, a in _named(spec.get("auditAnnotations"), "spec.auditAnnotations", "key")
    )
    if not validations and not annotations:
        raise FormatError("spec.validations or spec.auditAnnotations is required")
    return Policy(
        name, str(failure), param_kind, constraints, conditions, variables, tuple(validations), annotations
    )


def parse_binding(doc: Any) -> Binding:
    _, name, spec = _header(doc, BINDING_KIND)
    policy_name = spec.get("policyName")
    if not isinstance(policy_name, str) or not policy_name:
        raise FormatError("spec.policyName is required")
    param_ref = None
    if spec.get("paramRef") is not None:
        raw = _mapping(spec.get("paramRef"), "spec.paramRef")
        if bool(raw.get("name")) == bool(raw.get("selector") is not None):
            raise FormatError("spec.paramRef needs exactly one of name and selector")
        action = raw.get("parameterNotFoundAction", "Deny")
        if action not in ("Deny", "Allow"):
            raise FormatError("spec.paramRef.parameterNotFoundAction must be Deny or Allow")
        selector = raw.get("selector")
        if selector is not None:
            LabelSelector.parse(selector, "spec.paramRef.selector")
        param_ref = ParamRef(
            str(raw.get("name") or ""), str(raw.get("namespace") or ""), selector, str(action)
        )
    actions = _strings(spec.get("validationActions"), "spec.validationActions")
    if not actions:
        raise FormatError("spec.validationActions is required (Deny, Warn and/or Audit)")
    for a in actions:
        if a not in ACTIONS:
            raise FormatError(f"spec.validationActions: {a!r} is not Deny, Warn or Audit")
    if "Deny" in actions and "Warn" in actions:
        raise FormatError("spec.validationActions: Deny and Warn cannot be used together")
    match = (
        MatchResources.parse(spec["matchResources"], "spec.matchResources")
        if spec.get("matchResources")
        else None
    )
    action = max((ACTIONS[a] for a in actions), key=_STRENGTH.__getitem__)
    return Binding(name, policy_name, param_ref, match, action)


# ---------------------------------------------------------------- evaluation


class _Variables(Mapping[str, Any]):
    """``variables``: each computed on first use, in the activation it belongs to, errors kept."""

    def __init__(self, programs: Sequence[tuple[str, Program]], activation: dict[str, Any]) -> None:
        self._programs = dict(programs)
        self._activation = activation
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            program = self._programs[key]
            try:
                self._values[key] = program.evaluate(self._activation)
            except CelEvalError as exc:
                self._values[key] = exc
        value = self._values[key]
        if isinstance(value, CelEvalError):
            raise CelEvalError(f"variables.{key}: {value}")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._programs)

    def __len__(self) -> int:
        return len(self._programs)


def _request(item: AdmissionInput) -> dict[str, Any]:
    oid = item.id
    gvk = {"group": oid.group, "version": oid.version, "kind": oid.kind}
    gvr = {"group": oid.group, "version": oid.version, "resource": resource_of(oid.kind)}
    option_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
    return {
        "kind": gvk,
        "resource": gvr,
        "subResource": "",
        "requestKind": gvk,
        "requestResource": gvr,
        "requestSubResource": "",
        "name": oid.name,
        "namespace": oid.namespace,
        "operation": item.operation,
        "userInfo": dict(item.user_info),
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": option_kind.get(item.operation, "CreateOptions")},
    }


def _namespace_object(item: AdmissionInput) -> dict[str, Any] | None:
    if item.id.cluster_scoped:
        return None
    if item.namespace_object is not None:
        ns = dict(item.namespace_object)
        meta = dict(ns.get("metadata") or {})
    else:
        ns = {"apiVersion": "v1", "kind": "Namespace"}
        meta = {"name": item.id.namespace}
    # a real Namespace always carries this label (set by the API server)
    meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": item.id.namespace}
    ns["metadata"] = meta
    return ns


@dataclass
class CompiledVap:
    policy: Policy
    binding: Binding | None

    @property
    def action(self) -> str:
        return self.binding.action if self.binding else "deny"

    def _finding(self, index: int, rule: str, message: str, error: bool = False, **details: Any) -> Finding:
        details = {
            "policy": self.policy.name,
            "binding": self.binding.name if self.binding else "",
            **details,
        }
        return Finding(
            index=index, rule=rule, message=message, action=self.action, details=details, error=error
        )

    def _failure(self, index: int, rule: str, message: str, **details: Any) -> list[Finding]:
        """An evaluation error: a blocking error finding under failurePolicy Fail, nothing under Ignore."""
        if self.policy.failure_policy == "Ignore":
            return []
        return [self._finding(index, rule, message, error=True, **details)]

    def evaluate(
        self,
        inputs: Sequence[AdmissionInput],
        params: ParamsLookup = no_params,
        *,
        passes: list[tuple[int, str]] | None = None,
    ) -> list[Finding]:
        """Findings for the gate; ``passes``, when given, receives ``(index, "validations[i]")`` for each
        validation that was evaluated on an input it matched and held (for every param object)."""
        findings: list[Finding] = []
        for index, item in enumerate(inputs):
            findings.extend(self._evaluate_one(index, item, params, passes))
        return findings

    def _params(self, item: AdmissionInput, lookup: ParamsLookup) -> list[Mapping[str, Any]] | None:
        """The param objects to evaluate with; None when the policy has no paramKind."""
        if self.policy.param_kind is None:
            return None
        ref = self.binding.param_ref if self.binding else None
        if ref is None:
            return []
        api_version, kind = self.policy.param_kind
        namespace = ref.namespace
        if not namespace and not item.id.cluster_scoped and kind not in CLUSTER_SCOPED_KINDS:
            namespace = item.id.namespace  # a namespaced param kind: the object's own namespace
        found = list(lookup(api_version, kind, namespace, ref.name, ref.selector))
        if not found and namespace and not ref.namespace and kind not in _NAMESPACED_PARAM_KINDS:
            found = [p for p in lookup(api_version, kind, "", ref.name, ref.selector) if not _namespace_of(p)]
        return found

    def _evaluate_one(
        self,
        index: int,
        item: AdmissionInput,
        lookup: ParamsLookup,
        passes: list[tuple[int, str]] | None = None,
    ) -> list[Finding]:
        request = _request(item)
        namespace_object = _namespace_object(item)
        if not self.policy.match_constraints.matches(item, request, namespace_object):
            return []
        if (
            self.binding
            and self.binding.match_resources
            and not self.binding.match_resources.matches(item, request, namespace_object)
        ):
            return []
        param_sets: list[Mapping[str, Any] | None]
        found = self._params(item, lookup)
        if found is None:
            param_sets = [None]
        elif not found:
            ref = self.binding.param_ref if self.binding else None
            if ref is not None and ref.not_found_action == "Allow":
                return []
            what = "paramRef is not set on the binding" if ref is None else "no params found"
            return self._failure(
                index,
                "paramRef",
                f"failed to configure binding: {what} for policy binding with `Deny` parameterNotFoundAction"
                if ref is not None
                else f"failed to configure binding: {what}",
            )
        else:
            param_sets = list(found)
        findings: list[Finding] = []
        held: set[str] | None = None  # the validations that held for every param object
        for params in param_sets:
            true: set[str] = set()
            findings.extend(self._evaluate_with(index, item, request, namespace_object, params, true))
            held = true if held is None else held & true
        if passes is not None and held:
            passes.extend(
                (index, rule)
                for rule in (f"validations[{v.index}]" for v in self.policy.validations)
                if rule in held
            )
        return findings

    def _evaluate_with(
        self,
        index: int,
        item: AdmissionInput,
        request: Mapping[str, Any],
        namespace_object: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        held: set[str] | None = None,
    ) -> list[Finding]:
        """The findings of one evaluation; the validations that evaluated to true go into ``held``."""
        activation: dict[str, Any] = {
            "object": item.object,
            "oldObject": item.old_object,
            "request": request,
            "params": params,
            "namespaceObject": namespace_object,
        }
        activation["variables"] = _Variables(self.policy.variables, activation)
        param_name = _name_of(params) if params is not None else ""
        extra: dict[str, Any] = {"params": param_name} if params is not None else {}
        # matchConditions: any false -> not matched; else any error -> failurePolicy
        errors: list[str] = []
        for name, program in self.policy.match_conditions:
            try:
                result = program.evaluate(activation)
            except CelEvalError as exc:
                errors.append(f"matchCondition {name!r}: {exc}")
                continue
            if result is False:
                return []
            if not isinstance(result, bool):
                errors.append(f"matchCondition {name!r} must evaluate to bool")
        if errors:
            return self._failure(index, "matchConditions", "; ".join(errors), **extra)
        annotations, failed = self._audit_annotations(activation)
        findings: list[Finding] = []
        for key, message in failed:
            findings.extend(self._failure(index, f"auditAnnotations[{key}]", message, **extra))
        for v in self.policy.validations:
            rule = f"validations[{v.index}]"
            source = v.expression.source
            try:
                result = v.expression.evaluate(activation)
            except CelEvalError as exc:
                findings.extend(
                    self._failure(
                        index,
                        rule,
                        f"expression '{source}' resulted in error: {exc}",
                        expression=source,
                        **extra,
                    )
                )
                continue
            if not isinstance(result, bool):
                findings.extend(
                    self._failure(
                        index,
                        rule,
                        f"expression '{source}' must evaluate to bool",
                        expression=source,
                        **extra,
                    )
                )
                continue
            if result:
                if held is not None:
                    held.add(rule)
                continue
            message = self._message(v, activation)
            findings.append(
                self._finding(
                    index,
                    rule,
                    message,
                    reason=v.reason,
                    expression=source,
                    kubernetes_message=self._kubernetes_message(message),
                    audit_annotations=annotations,
                    **extra,
                )
            )
        return findings

    def _message(self, v: Validation, activation: Mapping[str, Any]) -> str:
        if v.message_expression is not None:
            try:
                text = v.message_expression.evaluate(activation)
            except CelEvalError:
                text = None
            if isinstance(text, str) and text.strip() and "\n" not in text:
                return text
        if v.message:
            return v.message
        return f"failed expression: {v.expression.source}"

    def _kubernetes_message(self, message: str) -> str:
        binding = self.binding.name if self.binding else ""
        policy = self.policy.name
        return f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"

    def _audit_annotations(
        self, activation: Mapping[str, Any]
    ) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The annotations (``<policy>/<key>``; a null value leaves the key out) and the failures."""
        out: dict[str, str] = {}
        failed: list[tuple[str, str]] = []
        for key, program in self.policy.audit_annotations:
            source = program.source
            try:
                value = program.evaluate(activation)
            except CelEvalError as exc:
                failed.append((key, f"expression '{source}' resulted in error: {exc}"))
                continue
            if isinstance(value, str):
                out[f"{self.policy.name}/{key}"] = value
            elif value is not None:
                failed.append((key, f"valueExpression '{source}' must evaluate to a string or null"))
        return out, failed


_NAMESPACED_PARAM_KINDS = frozenset({"ConfigMap", "Secret"})


def _name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or "") if isinstance(meta, Mapping) else ""


def _namespace_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "") if isinstance(meta, Mapping) else ""


def compile(policy: Policy, binding: Binding | None = None) -> CompiledVap:
    """The policy as the binding applies it (``binding`` None: Deny, no params, no narrowing; tests only)."""
    if binding is not None and binding.policy_name != policy.name:
        raise FormatError(
            f"binding {binding.name!r} names policy {binding.policy_name!r}, not {policy.name!r}"
        )
    return CompiledVap(policy, binding)
