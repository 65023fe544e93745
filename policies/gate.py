"""The policy gate: bound policies x rendered objects of one target -> a decision. Pure, no Django.

Call :func:`evaluate_target` with the objects rendered for one cluster, the policies bound to it, the
target's context and the waivers in force::

    decision = evaluate_target(objects, policies, context, waivers, engine=get_engine())
    decision.outcome            # "passed" | "warned" | "blocked" (| "cannot_review", see cannot_review())
    decision.violations         # every finding, with enforcement and waived_by
    decision.errors             # engine/format errors (each one blocks)
    decision.as_dict()          # JSON for an Evaluation row

Rules:
* a ``deny`` violation that no active waiver excuses blocks; ``warn`` is recorded and makes the outcome
  ``warned``; ``dryrun`` is recorded only. Waived violations are kept (``waived_by``) but do not count;
* the effective enforcement is the binding's (``BoundPolicy.enforcement``) or, when the binding sets none,
  the Constraint's ``enforcementAction`` (Gatekeeper) / ``deny`` (conftest); a conftest ``warn`` rule is
  never stronger than ``warn``;
* any engine error, timeout, unreachable engine or malformed policy blocks (fail closed);
* ValidatingAdmissionPolicies and Kyverno policies (``BoundPolicy.vap`` / ``.kyverno``) are evaluated in
  process on one :class:`~policies.formats.admission.AdmissionInput` per entry, beside the Rego ones; their
  findings keep the document's action unless the binding sets the enforcement, an error finding blocks like
  an engine error, and every violation and error names its language (:data:`LANGUAGES`);
* policies read the target's context at ``data.fleetgate.context`` (both styles, so unmodified third-party
  policies keep their ``input``); Gatekeeper policies also get ``data.inventory``;
* each object is reviewed as the operation the apply will do on the target (``RenderedObject.operation``):
  ``CREATE`` (absent there), ``UPDATE`` (``old_object`` = the live object) or ``DELETE`` (a prune:
  ``obj`` None, ``old_object`` = the live object). Gatekeeper policies get the review as ``input.review``;
  conftest policies that read ``data.fleetgate.review`` get it there (their ``input`` stays the object, the
  live one for a DELETE), and only those see DELETE entries. ``data.inventory`` holds what the target will
  run: the rendered objects, not the ones being pruned.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import yaml

from policies.engine import (
    EngineError,
    EngineTimeout,
    Module,
    PolicyCompileError,
    RegoEngine,
    engine_settings,
    get_engine,
)
from policies.engine.base import EvaluationSession, PolicySet, to_json
from policies.formats import FormatError
from policies.formats import conftest as conftest_fmt
from policies.formats import gatekeeper as gk
from policies.formats import kyverno as kyverno_fmt
from policies.formats import limits as admission_limits
from policies.formats import vap as vap_fmt
from policies.formats.admission import AdmissionInput, Finding, ParamsLookup
from policies.formats.kube import LabelSelector, ObjectId, build_inventory, labels_of, object_id


class Enforcement(StrEnum):
    DENY = "deny"
    WARN = "warn"
    DRYRUN = "dryrun"


_SEVERITY = {Enforcement.DENY: 2, Enforcement.WARN: 1, Enforcement.DRYRUN: 0}


def _weakest(a: Enforcement, b: Enforcement) -> Enforcement:
    return a if _SEVERITY[a] <= _SEVERITY[b] else b


class PolicyStyle(StrEnum):
    CONFTEST = "conftest"
    GATEKEEPER = "gatekeeper"
    VAP = "vap"  # Kubernetes ValidatingAdmissionPolicy + one ValidatingAdmissionPolicyBinding (CEL)
    KYVERNO = "kyverno"  # Kyverno ClusterPolicy / Policy validate rules


#: The language each style is written in, as results name it (rollouts, commit page, policy_check, the check
#: API, PolicyReports, the audit log, /metrics).
LANGUAGES: dict[str, str] = {
    PolicyStyle.CONFTEST: "Rego/conftest",
    PolicyStyle.GATEKEEPER: "Rego/Gatekeeper",
    PolicyStyle.VAP: "VAP (CEL)",
    PolicyStyle.KYVERNO: "Kyverno",
}

ADMISSION_STYLES = frozenset({PolicyStyle.VAP, PolicyStyle.KYVERNO})


def language_of(style: str) -> str:
    """The language a policy of ``style`` is written in (the style itself when unknown)."""
    return LANGUAGES.get(style, style)


class AdmissionPolicy(Protocol):
    """A compiled VAP (``policies.formats.vap.CompiledVap``) or Kyverno policy
    (``policies.formats.kyverno.KyvernoPolicy``), as the gate calls it: ``params`` finds the parameter
    objects (``paramKind``/``paramRef``) among the objects rendered for the target, then its live ones;
    ``passes``, when given, receives ``(input index, rule)`` for each rule that matched an input and found
    nothing (PolicyReports' ``pass`` results)."""

    def evaluate(
        self,
        inputs: Sequence[AdmissionInput],
        params: ParamsLookup,
        *,
        passes: list[tuple[int, str]] | None = None,
    ) -> Sequence[Finding]: ...


class Outcome(StrEnum):
    PASSED = "passed"
    WARNED = "warned"
    BLOCKED = "blocked"
    # the live state of the target could not be read, so its UPDATE/DELETE reviews cannot be made: blocks
    CANNOT_REVIEW = "cannot_review"


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class RenderedObject:
    """One rendered Kubernetes object and where it came from, and how the apply will change the target.

    ``operation`` is ``CREATE`` (default), ``UPDATE`` (``old_object`` = the live object) or ``DELETE``
    (a prune: ``obj`` is None and ``old_object`` is the live object)."""

    obj: Mapping[str, Any] | None
    source_file: str = ""
    document_index: int = 0
    operation: str = "CREATE"
    old_object: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.operation not in gk.OPERATIONS:
            raise ValueError(f"operation {self.operation!r} is not one of {', '.join(gk.OPERATIONS)}")
        if self.operation == "DELETE":
            if self.obj is not None or self.old_object is None:
                raise ValueError("a DELETE entry has no object and the live object as old_object")
        elif self.obj is None:
            raise ValueError(f"a {self.operation} entry needs the rendered object")
        elif self.operation == "UPDATE" and self.old_object is None:
            raise ValueError("an UPDATE entry needs the live object as old_object")

    @property
    def subject(self) -> Mapping[str, Any]:
        """The object the entry is about: the rendered one, or the live one for a DELETE."""
        subject = self.obj if self.obj is not None else self.old_object
        assert subject is not None  # noqa: S101 - guaranteed by __post_init__
        return subject

    @property
    def deleted(self) -> bool:
        return self.operation == "DELETE"


class ParamsUnreadable(Exception):
    """The parameter objects of a policy could not be read from the target cluster: the target cannot be
    reviewed (it blocks), as when its live objects cannot be read."""


@dataclass(frozen=True)
class TargetContext:
    """What policies can know about the target, at ``data.fleetgate.context``::

    {"cluster": {"name": ..., "labels": {...}}, "group": ..., "repository": ..., "path": ...,
     "commit": ..., "author": ..., "extra": {...}}
    """

    cluster: str = ""
    cluster_labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""
    repository: str = ""
    path: str = ""
    commit: str = ""
    author: str = ""
    default_namespace: str = "default"
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: ``userInfo`` of every review of this target: the Fleetgate user who triggered the rollout, or the
    #: commit author (``git:<email>``), with groups.
    user_info: Mapping[str, Any] = field(default_factory=lambda: dict(gk.DEFAULT_USER_INFO))
    #: Where parameter objects (``paramRef``) the render does not hold are looked up: the target
    #: cluster, for a live review (a :data:`ParamsLookup` that raises :class:`ParamsUnreadable` when the
    #: cluster cannot be read); None for a review of the render alone.
    live_params: ParamsLookup | None = field(default=None, compare=False, repr=False)

    def as_data(self) -> dict[str, Any]:
        return {
            "cluster": {"name": self.cluster, "labels": dict(self.cluster_labels)},
            "group": self.group,
            "repository": self.repository,
            "path": self.path,
            "commit": self.commit,
            "author": self.author,
            "extra": dict(self.extra),
        }


@dataclass(frozen=True)
class BoundPolicy:
    """A policy version as bound to this target. Build with :meth:`conftest` or :meth:`gatekeeper`."""

    id: str
    name: str
    style: PolicyStyle
    enforcement: Enforcement | None = None
    conftest_policy: conftest_fmt.ConftestPolicy | None = None
    template: gk.ConstraintTemplate | None = None
    constraint: gk.Constraint | None = None
    #: VAP and Kyverno: the compiled policy (compiled once, when the BoundPolicy is built; the services
    #: cache BoundPolicy objects per stored version, so a version is compiled once per process)
    admission: AdmissionPolicy | None = None
    #: Kyverno: the rules the gate does not apply, as (rule name, "mutate" | "generate" | ...)
    not_applied: tuple[tuple[str, str], ...] = ()

    @property
    def language(self) -> str:
        return language_of(self.style)

    @classmethod
    def conftest(
        cls,
        id: str | int,
        name: str,
        modules: Sequence[Module] | Mapping[str, str],
        *,
        enforcement: Enforcement | str | None = Enforcement.DENY,
        namespaces: Sequence[str] = ("main",),
        all_namespaces: bool = False,
        combine: bool = False,
        data: Mapping[str, Any] | None = None,
    ) -> BoundPolicy:
        mods = (
            tuple(Module(p, s) for p, s in modules.items())
            if isinstance(modules, Mapping)
            else tuple(modules)
        )
        policy = conftest_fmt.ConftestPolicy(
            mods, tuple(namespaces), all_namespaces, combine, dict(data or {})
        )
        return cls(
            str(id),
            name,
            PolicyStyle.CONFTEST,
            Enforcement(enforcement) if enforcement else None,
            conftest_policy=policy,
        )

    @classmethod
    def gatekeeper(
        cls,
        id: str | int,
        name: str,
        template: str | Mapping[str, Any] | gk.ConstraintTemplate,
        constraint: str | Mapping[str, Any] | gk.Constraint,
        *,
        enforcement: Enforcement | str | None = None,
    ) -> BoundPolicy:
        tpl = (
            template
            if isinstance(template, gk.ConstraintTemplate)
            else gk.parse_constraint_template(template)
        )
        con = constraint if isinstance(constraint, gk.Constraint) else gk.parse_constraint(constraint)
        if con.kind != tpl.kind:
            raise FormatError(f"Constraint kind {con.kind!r} does not match the template's kind {tpl.kind!r}")
        gk.validate_parameters(tpl, con)
        return cls(
            str(id),
            name,
            PolicyStyle.GATEKEEPER,
            Enforcement(enforcement) if enforcement else None,
            template=tpl,
            constraint=con,
        )

    @classmethod
    def vap(
        cls,
        id: str | int,
        name: str,
        policy: str | Mapping[str, Any] | vap_fmt.CompiledVap,
        binding: str | Mapping[str, Any] | None = None,
        *,
        enforcement: Enforcement | str | None = None,
    ) -> BoundPolicy:
        """A ValidatingAdmissionPolicy with one of its bindings (documents, or compiled together by
        ``vap.compile``): the binding's ``validationActions`` give each finding's action; ``enforcement``,
        a Fleetgate binding's, overrides them."""
        if isinstance(policy, vap_fmt.CompiledVap):
            compiled = policy
        else:
            if binding is None:
                raise FormatError("a ValidatingAdmissionPolicy is evaluated with one of its bindings")
            compiled = vap_fmt.compile(
                vap_fmt.parse_policy(_document(policy)), vap_fmt.parse_binding(_document(binding))
            )
        return cls(
            str(id),
            name,
            PolicyStyle.VAP,
            Enforcement(enforcement) if enforcement else None,
            admission=compiled,
        )

    @classmethod
    def kyverno(
        cls,
        id: str | int,
        name: str,
        policy: str | Mapping[str, Any] | kyverno_fmt.KyvernoPolicy,
        *,
        enforcement: Enforcement | str | None = None,
    ) -> BoundPolicy:
        """A Kyverno ClusterPolicy or Policy: its validate rules (each finding's action from the rule's
        ``failureAction`` or the policy's ``validationFailureAction``; ``enforcement`` overrides them)."""
        parsed = (
            policy
            if isinstance(policy, kyverno_fmt.KyvernoPolicy)
            else kyverno_fmt.parse_policy(_document(policy))
        )
        return cls(
            str(id),
            name,
            PolicyStyle.KYVERNO,
            Enforcement(enforcement) if enforcement else None,
            admission=parsed,
            not_applied=tuple(getattr(parsed, "not_applied", ()) or ()),
        )

    def policy_set(self) -> PolicySet:
        """The Rego modules and entry points to prepare: built once per BoundPolicy, which the gate reuses
        for every target of a mapping (a rollout to 10,000 clusters built it 10,000 times, parsing the
        modules' rules each time: 5 s of its prepare, issue 19)."""
        built: PolicySet | None = self.__dict__.get("_policy_set")
        if built is not None:
            return built
        if self.style is PolicyStyle.CONFTEST and self.conftest_policy is not None:
            built = self.conftest_policy.policy_set()
        elif self.style is PolicyStyle.GATEKEEPER and self.template is not None:
            built = self.template.policy_set()
        else:
            raise FormatError(f"policy {self.name!r} has no {self.style} definition")
        object.__setattr__(self, "_policy_set", built)  # a cache, not a field (frozen dataclass)
        return built

    def base_enforcement(self) -> Enforcement:
        if self.enforcement is not None:
            return self.enforcement
        if self.constraint is not None:
            return Enforcement(self.constraint.enforcement_action)
        return Enforcement.DENY


def _document(doc: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """One YAML/JSON document as a mapping (FormatError when it is not one)."""
    if isinstance(doc, Mapping):
        return doc
    try:
        loaded = yaml.safe_load(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FormatError(f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(loaded, Mapping):
        raise FormatError("the document must be a mapping")
    return loaded


@dataclass(frozen=True)
class Waiver:
    """Excuses violations of one policy on the objects its selector matches, until ``expires_at``.

    Empty selector fields match anything; ``name`` and ``cluster`` are globs (``web-*``); ``group`` is the
    target's cluster group name; ``labels`` must all be present on the object. A waiver with a selector
    never matches a finding that has no object (conftest ``combine``)."""

    id: str
    policy_id: str
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cluster: str | None = None
    group: str | None = None
    expires_at: datetime | None = None
    #: the finding's rule (a Kyverno rule name, e.g. from a PolicyException's ``ruleNames``; empty: any)
    rule: str | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or _aware(self.expires_at) > now

    def matches(self, violation: Violation, labels: Mapping[str, str], context: TargetContext) -> bool:
        if str(self.policy_id) != violation.policy_id:
            return False
        if self.cluster and not fnmatch.fnmatchcase(context.cluster, self.cluster):
            return False
        if self.group and self.group != context.group:
            return False
        if self.rule and self.rule != violation.rule:
            return False
        has_selector = bool(self.kind or self.namespace or self.name or self.labels)
        if violation.object is None:
            return not has_selector
        ref = violation.object
        if self.kind and self.kind != ref.kind:
            return False
        if self.namespace and self.namespace != ref.namespace:
            return False
        if self.name and not fnmatch.fnmatchcase(ref.name, self.name):
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    source_file: str = ""


@dataclass(frozen=True)
class Violation:
    policy_id: str
    policy_name: str
    enforcement: Enforcement
    rule: str
    message: str
    object: ObjectRef | None
    details: Mapping[str, Any] = field(default_factory=dict)
    waived_by: str | None = None
    language: str = ""  # "Rego/conftest", "Rego/Gatekeeper", "VAP (CEL)", "Kyverno" (see LANGUAGES)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["enforcement"] = str(self.enforcement)
        return out


@dataclass(frozen=True)
class PolicyError:
    policy_id: str
    policy_name: str
    message: str
    kind: str = "engine"  # "engine", "timeout", "compile", "format", "internal"
    compile_errors: tuple[dict[str, Any], ...] = ()
    language: str = ""  # of the policy (see LANGUAGES)


@dataclass(frozen=True)
class Passed:
    """The objects on which one rule of a VAP or Kyverno policy matched and found nothing: PolicyReports'
    ``pass`` results (for Rego policies the reports work them out from the render and ``spec.match``)."""

    policy_id: str
    policy_name: str
    rule: str
    objects: tuple[ObjectRef, ...]
    language: str = ""


@dataclass
class Decision:
    outcome: Outcome
    violations: list[Violation]
    errors: list[PolicyError]
    reasons: list[str]
    engine: str
    evaluations: int = 0
    duration_seconds: float = 0.0
    # conftest ``exception`` rules that excused a rule for an input (conftest's EXCP lines; no waiver needed)
    exceptions: list[Violation] = field(default_factory=list)
    # conftest's test count for conftest policies (rule definitions x inputs) plus objects reviewed by
    # Gatekeeper policies; 0 when unknown (then summaries use ``evaluations``)
    tests: int = 0
    #: how the target was reviewed: {"operations": {"CREATE": n, "UPDATE": n, "DELETE": n}} and, from the
    #: caller, "mode" ("live", "create_only", "cannot_review", "rendered") with a "reason"
    review: dict[str, Any] = field(default_factory=dict)
    #: VAP and Kyverno rules that matched objects and found nothing (not in :meth:`as_dict`: the services
    #: store them with the Evaluation, compactly, for PolicyReports)
    passes: list[Passed] = field(default_factory=list)

    @property
    def blocking(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement is Enforcement.DENY and v.waived_by is None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "reasons": list(self.reasons),
            "engine": self.engine,
            "evaluations": self.evaluations,
            "duration_seconds": round(self.duration_seconds, 6),
            "violations": [v.as_dict() for v in self.violations],
            "errors": [asdict(e) for e in self.errors],
            "review": dict(self.review),
            "exceptions": [v.as_dict() for v in self.exceptions],
            "tests": self.tests,
        }


# --------------------------------------------------------------------------------------------- evaluation


class _Target:
    """Per-target precomputation shared by every policy: identities, JSON encodings, namespace labels,
    which objects each distinct ``spec.match`` selects, object references.

    Each object (and each live object of an UPDATE) is encoded once; its review is assembled from those
    texts (:func:`gk.review_json`), not encoded again, and only the references of objects with findings
    are built."""

    def __init__(self, objects: Sequence[RenderedObject], context: TargetContext) -> None:
        self.objects = objects
        self.context = context
        self.ids: list[ObjectId] = [object_id(r.subject, context.default_namespace) for r in objects]
        self.namespaces: dict[str, Mapping[str, Any]] = {
            oid.name: r.obj
            for r, oid in zip(objects, self.ids, strict=True)
            if oid.kind == "Namespace" and oid.group == "" and r.obj is not None
        }
        self.has_deletes = any(r.deleted for r in objects)
        self.namespace_labels = {name: labels_of(obj) for name, obj in self.namespaces.items()}
        self._object_json: list[str | None] = [None] * len(objects)
        self._review_json: list[str | None] = [None] * len(objects)
        self._namespace_json: dict[str, str] = {}
        self._user_info_json = gk.user_info_json(context.user_info)
        self._refs: list[ObjectRef | None] = [None] * len(objects)
        self._matched: dict[gk.Match, list[int]] = {}
        self._admission: list[AdmissionInput] | None = None
        self._params: dict[tuple[str, str], list[tuple[ObjectId, Mapping[str, Any]]]] | None = None

    # ---- the admission-style languages (VAP, Kyverno)

    def _live_namespace(self, namespace: str) -> Mapping[str, Any] | None:
        for r, oid in zip(self.objects, self.ids, strict=True):
            if oid.kind == "Namespace" and oid.group == "" and oid.name == namespace and r.old_object:
                return r.old_object
        return None

    def admission_inputs(self) -> list[AdmissionInput]:
        """One :class:`AdmissionInput` per entry (built once per target, shared by every policy):
        the operation, object and old object of the entry, the object's Namespace (rendered, else the live
        one the review read), and the target's userInfo."""
        if self._admission is None:
            namespaces: dict[str, Mapping[str, Any] | None] = {}
            out = []
            for r, oid in zip(self.objects, self.ids, strict=True):
                ns = oid.namespace
                if ns and ns not in namespaces:
                    namespaces[ns] = self.namespaces.get(ns) or self._live_namespace(ns)
                out.append(
                    AdmissionInput(
                        r.operation,
                        oid,
                        r.obj,
                        r.old_object if r.operation != "CREATE" else None,
                        namespaces.get(ns) if ns else None,
                        self.context.user_info,
                        r.source_file,
                    )
                )
            self._admission = out
        return self._admission

    def params(
        self, api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
    ) -> list[Mapping[str, Any]]:
        """:data:`ParamsLookup` of this target: the objects rendered for it first, then the live objects its
        review read (the old objects of its UPDATEs and DELETEs) that the render does not hold, then (for a
        live review, :attr:`TargetContext.live_params`) the objects of the target cluster: by name when the
        render holds none, and every one a selector (or ``*``) matches that the render does not hold."""
        if self._params is None:
            index: dict[tuple[str, str], list[tuple[ObjectId, Mapping[str, Any]]]] = {}
            seen: set[ObjectId] = set()
            for r, oid in zip(self.objects, self.ids, strict=True):
                if r.obj is not None:
                    index.setdefault((oid.api_version, oid.kind), []).append((oid, r.obj))
                    seen.add(oid)
            for r, oid in zip(self.objects, self.ids, strict=True):
                if r.old_object is not None and oid not in seen:
                    index.setdefault((oid.api_version, oid.kind), []).append((oid, r.old_object))
                    seen.add(oid)
            self._params = index
        wanted = LabelSelector.parse(selector, "paramRef.selector") if selector is not None else None
        found = [
            (oid.namespace, oid.name, obj)
            for oid, obj in self._params.get((api_version, kind), [])
            if (not namespace or oid.namespace == namespace)
            and (not name or name == "*" or oid.name == name)
            and (wanted is None or wanted.matches(labels_of(obj)))
        ]
        live = self.context.live_params
        by_name = bool(name) and name != "*"
        if live is not None and not (by_name and found):
            held = {(ns, n) for ns, n, _ in found}
            for obj in live(api_version, kind, namespace, name, selector):
                meta = obj.get("metadata") or {}
                key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                if key not in held and (wanted is None or wanted.matches(labels_of(obj))):
                    held.add(key)
                    found.append((*key, obj))
        return [obj for _ns, _n, obj in found]

    def object_json(self, i: int) -> str:
        text = self._object_json[i]
        if text is None:
            text = self._object_json[i] = to_json(self.objects[i].subject)
        return text

    def _old_object_json(self, i: int) -> str | None:
        r = self.objects[i]
        if r.operation == "DELETE":
            return self.object_json(i)  # the subject of a DELETE is the live object
        if r.operation == "UPDATE" and r.old_object is not None:
            return to_json(r.old_object)
        return None

    def _namespace_object_json(self, namespace: str) -> str | None:
        obj = self.namespaces.get(namespace) if namespace else None
        if obj is None:
            return None
        text = self._namespace_json.get(namespace)
        if text is None:
            text = self._namespace_json[namespace] = to_json(obj)
        return text

    def review_json(self, i: int) -> str:
        text = self._review_json[i]
        if text is None:
            oid = self.ids[i]
            r = self.objects[i]
            text = self._review_json[i] = gk.review_json(
                oid,
                operation=r.operation,
                object_json=None if r.deleted else self.object_json(i),
                old_object_json=self._old_object_json(i),
                user_info_json=self._user_info_json,
                namespace_object_json=self._namespace_object_json(oid.namespace),
            )
        return text

    def matching(self, match: gk.Match) -> list[int]:
        """The indices of the objects ``match`` selects (constraints of one template often share one)."""
        indices = self._matched.get(match)
        if indices is None:
            indices = self._matched[match] = [
                i
                for i, oid in enumerate(self.ids)
                if match.matches(self.objects[i].subject, oid, self.namespace_labels)
            ]
        return indices

    def ref(self, i: int) -> ObjectRef:
        ref = self._refs[i]
        if ref is None:
            oid = self.ids[i]
            ref = self._refs[i] = ObjectRef(
                oid.api_version, oid.kind, oid.namespace, oid.name, self.objects[i].source_file
            )
        return ref


class _Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.end is not None and time.monotonic() >= self.end:
            raise EngineTimeout(f"policy evaluation exceeded its time budget of {self.seconds:g}s")


_CHUNK = 500


def _evaluate_gatekeeper(
    policy: BoundPolicy, prepared: Any, target: _Target, session: EvaluationSession, deadline: _Deadline
) -> tuple[list[Violation], int]:
    assert policy.constraint is not None  # noqa: S101 - guaranteed by BoundPolicy.gatekeeper
    constraint = policy.constraint
    enforcement = policy.base_enforcement()
    indices = target.matching(constraint.match)
    params = constraint.parameters_json
    out: list[Violation] = []
    for start in range(0, len(indices), _CHUNK):
        deadline.check()
        chunk = indices[start : start + _CHUNK]
        inputs = [gk.input_json(target.review_json(i), params) for i in chunk]
        for i, result in zip(chunk, prepared.evaluate_many(gk.ENTRYPOINT, inputs, session), strict=True):
            for item in result[0] if result else []:
                msg = item.get("msg") if isinstance(item, Mapping) else item
                details = item.get("details") if isinstance(item, Mapping) else None
                out.append(
                    Violation(
                        policy.id,
                        policy.name,
                        enforcement,
                        "violation",
                        msg if isinstance(msg, str) else json.dumps(msg, sort_keys=True),
                        target.ref(i),
                        details if isinstance(details, Mapping) else {},
                        language=policy.language,
                    )
                )
    return out, len(indices)


def _evaluate_admission(
    policy: BoundPolicy, target: _Target, deadline: _Deadline
) -> tuple[list[Violation], list[PolicyError], int, list[Passed]]:
    """A VAP or Kyverno policy on every entry of the target. Its findings become violations (their action,
    unless the Fleetgate binding sets the enforcement); an ``error`` finding (e.g. VAP ``failurePolicy:
    Fail``) becomes a policy error, which blocks like an engine error. Parameter objects (``paramRef``) come
    from the target's :meth:`_Target.params`; the rules that matched an entry and found nothing are the
    returned :class:`Passed` values."""
    assert policy.admission is not None  # noqa: S101 - guaranteed by BoundPolicy.vap / .kyverno
    deadline.check()
    inputs = target.admission_inputs()
    passed: list[tuple[int, str]] = []
    with admission_limits.time_limit(deadline.end):  # checked inside the evaluation too (CEL, JMESPath)
        findings = policy.admission.evaluate(inputs, target.params, passes=passed)
    deadline.check()
    out: list[Violation] = []
    errors: list[PolicyError] = []
    for f in findings:
        where = target.ref(f.index) if 0 <= f.index < len(inputs) else None
        if f.error:
            subject = (
                f" on {where.kind} {where.namespace + '/' if where.namespace else ''}{where.name}"
                if where
                else ""
            )
            errors.append(
                PolicyError(
                    policy.id,
                    policy.name,
                    f"{f.rule}{subject}: {f.message}",
                    "engine",
                    language=policy.language,
                )
            )
            continue
        enforcement = policy.enforcement or Enforcement(f.action)
        out.append(
            Violation(
                policy.id,
                policy.name,
                enforcement,
                f.rule,
                f.message,
                where,
                dict(f.details),
                language=policy.language,
            )
        )
    by_rule: dict[str, list[int]] = {}
    for index, rule in passed:
        if 0 <= index < len(inputs):
            by_rule.setdefault(rule, []).append(index)
    passes = [
        Passed(policy.id, policy.name, rule, tuple(target.ref(i) for i in indices), policy.language)
        for rule, indices in by_rule.items()
    ]
    return out, errors, len(inputs), passes


def _conftest_result(
    policy: BoundPolicy,
    checked: conftest_fmt.InputResult,
    target: _Target | None,
    i: int,
    out: _ConftestOut,
) -> None:
    """Add one input's findings; the object's reference (``target.ref(i)``; none for a combined input)
    is built only when there is something to report."""
    assert policy.conftest_policy is not None  # noqa: S101
    out.tests += checked.tests
    if not checked.findings and not checked.exceptions:
        return
    base = policy.base_enforcement()
    ref = target.ref(i) if target is not None else None
    language = policy.language
    for f in checked.findings:
        level = base if f.level == "failure" else _weakest(base, Enforcement.WARN)
        rule = f.rule if f.namespace == "main" else f"{f.namespace}.{f.rule}"
        out.violations.append(
            Violation(policy.id, policy.name, level, rule, f.message, ref, dict(f.details), language=language)
        )
    for e in checked.exceptions:
        rule = e.rule if e.namespace == "main" else f"{e.namespace}.{e.rule}"
        out.exceptions.append(Violation(policy.id, policy.name, base, rule, e.query, ref, language=language))


@dataclass
class _ConftestOut:
    rule_counts: dict[str, dict[str, int]]
    violations: list[Violation] = field(default_factory=list)
    exceptions: list[Violation] = field(default_factory=list)
    tests: int = 0
    evaluations: int = 0


def _evaluate_conftest(
    policy: BoundPolicy, prepared: Any, target: _Target, session: EvaluationSession, deadline: _Deadline
) -> _ConftestOut:
    assert policy.conftest_policy is not None  # noqa: S101
    out = _ConftestOut(policy.conftest_policy.rule_counts())
    if policy.conftest_policy.combine:
        files: dict[str, list[Any]] = {}
        for r in target.objects:
            if r.obj is not None:
                files.setdefault(r.source_file, []).append(r.obj)
        combined = conftest_fmt.combined_input(list(files.items()))
        deadline.check()
        result = prepared.evaluate(conftest_fmt.ENTRYPOINT, combined, session)
        whole = conftest_fmt.check(result[0] if result else {}, out.rule_counts)
        _conftest_result(policy, whole, None, 0, out)
        out.evaluations = 1
        return out
    wrapped = policy.conftest_policy.reads_review
    # a conftest policy sees only the files, unless it reads the review (then also the prunes)
    indices = (
        list(range(len(target.objects)))
        if wrapped or not target.has_deletes
        else [i for i, r in enumerate(target.objects) if not r.deleted]
    )
    out.evaluations = len(indices)
    for start in range(0, len(indices), _CHUNK):
        deadline.check()
        chunk = indices[start : start + _CHUNK]
        inputs = [
            conftest_fmt.review_input_json(target.object_json(i), target.review_json(i))
            if wrapped
            else target.object_json(i)
            for i in chunk
        ]
        results = prepared.evaluate_many(conftest_fmt.ENTRYPOINT, inputs, session)
        seen: dict[int, conftest_fmt.InputResult] = {}  # an engine may share equal results' values
        for i, result in zip(chunk, results, strict=True):
            key = id(result)
            found = seen.get(key)
            if found is None:
                found = seen[key] = conftest_fmt.check(result[0] if result else {}, out.rule_counts)
            _conftest_result(policy, found, target, i, out)
    return out


def _as_rendered(objects: Sequence[RenderedObject | Mapping[str, Any]]) -> list[RenderedObject]:
    out = []
    for i, item in enumerate(objects):
        if isinstance(item, RenderedObject):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(RenderedObject(item))
        else:
            raise TypeError(f"object #{i} is neither a RenderedObject nor a mapping")
    return out


def _error_for(policy: BoundPolicy, exc: Exception) -> PolicyError:
    return replace(_error_kind(policy, exc), language=policy.language)


def _error_kind(policy: BoundPolicy, exc: Exception) -> PolicyError:
    if isinstance(exc, PolicyCompileError):
        return PolicyError(
            policy.id, policy.name, str(exc), "compile", tuple(e.as_dict() for e in exc.errors)
        )
    if isinstance(exc, EngineTimeout):
        return PolicyError(policy.id, policy.name, str(exc), "timeout")
    if isinstance(exc, (FormatError, ValueError)):
        return PolicyError(policy.id, policy.name, str(exc), "format")
    if isinstance(exc, EngineError):
        return PolicyError(policy.id, policy.name, str(exc), "engine")
    return PolicyError(policy.id, policy.name, f"internal error: {exc.__class__.__name__}: {exc}", "internal")


def evaluate_target(
    objects: Sequence[RenderedObject | Mapping[str, Any]],
    policies: Sequence[BoundPolicy],
    context: TargetContext | None = None,
    waivers: Sequence[Waiver] = (),
    *,
    engine: RegoEngine | None = None,
    now: datetime | None = None,
    time_budget: float | None = None,
) -> Decision:
    """Evaluate every bound policy on the objects rendered for one target and decide.

    ``time_budget`` (seconds) bounds the whole run; exceeding it blocks with a timeout error.
    Never raises for engine or policy problems: they become errors in a ``blocked`` decision.
    """
    started = time.monotonic()
    context = context or TargetContext()
    now = _aware(now) if now is not None else datetime.now(UTC)
    rendered = _as_rendered(objects)
    violations: list[Violation] = []
    errors: list[PolicyError] = []
    evaluations = 0
    tests = 0
    excused: list[Violation] = []
    passes: list[Passed] = []
    engine_name = "?"
    try:
        # VAP and Kyverno policies are evaluated in-process: the Rego engine is needed only for Rego ones
        needs_engine = any(p.admission is None for p in policies)
        engine = engine or (get_engine() if needs_engine else None)
        if engine is not None:
            engine_name = engine.name
        elif not policies:  # the configured engine's decision, as dashboards count it
            engine_name = engine_settings().engine
        else:
            engine_name = "in-process"
        target = _Target(rendered, context)
        deadline = _Deadline(time_budget)
        needs_inventory = any(p.style is PolicyStyle.GATEKEEPER for p in policies)
        target_data = {
            "inventory": build_inventory(
                (r.obj for r in rendered if r.obj is not None), context.default_namespace
            )
            if needs_inventory
            else {},
            "fleetgate": {"context": context.as_data()},
        }
        with engine.open_session(target_data) if engine is not None else _no_session() as session:
            for policy in policies:
                try:
                    deadline.check()
                    if policy.admission is not None:
                        found, failed, count, passed = _evaluate_admission(policy, target, deadline)
                        errors.extend(failed)
                        passes.extend(passed)
                        tests += count
                        violations.extend(found)
                        evaluations += count
                        continue
                    assert engine is not None  # noqa: S101 - a Rego policy makes needs_engine true
                    prepared = engine.prepare(policy.policy_set())
                    if policy.style is PolicyStyle.GATEKEEPER:
                        found, count = _evaluate_gatekeeper(policy, prepared, target, session, deadline)
                        tests += count
                    else:
                        conftest_out = _evaluate_conftest(policy, prepared, target, session, deadline)
                        found, count = conftest_out.violations, conftest_out.evaluations
                        excused.extend(conftest_out.exceptions)
                        tests += conftest_out.tests
                    violations.extend(found)
                    evaluations += count
                except ParamsUnreadable as exc:  # like the live objects: the target cannot be reviewed
                    return cannot_review(str(exc))
                except Exception as exc:  # fail closed: any failure blocks, with its reason
                    errors.append(_error_for(policy, exc))
    except Exception as exc:  # whatever failed, the answer is "blocked", never "passed"
        # The engine itself failed (e.g. OPA unreachable when opening the session): every policy is unknown.
        if policies:
            errors.extend(_error_for(p, exc) for p in policies)
        else:
            errors.append(PolicyError("", "", str(exc), "engine"))

    violations = _apply_waivers(violations, rendered, context, waivers, now)
    violations.sort(
        key=lambda v: (
            v.policy_id,
            v.object.source_file if v.object else "",
            v.object.kind if v.object else "",
            v.object.namespace if v.object else "",
            v.object.name if v.object else "",
            v.rule,
            v.message,
        )
    )
    outcome, reasons = decide(violations, errors)
    return Decision(
        outcome,
        violations,
        errors,
        reasons,
        engine_name,
        evaluations,
        time.monotonic() - started,
        exceptions=excused,
        tests=tests,
        review={"operations": _operations(rendered)},
        passes=passes,
    )


@contextlib.contextmanager
def _no_session() -> Iterator[Any]:
    yield None


def _operations(rendered: Sequence[RenderedObject]) -> dict[str, int]:
    operations = {op: 0 for op in gk.OPERATIONS}
    for r in rendered:
        operations[r.operation] += 1
    return operations


def cannot_review(reason: str) -> Decision:
    """The decision for a target whose live state could not be read: nothing is evaluated, and it blocks
    (fail closed): an object reviewed as CREATE may exist there, its UPDATE and the prunes unseen."""
    return Decision(
        Outcome.CANNOT_REVIEW,
        [],
        [],
        [f"cannot review: {reason}"],
        "",
        review={"mode": "cannot_review", "reason": reason},
    )


def _apply_waivers(
    violations: list[Violation],
    rendered: Sequence[RenderedObject],
    context: TargetContext,
    waivers: Sequence[Waiver],
    now: datetime,
) -> list[Violation]:
    active = [w for w in waivers if w.active(now)]
    if not active:
        return violations
    labels_by_ref: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rendered:
        oid = object_id(r.subject, context.default_namespace)
        labels_by_ref[(oid.kind, oid.namespace, oid.name)] = labels_of(r.subject)
    out = []
    for v in violations:
        labels = labels_by_ref.get((v.object.kind, v.object.namespace, v.object.name), {}) if v.object else {}
        waiver = next((w for w in active if w.matches(v, labels, context)), None)
        out.append(v if waiver is None else replace(v, waived_by=waiver.id))
    return out


def decide(violations: Sequence[Violation], errors: Sequence[PolicyError]) -> tuple[Outcome, list[str]]:
    """The outcome of one target's findings (what blocks, what warns), with its reasons: the gate's and the
    impact preview's one rule."""
    reasons = [f"engine error: {e.policy_name or e.policy_id}: {e.message}" for e in errors]
    deny = [v for v in violations if v.waived_by is None and v.enforcement is Enforcement.DENY]
    warn = [v for v in violations if v.waived_by is None and v.enforcement is Enforcement.WARN]
    if deny:
        reasons.append(f"{len(deny)} deny violation(s)")
    if errors or deny:
        return Outcome.BLOCKED, reasons
    if warn:
        return Outcome.WARNED, [f"{len(warn)} warn violation(s)"]
    return Outcome.PASSED, []


# --------------------------------------------------------------------------------------------- authoring


def check_policy(policy: BoundPolicy, engine: RegoEngine | None = None) -> list[dict[str, Any]]:
    """Compile a policy's modules (when it is saved). Returns errors as dicts with path/line/column/message;
    an empty list means it compiles. Format problems come back as one error with line 0."""
    engine = engine or get_engine()
    try:
        policy_set = policy.policy_set()
    except (FormatError, ValueError) as exc:
        return [{"path": "", "line": 0, "column": 0, "message": str(exc), "code": "format_error"}]
    return [e.as_dict() for e in engine.check(policy_set.modules)]
