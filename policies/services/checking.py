"""Check before merge: the gate's decisions for a mapping's clusters at a branch, a commit or uploaded
manifests, without storing Evaluations (a check is audited once as ``policy.check``).

The report reads like conftest: per cluster, failures / warnings / exceptions with ``msg``, and the summary
line "N tests, N passed, N warnings, N failures, N exceptions".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusters.models import Cluster
from fleet.audit.services import record
from fleet.sources.git import GitError
from fleet.sources.models import Commit, PathMapping
from fleet.sources.render import RenderError
from fleet.sources.render.yamlsafe import load_documents
from fleet.sources.services.fetch import repository_cache
from fleet.sources.services.manifests import (
    ManifestsUnavailable,
    RenderFailed,
    ensure_commit,
    mapping_manifests,
)
from fleet.sources.services.rendering import members
from policies import gate
from policies.engine import RegoEngine
from policies.services import reviews as rv
from policies.services.evaluation import MappingEvaluation, evaluate_targets, rendered_objects, summary_line
from policies.services.reports import target_objects


class CheckInputError(ValueError):
    """The check cannot run: unknown branch/commit, malformed manifests, a render error."""

    def __init__(
        self, message: str, *, file: str = "", line: int | None = None, field: str = "non_field_errors"
    ):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field


def parse_manifests(text: str, filename: str = "manifests.yaml") -> list[gate.RenderedObject]:
    """Multi-document YAML text -> objects (empty documents skipped; List kinds flattened)."""
    try:
        docs = load_documents(text, file=filename)
    except RenderError as exc:
        raise CheckInputError(
            str(exc), file=filename, line=getattr(exc, "line", None), field="manifests"
        ) from None
    out: list[gate.RenderedObject] = []
    for doc in docs:
        data = doc.data
        if data is None:
            continue
        if isinstance(data, Mapping) and data.get("kind") == "AdmissionReview":
            out.append(_admission_review(data, filename, doc.index, doc.line))
            continue
        if not isinstance(data, Mapping) or not data.get("kind") or not data.get("apiVersion"):
            raise CheckInputError(
                f"{filename}: document {doc.index} (line {doc.line}) is not a Kubernetes object "
                "(apiVersion and kind are required)",
                file=filename,
                line=doc.line,
                field="manifests",
            )
        if str(data["kind"]).endswith("List") and isinstance(data.get("items"), list):
            out.extend(gate.RenderedObject(item, filename, doc.index) for item in data["items"])
        else:
            out.append(gate.RenderedObject(data, filename, doc.index))
    return out


def _admission_review(doc: Mapping[str, Any], filename: str, index: int, line: int) -> gate.RenderedObject:
    """An ``AdmissionReview`` document (as Gatekeeper's test suites write them): its ``request.object`` is
    reviewed with the request's ``operation`` and ``oldObject``. An UPDATE without ``oldObject`` is reviewed
    with the object as its own old object (the gate needs a live object for an UPDATE)."""
    request = doc.get("request")
    where = f"{filename}: document {index} (line {line})"
    if not isinstance(request, Mapping):
        raise CheckInputError(f"{where}: an AdmissionReview needs a request", file=filename, line=line)
    operation = str(request.get("operation") or "CREATE").upper()
    obj, old = request.get("object"), request.get("oldObject")
    if operation == "UPDATE" and old is None:
        old = obj
    try:
        return gate.RenderedObject(
            obj if operation != "DELETE" else None, filename, index, operation=operation, old_object=old
        )
    except ValueError as exc:
        raise CheckInputError(f"{where}: {exc}", file=filename, line=line, field="manifests") from None


def _render_at(mapping: PathMapping, sha: str) -> list[tuple[Cluster, list[gate.RenderedObject], str]]:
    """Objects per member cluster at ``sha``: the sources app's manifests (stored, else rendered now)."""
    try:
        manifests = mapping_manifests(mapping, members(mapping), commit=sha)
    except RenderFailed as exc:
        message = f"render failed: {exc.message}" if exc.cluster else exc.message
        raise CheckInputError(message, file=exc.file, line=exc.line) from None
    except ManifestsUnavailable as exc:
        raise CheckInputError(exc.message) from None
    return [(m.cluster, rendered_objects(m.resources), m.namespace) for m in manifests.values()]


def resolve_ref(mapping: PathMapping, *, commit: str = "", branch: str = "") -> str:
    """A full commit sha for ``commit`` (a known Commit or any sha in the cache) or the head of ``branch``
    (fetched first)."""
    repo = mapping.repository
    cache = repository_cache(repo)
    try:
        if branch:
            cache.fetch()
            return cache.head_of(branch)
        known = Commit.objects.filter(repository=repo, sha__startswith=commit.lower()).values_list(
            "sha", flat=True
        )
        if len(known) == 1:
            return known[0]
        return ensure_commit(cache, commit)
    except GitError as exc:
        raise CheckInputError(exc.message, field="branch" if branch else "commit") from None


@dataclass
class CheckReport:
    mapping: PathMapping
    ref: str
    evaluation: MappingEvaluation
    # for the report formats (policies.services.reports): the objects checked per cluster id, with their
    # document index; the commit checked; the uploaded files (name, text)
    objects: dict[int, list[tuple[gate.ObjectRef, int]]] = field(default_factory=dict)
    sha: str = ""
    files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.evaluation.blocked)

    def as_dict(self) -> dict[str, Any]:
        clusters = []
        for r in self.evaluation.results:
            clusters.append(_cluster_dict(r.cluster, r.decision, r.object_count))
        totals = {
            k: sum(c["counts"][k] for c in clusters)
            for k in ("tests", "passed", "warnings", "failures", "exceptions")
        }
        return {
            "mapping": {"id": self.mapping.pk, "name": self.mapping.name},
            "ref": self.ref,
            "blocked": self.blocked,
            "decisions": self.evaluation.counts,
            "clusters": clusters,
            "summary": (
                f"{totals['tests']} tests, {totals['passed']} passed, {totals['warnings']} warnings, "
                f"{totals['failures']} failures, {totals['exceptions']} exceptions"
            ),
            "policies": self.evaluation.policy_versions,
        }


def _finding(v: gate.Violation) -> dict[str, Any]:
    ref = v.object
    return {
        "msg": v.message,
        "policy": v.policy_name,
        "language": v.language,
        "rule": v.rule,
        "enforcement": str(v.enforcement),
        "filename": ref.source_file if ref else "",
        "object": f"{ref.kind}/{ref.namespace + '/' if ref.namespace else ''}{ref.name}" if ref else "",
        "waiver": int(v.waived_by) if v.waived_by else None,
    }


def _cluster_dict(cluster: Cluster, decision: gate.Decision, objects: int) -> dict[str, Any]:
    failures = [
        _finding(v) for v in decision.violations if v.enforcement is gate.Enforcement.DENY and not v.waived_by
    ]
    failures += [
        {
            "msg": f"engine error: {e.message}",
            "policy": e.policy_name,
            "language": e.language,
            "rule": e.kind,
            "enforcement": "deny",
            "filename": "",
            "object": "",
            "waiver": None,
        }
        for e in decision.errors
    ]
    warnings = [
        _finding(v) for v in decision.violations if v.enforcement is gate.Enforcement.WARN and not v.waived_by
    ]
    exceptions = [_finding(v) for v in decision.violations if v.waived_by]
    exceptions += [_finding(v) for v in decision.exceptions]  # conftest `exception` rules
    dryrun = [
        _finding(v)
        for v in decision.violations
        if v.enforcement is gate.Enforcement.DRYRUN and not v.waived_by
    ]
    tests = max(decision.tests or decision.evaluations, len(failures) + len(warnings) + len(exceptions))
    return {
        "cluster": cluster.name,
        "decision": str(decision.outcome),
        "reasons": decision.reasons,
        "objects": objects,
        "failures": failures,
        "warnings": warnings,
        "exceptions": exceptions,
        "dryrun": dryrun,
        "counts": {
            "tests": tests,
            "passed": max(0, tests - len(failures) - len(warnings) - len(exceptions)),
            "warnings": len(warnings),
            "failures": len(failures),
            "exceptions": len(exceptions),
        },
        "summary": summary_line(decision),
    }


def live_cluster_for(name: str, user: Any = None) -> Cluster:
    """The registered cluster ``name`` for ``--live-cluster``, among those ``user`` may see (any cluster for
    a command run without a user). The same answer for an unknown and an invisible cluster."""
    qs = Cluster.objects.restrict(user, "view") if user is not None else Cluster.objects.all()
    cluster = qs.filter(name=name).first()
    if cluster is None:
        raise CheckInputError(f"no cluster {name!r} that you may see", field="live_cluster")
    return cluster


def _live_targets(
    mapping: PathMapping,
    targets: Sequence[tuple[Cluster, Sequence[Any], str]],
    cluster: Cluster,
) -> tuple[list[tuple[Cluster, Sequence[Any], str]], dict[int, rv.TargetReview]]:
    """The target of ``cluster`` reviewed against its live state, read as a rollout's prepare reads it
    (the same connector call, with the mapping's last synced inventory for the prunes)."""
    from fleet.rollouts import ports
    from fleet.rollouts.models import SyncedState

    mine = [t for t in targets if t[0].pk == cluster.pk]
    if not mine:
        raise CheckInputError(
            f"cluster {cluster.name} is not a member of {mapping.cluster_group.name}, the group of "
            f"mapping {mapping.name}",
            field="live_cluster",
        )
    _cluster, objects, namespace = mine[0]
    inventory = (
        SyncedState.objects.filter(mapping=mapping, cluster=cluster)
        .values_list("inventory", flat=True)
        .first()
    )
    group = mapping.cluster_group
    try:
        live = ports.live_state(cluster, mapping, [_plain(o) for o in objects], inventory or [], group.prune)
    except Exception as exc:
        reason = f"the live state of {cluster.name} could not be read: {type(exc).__name__}: {exc}"[:1000]
        review = rv.TargetReview.unreadable(reason, create_only_allowed=group.create_only_review)
        return [(cluster, objects, namespace)], {cluster.pk: review}
    return [(cluster, rv.live_entries(list(objects), live), namespace)], {cluster.pk: rv.TargetReview()}


def _plain(item: Any) -> Any:
    return item.subject if isinstance(item, gate.RenderedObject) else item


def check_mapping(
    mapping: PathMapping,
    *,
    commit: str = "",
    branch: str = "",
    manifests: str | None = None,
    files: Sequence[tuple[str, str]] = (),
    engine: RegoEngine | None = None,
    operation: str = "",
    old: Sequence[tuple[str, str]] = (),
    live_cluster: Cluster | None = None,
    user: Any = None,
) -> CheckReport:
    """Evaluate the mapping's bound policies for each of its clusters; nothing is stored.

    ``operation`` reviews every object as CREATE, UPDATE (old versions from the ``old`` files, matched by
    kind/namespace/name) or DELETE. ``live_cluster`` reviews the target of that member cluster against what
    it runs now: CREATE/UPDATE by its live objects and a DELETE for each object a sync would prune. The
    reviews' userInfo is ``user`` (the caller)."""
    if operation and live_cluster is not None:
        raise CheckInputError("give an operation or a live cluster, not both", field="operation")
    if old and operation not in ("UPDATE", "DELETE"):
        raise CheckInputError("old objects are only used with the UPDATE or DELETE operation", field="old")
    uploaded = [*([("manifests.yaml", manifests)] if manifests is not None else []), *files]
    if manifests is not None or files:
        objects: list[gate.RenderedObject] = []
        if manifests is not None:
            objects.extend(parse_manifests(manifests))
        for name, text in files:
            objects.extend(parse_manifests(text, name))
        targets = [(c, objects, "") for c in members(mapping)]
        ref = "uploaded manifests"
        sha = ""
    elif commit or branch:
        sha = resolve_ref(mapping, commit=commit, branch=branch)
        targets = _render_at(mapping, sha)  # type: ignore[assignment]
        ref = f"{branch}@{sha[:10]}" if branch else sha
    else:
        raise CheckInputError("give a branch, a commit or manifests")
    reviews: dict[int, rv.TargetReview] = {}
    if live_cluster is not None:
        targets, reviews = _live_targets(mapping, targets, live_cluster)  # type: ignore[assignment]
        ref += f" against the live state of {live_cluster.name}"
    elif operation:
        old_objects = [o.subject for name, text in old for o in parse_manifests(text, name)]
        try:
            targets = [(c, rv.as_operation(objs, operation, old_objects), ns) for c, objs, ns in targets]
        except ValueError as exc:
            raise CheckInputError(str(exc), field="old" if operation == "UPDATE" else "operation") from None
        reviews = {c.pk: rv.TargetReview(rv.RENDERED, f"reviewed as {operation}") for c, _o, _n in targets}
    evaluation = evaluate_targets(
        None,
        mapping,
        targets,
        engine=engine,
        store=False,
        audit=False,
        sha=sha,
        reviews=reviews,
        user_info=rv.user_info(user),
    )
    report = CheckReport(mapping, ref, evaluation, target_objects(targets), sha, uploaded)
    record(
        "policy.check",
        mapping,
        scope=mapping.cluster_group,
        repository=mapping.repository,
        after={
            "ref": ref,
            "counts": evaluation.counts,
            "clusters": {r.cluster.name: str(r.decision.outcome) for r in evaluation.results},
        },
        message=f"check of {mapping.name} at {ref}: "
        + ", ".join(f"{v} {k}" for k, v in evaluation.counts.items()),
    )
    return report


def format_report(report: CheckReport) -> str:
    """conftest-like text: FAIL/WARN/EXCP lines per cluster, then its summary."""
    data = report.as_dict()
    lines = []
    for c in data["clusters"]:
        for label, key in (("FAIL", "failures"), ("WARN", "warnings"), ("EXCP", "exceptions")):
            for f in c[key]:
                where = f["filename"] or "-"
                obj = f" - {f['object']}" if f["object"] else ""
                waiver = f" (waiver #{f['waiver']})" if f["waiver"] else ""
                policy = f"{f['policy']} ({f['language']})" if f.get("language") else f["policy"]
                lines.append(f"{label} - {c['cluster']} - {where}{obj} - {policy} - {f['msg']}{waiver}")
        lines.append(f"{c['cluster']}: {c['decision']} - {c['summary']}")
    lines.append("")
    lines.append(data["summary"])
    return "\n".join(lines) + "\n"
