from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from fleet.access.choices import Role
from fleet.access.restrict import RestrictedQuerySet


class RoleBinding(models.Model):
    """Grants a role to a user or a Django group, on all clusters or within one ClusterGroup."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_bindings",
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="role_bindings"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    scope = models.ForeignKey(
        "clusters.ClusterGroup",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_bindings",
        help_text="Empty: all clusters. Otherwise the role applies only within this cluster group.",
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path: str | None = None  # bindings are managed by admins with global scope only

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, group__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=False)
                ),
                name="rolebinding_one_subject",
            ),
        ]

    def __str__(self) -> str:
        where = self.scope.name if self.scope is not None else "all clusters"
        return f"{self.subject} is {self.role} on {where}"

    def clean(self) -> None:
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("A role binding names exactly one subject: a user or a group.")
        duplicate = RoleBinding.objects.filter(
            user=self.user, group=self.group, role=self.role, scope=self.scope
        ).exclude(pk=self.pk)
        if duplicate.exists():
            raise ValidationError("This subject already has this role in this scope.", code="unique")

    @property
    def subject(self) -> str:
        return f"user:{self.user}" if self.user_id else f"group:{self.group}"



TOKEN_PREFIX = "fgt_"  # noqa: S105 (a prefix, not a secret)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class APITokenQuerySet(models.QuerySet["APIToken"]):
    def active(self) -> APITokenQuerySet:
        now = timezone.now()
        return self.filter(models.Q(expires__isnull=True) | models.Q(expires__gt=now))


class APIToken(models.Model):
    """A personal API token. Only a SHA-256 digest is stored; the key is shown once, when created."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    description = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)

    objects = APITokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    @classmethod
    def issue(cls, user, description: str = "", days: int | None = None) -> tuple[APIToken, str]:  # type: ignore[no-untyped-def]
        """Create a token and return it with its key, which is not stored and cannot be shown again."""
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        days = settings.FLEETGATE_API_TOKEN_DAYS if days is None else days
        expires = timezone.now() + timedelta(days=days) if days > 0 else None
        token = cls.objects.create(
            user=user, description=description, prefix=key[:12], digest=_digest(key), expires=expires
        )
        return token, key

    @classmethod
    def authenticate(cls, key: str) -> APIToken | None:
        if not key.startswith(TOKEN_PREFIX) or len(key) > 100:
            return None
        token = cls.objects.active().select_related("user").filter(prefix=key[:12]).first()
        if token is None or not hmac.compare_digest(token.digest, _digest(key)):
            return None
        return token


class ExternalIdentity(models.Model):
    """Links a Fleetgate user to an account at an OpenID Connect provider (issuer and subject).

    Made on the first single sign-on; later sign-ins (and API bearer tokens) find the user by this pair,
    never by user name or e-mail, so a provider account cannot take over a local account of the same name.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)
    last_login = models.DateTimeField(null=True, blank=True)
    # The groups the provider named at the last sign-in (the Django groups they were mapped to).
    groups = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "external identity"
        verbose_name_plural = "external identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="externalidentity_issuer_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.user} at {self.issuer}"
