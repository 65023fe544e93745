from django.db import models


class ClusterStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"


class AuthMethod(models.TextChoices):
    TOKEN = "token", "Bearer token"
    CLIENT_CERTIFICATE = "client-certificate", "Client certificate"
    KUBECONFIG = "kubeconfig", "Kubeconfig"


class SyncMode(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic when the gate passes"
    MANUAL = "manual", "Only on request"




class ConnectionMode(models.TextChoices):
    """How Fleetgate reaches a cluster: push (it calls the API server) or pull (an agent on the cluster
    calls Fleetgate for its work; Fleetgate stores no credential for the cluster)."""

    PUSH = "push", "Push (Fleetgate calls the cluster)"
    PULL = "pull", "Pull (an agent on the cluster calls Fleetgate)"


class AgentCredentialKind(models.TextChoices):
    BOOTSTRAP = "bootstrap", "Bootstrap token (one-time)"
    AGENT = "agent", "Agent credential"
