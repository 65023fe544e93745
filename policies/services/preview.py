"""Policy impact preview: a proposed policy change replayed over what every cluster in scope runs now.

A :class:`Proposal` is a new policy, a new version of one (its definition, not saved), or a binding change
(new binding, enforcement, pinned version, scope, enabled). :func:`compute` replays it, for each
(mapping, cluster) whose policy set the proposal changes, over the last synced commit's stored render
(``RenderedManifest`` rows: nothing is rendered again) with the live objects as ``oldObject`` (the reads the
gate makes before a rollout; a cluster that cannot be read is reported as unreachable, not guessed), and
compares the proposed decisions with today's (the bindings as they are, evaluated on the same objects now).
Nothing is stored by :func:`compute`, nothing is enforced, nothing is audited as a decision.

Cost: the policies the proposal does not change are evaluated once per target and shared by both sides;
only the changed policy is evaluated twice (its old and new form). Queries: a constant number for the
set-up, then two per chunk of :data:`CHUNK` targets (renders, progress), never per cluster.

:func:`start` stores a :class:`~policies.models.PolicyPreview` and queues the background job
(``policies.tasks.run_preview`` through ``fleet.core.dispatch.send``); :func:`run` is what the job does.
:func:`report_for` (policies/services/preview_report.py) narrows a stored report to the clusters a user
may see.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from clusters.models import ClusterGroup
from fleet.access.restrict import groups_where
from fleet.audit.services import record
from fleet.core.errors import DomainError, ErrorKind
from fleet.rollouts.models import SyncedState
from fleet.sources.models import PathMapping, RenderedManifest
from policies import gate
from policies.choices import Enforcement, PreviewStatus
from policies.engine import RegoEngine, get_engine
from policies.models import Policy, PolicyBinding, PolicyPreview, PolicyVersion, Waiver
from policies.services.definitions import PolicyDefinition, definition_of
from policies.services.evaluation import choose_bindings, gate_waivers, rendered_objects, target_context
from policies.services.preview_report import report_for, report_lines, summarize, summary_text, whole
from policies.services.reviews import live_entries, user_info

CHUNK = 200  # targets per chunk: one query for their renders, one progress update
LIVE_WORKERS = 8
MAX_OBJECTS_PER_TARGET = 200  # findings listed per target in the report (counts are always whole)


class PreviewError(DomainError):
    """A proposal that cannot be previewed (unknown policy, bad enforcement, ...)."""


# --------------------------------------------------------------------------------------------- proposal


@dataclass(frozen=True)
class BindingChange:
    """The binding as proposed: ``id`` None for a new binding."""

    id: int | None = None
    cluster_group_id: int | None = None
    enforcement: str = Enforcement.DENY
    pinned_version_id: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Proposal:
    """A proposed change of one policy: a new version's definition (``content``) and/or a binding."""

    policy_id: int | None
    policy_name: str
    content: Mapping[str, Any] | None = None
    binding: BindingChange | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "policy": self.policy_name,
            "content": dict(self.content) if self.content is not None else None,
            "binding": asdict(self.binding) if self.binding is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        b = data.get("binding")
        return cls(
            data.get("policy_id"),
            str(data.get("policy") or ""),
            data.get("content"),
            BindingChange(**b) if isinstance(b, Mapping) else None,
        )

    def describe(self, groups: Mapping[int, str] | None = None) -> str:
        parts = []
        if self.policy_id is None:
            parts.append(f"new policy {self.policy_name}")
        elif self.content is not None:
            parts.append(f"new version of {self.policy_name}")
        else:
            parts.append(self.policy_name)
        b = self.binding
        if b is not None:
            where = "all clusters"
            if b.cluster_group_id is not None:
                where = (groups or {}).get(b.cluster_group_id, f"group #{b.cluster_group_id}")
            verb = "bound" if b.id is None else f"binding #{b.id} changed to"
            pin = f", pinned to version #{b.pinned_version_id}" if b.pinned_version_id else ""
            state = "" if b.enabled else " (disabled)"
            parts.append(f"{verb} {b.enforcement or 'inherit'} on {where}{pin}{state}")
        return ", ".join(parts)


def binding_proposal(
    binding: PolicyBinding | None,
    *,
    policy: Policy,
    cluster_group: ClusterGroup | None,
    enforcement: str,
    pinned_version: PolicyVersion | None = None,
    enabled: bool = True,
    content: Mapping[str, Any] | None = None,
) -> Proposal:
    """The proposal for a new binding (``binding`` None) or a change of ``binding``."""
    if enforcement not in BINDING_ENFORCEMENTS:
        raise PreviewError(f"enforcement must be one of deny, warn, dryrun or empty, not {enforcement!r}")
    if pinned_version is not None and pinned_version.policy_id != policy.pk:
        raise PreviewError("The pinned version belongs to another policy.", field="pinned_version")
    return Proposal(
        policy.pk,
        policy.name,
        content,
        BindingChange(
            binding.pk if binding is not None else None,
            cluster_group.pk if cluster_group is not None else None,
            enforcement,
            pinned_version.pk if pinned_version is not None else None,
            enabled,
        ),
    )


BINDING_ENFORCEMENTS = frozenset({"", "deny", "warn", "dryrun"})


# --------------------------------------------------------------------------------------------- policy sets


@dataclass
class _Prepared:
    """Bound policies (or the error that makes them block) per key, built once."""

    policies: dict[tuple[Any, ...], list[gate.BoundPolicy]] = field(default_factory=dict)
    errors: dict[tuple[Any, ...], gate.PolicyError] = field(default_factory=dict)
    versions: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)


class _PolicySets:
    """Today's and the proposed policy sets of each cluster group, from the bindings loaded once."""

    def __init__(self, proposal: Proposal) -> None:
        self.proposal = proposal
        rows = list(
            PolicyBinding.objects.filter(enabled=True)
            .select_related("policy__current", "pinned_version", "cluster_group")
            .order_by("id")
        )
        self.today_rows = rows
        self.proposed_rows = self._proposed(rows)
        self.prepared = _Prepared()

    def _proposed(self, rows: list[PolicyBinding]) -> list[PolicyBinding]:
        b = self.proposal.binding
        if b is None:
            return rows
        out = [r for r in rows if r.pk != b.id or b.id is None]
        if b.enabled:
            policy = (
                Policy.objects.select_related("current").get(pk=self.proposal.policy_id)
                if self.proposal.policy_id is not None
                else Policy(name=self.proposal.policy_name)
            )
            pinned = (
                PolicyVersion.objects.get(pk=b.pinned_version_id) if b.pinned_version_id is not None else None
            )
            group = ClusterGroup.objects.get(pk=b.cluster_group_id) if b.cluster_group_id else None
            proposed = PolicyBinding(
                policy=policy, cluster_group=group, enforcement=b.enforcement, pinned_version=pinned
            )
            proposed.pk = b.id  # the changed binding keeps its place in id order (a new one goes last)
            out.append(proposed)
            out.sort(key=lambda r: r.pk if r.pk is not None else 1 << 62)
        return out

    def _key(self, binding: PolicyBinding, proposed: bool) -> tuple[Any, ...]:
        pid = binding.policy_id if binding.policy_id is not None else f"new:{binding.policy.name}"
        override = (
            proposed
            and self.proposal.content is not None
            and pid == (self.proposal.policy_id or f"new:{self.proposal.policy_name}")
            and binding.pinned_version_id is None
        )
        version: Any = "proposed" if override else (binding.pinned_version_id or binding.policy.current_id)
        key = (pid, version, binding.enforcement)
        if key not in self.prepared.policies and key not in self.prepared.errors:
            self._prepare(key, binding, override)
        return key

    def _prepare(self, key: tuple[Any, ...], binding: PolicyBinding, override: bool) -> None:
        policy = binding.policy
        pid = str(key[0])
        number: int | None = None
        try:
            if override:
                assert self.proposal.content is not None  # noqa: S101 - override implies content
                definition = PolicyDefinition.from_content(self.proposal.content)
            else:
                version = binding.pinned_version or policy.current
                if version is None:
                    raise ValueError("the policy has no version")
                definition, number = definition_of(version), version.number
            self.prepared.policies[key] = definition.bound(pid, policy.name, binding.enforcement or None)
        except (ValueError, TypeError) as exc:  # fail closed, as the gate does
            self.prepared.errors[key] = gate.PolicyError(pid, policy.name, str(exc), "format")
        self.prepared.versions[key] = {
            "policy": policy.name,
            "version": "proposed" if override else number,
            "enforcement": binding.enforcement or "inherit",
        }

    def sides(self, group_id: int | None) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
        def applicable(rows: Iterable[PolicyBinding]) -> list[PolicyBinding]:
            return [r for r in rows if r.cluster_group_id is None or r.cluster_group_id == group_id]

        today = {self._key(b, False) for b in choose_bindings(applicable(self.today_rows))}
        proposed = {self._key(b, True) for b in choose_bindings(applicable(self.proposed_rows))}
        return today, proposed

    def policy_ids(self) -> list[int]:
        return sorted(
            {r.policy_id for r in [*self.today_rows, *self.proposed_rows] if r.policy_id is not None}
        )


# --------------------------------------------------------------------------------------------- replay


def _finding_key(v: gate.Violation) -> tuple[str, ...]:
    ref = v.object
    return (
        v.policy_id,
        ref.kind if ref else "",
        ref.namespace if ref else "",
        ref.name if ref else "",
        v.rule,
        v.message,
    )


def _level(v: gate.Violation) -> str:
    if v.waived_by:
        return "waived"
    return {"deny": "block", "warn": "warning"}.get(str(v.enforcement), "recorded")


def compute(
    proposal: Proposal,
    *,
    live: bool = True,
    engine: RegoEngine | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Replay ``proposal`` over the targets it changes and return the report (JSON). Stores nothing.

    ``live``: read each target's live objects for the UPDATE/DELETE reviews (as the gate does); False
    reviews the stored render as it is (every object CREATE, mode ``rendered``)."""
    started = time.monotonic()
    now = now or timezone.now()
    engine = engine or get_engine()
    sets = _PolicySets(proposal)
    mappings = list(
        PathMapping.objects.filter(enabled=True).select_related("cluster_group", "repository").order_by("id")
    )
    sides: dict[int, tuple[frozenset[Any], frozenset[Any]]] = {}
    for m in mappings:
        if m.cluster_group_id not in sides:
            today_keys, proposed_keys = sets.sides(m.cluster_group_id)
            sides[m.cluster_group_id] = (frozenset(today_keys), frozenset(proposed_keys))
    affected = {m.pk: m for m in mappings if sides[m.cluster_group_id][0] != sides[m.cluster_group_id][1]}
    waivers_by_group: dict[int, list[gate.Waiver]] = {}
    policy_ids = sets.policy_ids()
    waiver_rows = list(
        Waiver.objects.filter(policy_id__in=policy_ids, expires_at__gt=now).select_related(
            "policy", "cluster_group"
        )
    )
    states = (
        SyncedState.objects.filter(mapping_id__in=list(affected), commit__isnull=False)
        .select_related("cluster", "commit")
        .defer("applied", "drift")
        .order_by("mapping_id", "cluster__name")
    )
    total = states.count()
    report_targets: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    used_waivers: set[int] = set()
    done = 0
    if progress is not None:
        progress(0, total)
    for start in range(0, total, CHUNK):
        chunk = list(states[start : start + CHUNK])
        renders: dict[tuple[Any, ...], tuple[Any, str]] = {
            (r[0], r[1], r[2]): (r[3], r[4])
            for r in RenderedManifest.objects.filter(
                commit_id__in={s.commit_id for s in chunk},
                mapping_id__in={s.mapping_id for s in chunk},
                cluster_id__in={s.cluster_id for s in chunk},
                status="ok",
            ).values_list("commit_id", "mapping_id", "cluster_id", "resources", "namespace")
        }
        entries: list[tuple[SyncedState, list[gate.RenderedObject] | None, str, str]] = []
        for s in chunk:
            found = renders.get((s.commit_id, s.mapping_id, s.cluster_id))
            if found is None:
                entries.append((s, None, "", "no stored render of the last synced commit"))
                continue
            resources, namespace = found
            entries.append((s, rendered_objects(resources or []), namespace, ""))
        lives = _read_live(entries, affected) if live else {}
        for s, objects, namespace, missing in entries:
            mapping = affected[s.mapping_id]
            group = mapping.cluster_group
            today, proposed = sides[mapping.cluster_group_id]
            if group.pk not in waivers_by_group:
                waivers_by_group[group.pk] = gate_waivers(
                    [w for w in waiver_rows if w.cluster_group_id in (None, group.pk)], group.name
                )
            live_state = lives.get(s.pk)
            problem = missing or (live_state if isinstance(live_state, str) else "")
            row = _replay(
                s,
                mapping,
                objects,
                namespace,
                problem,
                live_state if live else None,
                today,
                proposed,
                sets.prepared,
                waivers_by_group[group.pk],
                engine,
                now,
            )
            used_waivers.update(int(w) for w in row.pop("_waivers"))
            counts = row.pop("_counts")
            g = groups.setdefault(str(group.pk), {"name": group.name, "counts": Counter(), "clusters": set()})
            g["counts"].update(counts)
            g["clusters"].add(s.cluster_id)
            if row["interesting"]:
                report_targets.append(row)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    group_out = {
        gid: {"name": g["name"], "counts": whole(g["counts"]), "clusters": sorted(g["clusters"])}
        for gid, g in groups.items()
    }
    waivers = {
        str(w.pk): {
            "id": w.pk,
            "policy": w.policy.name,
            "kind": w.kind,
            "namespace": w.namespace,
            "name_pattern": w.name_pattern,
            "cluster_group_id": w.cluster_group_id,
            "cluster_group": w.cluster_group.name if w.cluster_group else None,
            "expires_at": w.expires_at.isoformat(),
            "justification": w.justification,
        }
        for w in waiver_rows
        if w.pk in used_waivers
    }
    return {
        "proposal": proposal.as_dict(),
        "description": proposal.describe({m.cluster_group_id: m.cluster_group.name for m in mappings}),
        "live": live,
        "engine": engine.name,
        "at": now.isoformat(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "policies": {
            "today": _versions(sets, set().union(*(v[0] for v in sides.values())) if sides else set()),
            "proposed": _versions(sets, set().union(*(v[1] for v in sides.values())) if sides else set()),
        },
        "counts": summarize(group_out, None),
        "groups": group_out,
        "targets": report_targets,
        "waivers": waivers,
    }


def _versions(sets: _PolicySets, keys: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return sorted(
        (sets.prepared.versions[k] for k in keys if k in sets.prepared.versions),
        key=lambda v: (v["policy"], str(v["version"]), v["enforcement"]),
    )


def _read_live(
    entries: Sequence[tuple[SyncedState, list[gate.RenderedObject] | None, str, str]],
    mappings: Mapping[int, PathMapping],
) -> dict[int, Any]:
    """Each target's live state through the connector (the gate's reads), in parallel; the reason when it
    cannot be read."""
    from fleet.rollouts import ports

    def one(item: tuple[SyncedState, list[gate.RenderedObject] | None, str, str]) -> Any:
        s, objects, _ns, _missing = item
        if objects is None:
            return None
        mapping = mappings[s.mapping_id]
        try:
            return ports.live_state(
                s.cluster,
                mapping,
                [dict(o.obj) for o in objects if o.obj is not None],
                s.inventory or [],
                mapping.cluster_group.prune,
            )
        except Exception as exc:  # unreachable: said per cluster, never guessed
            return f"{s.cluster.name} could not be read: {type(exc).__name__}: {exc}"[:500]
        finally:
            close_old_connections()

    if not entries:
        return {}
    with ThreadPoolExecutor(max_workers=min(LIVE_WORKERS, len(entries))) as pool:
        return {e[0].pk: r for e, r in zip(entries, pool.map(one, entries), strict=True)}


def _replay(
    s: SyncedState,
    mapping: PathMapping,
    objects: list[gate.RenderedObject] | None,
    namespace: str,
    problem: str,
    live_state: Any,
    today: frozenset[tuple[Any, ...]],
    proposed: frozenset[tuple[Any, ...]],
    prepared: _Prepared,
    waivers: Sequence[gate.Waiver],
    engine: RegoEngine,
    now: datetime,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cluster": s.cluster.name,
        "cluster_id": s.cluster_id,
        "group_id": mapping.cluster_group_id,
        "group": mapping.cluster_group.name,
        "mapping": mapping.name,
        "mapping_id": mapping.pk,
        "commit": s.commit.sha if s.commit is not None else "",
    }
    counts: Counter[str] = Counter(targets=1)
    if problem or objects is None:
        counts["unreachable"] = 1
        row.update(
            review="unreachable",
            reason=problem,
            today="unknown",
            proposed="unknown",
            change="unknown",
            objects=[],
            errors=[],
            interesting=True,
            _counts=counts,
            _waivers=[],
        )
        return row
    if live_state is not None:
        objects = live_entries(objects, live_state)
    ctx = target_context(mapping, s.cluster, s.commit, namespace=namespace)
    ctx = replace(ctx, user_info=user_info(None, s.commit.author_email if s.commit is not None else ""))

    def run(keys: Iterable[tuple[Any, ...]]) -> tuple[list[gate.Violation], list[gate.PolicyError]]:
        keys = sorted(keys, key=repr)
        policies = [p for k in keys for p in prepared.policies.get(k, [])]
        errors = [prepared.errors[k] for k in keys if k in prepared.errors]
        if not policies:
            return [], errors
        decision = gate.evaluate_target(objects, policies, ctx, waivers, engine=engine, now=now)
        return decision.violations, [*errors, *decision.errors]

    shared_v, shared_e = run(today & proposed)
    old_v, old_e = run(today - proposed)
    new_v, new_e = run(proposed - today)
    today_v, today_e = shared_v + old_v, shared_e + old_e
    prop_v, prop_e = shared_v + new_v, shared_e + new_e
    before = {(_finding_key(v), _level(v)): v for v in today_v}
    after = {(_finding_key(v), _level(v)): v for v in prop_v}
    found: list[dict[str, Any]] = []
    for key, v in after.items():
        level = key[1]
        if level == "recorded":
            continue
        if level == "waived":
            status = "waived"
        else:
            status = ("unchanged_" if key in before else "new_") + level
        found.append(_finding(v, status))
    for key, v in before.items():
        if key[1] in ("block", "warning") and key not in after:
            found.append(_finding(v, f"resolved_{key[1]}"))
    status_counts = Counter(f["status"] for f in found)
    counts.update(
        new_blocks=status_counts["new_block"],
        resolved_blocks=status_counts["resolved_block"],
        unchanged_blocks=status_counts["unchanged_block"],
        new_warnings=status_counts["new_warning"],
        resolved_warnings=status_counts["resolved_warning"],
        unchanged_warnings=status_counts["unchanged_warning"],
        waived=status_counts["waived"],
    )
    today_outcome = str(gate.decide(today_v, today_e)[0])
    proposed_outcome = str(gate.decide(prop_v, prop_e)[0])
    blocked = str(gate.Outcome.BLOCKED)
    warned = str(gate.Outcome.WARNED)
    counts.update(
        blocked_today=int(today_outcome == blocked),
        blocked_proposed=int(proposed_outcome == blocked),
        warned_today=int(today_outcome == warned),
        warned_proposed=int(proposed_outcome == warned),
        newly_blocked=int(proposed_outcome == blocked and today_outcome != blocked),
        unblocked=int(today_outcome == blocked and proposed_outcome != blocked),
    )
    if today_outcome == proposed_outcome:
        change = "unchanged"
    elif proposed_outcome == blocked:
        change = "newly_blocked"
    elif today_outcome == blocked:
        change = "unblocked"
    else:
        change = f"{today_outcome}_to_{proposed_outcome}"
    order = {"new_block": 0, "resolved_block": 1, "new_warning": 2, "waived": 3, "resolved_warning": 4}
    found.sort(key=lambda f: (order.get(f["status"], 9), f["kind"], f["namespace"], f["name"], f["policy"]))
    ops = Counter(o.operation for o in objects)
    row.update(
        review="live" if live_state is not None else "rendered",
        reason="",
        operations={op: ops.get(op, 0) for op in ("CREATE", "UPDATE", "DELETE")},
        today=today_outcome,
        proposed=proposed_outcome,
        change=change,
        objects=found[:MAX_OBJECTS_PER_TARGET],
        objects_total=len(found),
        errors=sorted({f"{e.policy_name}: {e.message}" for e in prop_e if e not in today_e})[:20],
        interesting=bool(found) or today_outcome != "passed" or proposed_outcome != "passed",
        _counts=counts,
        _waivers=sorted({v.waived_by for v in prop_v if v.waived_by and str(v.waived_by).isdigit()}),
    )
    return row


def _finding(v: gate.Violation, status: str) -> dict[str, Any]:
    ref = v.object
    return {
        "status": status,
        "policy": v.policy_name,
        "enforcement": str(v.enforcement),
        "rule": v.rule,
        "message": v.message[:1000],
        "kind": ref.kind if ref else "",
        "namespace": ref.namespace if ref else "",
        "name": ref.name if ref else "",
        "source_file": ref.source_file if ref else "",
        "waived_by": int(v.waived_by) if v.waived_by and str(v.waived_by).isdigit() else None,
    }


# --------------------------------------------------------------------------------------------- stored


def _check_may_preview(user: Any, proposal: Proposal) -> None:
    group_id = proposal.binding.cluster_group_id if proposal.binding is not None else None
    scope = groups_where(user, PolicyPreview, "add")
    if not scope.covers(group_id):
        raise PreviewError(
            "You may not preview policy changes in this scope."
            if group_id is not None
            else "Only a role on all clusters may preview a change of a policy on all clusters.",
            kind=ErrorKind.FORBIDDEN,
        )


def validate(proposal: Proposal) -> None:
    """Refuse a proposal that cannot be replayed, with the field at fault."""
    if proposal.policy_id is not None and not Policy.objects.filter(pk=proposal.policy_id).exists():
        raise PreviewError("No such policy.", field="policy")
    if proposal.policy_id is None and (proposal.content is None or proposal.binding is None):
        raise PreviewError("A new policy needs its definition and a binding to be previewed.", field="policy")
    if proposal.content is None and proposal.binding is None:
        raise PreviewError("Propose a new version or a binding change.", field="binding")
    if proposal.content is not None:
        if not isinstance(proposal.content, Mapping):
            raise PreviewError("The definition must be an object (style, modules, ...).", field="content")
        try:
            PolicyDefinition.from_content(proposal.content)
        except Exception as exc:  # any shape of bad input is a 400 on the field
            raise PreviewError(f"The definition does not parse: {exc}", field="content") from None
    b = proposal.binding
    if b is not None:
        if b.enforcement not in BINDING_ENFORCEMENTS:
            raise PreviewError("enforcement must be deny, warn, dryrun or empty.", field="enforcement")
        if (
            b.id is not None
            and not PolicyBinding.objects.filter(pk=b.id, policy_id=proposal.policy_id or 0).exists()
        ):
            raise PreviewError("No such binding of this policy.", field="binding")
        if (
            b.pinned_version_id is not None
            and not PolicyVersion.objects.filter(
                pk=b.pinned_version_id, policy_id=proposal.policy_id or 0
            ).exists()
        ):
            raise PreviewError("The pinned version belongs to another policy.", field="pinned_version")
        if b.cluster_group_id is not None and not ClusterGroup.objects.filter(pk=b.cluster_group_id).exists():
            raise PreviewError("No such cluster group.", field="cluster_group")


def start(
    user: Any, proposal: Proposal, *, live: bool = True, binding: PolicyBinding | None = None
) -> PolicyPreview:
    """Store a pending preview of ``proposal`` for ``user`` (checked: policypreview.add in the proposal's
    scope), audited (``policypreview.create``), and queue the job after commit."""
    from fleet.core import dispatch
    from policies import tasks

    if user is not None:
        _check_may_preview(user, proposal)
    validate(proposal)
    b = proposal.binding
    with transaction.atomic():
        preview = PolicyPreview.objects.create(
            policy_id=proposal.policy_id,
            policy_name=proposal.policy_name[:100],
            cluster_group_id=b.cluster_group_id if b is not None else None,
            binding=binding
            if binding is not None
            else (PolicyBinding.objects.filter(pk=b.id).first() if b is not None and b.id else None),
            proposal={**proposal.as_dict(), "live": live},
            description=proposal.describe(dict(ClusterGroup.objects.values_list("id", "name")))[:300],
            created_by=user if user is not None and user.pk else None,
            created_by_name=user.get_username()[:150] if user is not None and user.pk else "system",
        )
        record(
            "policypreview.create",
            preview,
            scope=preview.cluster_group,
            after={"proposal": _audit_proposal(proposal), "live": live},
            message=f"impact preview #{preview.pk}: {preview.description}",
        )
        dispatch.send(tasks.run_preview, preview.pk)
    return preview


def _audit_proposal(proposal: Proposal) -> dict[str, Any]:
    out = proposal.as_dict()
    if out.get("content") is not None:  # the definition is long: its hash says which one
        out["content"] = PolicyDefinition.from_content(proposal.content or {}).content_hash()
    return out


def run(preview_id: int, *, engine: RegoEngine | None = None) -> PolicyPreview:
    """The background job: replay the stored proposal, updating progress and heartbeat; store the report
    (or the error), audited (``policypreview.finish``). Running it again recomputes it; a start past
    ``FLEETGATE_PREVIEW_MAX_ATTEMPTS`` fails it instead (policies/services/preview_jobs.py)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from policies.services import preview_jobs

    started = preview_jobs.begin(preview_id)
    if started is None:
        return PolicyPreview.objects.get(pk=preview_id)
    preview = started

    def progress(done: int, total: int) -> None:
        preview_jobs.beat(preview_id, done, total)

    try:
        report = compute(
            Proposal.from_dict(preview.proposal),
            live=bool(preview.proposal.get("live", True)),
            engine=engine,
            progress=progress,
        )
    except Exception as exc:
        preview.refresh_from_db()
        if isinstance(exc, SoftTimeLimitExceeded):
            limit = getattr(settings, "FLEETGATE_PREVIEW_TIME_LIMIT", 0)
            error = (f"the job ran longer than its time limit ({limit} s, FLEETGATE_PREVIEW_TIME_LIMIT) and "
                     f"was stopped after {preview.done} of {preview.total} targets")
        else:
            error = f"{type(exc).__name__}: {exc}"
        preview_jobs.fail(preview, error)
        raise
    preview.refresh_from_db()
    preview.status = PreviewStatus.DONE
    preview.report = report
    preview.finished = timezone.now()
    # One transaction: whoever sees the job done also finds its audit row.
    with transaction.atomic():
        preview.save(update_fields=["status", "report", "finished"])
        record(
            "policypreview.finish",
            preview,
            scope=preview.cluster_group,
            after={"counts": report["counts"]},
            message=f"impact preview #{preview.pk}: {summary_text(report['counts'])}",
        )
    return preview


__all__ = [
    "BindingChange",
    "PreviewError",
    "Proposal",
    "binding_proposal",
    "compute",
    "report_for",
    "report_lines",
    "run",
    "start",
    "summary_text",
    "validate",
]
