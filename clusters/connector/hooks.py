"""Sync phases, waves and hooks (Argo CD's and Helm's), and objects named by the server (``generateName``).

Which step of one cluster's sync an object belongs to, and in which order the steps run, the way Argo CD's
gitops-engine orders a sync (``docs/user-guide/sync-waves.md``, ``resource_hooks.md``) and Helm runs its
hooks:

* Phases run in the order PreSync, Sync, PostSync; SyncFail runs only when the sync failed. An object
  without a hook annotation is in the Sync phase. ``argocd.argoproj.io/hook: Skip`` is never applied.
* ``argocd.argoproj.io/sync-wave`` (an integer, negative too; 0 by default) orders the objects within a
  phase; a Helm hook's ``helm.sh/hook-weight`` is its wave when it has no sync-wave. Within a wave objects
  go by kind (Argo's kind order, custom resources last) and then by name.
* Helm hooks map onto phases as Argo CD maps them: ``pre-install``/``pre-upgrade`` → PreSync,
  ``post-install``/``post-upgrade`` → PostSync; unlike Argo CD, only the hooks of the operation this sync
  is (install or upgrade, see :func:`classify`) run. An Argo CD hook annotation wins over Helm's.
* Delete policies: Argo's ``argocd.argoproj.io/hook-delete-policy`` (``BeforeHookCreation`` when none is
  given, ``HookSucceeded``, ``HookFailed``) and Helm's ``helm.sh/hook-delete-policy``
  (``before-hook-creation`` by default, ``hook-succeeded``, ``hook-failed``).
* A hook is created on every sync (a named hook after deleting the previous one under
  BeforeHookCreation); it is never in the inventory (never pruned by name) nor in the drift intent.
* An object without ``metadata.name`` but with ``metadata.generateName`` is created with a POST and named by
  the server. A hook of that form is a new object on each sync; a plain (non-hook) one is also created on
  each sync, as Argo CD does (it can never find such an object live, so it is always out of sync and
  created again). Neither is pruned or checked for drift.

Django-free: plain manifests in, plain data out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ARGO_HOOK = "argocd.argoproj.io/hook"
ARGO_DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"
ARGO_WAVE = "argocd.argoproj.io/sync-wave"
HELM_HOOK = "helm.sh/hook"
HELM_WEIGHT = "helm.sh/hook-weight"
HELM_DELETE_POLICY = "helm.sh/hook-delete-policy"

PRE_SYNC, SYNC, POST_SYNC, SYNC_FAIL, SKIP = "PreSync", "Sync", "PostSync", "SyncFail", "Skip"
PHASES = (PRE_SYNC, SYNC, POST_SYNC, SYNC_FAIL)
_PHASE_ORDER = {PRE_SYNC: -1, SYNC: 0, POST_SYNC: 1, SYNC_FAIL: 2}
# Argo CD also knows PreDelete and PostDelete: they run only when an Application is deleted, never in a
# sync, so a sync leaves them out (as Argo CD does).
_DELETE_ONLY = ("PreDelete", "PostDelete")

BEFORE_HOOK_CREATION, HOOK_SUCCEEDED, HOOK_FAILED = "BeforeHookCreation", "HookSucceeded", "HookFailed"
_HELM_POLICIES = {
    "before-hook-creation": BEFORE_HOOK_CREATION,
    "hook-succeeded": HOOK_SUCCEEDED,
    "hook-failed": HOOK_FAILED,
}
_HELM_PHASES = {
    "pre-install": (PRE_SYNC, True),
    "post-install": (POST_SYNC, True),
    "pre-upgrade": (PRE_SYNC, False),
    "post-upgrade": (POST_SYNC, False),
}

# gitops-engine's kind order within a wave (Helm's older install order); other kinds (custom resources)
# come after these.
ARGO_KIND_ORDER = (
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
    "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
)
_KIND_RANK = {kind: i for i, kind in enumerate(ARGO_KIND_ORDER)}


class HookError(ValueError):
    """A hook or wave annotation that cannot be read (a wave that is not an integer...)."""


@dataclass(frozen=True)
class Step:
    """Where one object runs in a sync: its phase and wave, whether it is a hook (and whose), its delete
    policies, and whether the server names it (``generateName``)."""

    phase: str
    wave: int
    hook: str = ""  # "argocd" | "helm" | "" (not a hook)
    delete_policies: tuple[str, ...] = ()
    generated: bool = False

    @property
    def order(self) -> tuple[int, int]:
        return (_PHASE_ORDER[self.phase], self.wave)

    @property
    def created(self) -> bool:
        """Created anew on every sync (a hook, or an object named by the server), never applied by name."""
        return bool(self.hook) or self.generated

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase, "wave": self.wave}
        if self.hook:
            out["hook"] = self.hook
            out["delete_policies"] = list(self.delete_policies)
        if self.generated:
            out["generated"] = True
        return out


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    notes = (meta or {}).get("annotations") if isinstance(meta, Mapping) else None
    return notes if isinstance(notes, Mapping) else {}


def generate_name(obj: Mapping[str, Any]) -> str:
    """The ``generateName`` of an object that has no name ('' when it has one)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping) or meta.get("name"):
        return ""
    value = meta.get("generateName")
    return value if isinstance(value, str) else ""


def _csv(value: Any) -> list[str]:
    return [p.strip() for p in str(value).split(",") if p.strip()] if isinstance(value, str) else []


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise HookError(f"{what} must be an integer, not {value!r}") from None


def is_helm_hook(obj: Mapping[str, Any]) -> bool:
    return bool(_csv(annotations_of(obj).get(HELM_HOOK)))


def created(obj: Mapping[str, Any]) -> bool:
    """Created on each sync rather than applied by name: a hook (Argo CD's, Skip aside, or Helm's) or an
    object named by the server. Such an object has no live counterpart to diff, prune or check for drift."""
    argo = _csv(annotations_of(obj).get(ARGO_HOOK))
    if argo:
        return SKIP not in argo
    return is_helm_hook(obj) or bool(generate_name(obj))


def uses_helm_hooks(manifests: Iterable[Mapping[str, Any]]) -> bool:
    return any(is_helm_hook(m) and not _csv(annotations_of(m).get(ARGO_HOOK)) for m in manifests)


def classify(obj: Mapping[str, Any], *, install: bool = True) -> list[Step]:
    """The steps ``obj`` runs in during one sync (none: it is skipped). ``install``: the sync is a Helm
    install (the release's objects are not on the cluster yet), else an upgrade; it decides which Helm
    hooks run. Raises HookError for a wave or weight that is not an integer, or an unknown hook type."""
    notes = annotations_of(obj)
    generated = bool(generate_name(obj))
    wave_text = notes.get(ARGO_WAVE)
    argo = _csv(notes.get(ARGO_HOOK))
    if argo:
        unknown = [t for t in argo if t not in (*PHASES, SKIP, *_DELETE_ONLY)]
        if unknown:
            raise HookError(f"unknown {ARGO_HOOK} {', '.join(unknown)} (PreSync, Sync, PostSync, SyncFail, "
                            "Skip, PreDelete or PostDelete)")
        if SKIP in argo:
            return []
        wave = _int(wave_text, ARGO_WAVE) if wave_text is not None else 0
        policies = _policies(_csv(notes.get(ARGO_DELETE_POLICY)), ARGO_DELETE_POLICY,
                             {p: p for p in (BEFORE_HOOK_CREATION, HOOK_SUCCEEDED, HOOK_FAILED)})
        phases = [t for t in PHASES if t in argo]  # PreDelete/PostDelete: not run by a sync
        return [Step(p, wave, "argocd", policies, generated) for p in phases]
    helm = _csv(notes.get(HELM_HOOK))
    if helm:
        phases = []
        for name in helm:
            phase_install = _HELM_PHASES.get(name)
            if phase_install and phase_install[1] == install and phase_install[0] not in phases:
                phases.append(phase_install[0])
        if wave_text is not None:
            wave = _int(wave_text, ARGO_WAVE)
        else:
            weight = notes.get(HELM_WEIGHT)
            wave = _int(weight, HELM_WEIGHT) if weight not in (None, "") else 0
        policies = _policies(_csv(notes.get(HELM_DELETE_POLICY)), HELM_DELETE_POLICY, _HELM_POLICIES)
        phases.sort(key=lambda p: _PHASE_ORDER[p])
        return [Step(p, wave, "helm", policies, generated) for p in phases]
    wave = _int(wave_text, ARGO_WAVE) if wave_text is not None else 0
    return [Step(SYNC, wave, "", (), generated)]


def _policies(given: list[str], what: str, known: Mapping[str, str]) -> tuple[str, ...]:
    unknown = [p for p in given if p not in known]
    if unknown:
        raise HookError(f"unknown {what} {', '.join(unknown)} ({', '.join(known)})")
    out = tuple(dict.fromkeys(known[p] for p in given))
    return out or (BEFORE_HOOK_CREATION,)


def kind_rank(kind: str) -> int:
    return _KIND_RANK.get(kind, len(ARGO_KIND_ORDER))


def task_order(step: Step, kind: str, name: str) -> tuple[int, int, int, str]:
    """Argo CD's order of sync tasks: phase, wave, kind, name."""
    return (*step.order, kind_rank(kind), name)


def describe(step: Step) -> str:
    """A short text for plans and results: ``PreSync hook (Argo CD), wave -1``."""
    what = {"argocd": " hook (Argo CD)", "helm": " hook (Helm)"}.get(step.hook, "")
    text = f"{step.phase}{what}, wave {step.wave}"
    if step.generated:
        text += ", create (generated name)"
    return text
