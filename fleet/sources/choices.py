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
    UNVERIFIED = "unverified", "Refused: signature not verified"


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


class VerificationMode(models.TextChoices):
    """Whether a repository's commits must carry a signature by one of its trusted keys."""

    OFF = "off", "Off"
    REQUIRED = "required", "Required"


class KeyKind(models.TextChoices):
    OPENPGP = "openpgp", "OpenPGP"
    SSH = "ssh", "SSH"


class Verification(models.TextChoices):
    """The signature check of one commit (values of fleet.sources.git.verify)."""

    UNCHECKED = "unchecked", "Not checked"
    VERIFIED = "verified", "Verified"
    UNSIGNED = "unsigned", "Not signed"
    UNTRUSTED_KEY = "untrusted_key", "Signed by an untrusted key"
    BAD_SIGNATURE = "bad_signature", "Bad signature"
    EXPIRED_KEY = "expired_key", "Signed by an expired key"
    EXPIRED_SIGNATURE = "expired_signature", "Signature expired"
    REVOKED_KEY = "revoked_key", "Signed by a revoked key"
    UNSUPPORTED = "unsupported", "Unsupported signature"
    ERROR = "error", "Verification failed"
