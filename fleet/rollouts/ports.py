"""The rollouts app's only doors to the other parts: rendering, the policy gate and the Kubernetes connector.

Every call the rollout services make to sources, policies or clusters goes through a function here, so
that wiring another implementation is a change in this one file:

- ``render_mapping(commit, mapping, clusters)``: ``fleet.sources.services.manifests.mapping_manifests``,
  the stored ``RenderedManifest`` rows when they exist, otherwise rendered now as the fetch renders;
- ``rollout_strategy(commit, mapping)``: the fleet.yaml ``rolloutStrategy`` of the mapping at the commit
  (``fleet.sources.services.strategy``);
- ``policy_decisions(commit, mapping, targets)``: the policies app's
  ``evaluate_targets`` (bound policies and waivers in force, the configured Rego engine, an Evaluation
  stored per target, audited);
- ``live_state``, ``plan``, ``apply``, ``wait_healthy``, ``drift``: ``clusters.connector.Connector`` over the
  official ``kubernetes`` client, with credentials and options from ``clusters.services`` (connectors are
  reused per process, see ``connect``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from clusters.connector import ClusterCredentials, Connector, ConnectorOptions, RetryPolicy
from clusters.connector.outcomes import ApplyOutcome as ApplyOutcome  # the shapes the rollouts record
from clusters.connector.outcomes import DriftOutcome as DriftOutcome
from clusters.connector.outcomes import HealthOutcome as HealthOutcome
from clusters.connector.outcomes import apply_outcome, drift_outcome, health_outcome
from clusters.connector.results import LiveState
from fleet.sources.services.manifests import CommitNotFound as CommitNotFound  # what render_mapping raises
from fleet.sources.services.manifests import ManifestsUnavailable as ManifestsUnavailable
from fleet.sources.services.manifests import RenderFailed as RenderFailed
from fleet.sources.services.manifests import mapping_manifests, objects_by_cluster

# --------------------------------------------------------------------------------------------- rendering


def render_mapping(commit: Any, mapping: Any, clusters: Sequence[Any]) -> dict[int, list[dict[str, Any]]]:
    """The objects each cluster receives from ``mapping`` at ``commit``: {cluster id: [object, ...]}, from
    the sources app's one manifests service (stored render, else rendered now).

    Raises ManifestsUnavailable (RenderFailed, CommitNotFound) when they cannot be given."""
    return objects_by_cluster(mapping_manifests(mapping, clusters, commit=commit))


def rollout_strategy(commit: Any, mapping: Any) -> dict[str, Any] | None:
    """The rollout strategy the mapping's fleet.yaml declares at ``commit`` (``{"source": "fleet.yaml",
    "file", "spec", "notes"}``), or None: ``fleet.sources.services.strategy.declared_strategy``.

    Raises ManifestsUnavailable (RenderFailed, CommitNotFound) when it cannot be read."""
    from fleet.sources.services.strategy import declared_strategy

    found = declared_strategy(mapping, commit)
    return None if found is None else found.to_dict()


# --------------------------------------------------------------------------------------------- the gate


@dataclass
class PolicyResult:
    outcome: str  # passed | warned | blocked
    summary: dict[str, Any] = field(default_factory=dict)


def policy_decisions(
    commit: Any,
    mapping: Any,
    targets: Sequence[tuple[Any, Sequence[Any]]],
    *,
    reviews: Any = None,
    user_info: dict[str, Any] | None = None,
) -> dict[int, PolicyResult]:
    """The gate's decision for each (cluster, objects) target of one mapping at one commit: the policies
    app evaluates the bound policies and waivers in force, stores an Evaluation per target and audits.

    ``reviews`` ({cluster id: policies.services.reviews.TargetReview}) says how each target was read;
    ``user_info`` is the userInfo of the reviews."""
    from policies.services.evaluation import evaluate_targets

    namespace = mapping.target_namespace or ""
    result = evaluate_targets(
        commit,
        mapping,
        [(c, list(objs), namespace) for c, objs in targets],
        reviews=reviews or {},
        user_info=user_info,
    )
    out: dict[int, PolicyResult] = {}
    for target in result.results:
        summary = target.decision.as_dict()
        summary["evaluation_id"] = target.evaluation.pk if target.evaluation is not None else None
        out[target.cluster.pk] = PolicyResult(str(target.decision.outcome), summary)
    return out


def review_targets(
    targets: Sequence[tuple[Any, Sequence[dict[str, Any]], LiveState | str | None]],
    *,
    create_only_allowed: bool,
) -> tuple[list[tuple[Any, list[Any]]], dict[int, Any]]:
    """The gate's targets from each (cluster, objects, live state or the reason it could not be read):
    CREATE/UPDATE entries by the live objects plus a DELETE per prune; an unreadable target is reviewed as
    CREATE when ``create_only_allowed``, else it cannot be reviewed. Returns (targets, reviews)."""
    from policies.services import reviews as rv

    out: list[tuple[Any, list[Any]]] = []
    modes: dict[int, Any] = {}
    for cluster, objects, live in targets:
        if isinstance(live, LiveState):
            out.append((cluster, rv.live_entries(list(objects), live)))
            modes[cluster.pk] = rv.TargetReview(rv.LIVE)
        else:
            reason = live or "the live state was not read"
            out.append((cluster, list(objects)))
            # A pull-mode cluster has no live read, only its agent's reports: before the first report of
            # the mapping (nothing of it is managed there yet) its objects are reviewed as CREATE, and say so.
            modes[cluster.pk] = rv.TargetReview.unreadable(
                reason, create_only_allowed=create_only_allowed or is_pull(cluster))
    return out, modes


def review_user(user: Any, author_email: str) -> dict[str, Any]:
    """userInfo of the reviews: the user who asked for the rollout, else the commit author."""
    from policies.services.reviews import user_info

    return user_info(user, author_email)


# --------------------------------------------------------------------------------------------- clusters


def credentials(cluster: Any) -> ClusterCredentials:
    from clusters.services import credentials_from_cluster

    return credentials_from_cluster(cluster)


def retry_policy(attempts: int) -> RetryPolicy:
    """The rollout's retry policy per request: ``attempts`` tries, 0.2 s apart and doubling, 30 s at most."""
    return RetryPolicy(attempts=max(1, attempts), base_delay=0.2, deadline=30.0)


def connector_options() -> ConnectorOptions:
    """The clusters app's options (FLEETGATE_KUBE_CONNECT_TIMEOUT, _READ_TIMEOUT, _DISCOVERY_CACHE_DIR), with
    the rollout's retry policy (FLEETGATE_KUBE_RETRIES) and a discovery cache shared under VAR_DIR."""
    from clusters.services import connector_options as base_options

    overrides: dict[str, Any] = {"retry": retry_policy(int(settings.FLEETGATE_KUBE_RETRIES))}
    if not getattr(settings, "FLEETGATE_KUBE_DISCOVERY_CACHE_DIR", None):
        overrides["cache_dir"] = str(settings.VAR_DIR / "kube-discovery")
    return base_options(**overrides)


_CONNECTORS: OrderedDict[tuple[Any, ...], Connector] = OrderedDict()
_CONNECTORS_LOCK = threading.Lock()
KEEP_CONNECTORS = 64  # per process: HTTP pools and discovery of the clusters used most recently


@contextlib.contextmanager
def connect(cluster: Any, impersonate: str = "") -> Iterator[Connector]:
    """A connector for the cluster, reused within the process (keyed by its address and credentials).
    ``impersonate``: the user every request acts as (a restricted group's service account)."""
    if is_pull(cluster):
        raise RuntimeError(f"{cluster.name} is a pull-mode cluster: Fleetgate does not contact it")
    creds = credentials(cluster)
    if impersonate:
        creds = dataclasses.replace(creds, impersonate=impersonate)
    key = (cluster.pk, hashlib.sha256(repr(sorted(vars(creds).items())).encode()).hexdigest())
    with _CONNECTORS_LOCK:
        kube = _CONNECTORS.pop(key, None)
    if kube is None:
        kube = Connector(creds, connector_options())
    try:
        yield kube
    except BaseException:
        kube.close()  # a failed connection is not kept
        raise
    kube.client.flush_discovery()  # what this use discovered, for other processes: one write, not one a step
    with _CONNECTORS_LOCK:
        _CONNECTORS[key] = kube
        while len(_CONNECTORS) > KEEP_CONNECTORS:
            _, old = _CONNECTORS.popitem(last=False)
            old.close()


def identity(mapping: Any) -> str:
    """The user the mapping's reads, dry runs, applies and drift checks impersonate ('' for the cluster's
    own credentials): its group's allow-list service account (clusters/tenancy.py)."""
    from clusters.tenancy import impersonation_for

    return impersonation_for(mapping.cluster_group)


def allow_rules(mapping: Any) -> Any:
    """The mapping's group allow-list rules (plain data, clusters/allowlist.py), or None when unrestricted:
    the connector checks them again where discovery knows a kind's scope (plan and apply)."""
    from clusters.tenancy import rules_for

    return rules_for(mapping.cluster_group)


def mapping_key(mapping: Any) -> str:
    """The tracking id of a mapping's objects (what prune and drift recognise as ours)."""
    return f"{mapping.repository.name}-{mapping.name}"[:63]


def is_pull(cluster: Any) -> bool:
    """A pull-mode cluster: Fleetgate never contacts it; its agent claims work and reports live state."""
    return getattr(cluster, "connection_mode", "push") == "pull"


def _agent_report(cluster: Any, mapping: Any) -> tuple[list[dict[str, Any]], Any]:
    """(reported live objects, when) of the agent's last report for (mapping, cluster); raises
    AgentReportMissing when there is none yet."""
    from fleet.rollouts.models import SyncedState
    from fleet.rollouts.reported import AgentReportMissing

    row = (SyncedState.objects.filter(mapping=mapping, cluster=cluster)
           .values_list("live", "live_reported_at").first())
    if row is None or row[1] is None:
        raise AgentReportMissing(
            f"pull mode: no report from the agent of {cluster.name} for this mapping yet"
        )
    return list(row[0] or []), row[1]


def live_state(
    cluster: Any,
    mapping: Any,
    objects: Sequence[dict[str, Any]],
    inventory: Sequence[dict[str, Any]],
    prune: bool = True,
) -> LiveState:
    """What the cluster holds for ``objects`` now, and what a sync would prune: the reads of the plan,
    for the policy gate's UPDATE and DELETE reviews. Raises when the cluster cannot be read. A pull-mode
    cluster: from its agent's last report (``fleet/rollouts/reported.py``); raises AgentReportMissing
    without one."""
    if is_pull(cluster):
        from fleet.rollouts import reported

        live, _at = _agent_report(cluster, mapping)
        return reported.live_state(objects, live, inventory,
                                   default_namespace=mapping.target_namespace or "default", prune=prune)
    with connect(cluster, identity(mapping)) as kube:
        return kube.read_live(
            list(objects),
            mapping=mapping_key(mapping),
            default_namespace=mapping.target_namespace or "default",
            previous_inventory=list(inventory),
            prune=prune,
        )


def plan(
    cluster: Any,
    mapping: Any,
    objects: Sequence[dict[str, Any]],
    inventory: Sequence[dict[str, Any]],
    prune: bool = True,
    live: LiveState | None = None,
) -> dict[str, Any]:
    """The server-side dry-run diff of ``objects`` against the live cluster, with counts. ``live`` (from
    :func:`live_state`, read for the gate) spares reading the live objects a second time. A pull-mode
    cluster: a client-side diff against its agent's last report, ``"source": "agent report"``."""
    if is_pull(cluster):
        from fleet.rollouts import reported

        objs, at = _agent_report(cluster, mapping)
        namespace = mapping.target_namespace or "default"
        known = live if live is not None else reported.live_state(
            objects, objs, inventory, default_namespace=namespace, prune=prune)
        return reported.plan(objects, known, default_namespace=namespace, reported_at=at.isoformat())
    with connect(cluster, identity(mapping)) as kube:
        result = kube.plan(
            list(objects),
            mapping=mapping_key(mapping),
            default_namespace=mapping.target_namespace or "default",
            previous_inventory=list(inventory),
            prune=prune,
            live=live,
            restrict=allow_rules(mapping),
        )
    return result.to_dict()


def apply(
    cluster: Any,
    mapping: Any,
    objects: Sequence[dict[str, Any]],
    inventory: Sequence[dict[str, Any]],
    prune: bool,
    wave_timeout: float | None = None,
    live: LiveState | None = None,
) -> ApplyOutcome:
    """Ordered server-side apply in sync phases and waves (hooks created and waited for, each wave at most
    ``wave_timeout`` seconds), then prune of what left Git (when ``prune``). ``live``: the objects' live
    state read just before (``live_state``), whose resource versions the apply then does not list again."""
    with connect(cluster, identity(mapping)) as kube:
        result = kube.apply(
            list(objects),
            mapping=mapping_key(mapping),
            default_namespace=mapping.target_namespace or "default",
            prune=prune,
            previous_inventory=list(inventory),
            force=True,
            restrict=allow_rules(mapping),
            wave_timeout=wave_timeout,
            live=live,
        )
    return apply_outcome(result)


def wait_healthy(
    cluster: Any, refs: Sequence[dict[str, Any]], timeout: float, observed: dict[Any, Any] | None = None
) -> HealthOutcome:
    """Poll until the objects are healthy; ``observed``: the apply's answers (``ApplyOutcome.observed``),
    which spare the first poll a read of the objects already healthy then."""
    with connect(cluster) as kube:
        report = kube.wait_healthy(list(refs), timeout=timeout, observed=observed)
    return health_outcome(report)


def drift(cluster: Any, mapping: Any, applied: Sequence[dict[str, Any]]) -> DriftOutcome:
    with connect(cluster, identity(mapping)) as kube:
        report = kube.drift(list(applied), default_namespace=mapping.target_namespace or "default")
    return drift_outcome(report)
