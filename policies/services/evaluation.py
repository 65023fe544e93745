"""The gate, with the database: which policies and waivers apply to a target, evaluate, store, audit.

Public entry points (what rollouts call)::

    evaluate_mapping(commit, mapping, *, engine=None) -> MappingEvaluation   # every cluster of the render
    evaluate(commit, mapping, cluster, objects, *, engine=None) -> Evaluation  # one target
    latest_evaluations(commit, mapping) -> dict[cluster_id, Evaluation]

Rules: bindings in scope are the enabled global ones plus those of the mapping's group; when a policy is bound
both globally and to the group, the group's binding wins. A binding evaluates its pinned version, else the
policy's current version. Waivers in force are those of the bound policies, global or of the mapping's
group, not yet expired. Anything that goes wrong while preparing or evaluating blocks (fail closed).
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from clusters.models import Cluster
from fleet.audit.services import record
from fleet.observability import metrics
from fleet.sources.git import redact_url
from fleet.sources.models import Commit, PathMapping, RenderedManifest
from policies import gate
from policies.choices import Enforcement
from policies.engine import RegoEngine
from policies.models import Evaluation, Policy, PolicyBinding, PolicyVersion, Violation, Waiver
from policies.services.definitions import definition_of
from policies.services.reviews import CANNOT_REVIEW, LIVE, RENDERED, LiveParams, TargetReview

_SEVERITY = {"deny": 2, "warn": 1, "dryrun": 0, "": 3}


# --------------------------------------------------------------------------------------------- setup


@dataclass
class BoundSet:
    """The policies bound to one mapping's targets, ready for the gate (built once per mapping)."""

    policies: list[gate.BoundPolicy] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    version_of: dict[str, int] = field(default_factory=dict)
    errors: list[gate.PolicyError] = field(default_factory=list)
    waivers: list[Waiver] = field(default_factory=list)


def bindings_in_scope(group_id: int | None) -> list[PolicyBinding]:
    """Enabled bindings for a target of this group: one per policy, the group's over the global one."""
    qs = (
        PolicyBinding.objects.filter(enabled=True)
        .filter(Q(cluster_group__isnull=True) | Q(cluster_group_id=group_id))
        .select_related("policy__current", "pinned_version", "cluster_group")
        .order_by("id")
    )
    return choose_bindings(qs)


def choose_bindings(bindings: Iterable[PolicyBinding]) -> list[PolicyBinding]:
    """Of the enabled bindings that apply to one group's targets (its own and the global ones, in id
    order), the one per policy that counts: the group's over the global one, else the strictest."""
    chosen: dict[int, PolicyBinding] = {}
    for b in bindings:
        prev = chosen.get(b.policy_id)
        if prev is None:
            chosen[b.policy_id] = b
            continue
        prev_specific = prev.cluster_group_id is not None
        this_specific = b.cluster_group_id is not None
        if this_specific and not prev_specific:
            chosen[b.policy_id] = b
        elif this_specific == prev_specific and _SEVERITY[b.enforcement] > _SEVERITY[prev.enforcement]:
            chosen[b.policy_id] = b
    return sorted(chosen.values(), key=lambda b: b.policy.name)


_PARSED: OrderedDict[tuple[str, int, str, str], tuple[gate.BoundPolicy, ...]] = OrderedDict()
_PARSED_SIZE = 512
_PARSED_LOCK = threading.Lock()


def _bound_policies(
    version: PolicyVersion, policy: Policy, enforcement: str | None
) -> list[gate.BoundPolicy]:
    """The gate's policies of a stored version, parsed (templates and constraints are YAML) once per stored
    content in this process: keyed by the content itself, so an edited row is parsed again, and bound
    policies are frozen, so they are shared. A content that does not parse raises each time (fail closed)."""
    key = (
        json.dumps(version.content, sort_keys=True, default=str),
        policy.pk,
        policy.name,
        enforcement or "",
    )
    with _PARSED_LOCK:
        found = _PARSED.get(key)
        if found is not None:
            _PARSED.move_to_end(key)
            return list(found)
    bound = definition_of(version).bound(policy.pk, policy.name, enforcement or None)
    with _PARSED_LOCK:
        _PARSED[key] = tuple(bound)
        while len(_PARSED) > _PARSED_SIZE:
            _PARSED.popitem(last=False)
    return bound


def build_bound_set(mapping: PathMapping, *, now: datetime | None = None) -> BoundSet:
    out = BoundSet()
    for binding in bindings_in_scope(mapping.cluster_group_id):
        policy: Policy = binding.policy
        version: PolicyVersion | None = binding.pinned_version or policy.current
        pid = str(policy.pk)
        if version is None:
            out.errors.append(gate.PolicyError(pid, policy.name, "the policy has no version", "format"))
            continue
        try:
            bound = _bound_policies(version, policy, binding.enforcement or None)
        except (ValueError, TypeError) as exc:  # stored content that no longer parses: fail closed
            out.errors.append(gate.PolicyError(pid, policy.name, str(exc), "format"))
            continue
        out.policies.extend(bound)
        out.version_of[pid] = version.number
        out.versions.append(
            {
                "policy_id": policy.pk,
                "policy": policy.name,
                "version": version.number,
                "content_hash": version.content_hash,
                "style": policy.style,
                "language": gate.language_of(policy.style),
                "enforcement": binding.enforcement or "inherit",
                "binding_id": binding.pk,
                "group": binding.cluster_group.name if binding.cluster_group is not None else None,
            }
        )
    bound_ids = [int(v["policy_id"]) for v in out.versions]
    if bound_ids:
        out.waivers = list(
            Waiver.objects.filter(policy_id__in=bound_ids, expires_at__gt=now or timezone.now()).filter(
                Q(cluster_group__isnull=True) | Q(cluster_group_id=mapping.cluster_group_id)
            )
        )
    return out


def gate_waivers(waivers: Iterable[Waiver], group_name: str) -> list[gate.Waiver]:
    return [
        gate.Waiver(
            id=str(w.pk),
            policy_id=str(w.policy_id),
            kind=w.kind or None,
            namespace=w.namespace or None,
            name=w.name_pattern or None,
            labels=dict(w.labels or {}),
            cluster=w.cluster_pattern or None,
            group=group_name if w.cluster_group_id else None,
            expires_at=w.expires_at,
            rule=w.rule or None,
        )
        for w in waivers
    ]


def target_context(
    mapping: PathMapping, cluster: Cluster, commit: Commit | None, *, sha: str = "", namespace: str = ""
) -> gate.TargetContext:
    return gate.TargetContext(
        cluster=cluster.name,
        cluster_labels=dict(cluster.labels or {}),
        group=mapping.cluster_group.name,
        repository=redact_url(mapping.repository.url),
        path=mapping.path,
        commit=commit.sha if commit is not None else sha,
        author=commit.author_email if commit is not None else "",
        default_namespace=namespace or mapping.target_namespace or "default",
    )


def rendered_objects(resources: Sequence[Mapping[str, Any]]) -> list[gate.RenderedObject]:
    """RenderedManifest.resources rows ({..., source, document, object}) as the gate's objects."""
    out = []
    for r in resources:
        obj = r.get("object") if "object" in r else r
        if not isinstance(obj, Mapping):
            raise ValueError(f"rendered resource {r.get('kind')}/{r.get('name')} has no object")
        out.append(gate.RenderedObject(obj, str(r.get("source") or ""), int(r.get("document") or 0)))
    return out


_ROW_KEYS = frozenset({"object", "source", "document"})


def as_gate_objects(
    objects: Sequence[gate.RenderedObject | Mapping[str, Any]],
) -> list[gate.RenderedObject | Mapping[str, Any]]:
    """Objects as given, except RenderedManifest.resources rows, which are unwrapped (keeping the source
    file for the Violation rows). A Kubernetes object never has ``object``, ``source`` and ``document`` keys
    at its top level."""
    out: list[gate.RenderedObject | Mapping[str, Any]] = []
    for item in objects:
        if isinstance(item, Mapping) and _ROW_KEYS <= item.keys() and isinstance(item.get("object"), Mapping):
            out.append(
                gate.RenderedObject(
                    item["object"], str(item.get("source") or ""), int(item.get("document") or 0)
                )
            )
        else:
            out.append(item)
    return out


# --------------------------------------------------------------------------------------------- run


@dataclass
class TargetResult:
    cluster: Cluster
    decision: gate.Decision
    object_count: int
    evaluation: Evaluation | None = None


@dataclass
class MappingEvaluation:
    mapping: PathMapping
    commit: Commit | None
    results: list[TargetResult]
    policy_versions: list[dict[str, Any]]

    @property
    def blocked(self) -> list[Cluster]:
        """Targets that may not sync: blocked by policy, or their live state could not be reviewed."""
        return [r.cluster for r in self.results if r.decision.outcome in BLOCKING_OUTCOMES]

    @property
    def counts(self) -> dict[str, int]:
        return _counts(Counter(str(r.decision.outcome) for r in self.results))

    def by_cluster(self) -> dict[str, TargetResult]:
        return {r.cluster.name: r for r in self.results}


BLOCKING_OUTCOMES = frozenset({gate.Outcome.BLOCKED, gate.Outcome.CANNOT_REVIEW})


def _counts(counter: Counter[str]) -> dict[str, int]:
    """passed/warned/blocked, and cannot_review when a target could not be reviewed."""
    out = {k: counter.get(k, 0) for k in ("passed", "warned", "blocked")}
    if counter.get("cannot_review"):
        out["cannot_review"] = counter["cannot_review"]
    return out


def run_target(
    objects: Sequence[gate.RenderedObject | Mapping[str, Any]],
    bound: BoundSet,
    context: gate.TargetContext,
    *,
    engine: RegoEngine | None = None,
    now: datetime | None = None,
) -> gate.Decision:
    """evaluate_target plus the set-up errors of the bound set (each blocks)."""
    decision = gate.evaluate_target(
        objects, bound.policies, context, gate_waivers(bound.waivers, context.group), engine=engine, now=now
    )
    if bound.errors:
        decision.errors.extend(bound.errors)
        decision.outcome = gate.Outcome.BLOCKED
        decision.reasons = [f"engine error: {e.policy_name}: {e.message}" for e in bound.errors] + [
            r for r in decision.reasons if "warn violation" not in r
        ]
    return decision


STORE_CHUNK = 500  # targets per DELETE and per INSERT of their evaluations


def _store_all(
    commit: Commit | None, mapping: PathMapping, results: Sequence[TargetResult], bound: BoundSet
) -> None:
    """Each target's Evaluation (replacing the one stored for the same commit, mapping and cluster) and its
    Violations, with a few statements per STORE_CHUNK targets, not per target: one DELETE of the older
    evaluations, one INSERT of the new ones, one of their violations."""
    for first in range(0, len(results), STORE_CHUNK):
        chunk = results[first : first + STORE_CHUNK]
        Evaluation.objects.filter(
            commit=commit, mapping=mapping, cluster__in=[r.cluster.pk for r in chunk]
        ).delete()
        evaluations = Evaluation.objects.bulk_create(
            [_evaluation(commit, mapping, r.cluster, r.decision, r.object_count, bound) for r in chunk]
        )
        rows: list[Violation] = []
        for r, evaluation in zip(chunk, evaluations, strict=True):
            r.evaluation = evaluation
            rows += _violations(evaluation, r.decision, bound)
        Violation.objects.bulk_create(rows, batch_size=STORE_CHUNK)


def _evaluation(
    commit: Commit | None,
    mapping: PathMapping,
    cluster: Cluster,
    decision: gate.Decision,
    object_count: int,
    bound: BoundSet,
) -> Evaluation:
    counts: Counter[str] = Counter()
    for v in decision.violations:
        counts["waived" if v.waived_by else str(v.enforcement)] += 1
    return Evaluation(
        commit=commit,
        mapping=mapping,
        cluster=cluster,
        decision=str(decision.outcome),
        reasons=list(decision.reasons),
        errors=[
            {
                "policy_id": e.policy_id,
                "policy": e.policy_name,
                "kind": e.kind,
                "message": e.message,
                "compile_errors": list(e.compile_errors),
                "language": e.language,
            }
            for e in decision.errors
        ],
        object_count=object_count,
        evaluations=decision.evaluations,
        deny_count=counts["deny"],
        warn_count=counts["warn"],
        dryrun_count=counts["dryrun"],
        waived_count=counts["waived"],
        engine=decision.engine[:16],
        duration_ms=int(decision.duration_seconds * 1000),
        policy_versions=bound.versions,
        review=_review_with_exceptions(decision),
    )


def _violations(evaluation: Evaluation, decision: gate.Decision, bound: BoundSet) -> list[Violation]:
    rows = []
    for v in decision.violations:
        ref = v.object
        rows.append(
            Violation(
                evaluation=evaluation,
                policy_id=int(v.policy_id) if v.policy_id.isdigit() else None,
                policy_name=v.policy_name[:200],
                policy_version=bound.version_of.get(v.policy_id),
                enforcement=str(v.enforcement),
                rule=v.rule[:200],
                language=v.language[:32],
                message=v.message,
                api_version=(ref.api_version if ref else "")[:200],
                kind=(ref.kind if ref else "")[:100],
                namespace=(ref.namespace if ref else "")[:63],
                name=(ref.name if ref else "")[:253],
                source_file=(ref.source_file if ref else "")[:500],
                details=dict(v.details),
                waived_by_id=int(v.waived_by) if v.waived_by else None,
            )
        )
    return rows


def _review_with_exceptions(decision: gate.Decision) -> dict[str, Any]:
    """The decision's ``review``, plus ``exceptions``: the findings conftest ``exception`` rules excused
    (policy, rule, conftest's message for it, the object), which are not Violation rows; PolicyReports
    show them as ``skip``."""
    review = dict(decision.review)
    if decision.exceptions:
        review["exceptions"] = [
            {
                "policy_id": e.policy_id,
                "policy": e.policy_name,
                "rule": e.rule,
                "message": e.message,
                "enforcement": str(e.enforcement),
                "api_version": e.object.api_version if e.object else "",
                "kind": e.object.kind if e.object else "",
                "namespace": e.object.namespace if e.object else "",
                "name": e.object.name if e.object else "",
                "source_file": e.object.source_file if e.object else "",
            }
            for e in decision.exceptions
        ]
    if decision.passes:
        review["passes"] = compact_passes(decision.passes)
    return review


def compact_passes(passes: Sequence[gate.Passed]) -> dict[str, Any]:
    """The VAP and Kyverno rules that matched objects and found nothing, for PolicyReports' ``pass``
    results, compactly: each object once (``objects``: ``[apiVersion, kind, namespace, name]``), each
    (policy, rule) with the indices of its objects::

        {"objects": [["apps/v1", "Deployment", "apps", "web"], ...],
         "results": [{"policy_id": "3", "policy": "require-team", "rule": "check-team",
                      "language": "Kyverno", "objects": [0, 1]}, ...]}
    """
    index: dict[gate.ObjectRef, int] = {}
    objects: list[list[str]] = []
    results = []
    for p in passes:
        positions = []
        for ref in p.objects:
            at = index.get(ref)
            if at is None:
                at = index[ref] = len(objects)
                objects.append([ref.api_version, ref.kind, ref.namespace, ref.name])
            positions.append(at)
        results.append(
            {
                "policy_id": p.policy_id,
                "policy": p.policy_name,
                "rule": p.rule,
                "language": p.language,
                "objects": positions,
            }
        )
    return {"objects": objects, "results": results}


def _audit(
    commit: Commit | None, mapping: PathMapping, results: Sequence[TargetResult], bound: BoundSet
) -> None:
    counts = Counter(str(r.decision.outcome) for r in results)
    per_cluster = {
        r.cluster.name: {
            "decision": str(r.decision.outcome),
            "deny": sum(
                1 for v in r.decision.violations if v.enforcement is gate.Enforcement.DENY and not v.waived_by
            ),
            "warn": sum(
                1 for v in r.decision.violations if v.enforcement is gate.Enforcement.WARN and not v.waived_by
            ),
            "waived": sum(1 for v in r.decision.violations if v.waived_by),
            "errors": len(r.decision.errors),
            "reasons": r.decision.reasons[:5],
        }
        for r in results
    }
    sha = commit.sha if commit is not None else ""
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("passed", "warned", "blocked"))
    if counts.get("cannot_review"):
        summary += f", {counts['cannot_review']} cannot review"
    record(
        "policy.decision",
        commit if commit is not None else mapping,
        scope=mapping.cluster_group,
        repository=mapping.repository,
        after={
            "mapping": mapping.name,
            "commit": sha,
            "counts": _counts(counts),
            "clusters": per_cluster,
            "policies": [
                {"policy": v["policy"], "version": v["version"], "language": v["language"]}
                for v in bound.versions
            ],
            "findings": _findings_by_language(results),
        },
        message=f"{mapping.name} at {sha[:10] or '(no commit)'}: {summary}",
    )
    used: dict[str, dict[str, Any]] = {}
    for r in results:
        for v in r.decision.violations:
            if v.waived_by:
                entry = used.setdefault(v.waived_by, {"violations": 0, "clusters": set()})
                entry["violations"] += 1
                entry["clusters"].add(r.cluster.name)
    waivers = {str(w.pk): w for w in bound.waivers}
    for wid, entry in sorted(used.items()):
        waiver = waivers.get(wid)
        if waiver is None:
            continue
        record(
            "waiver.used",
            waiver,
            scope=mapping.cluster_group,
            repository=mapping.repository,
            after={
                "commit": sha,
                "mapping": mapping.name,
                "violations": entry["violations"],
                "clusters": sorted(entry["clusters"]),
            },
            message=f"waiver #{wid} excused {entry['violations']} violation(s) of {waiver.policy.name} "
            f"in {mapping.name} at {sha[:10]}",
        )


def _findings_by_language(results: Sequence[TargetResult]) -> dict[str, dict[str, int]]:
    """{language: {deny|warn|dryrun|waived|error: count}} over the targets' findings and errors."""
    out: dict[str, Counter[str]] = {}
    for r in results:
        for v in r.decision.violations:
            out.setdefault(v.language, Counter())["waived" if v.waived_by else str(v.enforcement)] += 1
        for e in r.decision.errors:
            out.setdefault(e.language, Counter())["error"] += 1
    return {language or "unknown": dict(sorted(c.items())) for language, c in sorted(out.items())}


def evaluate_targets(
    commit: Commit | None,
    mapping: PathMapping,
    targets: Sequence[tuple[Cluster, Sequence[gate.RenderedObject | Mapping[str, Any]], str]],
    *,
    engine: RegoEngine | None = None,
    store: bool = True,
    audit: bool = True,
    sha: str = "",
    reviews: Mapping[int, TargetReview] | None = None,
    user_info: Mapping[str, Any] | None = None,
) -> MappingEvaluation:
    """Evaluate (cluster, objects, namespace) targets of one mapping with the bindings loaded once.

    ``objects``: Kubernetes object dicts, ``gate.RenderedObject`` (with source file and review operation),
    or RenderedManifest.resources rows as stored (unwrapped, source file kept). ``reviews`` ({cluster id:
    TargetReview}) says how each target's live state was read (a ``cannot_review`` target is not
    evaluated: it blocks); ``user_info`` is the userInfo of every review (default: Fleetgate)."""
    now = timezone.now()
    bound = build_bound_set(mapping, now=now)
    results: list[TargetResult] = []
    for cluster, raw_objects, namespace in targets:
        objects = as_gate_objects(raw_objects)
        review = (reviews or {}).get(cluster.pk)
        if review is not None and review.mode == CANNOT_REVIEW:
            if bound.policies or bound.errors:
                results.append(TargetResult(cluster, gate.cannot_review(review.reason), len(objects)))
                continue
            # no policy is bound to the target: there is nothing to review, so nothing to block
            review = TargetReview(RENDERED, f"{review.reason}; no policy is bound")
        ctx = target_context(mapping, cluster, commit, sha=sha, namespace=namespace)
        if user_info is not None:
            ctx = replace(ctx, user_info=dict(user_info))
        if review is not None and review.mode == LIVE:  # params the render lacks: read on the cluster
            ctx = replace(ctx, live_params=LiveParams(cluster, mapping))
        decision = run_target(objects, bound, ctx, engine=engine, now=now)
        if review is not None:
            decision.review.update(mode=review.mode, reason=review.reason)
            if review.note():
                decision.reasons.append(review.note())
        results.append(TargetResult(cluster, decision, len(objects)))
    if store or audit:
        with transaction.atomic():
            if store:
                _store_all(commit, mapping, results, bound)
            if audit:
                _audit(commit, mapping, results, bound)
        for r in results:  # gate decisions (a policy check that stores nothing is not one)
            metrics.gate_decision(str(r.decision.outcome), r.decision.engine, r.decision.duration_seconds)
        for language, effects in _findings_by_language(results).items():
            for effect, count in effects.items():
                metrics.gate_findings(language, effect, count)
    return MappingEvaluation(mapping, commit, results, bound.versions)


def evaluate_mapping(
    commit: Commit, mapping: PathMapping, *, engine: RegoEngine | None = None, store: bool = True
) -> MappingEvaluation:
    """Evaluate the objects rendered for every cluster of ``mapping`` at ``commit`` (RenderedManifest rows
    with status ok; skipped clusters are evaluated with no objects). Stores Evaluations, audits once."""
    manifests = list(
        RenderedManifest.objects.filter(commit=commit, mapping=mapping, status="ok")
        .select_related("cluster")
        .order_by("cluster__name")
    )
    targets = [(m.cluster, rendered_objects(m.resources or []), m.namespace) for m in manifests]
    return evaluate_targets(commit, mapping, targets, engine=engine, store=store)


def evaluate(
    commit: Commit | None,
    mapping: PathMapping,
    cluster: Cluster,
    objects: Sequence[gate.RenderedObject | Mapping[str, Any]],
    *,
    engine: RegoEngine | None = None,
) -> Evaluation:
    """Evaluate one target's objects, store and audit the Evaluation, and return it."""
    result = evaluate_targets(commit, mapping, [(cluster, objects, "")], engine=engine)
    evaluation = result.results[0].evaluation
    assert evaluation is not None  # noqa: S101 - store=True
    return evaluation


def latest_evaluations(commit: Commit, mapping: PathMapping) -> dict[int, Evaluation]:
    """The stored decision per cluster id for (commit, mapping)."""
    out: dict[int, Evaluation] = {}
    for ev in Evaluation.objects.filter(commit=commit, mapping=mapping).order_by("id"):
        out[ev.cluster_id] = ev
    return out


def summary_line(decision: gate.Decision) -> str:
    """conftest's summary: "N tests, N passed, N warnings, N failures, N exceptions"."""
    failures = sum(
        1 for v in decision.violations if v.enforcement is gate.Enforcement.DENY and not v.waived_by
    )
    failures += len(decision.errors)
    warnings = sum(
        1 for v in decision.violations if v.enforcement is gate.Enforcement.WARN and not v.waived_by
    )
    exceptions = sum(1 for v in decision.violations if v.waived_by) + len(decision.exceptions)
    tests = max(decision.tests or decision.evaluations, failures + warnings + exceptions)
    passed = max(0, tests - failures - warnings - exceptions)
    return (
        f"{tests} tests, {passed} passed, {warnings} warnings, {failures} failures, {exceptions} exceptions"
    )


__all__ = [
    "BoundSet",
    "Enforcement",
    "MappingEvaluation",
    "TargetResult",
    "as_gate_objects",
    "bindings_in_scope",
    "build_bound_set",
    "choose_bindings",
    "evaluate",
    "evaluate_mapping",
    "evaluate_targets",
    "latest_evaluations",
    "rendered_objects",
    "run_target",
    "summary_line",
    "target_context",
]
