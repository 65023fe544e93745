"""``validate.cel`` of a Kyverno rule (and ``celPreconditions``), on the CEL environment of
:mod:`policies.formats.cel`: ``object``, ``oldObject``, ``request``, ``namespaceObject`` and lazy
``variables``, and ``params`` when the rule has ``paramKind``/``paramRef`` (the objects come from the
evaluation's :data:`~policies.formats.admission.ParamsLookup`: rendered for the target, then live)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.formats import FormatError
from policies.formats.kube import CLUSTER_SCOPED_KINDS

_VARS = ("object", "oldObject", "request", "namespaceObject", "variables")


class _Lazy(Mapping[str, Any]):
    def __init__(self, programs: Mapping[str, Any], activation: dict[str, Any]) -> None:
        self._programs = programs
        self._activation = activation
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            self._cache[key] = self._programs[key].evaluate(self._activation)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._programs)

    def __len__(self) -> int:
        return len(self._programs)


@dataclass
class CelRule:
    validations: list[tuple[Any, str, Any]]  # (program, message, messageExpression program)
    variables: dict[str, Any]
    preconditions: list[tuple[str, Any]]
    param_kind: dict[str, Any] = field(default_factory=dict)
    param_ref: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, rule_name: str, ctx: Any, default_message: str = "") -> Any:
        from policies.formats.kyverno.policy import RuleResult

        data = ctx.data
        req = data.get("request") or {}
        activation: dict[str, Any] = {
            "object": req.get("object"),
            "oldObject": req.get("oldObject"),
            "request": {
                "operation": req.get("operation"),
                "userInfo": req.get("userInfo") or {},
                "namespace": req.get("namespace"),
                "name": req.get("name"),
                "kind": req.get("kind"),
            },
            "namespaceObject": data.get("namespaceObject"),
        }
        ns = str(req.get("namespace") or "")
        if (
            activation["namespaceObject"] is None
            and ns
            and (req.get("kind") or {}).get("kind") != "Namespace"
        ):
            # what Kyverno gives offline: the namespace by name only
            activation["namespaceObject"] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns},
            }
        if not self.param_kind:
            return self._run(rule_name, activation, default_message)
        ref = self.param_ref
        kind = str(self.param_kind["kind"])
        namespace = str(ref.get("namespace") or "")
        if kind not in CLUSTER_SCOPED_KINDS and not namespace:
            # a namespaced param kind is looked up in the object's namespace (Kyverno's CollectParams)
            if not ns:
                return RuleResult(
                    rule_name,
                    "error",
                    "error in parameterized resource: can't use namespaced paramRef to match "
                    "cluster-scoped resources",
                )
            namespace = ns
        found = ctx.params(
            str(self.param_kind["apiVersion"]),
            kind,
            namespace,
            str(ref.get("name") or ""),
            ref.get("selector"),
        )
        if not found:
            # as Kyverno does: a param named but absent is an error whatever parameterNotFoundAction says
            # (it gets the object by name); a selector that selects nothing is an error under Deny only,
            # else the rule passes with nothing to check
            if ref.get("name"):
                return RuleResult(
                    rule_name,
                    "error",
                    f"error in parameterized resource: no {kind} {ref['name']} found"
                    f"{' in ' + namespace if namespace else ''} (rendered for the target or live)",
                )
            if ref.get("parameterNotFoundAction") == "Deny":
                return RuleResult(
                    rule_name,
                    "error",
                    f"error in parameterized resource: no params found (no {kind} matches the selector"
                    f"{' in ' + namespace if namespace else ''}, rendered for the target or live)",
                )
            return RuleResult(rule_name, "pass", f"Validation rule '{rule_name}' passed.")
        for param in found:
            result = self._run(rule_name, {**activation, "params": param}, default_message)
            if result.status != "pass":
                return result
        return result

    def _run(self, rule_name: str, activation: dict[str, Any], default_message: str) -> Any:
        from policies.formats.cel import CelEvalError
        from policies.formats.kyverno.policy import RuleResult

        activation = dict(activation)
        activation["variables"] = _Lazy(self.variables, activation)
        try:
            for name, program in self.preconditions:
                if program.evaluate(activation) is not True:
                    return RuleResult(rule_name, "skip", f"cel preconditions not met: {name}")
            for program, message, message_program in self.validations:
                result = program.evaluate(activation)
                if result is True:
                    continue
                if result is not False:
                    return RuleResult(
                        rule_name, "error", f"expression {program.source!r} did not return a bool"
                    )
                text = message or default_message
                if message_program is not None:
                    try:
                        produced = message_program.evaluate(activation)
                        if isinstance(produced, str) and produced.strip():
                            text = produced
                    except CelEvalError:
                        pass
                return RuleResult(rule_name, "fail", text or f"failed expression: {program.source}")
        except CelEvalError as exc:
            # Kyverno runs these with failurePolicy Fail: an evaluation error denies (a fail, not an error)
            return RuleResult(rule_name, "fail", f"CEL evaluation failed: {exc}")
        return RuleResult(rule_name, "pass", f"validation rule '{rule_name}' passed.")


def compile_cel(raw: Any, preconditions: Any, where: str) -> CelRule:
    from policies.formats.cel import CelError, compile_expression

    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a mapping")
    param_kind, param_ref = raw.get("paramKind"), raw.get("paramRef")
    if (param_kind is None) != (param_ref is None):
        raise FormatError(f"{where}: paramKind and paramRef go together")
    if param_kind is not None:
        if (
            not isinstance(param_kind, Mapping)
            or not param_kind.get("apiVersion")
            or not param_kind.get("kind")
        ):
            raise FormatError(f"{where}.paramKind needs apiVersion and kind")
        if not isinstance(param_ref, Mapping) or (param_ref.get("name") is None) == (
            param_ref.get("selector") is None
        ):
            raise FormatError(f"{where}.paramRef needs exactly one of name and selector")
        action = param_ref.get("parameterNotFoundAction")
        if action is not None and action not in ("Allow", "Deny"):
            raise FormatError(f"{where}.paramRef.parameterNotFoundAction must be Allow or Deny")
    declared = _VARS + (("params",) if param_kind is not None else ())
    variables: dict[str, Any] = {}
    for i, var in enumerate(raw.get("variables") or []):
        if not isinstance(var, Mapping) or not var.get("name") or not var.get("expression"):
            raise FormatError(f"{where}.variables[{i}] needs name and expression")
        try:
            variables[str(var["name"])] = compile_expression(
                str(var["expression"]), _VARS, lazy=("variables",)
            )
        except CelError as exc:
            raise FormatError(f"{where}.variables[{i}].expression: {exc}") from exc
    expressions = raw.get("expressions")
    if not isinstance(expressions, list) or not expressions:
        raise FormatError(f"{where}.expressions must be a non-empty list")
    validations = []
    for i, e in enumerate(expressions):
        if not isinstance(e, Mapping) or not e.get("expression"):
            raise FormatError(f"{where}.expressions[{i}].expression is required")
        try:
            program = compile_expression(str(e["expression"]), declared, lazy=("variables",))
            mprog = (
                compile_expression(str(e["messageExpression"]), declared, lazy=("variables",))
                if e.get("messageExpression")
                else None
            )
        except CelError as exc:
            raise FormatError(f"{where}.expressions[{i}]: {exc}") from exc
        validations.append((program, str(e.get("message") or ""), mprog))
    pre = []
    for i, c in enumerate(preconditions or []):
        if not isinstance(c, Mapping) or not c.get("expression"):
            raise FormatError(f"celPreconditions[{i}].expression is required")
        try:
            pre.append(
                (
                    str(c.get("name") or i),
                    compile_expression(str(c["expression"]), declared, lazy=("variables",)),
                )
            )
        except CelError as exc:
            raise FormatError(f"celPreconditions[{i}].expression: {exc}") from exc
    return CelRule(validations, variables, pre, dict(param_kind or {}), dict(param_ref or {}))
