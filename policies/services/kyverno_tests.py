"""Kyverno's CLI test format (``kyverno test DIR``) run on Fleetgate's Kyverno evaluator.

A ``kyverno-test.yaml`` (``cli.kyverno.io/v1alpha1`` ``Test``, or the older plain form) names policies,
resources, exceptions, a values file (``variables``; ``policies[].rules[].values``,
``policies[].resources[].values``, ``globalValues``, ``namespaceSelector``), a ``userinfo`` file and the
expected ``results`` (policy, rule, resources, kind, result pass|fail|skip|warn|error). Each expected
result is compared with the response of the named rule (or its ``autogen-`` variants) on each named
resource, the way ``kyverno test`` does: a resource the rule does not apply to counts as a pass
("excluded"), a resource that is not in the test's resources as a fail ("not found").
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput
from policies.formats.kube import CLUSTER_SCOPED_KINDS, object_id
from policies.formats.kyverno import KyvernoPolicy, parse_exception, parse_policy
from policies.formats.kyverno.match import selector_matches

TEST_FILE = "kyverno-test.yaml"
RESULTS = ("pass", "fail", "skip", "warn", "error")


class TestFileError(ValueError):
    """The test (or a file it names) cannot be read."""


@dataclass
class Row:
    test: str
    policy: str
    rule: str
    resource: str
    expected: str
    actual: str
    ok: bool
    reason: str = ""
    message: str = ""


@dataclass
class TestOutcome:
    path: str
    name: str
    rows: list[Row] = field(default_factory=list)
    error: str = ""
    unsupported: list[str] = field(default_factory=list)  # policy documents Fleetgate does not evaluate
    not_applied: list[str] = field(default_factory=list)  # "policy/rule (mutate)"
    needs_cluster: list[str] = field(default_factory=list)  # "policy/rule: entry (apiCall)"

    @property
    def passed(self) -> bool:
        return not self.error and all(r.ok for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def find_tests(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise TestFileError(f"{raw}: no such file or directory")
        if path.is_file():
            found.append(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs.sort()
            if TEST_FILE in files:
                found.append(Path(root) / TEST_FILE)
    return found


def _documents(path: Path) -> list[Mapping[str, Any]]:
    if not path.is_file():
        raise TestFileError(f"{path}: no such file")
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TestFileError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except UnicodeDecodeError as exc:
        raise TestFileError(f"{path}: not a text file") from exc
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise TestFileError(f"{path}: every YAML document must be a mapping")
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(d for d in doc["items"] if isinstance(d, Mapping))
        else:
            out.append(doc)
    return out


def _files(test: Mapping[str, Any], key: str, base: Path) -> list[Path]:
    raw = test.get(key) or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise TestFileError(f"{key} must be a list of paths")
    out: list[Path] = []
    for item in raw:
        p = (base / str(item)).resolve()
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def _values(test: Mapping[str, Any], base: Path) -> Mapping[str, Any]:
    values: dict[str, Any] = {}
    if test.get("variables"):
        docs = _documents((base / str(test["variables"])).resolve())
        if docs:
            values = dict(docs[0])
    inline = test.get("values")
    if isinstance(inline, Mapping):
        for k, v in inline.items():
            values.setdefault(k, v)
    return values


def _user_info(test: Mapping[str, Any], base: Path) -> dict[str, Any]:
    if not test.get("userinfo"):
        return {}
    docs = _documents((base / str(test["userinfo"])).resolve())
    if not docs:
        return {}
    doc = docs[0]
    info = dict(doc.get("userInfo") or {})
    info["roles"] = list(doc.get("roles") or [])
    info["clusterRoles"] = list(doc.get("clusterRoles") or [])
    return info


def _expected(raw: Mapping[str, Any], i: int) -> tuple[str, str, list[str], str, str]:
    policy = raw.get("policy")
    if not isinstance(policy, str) or not policy:
        raise TestFileError(f"results[{i}].policy is required")
    result = str(raw.get("result") or raw.get("status") or "").lower()
    if result not in RESULTS:
        raise TestFileError(f"results[{i}].result must be one of {', '.join(RESULTS)}")
    resources = raw.get("resources")
    if resources is None and raw.get("resource"):
        resources = [raw["resource"]]
    if isinstance(resources, str):
        resources = [resources]
    names = [str(r) for r in resources or []]
    if raw.get("namespace") and names:
        names = [n if "/" in n else f"{raw['namespace']}/{n}" for n in names]
    return policy, str(raw.get("rule") or ""), names, str(raw.get("kind") or ""), result


def _set(doc: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = doc.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            doc[part] = nxt
        doc = nxt
    doc[path[-1]] = value


def _shape(
    res: Mapping[str, Any], operation: str, values: Mapping[str, Any]
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The request's object and old object as ``kyverno test`` shapes them: UPDATE reviews the resource
    against a copy of itself, DELETE has only the old object; values under ``request.object.`` and
    ``request.oldObject.`` change them."""
    new: dict[str, Any] | None = copy.deepcopy(dict(res)) if operation != "DELETE" else None
    old: dict[str, Any] | None = copy.deepcopy(dict(res)) if operation in ("UPDATE", "DELETE") else None
    for key, value in values.items():
        parts = str(key).split(".")
        if parts[:2] == ["request", "object"] and len(parts) > 2 and new is not None:
            _set(new, parts[2:], copy.deepcopy(value))
        elif parts[:2] == ["request", "oldObject"] and len(parts) > 2 and old is not None:
            _set(old, parts[2:], copy.deepcopy(value))
    return new, old


def _params_lookup(objects: Sequence[Mapping[str, Any]]) -> Any:
    """Parameter objects for CEL rules from the test's resources and ``paramResources``."""

    def lookup(
        api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
    ) -> list[Mapping[str, Any]]:
        out = []
        for obj in objects:
            meta = obj.get("metadata") or {}
            if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
                continue
            if namespace and kind not in CLUSTER_SCOPED_KINDS and meta.get("namespace") != namespace:
                continue
            if name and meta.get("name") != name:
                continue
            if selector is not None and not selector_matches(selector, meta.get("labels") or {}):
                continue
            out.append(obj)
        return out

    return lookup


def _defaulted(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """Like ``kyverno test``: a namespaced resource without a namespace is in ``default``."""
    meta = resource.get("metadata")
    if not isinstance(meta, Mapping) or meta.get("namespace") or resource.get("kind") in CLUSTER_SCOPED_KINDS:
        return resource
    out = dict(resource)
    out["metadata"] = {**meta, "namespace": "default"}
    return out


def _report_result(status: str, policy: KyvernoPolicy) -> str:
    annotations = (policy.raw.get("metadata") or {}).get("annotations") or {}
    if status == "fail" and str(annotations.get("policies.kyverno.io/scored", "")).lower() == "false":
        return "warn"
    return status


def run_test(path: Path) -> TestOutcome:
    base = path.parent
    outcome = TestOutcome(str(path), base.name)
    try:
        docs = _documents(path)
        if not docs:
            raise TestFileError(f"{path}: empty test file")
        test = docs[0]
        outcome.name = str((test.get("metadata") or {}).get("name") or test.get("name") or base.name)
        _run(test, base, outcome)
    except (TestFileError, FormatError) as exc:
        outcome.error = str(exc)
    except Exception as exc:
        outcome.error = f"internal error: {type(exc).__name__}: {exc}"
    return outcome


def _run(test: Mapping[str, Any], base: Path, outcome: TestOutcome) -> None:
    policies: dict[str, KyvernoPolicy] = {}
    for file in _files(test, "policies", base):
        for doc in _documents(file):
            kind = doc.get("kind")
            if kind in ("ClusterPolicy", "Policy") and str(doc.get("apiVersion", "")).startswith(
                "kyverno.io/"
            ):
                try:
                    pol = parse_policy(doc)
                except FormatError as exc:
                    raise FormatError(f"{file.name}: {exc}") from exc
                policies[pol.key] = pol
                outcome.not_applied += [f"{pol.key}/{n} ({k})" for n, k in pol.not_applied]
                outcome.needs_cluster += [
                    f"{pol.key}/{r}: {', '.join(e)}" for r, e in pol.needs_cluster().items()
                ]
            else:
                outcome.unsupported.append(
                    f"{doc.get('apiVersion')} {kind} {(doc.get('metadata') or {}).get('name')}"
                )
    exceptions = []
    for file in _files(test, "exceptions", base) + _files(test, "policyExceptions", base):
        for doc in _documents(file):
            if doc.get("kind") == "PolicyException":
                exceptions.append(parse_exception(doc))
    resources: list[Mapping[str, Any]] = []
    for file in _files(test, "resources", base):
        resources.extend(_defaulted(d) for d in _documents(file) if d.get("kind"))
    values = _values(test, base)
    param_objects = list(resources)
    for file in _files(test, "paramResources", base):
        param_objects.extend(_defaulted(d) for d in _documents(file) if d.get("kind"))
    params = _params_lookup(param_objects)
    user_info = _user_info(test, base)
    global_values = dict(values.get("globalValues") or {})
    ns_labels = {
        str(n.get("name")): dict(n.get("labels") or {})
        for n in values.get("namespaceSelector") or []
        if isinstance(n, Mapping)
    }
    rule_values: dict[str, dict[str, dict[str, Any]]] = {}
    resource_values: dict[tuple[str, str], dict[str, Any]] = {}
    for pv in values.get("policies") or []:
        pname = str(pv.get("name"))
        for rv in pv.get("rules") or []:
            rule_values.setdefault(pname, {})[str(rv.get("name"))] = dict(rv.get("values") or {})
        for rv in pv.get("resources") or []:
            resource_values[(pname, str(rv.get("name")))] = dict(rv.get("values") or {})

    keys: list[tuple[str, str, Mapping[str, Any]]] = []
    for res in resources:
        meta = res.get("metadata") or {}
        key = ",".join(
            (
                str(res.get("apiVersion")),
                str(res.get("kind")),
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
            )
        )
        keys.append((key, str(meta.get("name") or ""), res))

    cache: dict[tuple[str, str], dict[str, list[Any]]] = {}

    def responses(key: str, res: Mapping[str, Any], forced: str) -> dict[str, list[Any]]:
        """The rule responses per policy for one resource, under the test's (or a result's) operation."""
        if (key, forced) in cache:
            return cache[(key, forced)]
        meta = res.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        ns_obj = {"metadata": {"name": ns, "labels": ns_labels[ns]}} if ns in ns_labels else None
        per_policy: dict[str, list[Any]] = {}
        for pkey, pol in policies.items():
            vals = dict(global_values)
            vals.update(resource_values.get((pol.name, str(meta.get("name") or "")), {}))
            if forced:
                vals["request.operation"] = forced
            op = str(vals.get("request.operation") or "CREATE").upper()
            new, old = _shape(res, op, vals)
            inp = AdmissionInput(
                operation=op,
                id=object_id(res, ""),
                object=new,
                old_object=old,
                namespace_object=ns_obj,
                user_info=user_info,
            )
            per_policy[pkey] = pol.apply(
                inp,
                values=vals,
                rule_values=rule_values.get(pol.name, {}),
                exceptions=exceptions,
                params=params,
            )
        cache[(key, forced)] = per_policy
        return per_policy

    for i, raw in enumerate(test.get("results") or []):
        if not isinstance(raw, Mapping):
            raise TestFileError(f"results[{i}] must be a mapping")
        pname, rule, names, _kind, expected = _expected(raw, i)
        operation = str(raw.get("operation") or "").upper()
        if operation and operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
            raise TestFileError(f"results[{i}].operation must be CREATE, UPDATE, DELETE or CONNECT")
        matched: list[tuple[str, str]] = []
        for name in names:
            ns, _, short = name.rpartition("/")
            for key, rname, _res in keys:
                parts = key.split(",")
                if short == rname and (not ns or ns == parts[2]):
                    matched.append((key, name))
        if not names:
            matched = [(k, k) for k, _, _ in keys]
        for name in names:
            if not any(n == name for _, n in matched):
                outcome.rows.append(Row(outcome.name, pname, rule, name, expected, "", False, "Not found"))
        pkey = pname
        for key, _name in matched:
            label = key.replace(",", "/")
            if pkey not in policies:
                outcome.rows.append(
                    Row(outcome.name, pname, rule, label, expected, "", False, "policy not loaded")
                )
                continue
            results = [
                r
                for r in responses(key, next(x for k, _, x in keys if k == key), operation).get(pkey, [])
                if not rule or r.rule in (rule, f"autogen-{rule}", f"autogen-cronjob-{rule}")
            ]
            base_rule = rule.removeprefix("autogen-cronjob-").removeprefix("autogen-")
            skipped_kind = next((k for n, k in policies[pkey].not_applied if n in (rule, base_rule)), "")
            if not results and skipped_kind:
                reason = f"{skipped_kind} rules are not applied by the gate"
                outcome.rows.append(
                    Row(outcome.name, pname, rule, label, expected, "not applied", False, reason)
                )
                continue
            if not results:
                outcome.rows.append(
                    Row(outcome.name, pname, rule, label, expected, "excluded", True, "Excluded")
                )
                continue
            for r in results:
                actual = _report_result(r.status, policies[pkey])
                ok = actual == expected
                outcome.rows.append(
                    Row(
                        outcome.name,
                        pname,
                        r.rule,
                        label,
                        expected,
                        actual,
                        ok,
                        "Ok" if ok else f"Want {expected}, got {actual}",
                        r.message,
                    )
                )


def run_tests(paths: Sequence[str]) -> Iterator[TestOutcome]:
    for path in find_tests(paths):
        yield run_test(path)
