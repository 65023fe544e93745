"""Health of one live object, judged from its status the way ``kubectl rollout status`` does."""

from __future__ import annotations

from typing import Any

from clusters.connector.objects import ObjectRef
from clusters.connector.results import DEGRADED, HEALTHY, MISSING, PROGRESSING, ObjectHealth


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if isinstance(c, dict)
    }


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _observed(obj: dict[str, Any]) -> bool:
    gen = _int((obj.get("metadata") or {}).get("generation"))
    return _int((obj.get("status") or {}).get("observedGeneration")) >= gen


def _deployment(ref: ObjectRef, obj: dict[str, Any]) -> ObjectHealth:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    progressing = _conditions(obj).get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return ObjectHealth(ref, DEGRADED, "ProgressDeadlineExceeded", str(progressing.get("message", "")))
    if not _observed(obj):
        return ObjectHealth(ref, PROGRESSING, "ObservedGeneration", "waiting for the controller")
    want = _int(spec.get("replicas", 1))
    updated, available = _int(status.get("updatedReplicas")), _int(status.get("availableReplicas"))
    if updated < want:
        return ObjectHealth(ref, PROGRESSING, "Updating", f"{updated} of {want} replicas updated")
    if _int(status.get("replicas")) > updated:
        old = _int(status.get("replicas")) - updated
        return ObjectHealth(ref, PROGRESSING, "Updating", f"{old} old replicas pending termination")
    if available < updated:
        return ObjectHealth(
            ref, PROGRESSING, "Updating", f"{available} of {updated} updated replicas available"
        )
    return ObjectHealth(ref, HEALTHY, "", f"{available} of {want} replicas available")


def _statefulset(ref: ObjectRef, obj: dict[str, Any]) -> ObjectHealth:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not _observed(obj):
        return ObjectHealth(ref, PROGRESSING, "ObservedGeneration", "waiting for the controller")
    want = _int(spec.get("replicas", 1))
    ready = _int(status.get("readyReplicas"))
    if ready < want:
        return ObjectHealth(ref, PROGRESSING, "Updating", f"{ready} of {want} pods ready")
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        if _int(status.get("updatedReplicas")) < want:
            return ObjectHealth(ref, PROGRESSING, "Updating", "waiting for pods to be updated")
        if status.get("updateRevision") and status.get("updateRevision") != status.get("currentRevision"):
            return ObjectHealth(ref, PROGRESSING, "Updating", "waiting for the update to complete")
    return ObjectHealth(ref, HEALTHY, "", f"{ready} of {want} pods ready")


def _daemonset(ref: ObjectRef, obj: dict[str, Any]) -> ObjectHealth:
    status = obj.get("status") or {}
    if not _observed(obj):
        return ObjectHealth(ref, PROGRESSING, "ObservedGeneration", "waiting for the controller")
    desired = _int(status.get("desiredNumberScheduled"))
    if _int(status.get("updatedNumberScheduled")) < desired:
        return ObjectHealth(ref, PROGRESSING, "Updating", "waiting for pods to be updated")
    if _int(status.get("numberAvailable")) < desired:
        return ObjectHealth(ref, PROGRESSING, "Updating", "waiting for pods to be available")
    return ObjectHealth(ref, HEALTHY, "", f"{desired} pods available")


def _job(ref: ObjectRef, obj: dict[str, Any]) -> ObjectHealth:
    conds = _conditions(obj)
    failed = conds.get("Failed") or {}
    if failed.get("status") == "True":
        return ObjectHealth(
            ref, DEGRADED, str(failed.get("reason", "Failed")), str(failed.get("message", ""))
        )
    if (conds.get("Complete") or {}).get("status") == "True":
        return ObjectHealth(ref, HEALTHY, "Complete", "")
    if (obj.get("spec") or {}).get("suspend"):
        return ObjectHealth(ref, HEALTHY, "Suspended", "")
    return ObjectHealth(ref, PROGRESSING, "Running", "waiting for the Job to complete")


def assess(ref: ObjectRef, obj: dict[str, Any] | None) -> ObjectHealth:
    """The health of one object (None: it does not exist)."""
    if obj is None:
        return ObjectHealth(ref, MISSING, "NotFound", "the object does not exist")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return ObjectHealth(ref, PROGRESSING, "Deleting", "the object is being deleted")
    kind, group = ref.kind, ref.group
    if group == "apps" and kind == "Deployment":
        return _deployment(ref, obj)
    if group == "apps" and kind == "StatefulSet":
        return _statefulset(ref, obj)
    if group == "apps" and kind == "DaemonSet":
        return _daemonset(ref, obj)
    if group == "batch" and kind == "Job":
        return _job(ref, obj)
    if group == "" and kind == "Pod":  # a Pod that runs to completion (a hook): its phase says how it ended
        phase = (obj.get("status") or {}).get("phase")
        if phase == "Succeeded":
            return ObjectHealth(ref, HEALTHY, "Completed", "")
        if phase == "Failed":
            status = obj.get("status") or {}
            reason = str(status.get("reason") or "Failed")
            return ObjectHealth(ref, DEGRADED, reason, str(status.get("message", "")))
    ready = _conditions(obj).get("Ready")
    if ready is not None:
        if ready.get("status") == "True":
            return ObjectHealth(ref, HEALTHY, "Ready", "")
        return ObjectHealth(
            ref, PROGRESSING, str(ready.get("reason", "NotReady")), str(ready.get("message", ""))
        )
    return ObjectHealth(ref, HEALTHY, "", "present")


def overall(objects: list[ObjectHealth]) -> tuple[str, str]:
    degraded = [o for o in objects if o.state == DEGRADED]
    if degraded:
        return DEGRADED, f"{degraded[0].ref}: {degraded[0].reason}"
    waiting = [o for o in objects if o.state in (PROGRESSING, MISSING)]
    if waiting:
        return PROGRESSING, f"{len(waiting)} object(s) not ready, e.g. {waiting[0].ref}: {waiting[0].message}"
    return HEALTHY, ""
