"""Authentication of pull-mode agents on the agent API (``/api/agent/v1/``, fleet/rollouts/api/agent.py).

Only these views use these classes, and only these classes accept agent tokens: the DRF defaults (OIDC
bearer, API token, session) never map an ``fga_`` token to a user, and an agent token never reaches a view
of another API family. An agent acts as its cluster: the audit actor is ``agent:<cluster>``, with no
Fleetgate user (a browser session on the same request is ignored)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions

from clusters import agent_tokens
from clusters.models import AgentCredential, Cluster
from fleet.core import context


class AgentPrincipal:
    """``request.user`` of an agent call: the cluster's agent, not a Fleetgate user (no pk, no roles)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, cluster: Cluster, credential: AgentCredential) -> None:
        self.cluster = cluster
        self.credential = credential

    def get_username(self) -> str:
        return actor_name(self.cluster)

    def __str__(self) -> str:
        return self.get_username()


def actor_name(cluster: Cluster) -> str:
    return f"agent:{cluster.name}"


def _bearer(request: Any) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1").split()
    if not header or header[0].lower() != "bearer":
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed("Invalid Authorization header: give `Bearer <token>`.")
    return header[1]


class AgentAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer fga_a_…``: a live, unexpired agent credential (clusters/agent_tokens.py)."""

    def authenticate(self, request: Any) -> tuple[AgentPrincipal, AgentCredential] | None:
        plain = _bearer(request)
        if plain is None:
            return None
        cred = agent_tokens.authenticate(plain)
        if cred is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked agent credential.")
        context.set_actor(None, actor_name(cred.cluster))
        return AgentPrincipal(cred.cluster, cred), cred

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="fleetgate-agent"'


class BootstrapAuthentication(AgentAuthentication):
    """``Authorization: Bearer fga_b_…`` for registration: a known bootstrap token (whether it may still be
    exchanged, unused, unexpired and unrevoked, ``agent_tokens.exchange`` decides)."""

    def authenticate(self, request: Any) -> tuple[AgentPrincipal, AgentCredential] | None:
        plain = _bearer(request)
        if plain is None:
            return None
        cred = agent_tokens.bootstrap_credential(plain)
        if cred is None or cred.used_at is not None or cred.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid, used or revoked bootstrap token.")
        context.set_actor(None, actor_name(cred.cluster))
        request._agent_bootstrap = plain
        return AgentPrincipal(cred.cluster, cred), cred


class IsAgent(permissions.BasePermission):
    """The caller authenticated as a pull-mode cluster's agent."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return isinstance(request.user, AgentPrincipal) and request.user.cluster.is_pull
