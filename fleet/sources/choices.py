from django.db import models


class RepoAuth(models.TextChoices):
    NONE = "none", "None (public or file://)"
    TOKEN = "token", "HTTPS token"
    SSH = "ssh", "SSH key"


class Renderer(models.TextChoices):
    AUTO = "auto", "Detect"
    PLAIN = "plain", "Plain YAML"
    KUSTOMIZE = "kustomize", "Kustomize"
    HELM = "helm", "Helm"


class CommitStatus(models.TextChoices):
    SEEN = "seen", "Seen"
    RENDERED = "rendered", "Rendered"
    FAILED = "failed", "Render failed"
    BLOCKED = "blocked", "Blocked by policy"
    PASSED = "passed", "Passed the gate"
    SKIPPED = "skipped", "No mapping affected"
