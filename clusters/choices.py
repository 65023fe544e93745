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


