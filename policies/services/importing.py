"""Importing policies as they are: Gatekeeper ConstraintTemplates and Constraints, conftest directories.

``import_files(files, ...)`` takes ``{relative path: text}`` (an uploaded directory, a directory on disk, a
Git policy path at a commit) and:

* every YAML document of kind ``ConstraintTemplate`` becomes (or updates) a Gatekeeper policy named after
  the template's ``metadata.name``; every document whose kind is a template kind (from this import or an
  existing Gatekeeper policy) is a Constraint of that policy (a Constraint already stored under the same name
  is replaced; the others are kept);
* every ``.rego`` file is a module of ONE conftest policy (named ``name``); ``*_test.rego`` files are its
  unit tests; ``.json`` files and YAML files under a ``data/`` directory are its data (merged); the
  namespaces are the packages that declare ``deny``/``warn``/``violation`` rules;
* ValidatingAdmissionPolicies with their bindings, Kyverno ClusterPolicies/Policies and PolicyExceptions:
  see ``policies.services.admission_import`` (one VAP policy per binding; exceptions become waivers);
* with ``group``/``enforcement``, each imported policy without a binding there gets one.

Each policy is validated (compiled, tested) before anything is stored; one refusal stores nothing.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction
from django.utils import timezone

from clusters.models import ClusterGroup
from fleet.access.writes import save_in_scope
from policies.choices import PolicyStyle
from policies.engine import RegoEngine
from policies.engine.source import package_of, rule_heads
from policies.formats import conftest as conftest_fmt
from policies.formats import gatekeeper as gk
from policies.models import Policy, PolicyBinding, Waiver
from policies.services import admission_import as admission
from policies.services.definitions import (
    PolicyDefinition,
    PolicyInvalid,
    SaveResult,
    save_policy,
    validate_definition,
)
from policies.services.waivers import expire_waiver

MAX_FILES = 2000
MAX_FILE_BYTES = 1024 * 1024


class ImportError_(ValueError):
    """The files cannot be imported (nothing was stored)."""


@dataclass
class ImportResult:
    saved: list[SaveResult] = field(default_factory=list)
    bindings: list[PolicyBinding] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    waivers: list[Waiver] = field(default_factory=list)
    #: what the gate does not apply (Kyverno mutate/generate rules by name, VAPs without a binding)
    reported: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policies": [
                {
                    "id": r.policy.pk,
                    "name": r.policy.name,
                    "style": r.policy.style,
                    "kind": r.policy.kind,
                    "version": r.version.number,
                    "created": r.created,
                    "new_version": r.new_version,
                    "tests": r.tests,
                }
                for r in self.saved
            ],
            "bindings": [
                {
                    "id": b.pk,
                    "policy": b.policy.name,
                    "group": b.cluster_group.name if b.cluster_group else None,
                    "enforcement": b.enforcement,
                }
                for b in self.bindings
            ],
            "waivers": [
                {
                    "id": w.pk,
                    "policy": w.policy.name,
                    "rule": w.rule,
                    "kind": w.kind,
                    "namespace": w.namespace,
                    "name_pattern": w.name_pattern,
                    "labels": dict(w.labels or {}),
                    "expires_at": w.expires_at.isoformat(),
                    "origin": w.origin,
                }
                for w in self.waivers
            ],
            "reported": self.reported,
            "ignored": self.ignored,
        }


def _is_yaml(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def _in_data_dir(path: str) -> bool:
    return "data" in Path(path).parts[:-1]


def _load_yaml_docs(path: str, text: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyInvalid(
            f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}",
            [
                {
                    "path": path,
                    "line": mark.line + 1 if mark else 0,
                    "column": 0,
                    "message": str(getattr(exc, "problem", exc)),
                    "code": "yaml_error",
                }
            ],
            field="files",
        ) from None


def _merge(into: dict[str, Any], extra: Any, path: str) -> None:
    if not isinstance(extra, Mapping):
        raise PolicyInvalid(f"{path}: a data file must hold an object", field="files")
    for key, value in extra.items():
        if key in into and isinstance(into[key], dict) and isinstance(value, Mapping):
            _merge(into[key], value, path)
        else:
            into[key] = value


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def _conftest_namespaces(modules: list[tuple[str, str]]) -> list[str]:
    found = []
    for path, source in modules:
        try:
            package = package_of(source)
        except ValueError:
            raise PolicyInvalid(f"{path}: no package declaration", field="files") from None
        if any(conftest_fmt.RULE_NAME.match(h) for h in rule_heads(source)) and package not in found:
            found.append(package)
    return sorted(found) or ["main"]


@dataclass
class _AdmissionDocs:
    vaps: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (path, doc)
    bindings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    kyverno: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    exceptions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, what: str, norm: str, doc: dict[str, Any]) -> None:
        if what == "vap":
            name = admission.name_of(doc)
            if not name or name in self.vaps:
                raise PolicyInvalid(
                    f"{norm}: ValidatingAdmissionPolicy {name!r} without a name or twice", field="files"
                )
            self.vaps[name] = (norm, doc)
        elif what == "vap-binding":
            self.bindings.append((norm, doc))
        elif what == "kyverno":
            self.kyverno.append((norm, doc))
        else:
            self.exceptions.append((norm, doc))

    def plans(self) -> tuple[list[tuple[str, PolicyDefinition]], list[str]]:
        plans: list[tuple[str, PolicyDefinition]] = []
        reported: list[str] = []
        bound: set[str] = set()
        for norm, doc in self.bindings:
            name = admission.name_of(doc)
            spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
            target = str((spec or {}).get("policyName") or "")
            if not name or not target:
                raise PolicyInvalid(
                    f"{norm}: a ValidatingAdmissionPolicyBinding needs a name and spec.policyName",
                    field="files",
                )
            found = self.vaps.get(target)
            policy_text = _dump(found[1]) if found else admission.stored_vap(target)
            if not policy_text:
                raise PolicyInvalid(
                    f"{norm}: binding {name} names the ValidatingAdmissionPolicy {target!r}, which is "
                    "neither in the import nor stored",
                    field="files",
                )
            bound.add(target)
            plans.append(
                (name, PolicyDefinition(style=PolicyStyle.VAP, policy=policy_text, binding=_dump(doc)))
            )
        for target, (norm, _doc) in sorted(self.vaps.items()):
            if target not in bound:
                reported.append(
                    f"{norm}: ValidatingAdmissionPolicy {target} has no ValidatingAdmissionPolicyBinding: "
                    "not imported (Kubernetes does not evaluate it either)"
                )
        for _norm, doc in self.kyverno:
            name = admission.kyverno_policy_name(doc)
            reported += admission.not_applied(doc, name)
            plans.append((name, PolicyDefinition(style=PolicyStyle.KYVERNO, policy=_dump(doc))))
        return plans, reported


@dataclass
class ImportPlan:
    plans: list[tuple[str, PolicyDefinition]]
    ignored: list[str]
    reported: list[str] = field(default_factory=list)
    exceptions: list[admission.ExceptionPlan] = field(default_factory=list)


def plan_import(
    files: Mapping[str, str], *, name: str = ""
) -> tuple[list[tuple[str, PolicyDefinition]], list[str]]:
    """What the files hold, as (policy name, definition) pairs, without storing anything."""
    plan = plan_files(files, name=name)
    return plan.plans, plan.ignored


def plan_files(
    files: Mapping[str, str], *, name: str = "", exception_days: int = admission.DEFAULT_EXCEPTION_DAYS
) -> ImportPlan:
    """What the files hold: the policies, what is ignored, what the gate does not apply, the exceptions."""
    if len(files) > MAX_FILES:
        raise ImportError_(f"too many files ({len(files)}; at most {MAX_FILES})")
    templates: dict[str, tuple[str, dict[str, Any]]] = {}  # kind -> (name, doc)
    constraint_docs: list[tuple[str, dict[str, Any]]] = []
    rego: list[tuple[str, str]] = []
    tests: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    ignored: list[str] = []
    other_yaml: list[tuple[str, dict[str, Any]]] = []
    admission_docs = _AdmissionDocs()
    for path in sorted(files):
        text = files[path]
        norm = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
        if norm.startswith("..") or not norm:
            raise ImportError_(f"{path}: paths must stay inside the directory")
        if len(text.encode()) > MAX_FILE_BYTES:
            raise ImportError_(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        if norm.endswith(".rego"):
            (tests if norm.endswith("_test.rego") else rego).append((norm, text))
        elif norm.endswith(".json"):
            try:
                _merge(data, json.loads(text), norm)
            except json.JSONDecodeError as exc:
                raise PolicyInvalid(
                    f"{norm}: invalid JSON at line {exc.lineno}: {exc.msg}",
                    [
                        {
                            "path": norm,
                            "line": exc.lineno,
                            "column": exc.colno,
                            "message": exc.msg,
                            "code": "json_error",
                        }
                    ],
                    field="files",
                ) from None
        elif _is_yaml(norm):
            docs = _load_yaml_docs(norm, text)
            if _in_data_dir(norm):
                for doc in docs:
                    _merge(data, doc, norm)
                continue
            for doc in docs:
                if not isinstance(doc, dict):
                    ignored.append(f"{norm}: not a mapping")
                elif admission.classify(doc):
                    admission_docs.add(admission.classify(doc), norm, doc)
                elif doc.get("kind") == "ConstraintTemplate":
                    try:
                        tpl = gk.parse_constraint_template(doc)
                    except Exception as exc:
                        raise PolicyInvalid(f"{norm}: {exc}", field="files") from None
                    if tpl.kind in templates:
                        raise PolicyInvalid(f"{norm}: a second template for kind {tpl.kind}", field="files")
                    templates[tpl.kind] = (tpl.name, doc)
                else:
                    other_yaml.append((norm, doc))
        else:
            ignored.append(norm)
    existing = {
        p.kind: p for p in Policy.objects.filter(style=PolicyStyle.GATEKEEPER).select_related("current")
    }
    for norm, doc in other_yaml:
        kind = doc.get("kind")
        if isinstance(kind, str) and (kind in templates or kind in existing):
            constraint_docs.append((norm, doc))
        elif rego and isinstance(doc, dict):
            _merge(data, doc, norm)  # conftest data next to the policies (e.g. exceptions.yaml)
        else:
            ignored.append(f"{norm}: {kind or 'document'} is neither a template nor a known constraint kind")
    plans: list[tuple[str, PolicyDefinition]] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _norm, doc in constraint_docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for kind in sorted(set(templates) | set(by_kind)):
        new_cons = by_kind.get(kind, [])
        if kind in templates:
            tpl_name, tpl_doc = templates[kind]
            template_text = _dump(tpl_doc)
            policy = existing.get(kind)
            old_cons = (
                list(policy.current.content.get("constraints") or []) if policy and policy.current else []
            )
        else:
            policy = existing[kind]
            tpl_name = policy.name
            template_text = policy.current.content.get("template", "") if policy.current else ""
            old_cons = list(policy.current.content.get("constraints") or []) if policy.current else []
        if policy is not None:
            tpl_name = policy.name
        new_names = {str((d.get("metadata") or {}).get("name") or kind.lower()) for d in new_cons}
        kept = [c for c in old_cons if _constraint_name(c, kind) not in new_names]
        constraints = tuple(kept + [_dump(d) for d in new_cons])
        old_tests = (
            tuple((m["path"], m["source"]) for m in (policy.current.content.get("test_modules") or []))
            if policy is not None and policy.current
            else ()
        )
        plans.append(
            (
                tpl_name,
                PolicyDefinition(
                    style=PolicyStyle.GATEKEEPER,
                    template=template_text,
                    constraints=constraints,
                    test_modules=old_tests,
                ),
            )
        )
    if rego:
        if not name:
            raise ImportError_("name the conftest policy made of the .rego files")
        plans.append(
            (
                name,
                PolicyDefinition(
                    style=PolicyStyle.CONFTEST,
                    modules=tuple(rego),
                    test_modules=tuple(tests),
                    data=data,
                    namespaces=tuple(_conftest_namespaces(rego)),
                ),
            )
        )
    elif tests:
        ignored.extend(p for p, _ in tests)
    admission_plans, reported = admission_docs.plans()
    plans += admission_plans
    exceptions = [
        admission.exception_plan(doc, norm, default_days=exception_days)
        for norm, doc in admission_docs.exceptions
    ]
    if not plans and not exceptions:
        raise ImportError_(
            "no ConstraintTemplate, Constraint, .rego policy, ValidatingAdmissionPolicyBinding or Kyverno "
            "policy found"
        )
    return ImportPlan(plans, ignored, reported, exceptions)


def _constraint_name(text: str, kind: str) -> str:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return ""
    return str((doc.get("metadata") or {}).get("name") or kind.lower())


def _mapping_value(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _template_rego_nodes(node: Any) -> tuple[str, list[tuple[str, Any]]] | None:
    """(template name, [(module path, Rego scalar node)]) of a ConstraintTemplate document node."""
    kind = _mapping_value(node, "kind")
    if not isinstance(kind, yaml.ScalarNode) or kind.value != "ConstraintTemplate":
        return None
    name_node = _mapping_value(_mapping_value(node, "metadata"), "name")
    crd_kind = _mapping_value(
        _mapping_value(_mapping_value(_mapping_value(_mapping_value(node, "spec"), "crd"), "spec"), "names"),
        "kind",
    )
    name = name_node.value if isinstance(name_node, yaml.ScalarNode) else ""
    if not name and isinstance(crd_kind, yaml.ScalarNode):
        name = str(crd_kind.value).lower()
    targets = _mapping_value(_mapping_value(node, "spec"), "targets")
    if not isinstance(targets, yaml.SequenceNode) or not targets.value:
        return None
    target = targets.value[0]
    rego, libs = _mapping_value(target, "rego"), _mapping_value(target, "libs")
    code = _mapping_value(target, "code")
    for entry in code.value if isinstance(code, yaml.SequenceNode) else []:
        engine = _mapping_value(entry, "engine")
        if isinstance(engine, yaml.ScalarNode) and str(engine.value).lower() == "rego":
            source = _mapping_value(entry, "source")
            rego, libs = _mapping_value(source, "rego"), _mapping_value(source, "libs")
            break
    nodes = [(f"{name}/template.rego", rego)]
    if isinstance(libs, yaml.SequenceNode):
        nodes += [(f"{name}/lib{i}.rego", lib) for i, lib in enumerate(libs.value)]
    return name, nodes


def template_locations(files: Mapping[str, str]) -> dict[str, tuple[str, int, int]]:
    """Where each ConstraintTemplate's Rego sits in its YAML file: module path -> (file, line offset, column
    offset), so that Rego line L, column C is line L + offset, column C + indentation of the file. Only
    literal block scalars (``rego: |``) are mapped: their lines are the Rego's lines."""
    out: dict[str, tuple[str, int, int]] = {}
    for path, text in files.items():
        if not _is_yaml(path):
            continue
        norm = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
        try:
            documents = list(yaml.compose_all(text))
        except yaml.YAMLError:
            continue
        lines = text.splitlines()
        for node in documents:
            found = _template_rego_nodes(node)
            for module_path, scalar in found[1] if found else []:
                if not isinstance(scalar, yaml.ScalarNode) or scalar.style not in ("|", ">"):
                    continue
                first = scalar.start_mark.line + 1  # 0-based index of the block's first line
                body = next((ln for ln in lines[first:] if ln.strip()), "")
                out[module_path] = (norm, first, len(body) - len(body.lstrip(" ")))
    return out


def _point_at_files(exc: PolicyInvalid, files: Mapping[str, str]) -> None:
    """Rewrite the errors of a template's Rego (``name/template.rego:L:C``) to name the user's YAML file and
    line (``gatekeeper/template.yaml:L':C'``), in the error list and in the message."""
    locations = template_locations(files)
    for error in exc.errors:
        where = locations.get(str(error.get("path")))
        line = int(error.get("line") or 0)
        if where is None or not line:
            continue
        file, offset, indent = where
        column = int(error.get("column") or 0)
        old = f"{error['path']}:{line}:{column}"
        error["rego"] = old
        error.update(path=file, line=line + offset, column=column + indent if column else 0)
        exc.message = exc.message.replace(old, f"{file}:{line + offset}:{error['column']}")
    exc.args = (exc.message,)


def import_files(
    files: Mapping[str, str],
    *,
    name: str = "",
    user: Any = None,
    group: ClusterGroup | None = None,
    enforcement: str | None = None,
    commit_sha: str = "",
    source: Any = None,
    engine: RegoEngine | None = None,
    allow_failing_tests: bool = False,
    exception_days: int = admission.DEFAULT_EXCEPTION_DAYS,
) -> ImportResult:
    """Validate every policy of the files, then store them (and their bindings, and the waivers of Kyverno
    PolicyExceptions) in one transaction; a refusal stores nothing."""
    plan = plan_files(files, name=name, exception_days=exception_days)
    plans, ignored = plan.plans, plan.ignored
    planned = {policy_name: definition.style for policy_name, definition in plans}
    for exc_plan in plan.exceptions:  # every exception names a Kyverno policy of the import or stored
        for spec in exc_plan.waivers:
            style = (
                planned.get(spec.policy)
                or Policy.objects.filter(name=spec.policy).values_list("style", flat=True).first()
            )
            if style != PolicyStyle.KYVERNO:
                raise PolicyInvalid(
                    f"{exc_plan.origin}: policy {spec.policy!r} is not a Kyverno policy of the import "
                    "or stored",
                    field="files",
                )
    checked = []
    for policy_name, definition in plans:
        try:
            checked.append(
                (
                    policy_name,
                    definition,
                    validate_definition(definition, engine=engine, allow_failing_tests=allow_failing_tests),
                )
            )
        except PolicyInvalid as exc:
            if definition.style == PolicyStyle.GATEKEEPER:
                _point_at_files(exc, files)
            exc.message = f"{policy_name}: {exc.message}"
            exc.args = (exc.message,)
            raise
    result = ImportResult(ignored=ignored, reported=list(plan.reported))
    with transaction.atomic():
        for policy_name, definition, validated in checked:
            result.saved.append(
                save_policy(
                    policy_name,
                    definition,
                    user=user,
                    commit_sha=commit_sha,
                    source=source,
                    validated=validated,
                )
            )
        if enforcement is not None:
            for saved in result.saved:
                binding = PolicyBinding.objects.filter(policy=saved.policy, cluster_group=group).first()
                if binding is None:
                    # The one audited save; the caller checked the user may bind in ``group``.
                    create = partial(
                        PolicyBinding.objects.create,
                        policy=saved.policy,
                        cluster_group=group,
                        enforcement=enforcement,
                    )
                    binding = save_in_scope(None, create, before=None)
                result.bindings.append(binding)
        for exc_plan in plan.exceptions:
            result.waivers += _exception_waivers(exc_plan, user=user, group=group)
    return result


def _exception_waivers(
    plan: admission.ExceptionPlan, *, user: Any, group: ClusterGroup | None
) -> list[Waiver]:
    """Store the waivers of one PolicyException (in ``group``, else global): the ones already in force
    unchanged are kept, the others of the same exception are expired (audited), the new ones created
    (audited, authored by ``user``). The caller checked the user may waive in ``group``."""
    policies = {p.name: p for p in Policy.objects.filter(name__in={w.policy for w in plan.waivers})}
    existing = list(
        Waiver.objects.filter(
            origin=plan.origin, cluster_group=group, expires_at__gt=timezone.now()
        ).select_related("policy")
    )

    def key(policy: str, rule: str, kind: str, ns: str, name: str, labels: Any) -> tuple[Any, ...]:
        return (policy, rule, kind, ns, name, tuple(sorted(dict(labels).items())))

    current = {
        key(w.policy.name, w.rule, w.kind, w.namespace, w.name_pattern, w.labels or {}): w for w in existing
    }
    wanted = [(key(s.policy, s.rule, s.kind, s.namespace, s.name_pattern, s.labels), s) for s in plan.waivers]
    out: list[Waiver] = []
    for k, spec in wanted:
        found = current.pop(k, None)
        if found is not None:
            out.append(found)
            continue
        create = partial(
            Waiver.objects.create,
            policy=policies[spec.policy],
            rule=spec.rule,
            kind=spec.kind,
            namespace=spec.namespace,
            name_pattern=spec.name_pattern,
            labels=dict(spec.labels),
            cluster_group=group,
            expires_at=plan.expires_at,
            justification=plan.justification,
            origin=plan.origin[:300],
            author=user if user is not None and getattr(user, "pk", None) else None,
            author_name=user.get_username()[:150]
            if user is not None and getattr(user, "pk", None)
            else "system",
        )
        out.append(save_in_scope(None, create, before=None))
    for stale in current.values():
        expire_waiver(stale)
    return out


def holds_exceptions(files: Mapping[str, str]) -> bool:
    """Whether the files hold a Kyverno PolicyException (its import makes waivers: the caller checks the
    user may waive in the import's group). Unreadable YAML is left to :func:`import_files` to refuse."""
    for path, text in files.items():
        if not _is_yaml(path) or "PolicyException" not in text:
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            continue
        if any(isinstance(d, dict) and admission.classify(d) == "kyverno-exception" for d in docs):
            return True
    return False


def read_directory(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones skipped) as {relative posix path: text}."""
    if not root.is_dir():
        raise ImportError_(f"{root} is not a directory")
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix not in (".rego", ".json", ".yaml", ".yml"):
            continue
        try:
            out[rel.as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ImportError_(f"{rel}: not UTF-8 text") from None
        if len(out) > MAX_FILES:
            raise ImportError_(f"more than {MAX_FILES} files under {root}")
    return out
