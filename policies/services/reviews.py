"""How each target is reviewed: the operation of each object from the cluster's live state, the userInfo,
and the targets whose live state could not be read.

* :func:`live_entries` turns the rendered objects and the connector's ``LiveState`` (the plan's reads) into
  the gate's entries: ``CREATE`` when the object is absent, ``UPDATE`` with ``old_object`` = the live object
  when present, and a ``DELETE`` entry (no object, ``old_object`` live) for every object the sync would
  prune.
* :func:`user_info` is the ``userInfo`` of the reviews: the Fleetgate user who asked for the rollout or the
  check, else the commit author as ``git:<email>``.
* :class:`TargetReview` says how a target was read: ``live``, ``create_only`` (unreadable, and the group
  allows create-only review: every object is reviewed as CREATE, and the decision says so) or
  ``cannot_review`` (unreadable: the target is blocked, nothing is evaluated).

A live Secret is reviewed with its keys but not its values: :func:`live_entries` masks each value of its
``data`` and ``stringData`` (and its ``last-applied-configuration`` annotation) as ``***`` before the policies
see it, so no violation message, detail or check answer can carry a value read from a cluster. A policy may
require or forbid keys; it cannot compare live values (the values in Git, ``object``, are unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from clusters.connector import objects as kube_objects
from clusters.connector.results import LiveState
from policies import gate
from policies.formats import gatekeeper as gk

LIVE = "live"
CREATE_ONLY = "create_only"
CANNOT_REVIEW = "cannot_review"
RENDERED = "rendered"  # no cluster read was asked for (a check of manifests as one operation)

USERS_GROUP = "fleetgate:users"
AUTHORS_GROUP = "fleetgate:commit-authors"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class TargetReview:
    mode: str = LIVE
    reason: str = ""

    @classmethod
    def unreadable(cls, reason: str, *, create_only_allowed: bool) -> TargetReview:
        """The live state could not be read: create-only review where the group allows it, else none."""
        return cls(CREATE_ONLY if create_only_allowed else CANNOT_REVIEW, reason)

    def note(self) -> str:
        """The line a decision carries for this way of reviewing (empty for a normal live review)."""
        if self.mode == CREATE_ONLY:
            return (
                f"reviewed as CREATE without the live state ({self.reason}): "
                "the cluster group allows create-only review"
            )
        return ""


def user_info(user: Any = None, author_email: str = "") -> dict[str, Any]:
    """``userInfo`` of the reviews: the Fleetgate user (with their Django groups) when one asked, else the
    commit author (``git:<email>``), else Fleetgate itself."""
    if user is not None and getattr(user, "pk", None):
        groups = sorted(user.groups.values_list("name", flat=True))
        return {"username": user.get_username(), "groups": [*groups, USERS_GROUP, AUTHENTICATED]}
    if author_email:
        return {"username": f"git:{author_email}", "groups": [AUTHORS_GROUP, AUTHENTICATED]}
    return {"username": gk.DEFAULT_USER_INFO["username"], "groups": list(gk.DEFAULT_USER_INFO["groups"])}


def _entry(item: gate.RenderedObject | Mapping[str, Any]) -> gate.RenderedObject:
    return item if isinstance(item, gate.RenderedObject) else gate.RenderedObject(item)


def masked_live(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as the policies see it: a Secret's values masked (keys kept), anything else as is."""
    plain = dict(obj)
    masked, _ = kube_objects.mask_secret_pair(plain, None)
    return masked if masked is not None else plain


def live_entries(
    objects: Sequence[gate.RenderedObject | Mapping[str, Any]], live: LiveState
) -> list[gate.RenderedObject]:
    """The gate's entries for one target: each rendered object as CREATE or UPDATE (by its live object,
    ``LiveState.objects[].index`` = its position in ``objects``), then a DELETE for each prune. Live Secrets
    are masked (:func:`masked_live`)."""
    found = {lo.index: masked_live(lo.live) for lo in live.objects if lo.live is not None}
    out: list[gate.RenderedObject] = []
    for i, item in enumerate(objects):
        entry = _entry(item)
        old = found.get(i)
        out.append(replace(entry, operation="UPDATE", old_object=old) if old is not None else entry)
    out.extend(
        gate.RenderedObject(None, "", operation="DELETE", old_object=masked_live(obj))
        for _ref, obj in live.prunes
    )
    return out


def as_operation(
    objects: Sequence[gate.RenderedObject | Mapping[str, Any]],
    operation: str,
    old: Sequence[Mapping[str, Any]] = (),
) -> list[gate.RenderedObject]:
    """Every object reviewed as ``operation`` (``policy_check --operation``). UPDATE takes each object's old
    version from ``old`` (matched by kind, namespace and name; an object without one is an error); DELETE
    deletes the object's version in ``old`` when there is one, else the given object itself."""
    if operation not in gk.OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(gk.OPERATIONS)}, not {operation!r}")
    entries = [_entry(o) for o in objects]
    if operation == "CREATE":
        return entries
    olds = {_identity(o): o for o in old}
    if operation == "DELETE":
        return [
            replace(e, obj=None, operation="DELETE", old_object=_match(olds, e.subject) or e.subject)
            for e in entries
        ]
    out = []
    for e in entries:
        match = _match(olds, e.subject)
        if match is None:
            kind, ns, name = _identity(e.subject)
            where = f"{ns}/" if ns else ""
            raise ValueError(f"no old object given for {kind} {where}{name} (an UPDATE needs one)")
        out.append(replace(e, operation="UPDATE", old_object=match))
    return out


def _match(
    olds: Mapping[tuple[str, str, str], Mapping[str, Any]], obj: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    match = olds.get(_identity(obj))
    if match is None:  # a namespace left to the default on one side only
        kind, _ns, name = _identity(obj)
        loose = [o for key, o in olds.items() if key[0] == kind and key[2] == name]
        match = loose[0] if len(loose) == 1 else None
    return match


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("kind") or ""),
        str(meta.get("namespace") or "") if isinstance(meta, Mapping) else "",
        str(meta.get("name") or "") if isinstance(meta, Mapping) else "",
    )


def label_selector_text(selector: Mapping[str, Any] | None) -> str:
    """A ``metav1.LabelSelector`` as the ``labelSelector`` of a LIST (``a=b,c in (d,e),!f``); the objects
    listed are matched by the selector again (the gate's own matching decides)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class LiveParams:
    """The :data:`gate.ParamsLookup` of a live review: the parameter objects (``paramKind`` +
    ``paramRef``) the render does not hold, read from the target cluster through the connector with the
    identity of the mapping's group (its allow-list's impersonation, as every live read of the mapping).
    Each (kind, namespace, name or selector) is read once per review of the target, however many objects
    ask for it. A Secret is masked like every live Secret. A 404 is "not found" (the binding's
    ``parameterNotFoundAction`` decides); any other failure raises :class:`gate.ParamsUnreadable`, and the
    target cannot be reviewed."""

    def __init__(self, cluster: Any, mapping: Any) -> None:
        self.cluster = cluster
        self.mapping = mapping
        self._found: dict[tuple[str, str, str, str, str], list[Mapping[str, Any]]] = {}
        self._identity: str | None = None

    def __call__(
        self, api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
    ) -> list[Mapping[str, Any]]:
        from fleet.rollouts import ports

        by_name = bool(name) and name != "*"
        labels = "" if by_name else label_selector_text(selector)
        key = (api_version, kind, namespace, name if by_name else "", labels)
        found = self._found.get(key)
        if found is None:
            if self._identity is None:
                self._identity = ports.identity(self.mapping)
            what = f"{kind} {namespace + '/' if namespace else ''}{name if by_name else labels or '*'}"
            try:
                with ports.connect(self.cluster, self._identity) as kube:
                    read = kube.read_params(api_version, kind, namespace, name if by_name else "", labels)
            except Exception as exc:
                raise gate.ParamsUnreadable(
                    f"the parameter {what} could not be read from {self.cluster.name}: "
                    f"{type(exc).__name__}: {exc}"[:1000]
                ) from exc
            found = self._found[key] = [masked_live(obj) for obj in read]
        return found
