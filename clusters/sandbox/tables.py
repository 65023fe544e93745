"""``as=Table`` answers (what ``kubectl get`` asks for), with the usual columns of the common kinds."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from .resources import ResourceType

Column = tuple[str, str, str, Callable[[dict[str, Any]], Any]]  # name, type, format, cell


def human_age(timestamp: str | None) -> str:
    """The apiserver's short duration (``45s``, ``3m12s``, ``5h``, ``2d3h``, ``400d``)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    seconds = int(time.time() - then)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def _age(o: dict[str, Any]) -> str:
    return human_age(o["metadata"].get("creationTimestamp"))


def _status(o: dict[str, Any]) -> dict[str, Any]:
    return o.get("status") or {}


def _spec(o: dict[str, Any]) -> dict[str, Any]:
    return o.get("spec") or {}


def _ports(o: dict[str, Any]) -> str:
    ports = [f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _spec(o).get("ports") or []]
    return ",".join(ports) or "<none>"


def _job_status(o: dict[str, Any]) -> str:
    for cond in _status(o).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended"):
            return str(cond["type"])
    return "Running"


NAME: Column = ("Name", "string", "name", lambda o: o["metadata"]["name"])
AGE: Column = ("Age", "string", "", _age)
COLUMNS: dict[str, list[Column]] = {
    "Namespace": [NAME, ("Status", "string", "", lambda o: _status(o).get("phase", "")), AGE],
    "ConfigMap": [
        NAME,
        ("Data", "integer", "", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    "Secret": [
        NAME,
        ("Type", "string", "", lambda o: o.get("type", "")),
        ("Data", "integer", "", lambda o: len(o.get("data") or {})),
        AGE,
    ],
    "Service": [
        NAME,
        ("Type", "string", "", lambda o: _spec(o).get("type", "")),
        ("Cluster-IP", "string", "", lambda o: _spec(o).get("clusterIP", "<none>")),
        ("External-IP", "string", "", lambda o: ",".join(_spec(o).get("externalIPs") or []) or "<none>"),
        ("Port(s)", "string", "", _ports),
        AGE,
    ],
    "Deployment": [
        NAME,
        (
            "Ready",
            "string",
            "",
            lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}",
        ),
        ("Up-to-date", "integer", "", lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", "", lambda o: _status(o).get("availableReplicas", 0)),
        AGE,
    ],
    "StatefulSet": [
        NAME,
        (
            "Ready",
            "string",
            "",
            lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}",
        ),
        AGE,
    ],
    "DaemonSet": [
        NAME,
        ("Desired", "integer", "", lambda o: _status(o).get("desiredNumberScheduled", 0)),
        ("Current", "integer", "", lambda o: _status(o).get("currentNumberScheduled", 0)),
        ("Ready", "integer", "", lambda o: _status(o).get("numberReady", 0)),
        ("Up-to-date", "integer", "", lambda o: _status(o).get("updatedNumberScheduled", 0)),
        ("Available", "integer", "", lambda o: _status(o).get("numberAvailable", 0)),
        AGE,
    ],
    "Job": [
        NAME,
        ("Status", "string", "", _job_status),
        (
            "Completions",
            "string",
            "",
            lambda o: f"{_status(o).get('succeeded', 0)}/{_spec(o).get('completions', 1)}",
        ),
        AGE,
    ],
    "CronJob": [
        NAME,
        ("Schedule", "string", "", lambda o: _spec(o).get("schedule", "")),
        ("Suspend", "boolean", "", lambda o: bool(_spec(o).get("suspend", False))),
        ("Active", "integer", "", lambda o: len(_status(o).get("active") or [])),
        AGE,
    ],
    "Pod": [NAME, ("Status", "string", "", lambda o: _status(o).get("phase", "Pending")), AGE],
    "CustomResourceDefinition": [
        NAME,
        ("Created At", "date", "", lambda o: o["metadata"].get("creationTimestamp")),
    ],
}


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in accept  # type: ignore[operator]


def _row(o: dict[str, Any], columns: list[Column], include: str) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": [cell(o) for _, _, _, cell in columns]}
    if include == "Object":
        row["object"] = o
    elif include != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {k: v for k, v in o["metadata"].items() if k != "managedFields"},
        }
    return row


def table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    meta: dict[str, Any],
    include: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of ``objects`` (``include``: None, Metadata or Object, as ``includeObject``)."""
    columns = COLUMNS.get(rt.kind, [NAME, AGE]) if rt.builtin else [NAME, AGE]
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    if with_columns:
        out["columnDefinitions"] = [
            {"name": name, "type": typ, "format": fmt, "description": name, "priority": 0}
            for name, typ, fmt, _ in columns
        ]
    out["rows"] = [_row(o, columns, include) for o in objects]
    return out


TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
