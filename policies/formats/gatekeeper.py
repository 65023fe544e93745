"""Gatekeeper ConstraintTemplates and Constraints, evaluated the way Gatekeeper (and ``gator``) does.

* The template's Rego (``spec.targets[0].rego`` + ``libs``, or the newer
  ``spec.targets[0].code[{engine: Rego, source: {rego, libs, version}}]``) becomes a policy set with one
  entry point, ``[v | some v; data.<package>.violation[v]]``.
* ``spec.match`` of the Constraint is decided in Python (:meth:`Match.matches`), before any Rego runs.
* The input is ``{"review": <admission-request-like>, "parameters": spec.parameters or {}}``;
  ``data.inventory`` holds the objects rendered for the same cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jsonschema
import yaml

from policies.engine.base import Module, PolicySet, to_json
from policies.engine.source import is_identifier_path, package_of
from policies.formats import FormatError
from policies.formats.kube import LabelSelector, ObjectId, glob_match, labels_of

ENFORCEMENT_ACTIONS = ("deny", "warn", "dryrun")
ENTRYPOINT = "violations"


def _load(doc: str | bytes | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(doc, (str, bytes)):
        try:
            loaded = yaml.safe_load(doc)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise FormatError(f"{what}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    else:
        loaded = doc
    if not isinstance(loaded, Mapping):
        raise FormatError(f"{what}: expected a YAML mapping")
    return loaded


def _get(doc: Mapping[str, Any], path: str, what: str, *, required: bool = True) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if required:
                raise FormatError(f"{what}: missing {path}")
            return None
        cur = cur[part]
    return cur


# --------------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class ConstraintTemplate:
    name: str
    kind: str
    rego: str
    libs: tuple[str, ...] = ()
    rego_version: str | None = None
    parameters_schema: Mapping[str, Any] | None = None

    @property
    def package(self) -> str:
        return package_of(self.rego)

    def modules(self) -> tuple[Module, ...]:
        base = self.name or self.kind.lower()
        mods = [Module(f"{base}/template.rego", self.rego, self.rego_version)]
        mods += [Module(f"{base}/lib{i}.rego", lib, self.rego_version) for i, lib in enumerate(self.libs)]
        return tuple(mods)

    def policy_set(self) -> PolicySet:
        return PolicySet(self.modules(), {ENTRYPOINT: f"[v | some v; data.{self.package}.violation[v]]"})


def parse_constraint_template(doc: str | bytes | Mapping[str, Any]) -> ConstraintTemplate:
    what = "ConstraintTemplate"
    data = _load(doc, what)
    if data.get("kind") not in (None, "ConstraintTemplate"):
        raise FormatError(f"{what}: kind is {data.get('kind')!r}, expected ConstraintTemplate")
    kind = _get(data, "spec.crd.spec.names.kind", what)
    if not isinstance(kind, str) or not kind:
        raise FormatError(f"{what}: spec.crd.spec.names.kind must be a non-empty string")
    targets = _get(data, "spec.targets", what)
    if not isinstance(targets, list) or not targets or not isinstance(targets[0], Mapping):
        raise FormatError(f"{what}: spec.targets must be a non-empty list")
    target = targets[0]
    rego: Any = target.get("rego")
    libs: Any = target.get("libs") or []
    version: str | None = None
    for i, code in enumerate(target.get("code") or []):
        if isinstance(code, Mapping) and str(code.get("engine", "")).lower() == "rego":
            source = code.get("source")
            if not isinstance(source, Mapping) or not source.get("rego"):
                raise FormatError(f"{what}: spec.targets[0].code[{i}].source.rego is missing")
            rego, libs = source["rego"], source.get("libs") or []
            raw_version = source.get("version")
            if raw_version not in (None, "", "v0", "v1"):
                raise FormatError(f"{what}: spec.targets[0].code[{i}].source.version must be v0 or v1")
            version = raw_version or None
            break
    if not isinstance(rego, str) or not rego.strip():
        raise FormatError(f"{what}: spec.targets[0].rego (or code[].source.rego) is missing")
    if not isinstance(libs, list) or not all(isinstance(lib, str) for lib in libs):
        raise FormatError(f"{what}: libs must be a list of Rego sources")
    template = ConstraintTemplate(
        name=str(_get(data, "metadata.name", what, required=False) or kind.lower()),
        kind=kind,
        rego=rego,
        libs=tuple(libs),
        rego_version=version,
        parameters_schema=_get(data, "spec.crd.spec.validation.openAPIV3Schema", what, required=False),
    )
    try:
        package = template.package
    except ValueError as exc:
        raise FormatError(f"{what}: the rego has no package declaration") from exc
    if not is_identifier_path(package):
        raise FormatError(f"{what}: package {package!r} must be a dotted path of identifiers")
    return template


# --------------------------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class KindMatcher:
    api_groups: tuple[str, ...]
    kinds: tuple[str, ...]

    def matches(self, group: str, kind: str) -> bool:
        groups_ok = not self.api_groups or "*" in self.api_groups or group in self.api_groups
        kinds_ok = not self.kinds or "*" in self.kinds or kind in self.kinds
        return groups_ok and kinds_ok


@dataclass(frozen=True)
class Match:
    kinds: tuple[KindMatcher, ...] = ()
    namespaces: tuple[str, ...] = ()
    excluded_namespaces: tuple[str, ...] = ()
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    name: str | None = None
    scope: str = "*"

    def matches(
        self, obj: Mapping[str, Any], oid: ObjectId, namespace_labels: Mapping[str, Mapping[str, str]]
    ) -> bool:
        """Gatekeeper's match semantics. ``namespace_labels`` maps a namespace name to the labels of the
        rendered Namespace object (a namespaceSelector never matches a namespace that was not rendered)."""
        if self.kinds and not any(k.matches(oid.group, oid.kind) for k in self.kinds):
            return False
        if self.scope == "Cluster" and not oid.cluster_scoped:
            return False
        if self.scope == "Namespaced" and oid.cluster_scoped:
            return False
        if self.name is not None and not glob_match(self.name, oid.name):
            return False
        # For a Namespace the namespace criteria apply to its own name; other cluster-scoped objects
        # are not subject to them.
        ns = oid.name if oid.kind == "Namespace" and oid.group == "" else oid.namespace
        if ns:
            if self.namespaces and not any(glob_match(p, ns) for p in self.namespaces):
                return False
            if self.excluded_namespaces and any(glob_match(p, ns) for p in self.excluded_namespaces):
                return False
        if self.label_selector is not None and not self.label_selector.matches(labels_of(obj)):
            return False
        if self.namespace_selector is not None and ns:
            if oid.kind == "Namespace" and oid.group == "":
                ns_labels: Mapping[str, str] | None = labels_of(obj)
            else:
                ns_labels = namespace_labels.get(ns)
            if ns_labels is None or not self.namespace_selector.matches(ns_labels):
                return False
        return True


def _str_list(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise FormatError(f"{where} must be a list of strings")
    return tuple(raw)


def parse_match(raw: Any, what: str = "Constraint") -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, Mapping):
        raise FormatError(f"{what}: spec.match must be a mapping")
    kinds: list[KindMatcher] = []
    for i, entry in enumerate(raw.get("kinds") or []):
        if not isinstance(entry, Mapping):
            raise FormatError(f"{what}: spec.match.kinds[{i}] must be a mapping with apiGroups and kinds")
        kinds.append(
            KindMatcher(
                _str_list(entry.get("apiGroups"), f"{what}: spec.match.kinds[{i}].apiGroups"),
                _str_list(entry.get("kinds"), f"{what}: spec.match.kinds[{i}].kinds"),
            )
        )
    scope = raw.get("scope") or "*"
    if scope not in ("*", "Cluster", "Namespaced"):
        raise FormatError(f"{what}: spec.match.scope must be *, Cluster or Namespaced")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise FormatError(f"{what}: spec.match.name must be a string")
    return Match(
        kinds=tuple(kinds),
        namespaces=_str_list(raw.get("namespaces"), f"{what}: spec.match.namespaces"),
        excluded_namespaces=_str_list(
            raw.get("excludedNamespaces"), f"{what}: spec.match.excludedNamespaces"
        ),
        label_selector=LabelSelector.parse(raw.get("labelSelector"), f"{what}: spec.match.labelSelector"),
        namespace_selector=LabelSelector.parse(
            raw.get("namespaceSelector"), f"{what}: spec.match.namespaceSelector"
        ),
        name=name,
        scope=scope,
    )


@dataclass(frozen=True)
class Constraint:
    kind: str
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    match: Match = field(default_factory=Match)
    enforcement_action: str = "deny"

    @property
    def parameters_json(self) -> str:
        return to_json(self.parameters)


def parse_constraint(doc: str | bytes | Mapping[str, Any]) -> Constraint:
    what = "Constraint"
    data = _load(doc, what)
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise FormatError(f"{what}: kind (the template's kind) is required")
    name = str(_get(data, "metadata.name", what, required=False) or kind.lower())
    spec = data.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise FormatError(f"{what}: spec must be a mapping")
    params = spec.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise FormatError(f"{what}: spec.parameters must be a mapping")
    action = spec.get("enforcementAction") or "deny"
    if action not in ENFORCEMENT_ACTIONS:
        raise FormatError(
            f"{what}: spec.enforcementAction {action!r} is not one of {', '.join(ENFORCEMENT_ACTIONS)}"
        )
    return Constraint(kind, name, dict(params), parse_match(spec.get("match"), what), action)


def validate_parameters(template: ConstraintTemplate, constraint: Constraint) -> None:
    """Check ``spec.parameters`` against the template's ``openAPIV3Schema`` (as Gatekeeper does when a
    Constraint is created). Raises FormatError naming the offending field."""
    schema = template.parameters_schema
    if not schema:
        return
    if not isinstance(schema, Mapping):
        raise FormatError("ConstraintTemplate: spec.crd.spec.validation.openAPIV3Schema must be a mapping")
    schema = dict(schema)
    schema.setdefault("type", "object")
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise FormatError(
            f"ConstraintTemplate: openAPIV3Schema is not a valid schema: {exc.message}"
        ) from exc
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(dict(constraint.parameters)),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path)
        field_name = f"spec.parameters.{where}" if where else "spec.parameters"
        raise FormatError(f"Constraint {constraint.name}: {field_name}: {first.message}")


# --------------------------------------------------------------------------------------------- input


OPERATIONS = ("CREATE", "UPDATE", "DELETE")

#: The ``userInfo`` of a review when nobody in particular asked for it.
DEFAULT_USER_INFO: Mapping[str, Any] = {"username": "fleetgate", "groups": ["system:authenticated"]}

_T = TypeVar("_T")


def _operation_objects(operation: str, obj: _T | None, old_object: _T | None) -> tuple[_T | None, _T | None]:
    """The object and old object a review of ``operation`` carries (CREATE: no old object, DELETE: no
    object); ValueError for an unknown operation or a missing object."""
    if operation not in OPERATIONS:
        raise ValueError(f"review operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    if operation == "DELETE":
        if old_object is None:
            raise ValueError("a DELETE review needs the old (live) object")
        obj = None
    elif obj is None:
        raise ValueError(f"a {operation} review needs the object")
    if operation == "CREATE":
        old_object = None
    elif operation == "UPDATE" and old_object is None:
        raise ValueError("an UPDATE review needs the old (live) object")
    return obj, old_object


def _user_info(user_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``review.userInfo``: ``{username, groups}`` (default: the ``fleetgate`` user)."""
    info = user_info if user_info is not None else DEFAULT_USER_INFO
    return {"username": str(info.get("username") or ""), "groups": list(info.get("groups") or [])}


def review(
    obj: Mapping[str, Any] | None,
    oid: ObjectId,
    namespace_object: Mapping[str, Any] | None = None,
    *,
    operation: str = "CREATE",
    old_object: Mapping[str, Any] | None = None,
    user_info: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """``input.review`` shaped like Gatekeeper's admission review (an ``AdmissionRequest``).

    ``CREATE``: ``object`` is the rendered object, ``oldObject`` null. ``UPDATE``: ``object`` is the
    rendered object, ``oldObject`` the live one. ``DELETE``: ``object`` is null, ``oldObject`` the live
    object about to be pruned. ``userInfo`` is ``{username, groups}`` (default: the ``fleetgate`` user).
    """
    obj, old_object = _operation_objects(operation, obj, old_object)
    out: dict[str, Any] = {
        "operation": operation,
        "object": obj,
        "oldObject": old_object,
        "kind": {"group": oid.group, "version": oid.version, "kind": oid.kind},
        "name": oid.name,
        "userInfo": _user_info(user_info),
        "dryRun": dry_run,
    }
    if oid.namespace:
        out["namespace"] = oid.namespace
    if namespace_object is not None:
        out["namespaceObject"] = namespace_object
    return out


def user_info_json(user_info: Mapping[str, Any] | None = None) -> str:
    """``review.userInfo`` as JSON text (see :func:`review`), encoded once per target."""
    return to_json(_user_info(user_info))


def review_json(
    oid: ObjectId,
    *,
    operation: str,
    object_json: str | None,
    old_object_json: str | None,
    user_info_json: str,
    namespace_object_json: str | None = None,
    dry_run: bool = False,
) -> str:
    """:func:`review` as JSON text, assembled from pre-encoded parts (the gate's fast path): the object
    and the old object are encoded once per target (the conftest input is the same text), ``userInfo``
    once per target and a namespace object once per namespace. Same document as ``to_json(review(...))``;
    the keys come in another order."""
    object_json, old_object_json = _operation_objects(operation, object_json, old_object_json)
    head: dict[str, Any] = {
        "operation": operation,
        "kind": {"group": oid.group, "version": oid.version, "kind": oid.kind},
        "name": oid.name,
        "dryRun": dry_run,
    }
    if oid.namespace:
        head["namespace"] = oid.namespace
    parts = [
        json.dumps(head)[:-1],
        ',"object":',
        object_json or "null",
        ',"oldObject":',
        old_object_json or "null",
        ',"userInfo":',
        user_info_json,
    ]
    if namespace_object_json is not None:
        parts += [',"namespaceObject":', namespace_object_json]
    parts.append("}")
    return "".join(parts)


def input_json(review_json: str, parameters_json: str) -> str:
    """The input document as JSON text, assembled from pre-encoded parts (fast path of the gate)."""
    return '{"review":' + review_json + ',"parameters":' + parameters_json + "}"
