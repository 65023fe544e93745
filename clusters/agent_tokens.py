"""Pull-mode agent credentials: one-time bootstrap tokens, the agent credentials they are exchanged for,
rotation and revocation (docs/clusters.md "Pull mode").

Only the sha256 of a plain token is stored (``AgentCredential.digest``) with its first 12 characters for
display; the plain token is returned once to the caller and never stored, logged or audited. A lookup by
digest is constant-time with respect to the token's content (the database compares hashes, not secrets).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clusters.choices import AgentCredentialKind
from clusters.models import AgentCredential, Cluster
from fleet.audit.services import record

BOOTSTRAP_PREFIX = "fga_b_"
AGENT_PREFIX = "fga_a_"
PREFIX_CHARS = 12
TOUCH_EVERY = timedelta(seconds=30)  # how often an agent's calls update last_used and agent_seen
ROTATION_GRACE = timedelta(seconds=60)  # the replaced credential works this much longer after a rotation


class AgentTokenRefused(Exception):
    """A bootstrap token that cannot be exchanged (unknown, used, expired, revoked)."""


def digest_of(plain: str) -> str:
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def _new_plain(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def bootstrap_ttl() -> timedelta:
    return timedelta(seconds=int(settings.FLEETGATE_AGENT_BOOTSTRAP_TTL))


def credential_ttl() -> timedelta:
    return timedelta(seconds=int(settings.FLEETGATE_AGENT_CREDENTIAL_TTL))


def rotate_after(cred: AgentCredential) -> datetime:
    """When the agent should rotate its credential: half its life."""
    return cred.created + (cred.expires_at - cred.created) / 2


def _create(cluster: Cluster, kind: str, ttl: timedelta, user: Any = None) -> tuple[str, AgentCredential]:
    plain = _new_plain(BOOTSTRAP_PREFIX if kind == AgentCredentialKind.BOOTSTRAP else AGENT_PREFIX)
    cred = AgentCredential.objects.create(
        cluster=cluster,
        kind=kind,
        digest=digest_of(plain),
        prefix=plain[:PREFIX_CHARS],
        expires_at=timezone.now() + ttl,
        created_by=user if getattr(user, "pk", None) else None,
    )
    return plain, cred


def _shown(cred: AgentCredential) -> dict[str, Any]:
    """What the audit log keeps of a credential: never the token or its digest."""
    return {"kind": cred.kind, "prefix": cred.prefix, "expires_at": cred.expires_at.isoformat()}


def issue_bootstrap(
    cluster: Cluster, user: Any = None, ttl: int | None = None
) -> tuple[str, AgentCredential]:
    """A new one-time bootstrap token for the cluster's agent (earlier unused ones are revoked). Audited
    as ``agent.bootstrap_issued``; the plain token is returned once."""
    lifetime = timedelta(seconds=ttl) if ttl is not None else bootstrap_ttl()
    with transaction.atomic():
        now = timezone.now()
        AgentCredential.objects.filter(
            cluster=cluster, kind=AgentCredentialKind.BOOTSTRAP, used_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now)
        plain, cred = _create(cluster, AgentCredentialKind.BOOTSTRAP, lifetime, user)
        record("agent.bootstrap_issued", cluster, after=_shown(cred),
               message=f"bootstrap token {cred.prefix}… for the agent of {cluster.name}, valid until "
               f"{cred.expires_at.isoformat()}")
    return plain, cred


def exchange(
    plain_bootstrap: str, agent_version: str, kubernetes_version: str
) -> tuple[str, AgentCredential]:
    """Exchange an unused, unexpired, unrevoked bootstrap token for an agent credential: the bootstrap is
    marked used, the cluster's earlier agent credentials are revoked. Raises AgentTokenRefused. Audited as
    ``agent.registered`` (with the cluster as actor when called from the agent API)."""
    if not plain_bootstrap.startswith(BOOTSTRAP_PREFIX):
        raise AgentTokenRefused("not a bootstrap token")
    with transaction.atomic():
        boot = (
            AgentCredential.objects.select_for_update()
            .select_related("cluster")
            .filter(digest=digest_of(plain_bootstrap), kind=AgentCredentialKind.BOOTSTRAP)
            .first()
        )
        now = timezone.now()
        if boot is None:
            raise AgentTokenRefused("unknown bootstrap token")
        if boot.used_at is not None:
            raise AgentTokenRefused("this bootstrap token was used already")
        if boot.revoked_at is not None:
            raise AgentTokenRefused("this bootstrap token was revoked")
        if boot.expires_at <= now:
            raise AgentTokenRefused("this bootstrap token expired")
        cluster = Cluster.objects.select_for_update().get(pk=boot.cluster_id)
        boot.used_at = boot.last_used = now
        boot.save(update_fields=["used_at", "last_used"])
        AgentCredential.objects.filter(
            cluster=cluster, kind=AgentCredentialKind.AGENT, revoked_at__isnull=True
        ).update(revoked_at=now)
        plain, cred = _create(cluster, AgentCredentialKind.AGENT, credential_ttl(), boot.created_by)
        values = {"agent_version": agent_version[:64], "agent_seen": now}
        if kubernetes_version:
            values["kubernetes_version"] = kubernetes_version[:64]
        Cluster.objects.filter(pk=cluster.pk).update(**values)
        for k, v in values.items():
            setattr(cluster, k, v)
        record("agent.registered", cluster, after={**_shown(cred), "agent_version": agent_version[:64]},
               message=f"agent {agent_version[:64] or '?'} registered with bootstrap token {boot.prefix}…")
    cred.cluster = cluster
    return plain, cred


def authenticate(plain: str) -> AgentCredential | None:
    """The live, unexpired agent credential of this plain token, or None. The cluster is selected with it."""
    if not plain or not plain.startswith(AGENT_PREFIX) or len(plain) > 200:
        return None
    cred = (
        AgentCredential.objects.select_related("cluster")
        .filter(digest=digest_of(plain), kind=AgentCredentialKind.AGENT, revoked_at__isnull=True)
        .first()
    )
    if cred is None or cred.expires_at <= timezone.now():
        return None
    return cred


def bootstrap_credential(plain: str) -> AgentCredential | None:
    """The bootstrap credential of this plain token (any state; exchange() decides), or None."""
    if not plain or not plain.startswith(BOOTSTRAP_PREFIX) or len(plain) > 200:
        return None
    return (
        AgentCredential.objects.select_related("cluster")
        .filter(digest=digest_of(plain), kind=AgentCredentialKind.BOOTSTRAP)
        .first()
    )


def rotate(cred: AgentCredential) -> tuple[str, AgentCredential]:
    """A new agent credential; the old one keeps working for 60 s (an answer lost in transit is not fatal),
    then expires. Audited as ``agent.rotated``."""
    with transaction.atomic():
        old = AgentCredential.objects.select_for_update().select_related("cluster").get(pk=cred.pk)
        now = timezone.now()
        plain, new = _create(old.cluster, AgentCredentialKind.AGENT, credential_ttl(), old.created_by)
        grace = now + ROTATION_GRACE
        if old.expires_at > grace:
            old.expires_at = grace
            old.save(update_fields=["expires_at"])
        # Credentials replaced by earlier rotations and still in their grace period stay so; no others live.
        AgentCredential.objects.filter(
            cluster=old.cluster, kind=AgentCredentialKind.AGENT, revoked_at__isnull=True, expires_at__gt=grace
        ).exclude(pk=new.pk).update(revoked_at=now)
        record("agent.rotated", old.cluster, before=_shown(old), after=_shown(new),
               message=f"agent credential {old.prefix}… replaced by {new.prefix}…")
    new.cluster = old.cluster
    return plain, new


def revoke(cluster: Cluster, user: Any = None) -> int:
    """Revoke every live credential (bootstrap and agent) of the cluster; returns how many. Audited as
    ``agent.revoked`` (also when there was nothing to revoke)."""
    with transaction.atomic():
        now = timezone.now()
        live = AgentCredential.objects.filter(
            cluster=cluster, revoked_at__isnull=True, expires_at__gt=now
        ).exclude(kind=AgentCredentialKind.BOOTSTRAP, used_at__isnull=False)
        prefixes = list(live.values_list("prefix", flat=True))
        count = live.update(revoked_at=now)
        record("agent.revoked", cluster, after={"revoked": count, "prefixes": prefixes},
               message=f"{count} agent credential(s) of {cluster.name} revoked")
    return count


def touch(cred: AgentCredential, agent_version: str = "") -> None:
    """Note an agent call: the credential's last use and the cluster's agent_seen (one UPDATE each, only
    when TOUCH_EVERY passed, so a polling agent does not write on every call)."""
    now = timezone.now()
    if cred.last_used is None or now - cred.last_used > TOUCH_EVERY:
        AgentCredential.objects.filter(pk=cred.pk).update(last_used=now)
        cred.last_used = now
    cluster = cred.cluster
    values: dict[str, Any] = {}
    if cluster.agent_seen is None or now - cluster.agent_seen > TOUCH_EVERY:
        values["agent_seen"] = now
    if agent_version and agent_version[:64] != cluster.agent_version:
        values["agent_version"] = agent_version[:64]
    if values:
        Cluster.objects.filter(pk=cluster.pk).update(**values)
        for k, v in values.items():
            setattr(cluster, k, v)


def status(cluster: Cluster) -> dict[str, Any]:
    """The cluster's agent: connected (a live credential and a call within 3 report intervals), version,
    last call, and its credentials (never a digest)."""
    now = timezone.now()
    creds = list(AgentCredential.objects.filter(cluster=cluster).order_by("-created", "-id")[:20])
    window = timedelta(seconds=3 * max(int(settings.FLEETGATE_AGENT_REPORT_INTERVAL),
                                       int(settings.FLEETGATE_AGENT_POLL_WAIT)))
    live = [c for c in creds if c.kind == AgentCredentialKind.AGENT and c.revoked_at is None
            and c.expires_at > now]
    connected = bool(live) and cluster.agent_seen is not None and now - cluster.agent_seen <= window
    return {
        "connection_mode": cluster.connection_mode,
        "connected": connected,
        "agent_version": cluster.agent_version,
        "agent_seen": cluster.agent_seen,
        "credentials": [
            {
                "kind": c.kind,
                "prefix": c.prefix,
                "created": c.created,
                "expires_at": c.expires_at,
                "used_at": c.used_at,
                "last_used": c.last_used,
                "revoked_at": c.revoked_at,
                "live": c.revoked_at is None and c.expires_at > now
                and not (c.kind == AgentCredentialKind.BOOTSTRAP and c.used_at is not None),
            }
            for c in creds
        ],
    }
