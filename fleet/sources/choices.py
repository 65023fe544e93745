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


class RenderStatus(models.TextChoices):
    """The outcome of one mapping at one commit (MappingRender)."""

    PENDING = "pending", "Pending"
    RENDERED = "rendered", "Rendered"
    FAILED = "failed", "Render failed"
    SKIPPED = "skipped", "Skipped"


class RenderReason(models.TextChoices):
    """Why a mapping was rendered at a commit."""

    NEW = "new", "First render of the mapping"
    PATHS = "paths", "Files under the mapping changed"
    CONFIG = "config", "The mapping, its group or its clusters changed"
    BASE_UNKNOWN = "base_unknown", "The previous render's commit is gone (history rewritten)"
    MANUAL = "manual", "Requested"


class ManifestStatus(models.TextChoices):
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class FetchTrigger(models.TextChoices):
    POLL = "poll", "Poll"
    WEBHOOK = "webhook", "Webhook"
    API = "api", "API"
    COMMAND = "command", "Command"
    TASK = "task", "Task"
