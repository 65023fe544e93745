"""A check's report in the formats CI systems read: JSON, JUnit XML and SARIF 2.1.0.

``render(report, fmt)`` turns a :class:`policies.services.checking.CheckReport` into text:

* ``json``: :meth:`CheckReport.as_dict` (the API's answer);
* ``junit``: one ``<testsuite>`` per cluster, one ``<testcase>`` per (policy, object) with the policy as
  ``classname`` and the object (``Kind/namespace/name``) as ``name``: a ``<failure>`` for blocking denies,
  ``<skipped>`` for findings excused by a waiver or a conftest ``exception`` and for warn/dryrun findings
  (their messages also in ``<system-out>``), an ``<error>`` testcase per engine error. GitLab, Jenkins and
  the GitHub test reporters read this layout (attributes ``tests``, ``failures``, ``errors``, ``skipped``);
* ``sarif``: one run, tool ``fleetgate``, one rule per policy, one result per finding and cluster, level
  ``error`` (deny), ``warning`` (warn), ``note`` (dryrun), excused findings with a ``suppression``, engine
  errors as ``error`` results of their policy. Locations: the object's file in the repository and the line
  its document starts on when known (uploaded files; plain YAML files of a commit), and always the object
  as a logical location.

Pure functions of the report plus, for SARIF line numbers, the texts of the files (``line_index``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from fleet.sources.render import RenderError
from fleet.sources.render.yamlsafe import load_documents
from policies import gate
from policies.formats.kube import object_id

if TYPE_CHECKING:
    from policies.services.checking import CheckReport

FORMATS = ("text", "json", "junit", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL = "fleetgate"

Lines = Mapping[tuple[str, int], int]  # (file, document index) -> 1-based line of the document


@dataclass(frozen=True)
class MappingError:
    """A mapping the check API could not check (repository mode): reported, and it counts as blocked."""

    mapping: str
    error: str


def object_label(ref: gate.ObjectRef | None) -> str:
    if ref is None:
        return "(combined input)"
    return f"{ref.kind}/{ref.namespace + '/' if ref.namespace else ''}{ref.name}"


def line_index(files: Iterable[tuple[str, str]]) -> dict[tuple[str, int], int]:
    """Where each document of each YAML file starts: {(file, document index): line}. Files that do not parse
    are left out (their objects get no line)."""
    out: dict[tuple[str, int], int] = {}
    for name, text in files:
        try:
            docs = load_documents(text, file=name)
        except RenderError:
            continue
        for doc in docs:
            out[(name, doc.index)] = doc.line
    return out


def report_lines(report: CheckReport) -> dict[tuple[str, int], int]:
    """Document lines for the report's objects: from the uploaded files, or from the YAML files of the
    checked commit (read from the repository cache; rendered Helm/Kustomize output has no file lines)."""
    if report.files:
        return line_index(report.files)
    if not report.sha:
        return {}
    paths = sorted(
        {
            ref.source_file
            for refs in report.objects.values()
            for ref, _doc in refs
            if ref.source_file.endswith((".yaml", ".yml"))
        }
    )
    if not paths:
        return {}
    from fleet.sources.git import GitError
    from fleet.sources.services.fetch import repository_cache

    try:
        with repository_cache(report.mapping.repository).export(report.sha, paths=paths) as root:
            texts = []
            for path in paths:
                file = root / path
                if file.is_file() and not file.is_symlink():
                    texts.append((path, file.read_text(encoding="utf-8", errors="replace")))
    except (GitError, OSError):
        return {}  # a file that is not in the tree as such (rendered by a tool): no lines
    return line_index(texts)


def _policies(report: CheckReport) -> list[tuple[str, str]]:
    """(policy id, policy name) of every policy evaluated, in the report's order, plus any that only appear
    in findings or errors."""
    seen: dict[str, str] = {}
    for entry in report.evaluation.policy_versions:
        seen.setdefault(str(entry.get("policy_id")), str(entry.get("policy")))
    for r in report.evaluation.results:
        for v in [*r.decision.violations, *r.decision.exceptions]:
            seen.setdefault(v.policy_id, v.policy_name.split("/", 1)[0])
        for e in r.decision.errors:
            seen.setdefault(e.policy_id, e.policy_name.split("/", 1)[0])
    return list(seen.items())


def target_objects(
    targets: Iterable[tuple[Any, Iterable[gate.RenderedObject | Mapping[str, Any]], str]],
) -> dict[int, list[tuple[gate.ObjectRef, int]]]:
    """{cluster pk: [(object ref as findings name it, document index)]} for the targets of a check."""
    out: dict[int, list[tuple[gate.ObjectRef, int]]] = {}
    for cluster, objects, namespace in targets:
        refs = out.setdefault(cluster.pk, [])
        for item in objects:
            subject: Mapping[str, Any]
            if isinstance(item, gate.RenderedObject):
                subject = getattr(item, "subject", None) or item.obj or {}
                source, document = item.source_file, item.document_index
            else:
                subject, source, document = item, "", 0
            oid = object_id(subject, namespace or "default")
            refs.append(
                (gate.ObjectRef(oid.api_version, oid.kind, oid.namespace, oid.name, source), document)
            )
    return out


def _objects(report: CheckReport, cluster_pk: int) -> list[tuple[gate.ObjectRef, int]]:
    objects = getattr(report, "objects", None) or {}
    return list(objects.get(cluster_pk, []))


# --------------------------------------------------------------------------------------------- JUnit


def _text(findings: list[gate.Violation], label: str) -> str:
    lines = []
    for v in findings:
        rule = f" [{v.rule}]" if v.rule else ""
        via = f" (waiver #{v.waived_by})" if v.waived_by else ""
        language = f" ({v.language})" if v.language else ""
        lines.append(f"{label} {v.policy_name}{language}{rule}: {v.message}{via}")
    return "\n".join(lines)


def _junit_suites(root: ET.Element, report: CheckReport, prefix: str, totals: dict[str, int]) -> None:
    policies = _policies(report)
    for result in report.evaluation.results:
        decision = result.decision
        suite = ET.SubElement(root, "testsuite", name=prefix + result.cluster.name)
        props = ET.SubElement(suite, "properties")
        for prop, text in (
            ("mapping", report.mapping.name),
            ("ref", report.ref),
            ("decision", str(decision.outcome)),
            ("engine", decision.engine),
        ):
            ET.SubElement(props, "property", name=prop, value=text)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        by_case: dict[tuple[str, gate.ObjectRef | None], list[gate.Violation]] = {}
        for v in [*decision.violations, *decision.exceptions]:
            by_case.setdefault((v.policy_id, v.object), []).append(v)
        excepted = {id(v) for v in decision.exceptions}
        errored: dict[str, Any] = {e.policy_id: e.message for e in decision.errors}
        unreviewed = decision.outcome is gate.Outcome.CANNOT_REVIEW
        if unreviewed:  # nothing was evaluated on this cluster: one error, and no verdicts
            reason = "; ".join(decision.reasons) or "cannot review"
            errored = {pid: reason for pid, _name in policies}
            case = ET.SubElement(suite, "testcase", classname="fleetgate", name="review")
            ET.SubElement(case, "error", type="cannot_review", message=reason).text = reason
            counts["tests"] += 1
            counts["errors"] += 1
        refs: list[gate.ObjectRef | None] = [ref for ref, _doc in _objects(report, result.cluster.pk)]
        for _pid, ref in by_case:
            if ref not in refs:
                refs.append(ref)
        for pid, name in policies:
            for ref in refs:
                found = by_case.get((pid, ref), [])
                if ref is None and not found:
                    continue
                case = ET.SubElement(suite, "testcase", classname=name, name=object_label(ref))
                if ref is not None and ref.source_file:
                    case.set("file", ref.source_file)
                counts["tests"] += 1
                failing = [
                    v
                    for v in found
                    if v.enforcement is gate.Enforcement.DENY and not v.waived_by and id(v) not in excepted
                ]
                excused = [v for v in found if v.waived_by or id(v) in excepted]
                advisory = [
                    v for v in found if v not in failing and v not in excused
                ]  # warn and dryrun findings
                if pid in errored and not found:  # the policy did not run: no verdict, never a pass
                    counts["skipped"] += 1
                    ET.SubElement(
                        case,
                        "skipped",
                        message=f"not evaluated: {'' if unreviewed else 'engine error: '}{errored[pid]}",
                    )
                elif failing:
                    counts["failures"] += 1
                    failure = ET.SubElement(case, "failure", type="deny", message=failing[0].message)
                    failure.text = _text(failing, "FAIL")
                elif excused or advisory:
                    counts["skipped"] += 1
                    first = (advisory or excused)[0]
                    kind = "waived" if first.waived_by else ("exception" if id(first) in excepted else "")
                    ET.SubElement(
                        case, "skipped", message=f"{kind or str(first.enforcement)}: {first.message}"
                    )
                if advisory or excused:
                    out = ET.SubElement(case, "system-out")
                    out.text = "\n".join(
                        t
                        for t in (
                            _text([v for v in advisory if v.enforcement is gate.Enforcement.WARN], "WARN"),
                            _text(
                                [v for v in advisory if v.enforcement is gate.Enforcement.DRYRUN], "DRYRUN"
                            ),
                            _text([v for v in excused if id(v) not in excepted], "WAIVED"),
                            _text([v for v in excused if id(v) in excepted], "EXCP"),
                        )
                        if t
                    )
        for e in decision.errors:
            case = ET.SubElement(
                suite, "testcase", classname=e.policy_name.split("/", 1)[0] or "fleetgate", name="engine"
            )
            counts["tests"] += 1
            counts["errors"] += 1
            error = ET.SubElement(case, "error", type=e.kind, message=e.message)
            error.text = f"{e.policy_name}: {e.message}"
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value


def junit(report: CheckReport) -> str:
    """One report: a testsuite per cluster, named after it."""
    return junit_many([report], title=f"fleetgate policy check: {report.mapping.name} at {report.ref}")


def junit_many(items: Sequence[CheckReport | MappingError], *, title: str = "fleetgate policy check") -> str:
    """Several mappings' reports (the check API): testsuites named ``mapping/cluster``; a mapping that could
    not be checked is a testsuite with one errored testcase. One report alone keeps plain cluster names."""
    root = ET.Element("testsuites", name=title)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    prefixed = len(items) > 1 or title == "fleetgate policy check"
    for item in items:
        if isinstance(item, MappingError):
            suite = ET.SubElement(root, "testsuite", name=item.mapping, tests="1", failures="0", errors="1")
            suite.set("skipped", "0")
            case = ET.SubElement(suite, "testcase", classname=item.mapping, name="check")
            ET.SubElement(case, "error", type="check", message=item.error).text = item.error
            totals["tests"] += 1
            totals["errors"] += 1
            continue
        _junit_suites(root, item, f"{item.mapping.name}/" if prefixed else "", totals)
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------------------------- SARIF

_LEVEL = {gate.Enforcement.DENY: "error", gate.Enforcement.WARN: "warning", gate.Enforcement.DRYRUN: "note"}


def _location(ref: gate.ObjectRef | None, document: int | None, lines: Lines, cluster: str) -> dict[str, Any]:
    logical = {
        "name": ref.name if ref else "combined input",
        "fullyQualifiedName": f"{cluster}/{object_label(ref)}",
        "kind": "resource",
    }
    location: dict[str, Any] = {"logicalLocations": [logical]}
    if ref is not None and ref.source_file:
        physical: dict[str, Any] = {"artifactLocation": {"uri": ref.source_file}}
        line = lines.get((ref.source_file, document or 0)) if document is not None else None
        if line is None:
            line = _line_of(ref, lines)
        if line:
            physical["region"] = {"startLine": line}
        location["physicalLocation"] = physical
    return location


def _line_of(ref: gate.ObjectRef, lines: Lines) -> int | None:
    """The line of the object's document when its file has one document (or the object was found once)."""
    starts = [line for (name, _i), line in lines.items() if name == ref.source_file]
    return starts[0] if len(starts) == 1 else None


def sarif(report: CheckReport, lines: Lines | None = None) -> dict[str, Any]:
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [sarif_run(report, lines)]}


def sarif_many(
    items: Sequence[CheckReport | MappingError], lines: Sequence[Lines | None] = ()
) -> dict[str, Any]:
    """One run per mapping; a mapping that could not be checked is a run with one error result."""
    runs = []
    for i, item in enumerate(items):
        if isinstance(item, MappingError):
            runs.append(
                {
                    "tool": {"driver": {"name": TOOL, "rules": []}},
                    "automationDetails": {"id": f"fleetgate/{item.mapping}/"},
                    "results": [{"level": "error", "kind": "fail", "message": {"text": item.error}}],
                    "properties": {"mapping": item.mapping, "blocked": True},
                }
            )
        else:
            runs.append(sarif_run(item, lines[i] if i < len(lines) else None))
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}


def sarif_run(report: CheckReport, lines: Lines | None = None) -> dict[str, Any]:
    lines = lines or {}
    policies = _policies(report)
    versions = {str(v.get("policy_id")): v for v in report.evaluation.policy_versions}
    rule_index = {pid: i for i, (pid, _name) in enumerate(policies)}
    rules = []
    for pid, name in policies:
        meta = versions.get(pid, {})
        rule: dict[str, Any] = {
            "id": name,
            "name": name,
            "shortDescription": {"text": f"Fleetgate policy {name}"},
            "properties": {
                "policyId": pid,
                "version": meta.get("version"),
                "enforcement": meta.get("enforcement") or "inherit",
                "language": meta.get("language") or "",
            },
        }
        rules.append(rule)
    results: list[dict[str, Any]] = []
    for r in report.evaluation.results:
        cluster = r.cluster.name
        excepted = {id(v) for v in r.decision.exceptions}
        documents = dict(_objects(report, r.cluster.pk))
        for v in [*r.decision.violations, *r.decision.exceptions]:
            document = documents.get(v.object) if v.object is not None else None
            result: dict[str, Any] = {
                "ruleId": policies[rule_index[v.policy_id]][1],
                "ruleIndex": rule_index[v.policy_id],
                "level": _LEVEL[v.enforcement],
                "message": {"text": v.message},
                "locations": [_location(v.object, document, lines, cluster)],
                "properties": {
                    "cluster": cluster,
                    "policy": v.policy_name,
                    "language": v.language,
                    "rule": v.rule,
                    "enforcement": str(v.enforcement),
                    "object": object_label(v.object),
                },
            }
            if v.details:
                result["properties"]["details"] = json.loads(json.dumps(v.details, default=str))
            if v.waived_by:
                result["suppressions"] = [
                    {"kind": "external", "status": "accepted", "justification": f"waiver #{v.waived_by}"}
                ]
            elif id(v) in excepted:
                result["suppressions"] = [
                    {"kind": "inSource", "status": "accepted", "justification": f"conftest {v.message}"}
                ]
            results.append(result)
        if r.decision.outcome is gate.Outcome.CANNOT_REVIEW:
            reason = "; ".join(r.decision.reasons) or "cannot review"
            results.append(
                {
                    "level": "error",
                    "kind": "fail",
                    "message": {"text": reason},
                    "properties": {"cluster": cluster, "errorKind": "cannot_review"},
                }
            )
        for e in r.decision.errors:
            entry: dict[str, Any] = {
                "level": "error",
                "kind": "fail",
                "message": {"text": f"engine error ({e.kind}): {e.message}"},
                "properties": {
                    "cluster": cluster,
                    "policy": e.policy_name,
                    "language": e.language,
                    "errorKind": e.kind,
                },
            }
            if e.policy_id in rule_index:
                entry["ruleId"] = policies[rule_index[e.policy_id]][1]
                entry["ruleIndex"] = rule_index[e.policy_id]
            results.append(entry)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": TOOL, "rules": rules}},
        "automationDetails": {"id": f"fleetgate/{report.mapping.name}/"},
        "results": results,
        "properties": {
            "mapping": report.mapping.name,
            "ref": report.ref,
            "blocked": report.blocked,
            "decisions": {r.cluster.name: str(r.decision.outcome) for r in report.evaluation.results},
        },
    }
    return run


def render(report: CheckReport, fmt: str, *, lines: Lines | None = None) -> str:
    """The report as text in ``fmt`` (one of :data:`FORMATS`)."""
    from policies.services.checking import format_report

    if fmt == "text":
        return format_report(report)
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2) + "\n"
    if fmt == "junit":
        return junit(report)
    if fmt == "sarif":
        return json.dumps(sarif(report, lines), indent=2) + "\n"
    raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")
