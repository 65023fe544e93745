from __future__ import annotations

import secrets

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from clusters.models import dns_label
from fleet.access.restrict import RestrictedQuerySet
from fleet.core.fields import EncryptedTextField
from fleet.core.models import TimestampedModel
from fleet.sources.choices import CommitStatus, Renderer, RepoAuth
from fleet.sources.validators import validate_repo_path, validate_repository_url


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class Repository(TimestampedModel):
    """A Git repository Fleetgate follows on one branch."""

    name = models.CharField(max_length=100, unique=True, validators=[dns_label])
    url = models.CharField("URL", max_length=500, validators=[validate_repository_url])
    branch = models.CharField(max_length=200, default="main")
    auth_method = models.CharField(max_length=16, choices=RepoAuth.choices, default=RepoAuth.NONE)
    username = models.CharField(max_length=200, blank=True, help_text="HTTPS user name for the token.")
    token = EncryptedTextField(help_text="HTTPS access token (encrypted at rest).")
    ssh_private_key = EncryptedTextField(help_text="SSH private key (encrypted at rest).")
    ssh_known_hosts = models.TextField(blank=True, help_text="known_hosts lines for the SSH host.")
    poll_interval = models.PositiveIntegerField(
        default=60, help_text="Seconds between polls; 0 disables polling (webhooks only)."
    )
    webhook_secret = EncryptedTextField(default=new_webhook_secret, help_text="Shared secret for webhooks.")
    enabled = models.BooleanField(default=True)
    head_sha = models.CharField(max_length=64, blank=True, editable=False)
    last_fetched = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mappings__cluster_group"
    write_scope_path = None

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name


class PathMapping(TimestampedModel):
    """A path (or glob) of a repository, rendered for and synced to the clusters of one group."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="mappings")
    name = models.CharField(max_length=100, validators=[dns_label])
    path = models.CharField(max_length=500, validators=[validate_repo_path])
    cluster_group = models.ForeignKey(
        "clusters.ClusterGroup", on_delete=models.PROTECT, related_name="mappings"
    )
    renderer = models.CharField(max_length=16, choices=Renderer.choices, default=Renderer.AUTO)
    values = models.JSONField(default=dict, blank=True, help_text="Values for Helm and ${...} substitution.")
    target_namespace = models.CharField(
        max_length=63,
        blank=True,
        validators=[dns_label],
        help_text="Namespace for namespaced objects that name none (default: 'default').",
    )
    enabled = models.BooleanField(default=True)
    last_rendered_sha = models.CharField(max_length=64, blank=True, editable=False)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "cluster_group"

    class Meta:
        ordering = ["repository__name", "name"]
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="mapping_unique_name")]

    def __str__(self) -> str:
        return f"{self.repository.name}/{self.name}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.values is not None and not isinstance(self.values, dict):
            raise ValidationError({"values": "Values must be an object."})


sha_validator = RegexValidator(r"^[0-9a-f]{40}([0-9a-f]{24})?$", "A full hexadecimal commit SHA.")


class Commit(models.Model):
    """A commit Fleetgate has seen on a repository's branch."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="commits")
    sha = models.CharField(max_length=64, validators=[sha_validator])
    parent_sha = models.CharField(max_length=64, blank=True)
    author_name = models.CharField(max_length=200, blank=True)
    author_email = models.CharField(max_length=254, blank=True)
    message = models.TextField(blank=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=CommitStatus.choices, default=CommitStatus.SEEN)
    forced = models.BooleanField(default=False, help_text="Arrived by a force-push that rewrote history.")
    sequence = models.PositiveIntegerField(default=0, validators=[MinValueValidator(0)])

    objects = RestrictedQuerySet.as_manager()
    scope_path = "repository__mappings__cluster_group"

    class Meta:
        ordering = ["-sequence", "-id"]
        constraints = [models.UniqueConstraint(fields=["repository", "sha"], name="commit_unique_sha")]

    def __str__(self) -> str:
        return f"{self.repository.name}@{self.sha[:10]}"

    @property
    def short_sha(self) -> str:
        return self.sha[:10]
