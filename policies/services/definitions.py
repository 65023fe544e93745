"""Policy definitions: validate (compile, run unit tests), save as immutable versions, turn into BoundPolicy.

A definition is the content of one :class:`~policies.models.PolicyVersion`::

    {"style": "conftest", "modules": [{"path", "source"}], "test_modules": [...], "data": {...},
     "namespaces": ["main"], "all_namespaces": false, "combine": false}
    {"style": "gatekeeper", "template": "<ConstraintTemplate YAML>", "constraints": ["<YAML>", ...],
     "test_modules": [...]}
    {"style": "vap", "policy": "<ValidatingAdmissionPolicy YAML>", "binding": "<its Binding YAML>"}
    {"style": "kyverno", "policy": "<ClusterPolicy or Policy YAML>"}

VAP and Kyverno policies are evaluated in-process (CEL, Kyverno's patterns and JMESPath), not by the Rego
engine: they are compiled (and smoke-evaluated) when saved, and the errors name the document and field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from django.db import transaction

from fleet.access.restrict import groups_where, has_permission
from fleet.audit.services import record
from fleet.core.errors import DomainError, ErrorKind
from policies import gate
from policies.choices import PolicyStyle, TestStatus
from policies.engine import EngineError, Module, RegoEngine, TestResult, get_engine
from policies.formats import FormatError
from policies.formats import gatekeeper as gk
from policies.formats import kyverno as kyverno_fmt
from policies.formats import vap as vap_fmt
from policies.gate import ADMISSION_STYLES
from policies.models import Policy, PolicyVersion
from policies.services.smoke import describe, smoke_errors

_T = TypeVar("_T")


class PolicyInvalid(DomainError, ValueError):
    """The definition is refused: malformed, does not compile, or its unit tests fail.

    ``errors`` are dicts with path/line/column/message (line 0 for format errors)."""

    field: str

    def __init__(
        self,
        message: str,
        errors: Sequence[Mapping[str, Any]] = (),
        field: str = "source",
        tests: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, kind=ErrorKind.INVALID, field=field)
        self.errors = [dict(e) for e in errors]
        self.tests = [dict(t) for t in tests]


class PolicyWriteDenied(DomainError, PermissionError):
    """The user may not create this policy or add a version to it (API: 403; UI: a form error with 403).

    ``action`` is ``add`` (a new policy) or ``change`` (a new version of ``policy_name``)."""

    def __init__(self, message: str, *, action: str, policy_name: str) -> None:
        super().__init__(message, kind=ErrorKind.FORBIDDEN)
        self.action = action
        self.policy_name = policy_name


def ensure_may_write_policy(user: Any, policy: Policy | None, name: str = "") -> None:
    """Scope check against the policy being changed, not "may add somewhere".

    A new policy can be bound anywhere, so creating one needs ``policy.add`` on all clusters. A new version
    of an existing policy (by editing it, or by creating one with its name) needs ``policy.change`` on that
    policy, as its model's ``restrict`` decides (policies are global documents: a role on all clusters)."""
    if policy is None:
        if not groups_where(user, Policy, "add").everywhere:
            raise PolicyWriteDenied(
                "Only a role on all clusters may add policies (they can be bound anywhere).",
                action="add",
                policy_name=name,
            )
        return
    if not has_permission(user, Policy, "change", policy):
        raise PolicyWriteDenied(
            f"You may not change the policy {policy.name!r}: it applies beyond your scope.",
            action="change",
            policy_name=policy.name,
        )


class EngineUnavailableForSave(RuntimeError):
    """The configured engine could not be reached to compile the policy (nothing was saved)."""


@dataclass(frozen=True)
class PolicyDefinition:
    style: str
    modules: tuple[tuple[str, str], ...] = ()
    test_modules: tuple[tuple[str, str], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    namespaces: tuple[str, ...] = ("main",)
    all_namespaces: bool = False
    combine: bool = False
    template: str = ""
    constraints: tuple[str, ...] = ()
    policy: str = ""  # vap: the ValidatingAdmissionPolicy; kyverno: the ClusterPolicy/Policy (YAML)
    binding: str = ""  # vap: the ValidatingAdmissionPolicyBinding (YAML)

    @property
    def admission(self) -> bool:
        """VAP or Kyverno: evaluated in-process, not by the Rego engine."""
        return self.style in ADMISSION_STYLES

    # ---- conversion

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> PolicyDefinition:
        def mods(key: str) -> tuple[tuple[str, str], ...]:
            raw = content.get(key) or []
            if not isinstance(raw, list):
                raise PolicyInvalid(f"{key} must be a list of {{path, source}}", field=key)
            out = []
            for i, m in enumerate(raw):
                if not isinstance(m, Mapping) or not isinstance(m.get("path"), str) or not m.get("path"):
                    raise PolicyInvalid(f"{key}[{i}] needs a path and a source", field=key)
                if not isinstance(m.get("source"), str):
                    raise PolicyInvalid(f"{key}[{i}] ({m['path']}): source must be text", field=key)
                out.append((m["path"], m["source"]))
            paths = [p for p, _ in out]
            if len(set(paths)) != len(paths):
                raise PolicyInvalid(f"{key}: duplicate module paths", field=key)
            return tuple(out)

        style = content.get("style")
        if style not in PolicyStyle.values:
            raise PolicyInvalid(f"style must be one of {', '.join(PolicyStyle.values)}", field="style")
        data = content.get("data") or {}
        if not isinstance(data, Mapping):
            raise PolicyInvalid("data must be a JSON object", field="data")
        namespaces = content.get("namespaces") or ["main"]
        if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
            raise PolicyInvalid("namespaces must be a list of package names", field="namespaces")
        constraints = content.get("constraints") or []
        if isinstance(constraints, str):
            constraints = [constraints]
        if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
            raise PolicyInvalid(
                "constraints must be a list of Constraint YAML documents", field="constraints"
            )
        template = content.get("template") or ""
        if not isinstance(template, str):
            raise PolicyInvalid("template must be ConstraintTemplate YAML text", field="template")
        policy = content.get("policy") or ""
        binding = content.get("binding") or ""
        if style in ADMISSION_STYLES:
            what = "ValidatingAdmissionPolicy" if style == PolicyStyle.VAP else "Kyverno ClusterPolicy/Policy"
            if not isinstance(policy, str) or not policy.strip():
                raise PolicyInvalid(f"policy must be the {what} as YAML text", field="policy")
            if style == PolicyStyle.VAP and (not isinstance(binding, str) or not binding.strip()):
                raise PolicyInvalid(
                    "binding must be the ValidatingAdmissionPolicyBinding as YAML text", field="binding"
                )
        return cls(
            style=style,
            modules=mods("modules"),
            test_modules=mods("test_modules"),
            data=dict(data),
            namespaces=tuple(namespaces),
            all_namespaces=bool(content.get("all_namespaces", False)),
            combine=bool(content.get("combine", False)),
            template=template,
            constraints=tuple(constraints),
            policy=policy if isinstance(policy, str) else "",
            binding=binding if isinstance(binding, str) and style == PolicyStyle.VAP else "",
        )

    def as_content(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "style": self.style,
            "test_modules": [{"path": p, "source": s} for p, s in self.test_modules],
        }
        if self.style == PolicyStyle.CONFTEST:
            base.update(
                modules=[{"path": p, "source": s} for p, s in self.modules],
                data=dict(self.data),
                namespaces=list(self.namespaces),
                all_namespaces=self.all_namespaces,
                combine=self.combine,
            )
        elif self.style == PolicyStyle.VAP:
            base.update(policy=self.policy, binding=self.binding)
        elif self.style == PolicyStyle.KYVERNO:
            base.update(policy=self.policy)
        else:
            base.update(template=self.template, constraints=list(self.constraints))
        return base

    def content_hash(self) -> str:
        raw = json.dumps(self.as_content(), sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()

    # ---- parsed forms

    def parsed_template(self) -> gk.ConstraintTemplate:
        if not self.template.strip():
            raise PolicyInvalid("a Gatekeeper policy needs its ConstraintTemplate YAML", field="template")
        try:
            return gk.parse_constraint_template(self.template)
        except FormatError as exc:
            raise PolicyInvalid(str(exc), [_format_error(exc, "template")], field="template") from None

    def parsed_constraints(self, template: gk.ConstraintTemplate) -> list[gk.Constraint]:
        out = []
        names: set[str] = set()
        for i, text in enumerate(self.constraints):
            try:
                con = gk.parse_constraint(text)
                if con.kind != template.kind:
                    raise FormatError(
                        f"Constraint kind {con.kind!r} does not match the template's kind {template.kind!r}"
                    )
                gk.validate_parameters(template, con)
            except FormatError as exc:
                raise PolicyInvalid(
                    f"constraints[{i}]: {exc}", [_format_error(exc, f"constraints[{i}]")], field="constraints"
                ) from None
            if con.name in names:
                raise PolicyInvalid(
                    f"constraints[{i}]: duplicate constraint name {con.name!r}", field="constraints"
                )
            names.add(con.name)
            out.append(con)
        return out

    def policy_modules(self) -> list[Module]:
        if self.style == PolicyStyle.GATEKEEPER:
            return list(self.parsed_template().modules())
        return [Module(p, s) for p, s in self.modules]

    def test_module_list(self) -> list[Module]:
        return [Module(p, s) for p, s in self.test_modules]

    def kind(self) -> str:
        if self.style == PolicyStyle.GATEKEEPER:
            return self.parsed_template().kind
        if self.admission:
            doc = _yaml_mapping(self.policy, "policy")
            return str(doc.get("kind") or "")[:100]
        return ""

    def bound(self, policy_id: str | int, name: str, enforcement: str | None) -> list[gate.BoundPolicy]:
        """The gate's BoundPolicy objects (a Gatekeeper policy gives one per Constraint; VAP and Kyverno
        policies are compiled here: a CEL or pattern error raises PolicyInvalid naming the field)."""
        enforcement = enforcement or None
        if self.style == PolicyStyle.VAP:
            parsed_policy = _parsed(vap_fmt.parse_policy, _yaml_mapping(self.policy, "policy"), "policy")
            parsed_binding = _parsed(vap_fmt.parse_binding, _yaml_mapping(self.binding, "binding"), "binding")
            compiled = _parsed(lambda _: vap_fmt.compile(parsed_policy, parsed_binding), None, "binding")
            return [gate.BoundPolicy.vap(policy_id, name, compiled, enforcement=enforcement)]
        if self.style == PolicyStyle.KYVERNO:
            parsed = _parsed(kyverno_fmt.parse_policy, _yaml_mapping(self.policy, "policy"), "policy")
            return [gate.BoundPolicy.kyverno(policy_id, name, parsed, enforcement=enforcement)]
        if self.style == PolicyStyle.CONFTEST:
            return [
                gate.BoundPolicy.conftest(
                    policy_id,
                    name,
                    self.policy_modules(),
                    enforcement=enforcement or gate.Enforcement.DENY,
                    namespaces=self.namespaces,
                    all_namespaces=self.all_namespaces,
                    combine=self.combine,
                    data=self.data,
                )
            ]
        template = self.parsed_template()
        return [
            gate.BoundPolicy.gatekeeper(
                policy_id, f"{name}/{con.name}", template, con, enforcement=enforcement
            )
            for con in self.parsed_constraints(template)
        ]


def _yaml_mapping(text: str, field: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyInvalid(
            f"{field}: invalid YAML{where}: {getattr(exc, 'problem', exc)}",
            [
                {
                    "path": field,
                    "line": mark.line + 1 if mark else 0,
                    "column": 0,
                    "message": str(exc),
                    "code": "yaml_error",
                }
            ],
            field=field,
        ) from None
    if not isinstance(doc, dict):
        raise PolicyInvalid(f"{field} must be one YAML mapping", field=field)
    return doc


def _parsed(parse: Callable[[Any], _T], doc: Any, field: str) -> _T:
    """``parse(doc)``, or PolicyInvalid naming the definition's field (``policy``/``binding``) and the
    document's own field the evaluator names (``spec.validations[0].expression: ...``)."""
    try:
        return parse(doc)
    except FormatError as exc:
        raise PolicyInvalid(f"{field}: {exc}", [_format_error(exc, field)], field=field) from None


def _format_error(exc: Exception, path: str) -> dict[str, Any]:
    message = str(exc)
    line = 0
    marker = " at line "
    if marker in message:
        tail = message.split(marker, 1)[1]
        digits = "".join(ch for ch in tail.split(":", 1)[0] if ch.isdigit())
        line = int(digits) if digits else 0
    return {"path": path, "line": line, "column": 0, "message": message, "code": "format_error"}


@dataclass
class Validated:
    definition: PolicyDefinition
    kind: str
    tests: list[dict[str, Any]]
    test_status: str
    engine: str


def validate_definition(
    definition: PolicyDefinition, *, engine: RegoEngine | None = None, allow_failing_tests: bool = False
) -> Validated:
    """Parse, compile (on the configured engine) and run the ``test_*`` rules. Raises PolicyInvalid with the
    engine's messages and lines, or EngineUnavailableForSave when the engine cannot be reached."""
    if definition.admission:
        return _validate_admission(definition)
    try:
        engine = engine or get_engine()
    except ValueError as exc:
        raise EngineUnavailableForSave(str(exc)) from None
    style = definition.style
    try:
        if style == PolicyStyle.CONFTEST:
            if not definition.modules:
                raise PolicyInvalid("a conftest policy needs at least one Rego module", field="modules")
            modules = definition.policy_modules()
            kind = ""
        else:
            template = definition.parsed_template()
            definition.parsed_constraints(template)
            modules = list(template.modules())
            kind = template.kind
        tests = definition.test_module_list()
        errors = engine.check([*modules, *tests])
        if errors:
            first = errors[0]
            raise PolicyInvalid(
                f"the policy does not compile: {first}",
                [e.as_dict() for e in errors],
                field="modules" if style == PolicyStyle.CONFTEST else "template",
            )
        if style == PolicyStyle.CONFTEST:  # after compiling: a syntax error is reported with its line first
            try:
                definition.bound("check", "check", None)[0].policy_set()
            except (FormatError, ValueError) as exc:
                raise PolicyInvalid(str(exc), [_format_error(exc, "modules")], field="modules") from None
        smoke = smoke_errors(definition.bound("check", "check", None), engine)
        if smoke:
            raise PolicyInvalid(
                f"the policy fails when evaluated on {engine.name}: {describe(smoke[0])}",
                smoke,
                field="modules" if style == PolicyStyle.CONFTEST else "template",
            )
        has_tests = bool(tests) or any("test_" in m.source for m in modules)
        results: list[TestResult] = []
        if has_tests:
            data = definition.data if style == PolicyStyle.CONFTEST else None
            results = engine.run_tests([*modules, *tests], data=data)
    except EngineError as exc:
        raise EngineUnavailableForSave(f"the Rego engine could not check the policy: {exc}") from None
    test_dicts: list[dict[str, Any]] = [
        {"name": r.full_name, "passed": r.passed, "error": r.error} for r in results
    ]
    failed = [t for t in test_dicts if not t["passed"]]
    if failed and not allow_failing_tests:
        names = ", ".join(t["name"] for t in failed[:5])
        raise PolicyInvalid(
            f"{len(failed)} of {len(test_dicts)} policy test(s) failed: {names}",
            field="test_modules",
            tests=test_dicts,
        )
    status = TestStatus.NONE if not test_dicts else (TestStatus.FAILED if failed else TestStatus.PASSED)
    return Validated(definition, kind, test_dicts, status, engine.name)


#: what compiled a VAP or Kyverno version (PolicyVersion.engine)
ADMISSION_ENGINES: dict[str, str] = {PolicyStyle.VAP: "cel", PolicyStyle.KYVERNO: "kyverno"}


def _validate_admission(definition: PolicyDefinition) -> Validated:
    """A VAP or Kyverno definition: parsed and compiled (CEL expressions, patterns, JMESPath), then
    evaluated once on small objects of the kinds it matches (an evaluation error there is refused)."""
    if definition.test_modules:
        raise PolicyInvalid(
            "a VAP or Kyverno policy has no Rego test modules (Kyverno tests: manage.py policy_test)",
            field="test_modules",
        )
    bound = definition.bound("check", "check", None)
    smoke = smoke_errors(bound, None)
    if smoke:
        raise PolicyInvalid(
            f"the policy fails when evaluated: {describe(smoke[0])}",
            smoke,
            field=smoke[0].get("path") or "policy",
        )
    return Validated(definition, definition.kind(), [], TestStatus.NONE, ADMISSION_ENGINES[definition.style])


def _actor_name(user: Any) -> str:
    return user.get_username()[:150] if user is not None and getattr(user, "pk", None) else "system"


@dataclass
class SaveResult:
    policy: Policy
    version: PolicyVersion
    created: bool  # the policy is new
    new_version: bool  # a version was created (False: the content was unchanged)
    tests: list[dict[str, Any]]


def save_policy(
    name: str,
    definition: PolicyDefinition,
    *,
    user: Any = None,
    description: str | None = None,
    policy: Policy | None = None,
    commit_sha: str = "",
    source: Any = None,
    engine: RegoEngine | None = None,
    allow_failing_tests: bool = False,
    validated: Validated | None = None,
    check_scope: bool = False,
) -> SaveResult:
    """Create the policy or add a version to it (none when the content is unchanged). Audited.

    With ``check_scope`` (every write on behalf of a person: API, UI), ``user`` must be allowed to write the
    policy that is actually changed, checked on the locked row (:func:`ensure_may_write_policy`); otherwise
    :class:`PolicyWriteDenied` and nothing is stored. Use :func:`author_policy`."""
    if check_scope:  # refuse before compiling and running tests for someone who may not write at all
        ensure_may_write_policy(user, policy or Policy.objects.filter(name=name).first(), name)
    checked = validated or validate_definition(
        definition, engine=engine, allow_failing_tests=allow_failing_tests
    )
    content_hash = definition.content_hash()
    with transaction.atomic():
        created = False
        if policy is None:
            policy = Policy.objects.select_for_update().filter(name=name).first()
        else:
            policy = Policy.objects.select_for_update().get(pk=policy.pk)
        if check_scope:  # again on the locked row: the name may have been taken since the first check
            ensure_may_write_policy(user, policy, name)
        if policy is None:
            policy = Policy(name=name, style=definition.style, description=description or "", source=source)
            policy.kind = checked.kind
            policy.save()
            created = True
        elif policy.style != definition.style:
            raise PolicyInvalid(
                f"policy {policy.name!r} is a {policy.style} policy; its style cannot change", field="style"
            )
        current = policy.current
        if current is not None and current.content_hash == content_hash:
            changed = False
            if description is not None and description != policy.description:
                policy.description = description
                policy.save(update_fields=["description", "updated"])
                changed = True
            if changed:
                record("policy.update", policy, after={"description": policy.description})
            return SaveResult(policy, current, created, False, list(current.test_results))
        number = (current.number if current else 0) + 1
        last = policy.versions.order_by("-number").values_list("number", flat=True).first()
        number = max(number, (last or 0) + 1)
        version = PolicyVersion.objects.create(
            policy=policy,
            number=number,
            content=definition.as_content(),
            content_hash=content_hash,
            created_by=user if user is not None and getattr(user, "pk", None) else None,
            created_by_name=_actor_name(user),
            commit_sha=commit_sha,
            test_status=checked.test_status,
            test_results=checked.tests,
            engine=checked.engine,
        )
        policy.current = version
        policy.kind = checked.kind
        if description is not None:
            policy.description = description
        if source is not None:
            policy.source = source
        policy.save()
        record(
            "policy.create" if created else "policy.version",
            policy,
            after={
                "version": number,
                "content_hash": content_hash,
                "style": policy.style,
                "kind": policy.kind,
                "commit": commit_sha or None,
                "tests": checked.test_status,
            },
            message=f"{policy.name} v{number}" + (f" from commit {commit_sha[:10]}" if commit_sha else ""),
        )
    return SaveResult(policy, version, created, True, checked.tests)


def author_policy(
    user: Any,
    name: str,
    definition: PolicyDefinition,
    *,
    policy: Policy | None = None,
    description: str | None = None,
    allow_failing_tests: bool = False,
    validated: Validated | None = None,
) -> SaveResult:
    """What a person does in the API or the UI: create a policy, or a new version of ``policy`` (or of the
    policy already called ``name``), checked against that policy's scope. Raises PolicyWriteDenied,
    PolicyInvalid or EngineUnavailableForSave; nothing is stored then."""
    return save_policy(
        name,
        definition,
        user=user,
        description=description,
        policy=policy,
        allow_failing_tests=allow_failing_tests,
        validated=validated,
        check_scope=True,
    )


def definition_of(version: PolicyVersion) -> PolicyDefinition:
    return PolicyDefinition.from_content(version.content)
