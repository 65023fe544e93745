"""PolicyReport objects for one cluster, built from its latest Evaluations, so dashboards and tools that read
the Kubernetes policy-report formats show Fleetgate's results.

Two flavours of the same content:

* ``wgpolicyk8s``: ``wgpolicyk8s.io/v1alpha2`` ``PolicyReport`` (one per namespace) and
  ``ClusterPolicyReport`` (cluster-scoped objects, findings without an object, engine errors);
* ``openreports``: ``openreports.io/v1alpha1`` ``Report`` and ``ClusterReport``, the same split, with the
  report-level ``source``.

The answer is a Kubernetes ``List`` (``kubectl apply -f`` takes it). Per mapping that targets the cluster,
the latest stored Evaluation (the decision for the last commit evaluated) contributes:

* one result per finding (``Violation`` row): ``fail`` for a blocking deny, ``warn`` for warn and dryrun
  findings, ``skip`` for a finding a waiver excused;
* one ``skip`` result per finding a conftest ``exception`` rule excused (stored in ``Evaluation.review``
  under ``exceptions``), with the rule and conftest's message for the exception;
* one ``error`` result per engine error of the evaluation;
* one ``pass`` result per (policy, object) without a finding: every rendered object for a conftest policy, the
  objects a Constraint matches for a Gatekeeper policy (its ``spec.match``, as the gate decides it); per
  (policy, rule, object) for VAP and Kyverno policies: each rule (a Kyverno rule, a VAP validation) that
  matched the object in the gate and found nothing (the gate records these with the Evaluation, in
  ``review["passes"]``, see ``policies.services.evaluation.compact_passes``);

with ``policy`` = the Fleetgate policy, ``rule`` = the rule (``deny_latest``), the Constraint, the Kyverno
rule or the VAP validation (``validations[0]``), ``source`` by language ("fleetgate" for Rego, "kyverno" for
Kyverno, "ValidatingAdmissionPolicy" for a VAP, as Kyverno's reports name them), ``severity`` from the
finding's ``severity`` detail when it is one of the CRD's values, else by
enforcement (deny: high, warn: medium, dryrun: low), ``resources`` = the object, ``timestamp`` = when it was
evaluated, and ``properties`` = cluster, mapping, commit, evaluation id, enforcement, waiver, language.
``summary`` counts the results.

Only what the user may see: the caller passes a cluster the user may view and the Evaluations are narrowed by
``evaluation.view``. Nothing secret is in a report (no credentials; the objects are referred to, not copied).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max, Prefetch

from clusters.models import Cluster
from fleet.access.restrict import restrict
from fleet.sources.models import RenderedManifest
from policies.formats.kube import ObjectId, labels_of, object_id
from policies.models import Evaluation, PolicyVersion, Violation
from policies.services.definitions import definition_of

FLAVOURS = ("wgpolicyk8s", "openreports")
SOURCE = "fleetgate"
API = {"wgpolicyk8s": "wgpolicyk8s.io/v1alpha2", "openreports": "openreports.io/v1alpha1"}
KINDS = {
    "wgpolicyk8s": ("PolicyReport", "ClusterPolicyReport"),
    "openreports": ("Report", "ClusterReport"),
}
SEVERITIES = ("critical", "high", "medium", "low", "info")
_BY_ENFORCEMENT = {"deny": "high", "warn": "medium", "dryrun": "low"}
STATUSES = ("pass", "fail", "warn", "error", "skip")


@dataclass
class _Report:
    namespace: str  # "" = the cluster-scoped report
    results: list[dict[str, Any]] = field(default_factory=list)


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-") or "x"


def _timestamp(evaluation: Evaluation) -> dict[str, int]:
    created = evaluation.created
    return {"seconds": int(created.timestamp()), "nanos": created.microsecond * 1000}


def _resource(api_version: str, kind: str, namespace: str, name: str) -> dict[str, str]:
    out = {"apiVersion": api_version, "kind": kind, "name": name}
    if namespace:
        out["namespace"] = namespace
    return out


def _properties(evaluation: Evaluation, **extra: Any) -> dict[str, str]:
    props = {
        "cluster": evaluation.cluster.name,
        "mapping": evaluation.mapping.name,
        "commit": evaluation.commit.sha if evaluation.commit else "",
        "evaluation": str(evaluation.pk),
        "decision": evaluation.decision,
    }
    props.update({k: str(v) for k, v in extra.items() if v not in (None, "")})
    return props


#: the ``source`` of a result by the policy's language (Rego results keep Fleetgate's own)
SOURCES = {"VAP (CEL)": "ValidatingAdmissionPolicy", "Kyverno": "kyverno"}


def _source(language: str) -> str:
    return SOURCES.get(language, SOURCE)


def _severity(violation: Violation) -> str:
    declared = (violation.details or {}).get("severity") if isinstance(violation.details, Mapping) else None
    if isinstance(declared, str) and declared.lower() in SEVERITIES:
        return declared.lower()
    return _BY_ENFORCEMENT.get(violation.enforcement, "medium")


def _finding(evaluation: Evaluation, v: Violation) -> tuple[str, dict[str, Any]]:
    if v.waived_by_id:
        status = "skip"
    elif v.enforcement == "deny":
        status = "fail"
    else:
        status = "warn"
    policy, _, constraint = v.policy_name.partition("/")
    if v.language in SOURCES:  # VAP and Kyverno policy names are whole (no Constraint after a slash)
        policy, constraint = v.policy_name, ""
    result: dict[str, Any] = {
        "source": _source(v.language),
        "policy": policy,
        "rule": constraint or v.rule or "violation",
        "result": status,
        "message": v.message,
        "severity": _severity(v),
        "scored": True,
        "timestamp": _timestamp(evaluation),
        "properties": _properties(
            evaluation,
            enforcement=v.enforcement,
            waiver=v.waived_by_id,
            policyVersion=v.policy_version,
            sourceFile=v.source_file,
            language=v.language or None,
        ),
    }
    if v.kind and v.name:
        result["resources"] = [_resource(v.api_version, v.kind, v.namespace, v.name)]
    return (v.namespace if v.kind and v.name else ""), result


def _excused(evaluation: Evaluation, e: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A finding a conftest ``exception`` rule excused: ``skip``, with the exception as the reason."""
    result: dict[str, Any] = {
        "source": SOURCE,
        "policy": str(e.get("policy") or ""),
        "rule": str(e.get("rule") or "exception"),
        "result": "skip",
        "message": f"excused by the policy's exception rule: {e.get('message', '')}"[:4000],
        "severity": _BY_ENFORCEMENT.get(str(e.get("enforcement") or ""), "medium"),
        "scored": True,
        "timestamp": _timestamp(evaluation),
        "properties": _properties(
            evaluation, enforcement=e.get("enforcement"), exception=str(e.get("message", ""))
        ),
    }
    kind, name, namespace = str(e.get("kind") or ""), str(e.get("name") or ""), str(e.get("namespace") or "")
    if kind and name:
        result["resources"] = [_resource(str(e.get("api_version") or ""), kind, namespace, name)]
    return (namespace if kind and name else ""), result


def _error(evaluation: Evaluation, error: Mapping[str, Any]) -> dict[str, Any]:
    policy, _, constraint = str(error.get("policy") or "").partition("/")
    language = str(error.get("language") or "")
    if language in SOURCES:
        policy, constraint = str(error.get("policy") or ""), ""
    prefix = "" if error.get("kind") == "cannot_review" else "engine error: "
    return {
        "source": _source(language),
        "policy": policy or "fleetgate",
        "rule": constraint or str(error.get("kind") or "engine"),
        "result": "error",
        "message": (prefix + str(error.get("message", "")))[:4000],
        "severity": "high",
        "scored": True,
        "timestamp": _timestamp(evaluation),
        "properties": _properties(evaluation, errorKind=error.get("kind"), language=language or None),
    }


def _manifests(evaluations: Sequence[Evaluation]) -> dict[tuple[int, int, int], RenderedManifest]:
    """The rendered manifest behind each evaluation, keyed (commit, mapping, cluster), in one query."""
    if not evaluations:
        return {}
    rows = RenderedManifest.objects.filter(
        cluster_id__in={ev.cluster_id for ev in evaluations},
        commit_id__in={ev.commit_id for ev in evaluations},
        mapping_id__in={ev.mapping_id for ev in evaluations},
        status="ok",
    ).order_by("id")
    return {(m.commit_id, m.mapping_id, m.cluster_id): m for m in rows}


def _rendered(manifest: RenderedManifest | None) -> tuple[list[tuple[Mapping[str, Any], ObjectId]], str]:
    if manifest is None:
        return [], ""
    namespace = manifest.namespace or "default"
    out = []
    for row in manifest.resources or []:
        obj = row.get("object") if isinstance(row, Mapping) and "object" in row else row
        if isinstance(obj, Mapping) and obj.get("kind"):
            out.append((obj, object_id(obj, namespace)))
    return out, namespace


def _passes(
    evaluation: Evaluation,
    manifest: RenderedManifest | None,
    versions: Mapping[tuple[int, int], PolicyVersion],
    findings: set[tuple[str, str, str, str]],
) -> Iterable[tuple[str, dict[str, Any]]]:
    objects, _namespace = _rendered(manifest)
    ns_labels = {
        oid.name: labels_of(obj) for obj, oid in objects if oid.kind == "Namespace" and oid.group == ""
    }
    errored = {str(e.get("policy_id")) for e in evaluation.errors or [] if isinstance(e, Mapping)}
    stored, admission = _admission_passes(evaluation)
    for entry in evaluation.policy_versions or []:
        try:
            version = versions[(int(entry["policy_id"]), int(entry["version"]))]
            definition = definition_of(version)
        except (KeyError, TypeError, ValueError):
            continue
        policy = str(entry.get("policy") or version.policy_id)
        if definition.admission:
            # VAP and Kyverno: the rules the gate found matching and passing (their own match and rules);
            # their errors are per object, and a policy that failed as a whole recorded no passes
            for rule, language, positions in admission.get(str(entry.get("policy_id")), ()):
                for at in positions:
                    if isinstance(at, int) and 0 <= at < len(stored):
                        api_version, kind, namespace, name = stored[at]
                        group, _, v = api_version.rpartition("/")
                        oid = ObjectId(api_version, group, v, kind, namespace, name)
                        yield namespace, _pass(evaluation, policy, rule, oid, entry, language)
            continue
        if str(entry.get("policy_id")) in errored:
            continue  # the policy did not run here: its error is the result, never a pass
        if definition.style == "gatekeeper":
            try:
                template = definition.parsed_template()
                rules: list[tuple[str, Any]] = [
                    (c.name, c.match) for c in definition.parsed_constraints(template)
                ]
            except ValueError:  # a stored version that no longer parses: its error is already a result
                continue
        else:
            rules = [("", None)]
            if definition.combine:
                if not any(f[0] == policy for f in findings):
                    yield "", _pass(evaluation, policy, "combine", None, entry)
                continue
        for rule, match in rules:
            for obj, oid in objects:
                if match is not None and not match.matches(obj, oid, ns_labels):
                    continue
                if (policy, oid.kind, oid.namespace, oid.name) in findings:
                    continue
                yield oid.namespace, _pass(evaluation, policy, rule, oid, entry)


def _admission_passes(
    evaluation: Evaluation,
) -> tuple[list[tuple[str, str, str, str]], dict[str, list[tuple[str, str, list[Any]]]]]:
    """``review["passes"]`` of the evaluation (see ``compact_passes``): its objects, and per policy id the
    (rule, language, object positions) of its passing VAP/Kyverno rules; empty for older evaluations."""
    review = evaluation.review if isinstance(evaluation.review, Mapping) else {}
    raw = review.get("passes")
    if not isinstance(raw, Mapping):
        return [], {}
    objects = [
        (str(o[0]), str(o[1]), str(o[2]), str(o[3]))
        for o in raw.get("objects") or []
        if isinstance(o, list) and len(o) == 4
    ]
    by_policy: dict[str, list[tuple[str, str, list[Any]]]] = {}
    for r in raw.get("results") or []:
        if isinstance(r, Mapping) and isinstance(r.get("objects"), list):
            by_policy.setdefault(str(r.get("policy_id")), []).append(
                (str(r.get("rule") or ""), str(r.get("language") or ""), r["objects"])
            )
    return objects, by_policy


def _pass(
    evaluation: Evaluation,
    policy: str,
    rule: str,
    oid: ObjectId | None,
    entry: Mapping[str, Any],
    language: str = "",
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "source": _source(language),
        "policy": policy,
        "result": "pass",
        "scored": True,
        "timestamp": _timestamp(evaluation),
        "properties": _properties(evaluation, policyVersion=entry.get("version"), language=language or None),
    }
    if rule:
        result["rule"] = rule
    if oid is not None:
        result["resources"] = [_resource(oid.api_version, oid.kind, oid.namespace, oid.name)]
    return result


def latest_evaluations(cluster: Cluster, user: Any) -> list[Evaluation]:
    """Per mapping, the latest stored Evaluation of ``cluster`` that ``user`` may see."""
    visible = restrict(Evaluation.objects.filter(cluster=cluster, commit__isnull=False), user, "view")
    last_ids = visible.values("mapping").annotate(last=Max("id")).values_list("last", flat=True)
    return list(
        Evaluation.objects.filter(pk__in=list(last_ids))
        .select_related("mapping", "cluster", "commit")
        .prefetch_related(Prefetch("violations", queryset=Violation.objects.order_by("id")))
        .order_by("mapping__name", "id")
    )


def build_reports(cluster: Cluster, evaluations: Sequence[Evaluation], flavour: str) -> dict[str, Any]:
    """The reports of ``cluster`` in ``flavour`` (one of :data:`FLAVOURS`) as a Kubernetes List."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown report format {flavour!r} (one of {', '.join(FLAVOURS)})")
    keys = {
        (int(e["policy_id"]), int(e["version"]))
        for ev in evaluations
        for e in ev.policy_versions or []
        if str(e.get("policy_id", "")).isdigit() and str(e.get("version", "")).isdigit()
    }
    versions: dict[tuple[int, int], PolicyVersion] = {}
    if keys:
        policy_ids = {k[0] for k in keys}
        for pv in PolicyVersion.objects.filter(policy_id__in=policy_ids).select_related("policy"):
            if (pv.policy_id, pv.number) in keys:
                versions[(pv.policy_id, pv.number)] = pv
    manifests = _manifests(evaluations)
    reports: dict[str, _Report] = {}
    for ev in evaluations:
        findings: set[tuple[str, str, str, str]] = set()
        for v in ev.violations.all():
            namespace, result = _finding(ev, v)
            reports.setdefault(namespace, _Report(namespace)).results.append(result)
            findings.add((v.policy_name.partition("/")[0], v.kind, v.namespace, v.name))
        excused = (ev.review or {}).get("exceptions") if isinstance(ev.review, Mapping) else None
        for e in excused or []:
            if isinstance(e, Mapping):
                namespace, result = _excused(ev, e)
                reports.setdefault(namespace, _Report(namespace)).results.append(result)
                findings.add(
                    (
                        str(e.get("policy") or ""),
                        str(e.get("kind") or ""),
                        str(e.get("namespace") or ""),
                        str(e.get("name") or ""),
                    )
                )
        for error in ev.errors or []:
            if isinstance(error, Mapping):
                reports.setdefault("", _Report("")).results.append(_error(ev, error))
        if ev.decision == "cannot_review":  # nothing was evaluated: one error, and no pass results
            reason = "; ".join(str(r) for r in ev.reasons or []) or "cannot review"
            error = {"policy": "fleetgate", "kind": "cannot_review", "message": reason}
            reports.setdefault("", _Report("")).results.append(_error(ev, error))
            continue
        manifest = manifests.get((ev.commit_id or 0, ev.mapping_id, ev.cluster_id))
        for namespace, result in _passes(ev, manifest, versions, findings):
            reports.setdefault(namespace, _Report(namespace)).results.append(result)
    namespaced, cluster_kind = KINDS[flavour]
    items = []
    for namespace in sorted(reports):
        report = reports[namespace]
        summary = {s: sum(1 for r in report.results if r["result"] == s) for s in STATUSES}
        name = f"fleetgate-{_dns_label(cluster.name)}"
        metadata: dict[str, Any] = {
            "name": name if not namespace else f"{name}-{_dns_label(namespace)}"[:253],
            "labels": {
                "app.kubernetes.io/managed-by": SOURCE,
                "fleetgate.io/cluster": _dns_label(cluster.name),
            },
        }
        if namespace:
            metadata["namespace"] = namespace
        item: dict[str, Any] = {
            "apiVersion": API[flavour],
            "kind": namespaced if namespace else cluster_kind,
            "metadata": metadata,
        }
        if flavour == "openreports":
            item["source"] = SOURCE
        item["summary"] = summary
        item["results"] = report.results
        items.append(item)
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}


def cluster_reports(cluster: Cluster, user: Any, flavour: str = "wgpolicyk8s") -> dict[str, Any]:
    return build_reports(cluster, latest_evaluations(cluster, user), flavour)
