from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from clusters import allowlist, kubeconfig, selectors, windows
from clusters.choices import AgentCredentialKind, AuthMethod, ClusterStatus, ConnectionMode, SyncMode
from fleet.access.restrict import RestrictedQuerySet
from fleet.core import urlguard
from fleet.core.fields import EncryptedTextField
from fleet.core.models import TimestampedModel

dns_label = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "Use lower-case letters, digits and '-', starting and ending with a letter or digit (at most 63).",
)


def validate_api_url(value: str) -> None:
    if not (value.startswith("https://") or value.startswith("http://")):
        raise ValidationError("The API server URL must start with https:// (or http:// for sandboxes).")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValidationError("The API server URL is not valid (check the host and port).") from None
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Remove the credentials from the URL: give a token, a client certificate or a kubeconfig "
            "instead.",
            code="credentials_in_url",
        )
    try:
        urlguard.check_url(value, urlguard.deny_networks(), what="API server URL")
    except urlguard.URLRefused as exc:
        raise ValidationError(str(exc), code="denied_address") from None


def validate_values(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Values must be an object.")


# What a pull-mode cluster leaves empty: the agent on the cluster holds the access, Fleetgate holds none.
PULL_EMPTY_FIELDS = (
    "api_url", "token", "client_certificate", "client_key", "kubeconfig", "kubeconfig_context", "ca_data",
)


class Cluster(TimestampedModel):
    """A Kubernetes cluster Fleetgate syncs to. Credentials are encrypted at rest and never returned."""

    name = models.CharField(max_length=63, unique=True, validators=[dns_label])
    description = models.CharField(max_length=200, blank=True)
    api_url = models.CharField(
        "API server URL",
        max_length=500,
        blank=True,
        validators=[validate_api_url],
        help_text="Taken from the kubeconfig when one is uploaded.",
    )
    auth_method = models.CharField(max_length=32, choices=AuthMethod.choices, default=AuthMethod.TOKEN)
    token = EncryptedTextField(help_text="Bearer token (encrypted at rest).")
    client_certificate = models.TextField(blank=True, help_text="PEM client certificate.")
    client_key = EncryptedTextField(help_text="PEM client key (encrypted at rest).")
    kubeconfig = EncryptedTextField(help_text="Uploaded kubeconfig (encrypted at rest).")
    kubeconfig_context = models.CharField(max_length=253, blank=True)
    ca_data = models.TextField(
        "CA bundle", blank=True, help_text="PEM certificates that sign the API server's."
    )
    insecure_skip_tls_verify = models.BooleanField(default=False)
    labels = models.JSONField(default=dict, blank=True, validators=[selectors.validate_labels])
    values = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_values],
        help_text="Values for this cluster, layered over the mapping's and the group's when rendering.",
    )
    status = models.CharField(max_length=16, choices=ClusterStatus.choices, default=ClusterStatus.UNKNOWN)
    kubernetes_version = models.CharField(max_length=64, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    connection_mode = models.CharField(
        max_length=16,
        choices=ConnectionMode.choices,
        default=ConnectionMode.PUSH,
        help_text="Push: Fleetgate calls the API server with the stored credentials. Pull: an agent on the "
        "cluster calls Fleetgate for its work; no credential for the cluster is stored.",
    )
    agent_version = models.CharField(max_length=64, blank=True, help_text="Pull mode: the agent's version.")
    agent_seen = models.DateTimeField(null=True, blank=True, help_text="Pull mode: the agent's last call.")

    objects = RestrictedQuerySet.as_manager()
    scope_path = "groups"

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_pull(self) -> bool:
        return self.connection_mode == ConnectionMode.PULL

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.is_pull:
            stored = [f for f in PULL_EMPTY_FIELDS if getattr(self, f)]
            if stored:
                raise ValidationError(
                    {f: "A pull-mode cluster stores no credentials: leave this empty." for f in stored}
                )
            return
        if self.auth_method == AuthMethod.KUBECONFIG:
            if not self.kubeconfig:
                errors["kubeconfig"] = "Upload a kubeconfig."
            else:
                try:
                    creds = kubeconfig.parse(self.kubeconfig, self.kubeconfig_context)
                except ValidationError as exc:
                    errors["kubeconfig"] = "; ".join(exc.messages)
                else:
                    self.kubeconfig_context = creds.context
                    self.api_url = creds.server
                    try:
                        validate_api_url(creds.server)
                    except ValidationError as exc:
                        errors["kubeconfig"] = "The kubeconfig's server: " + "; ".join(exc.messages)
        else:
            if not self.api_url:
                errors["api_url"] = "The API server URL is required."
            if self.auth_method == AuthMethod.TOKEN and not self.token:
                errors["token"] = "A bearer token is required for token authentication."  # noqa: S105
            if self.auth_method == AuthMethod.CLIENT_CERTIFICATE:
                if not self.client_certificate:
                    errors["client_certificate"] = "A client certificate is required."
                if not self.client_key:
                    errors["client_key"] = "A client key is required."
        for field in ("ca_data", "client_certificate"):
            value = getattr(self, field)
            if value and "-----BEGIN CERTIFICATE-----" not in value:
                errors[field] = "Paste PEM certificates (-----BEGIN CERTIFICATE-----)."
        if errors:
            raise ValidationError(errors)

    @property
    def credentials_set(self) -> dict[str, bool]:
        """Which secrets are stored, without their values: what the API shows instead of credentials."""
        return {
            "token": bool(self.token),
            "client_key": bool(self.client_key),
            "kubeconfig": bool(self.kubeconfig),
        }


class ClusterGroup(TimestampedModel):
    """A set of clusters, by label selector plus static includes and excludes, with rollout settings."""

    name = models.CharField(max_length=63, unique=True, validators=[dns_label])
    description = models.CharField(max_length=200, blank=True)
    labels = models.JSONField(
        default=dict,
        blank=True,
        validators=[selectors.validate_labels],
        help_text="The group's own labels (as Kubernetes labels), which a fleet.yaml clusterGroupSelector "
        "matches.",
    )
    selector = models.JSONField(
        default=dict,
        blank=True,
        validators=[selectors.validate_selector],
        help_text="A Kubernetes label selector: {matchLabels: {...}, matchExpressions: [...]}.",
    )
    include = models.ManyToManyField(Cluster, blank=True, related_name="included_in")
    exclude = models.ManyToManyField(Cluster, blank=True, related_name="excluded_from")
    values = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_values],
        help_text="Values for the group's clusters, layered over the mapping's when rendering.",
    )
    members = models.ManyToManyField(
        Cluster,
        blank=True,
        related_name="groups",
        editable=False,
        help_text="Resolved members, kept up to date when clusters or the group change.",
    )

    # Approval
    approval_required = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    sync_mode = models.CharField(max_length=16, choices=SyncMode.choices, default=SyncMode.AUTOMATIC)
    # Rollout
    batch_size = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Clusters per batch."
    )
    batch_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Clusters per batch as a percentage (used when batch size is empty).",
    )
    max_parallel = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    canary_selector = models.JSONField(
        default=dict,
        blank=True,
        validators=[selectors.validate_selector],
        help_text="Clusters matching this selector form the first batch.",
    )
    batch_pause_seconds = models.PositiveIntegerField(default=0)
    failure_threshold = models.PositiveIntegerField(
        default=0, help_text="How many failed clusters a rollout tolerates before it halts."
    )
    health_timeout_seconds = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])
    prune = models.BooleanField(default=True)
    self_heal = models.BooleanField(default=False)
    create_only_review = models.BooleanField(
        default=False,
        help_text="When a member's live state cannot be read, review its objects as CREATE (and say so) "
        "instead of blocking it as 'cannot review'. Off: fail closed.",
    )
    sync_windows = models.JSONField(default=list, blank=True, validators=[windows.validate_windows])

    objects = RestrictedQuerySet.as_manager()
    scope_path = ""

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.batch_size and self.batch_percent:
            raise ValidationError({"batch_percent": "Set a batch size or a percentage, not both."})

    def matches(self, cluster: Cluster, include_ids: set[int], exclude_ids: set[int]) -> bool:
        if cluster.pk in exclude_ids:
            return False
        return cluster.pk in include_ids or selectors.matches(self.selector, cluster.labels)


def _validate_sources(value: object) -> None:
    errors = allowlist.validate_entries(value, "sources", allowlist.SOURCE_KEYS)
    if errors:
        raise ValidationError(errors)


def _validate_namespaces(value: object) -> None:
    errors = allowlist.validate_globs(value, "namespaces")
    if errors:
        raise ValidationError(errors)


def _validate_kinds(value: object) -> None:
    errors = allowlist.validate_entries(value, "kinds", allowlist.ENTRY_KEYS)
    if errors:
        raise ValidationError(errors)


class AllowList(TimestampedModel):
    """A cluster group's tenant allow-list (clusters/allowlist.py, docs/roles.md "Tenant allow-lists"):
    a group that has one is restricted to the listed sources, namespaces and kinds, and its syncs may
    impersonate a service account. Seen by whoever sees the group; written only by the admin role on all
    clusters (clusters/tenancy.py), audited with before/after."""

    cluster_group = models.OneToOneField(ClusterGroup, on_delete=models.CASCADE, related_name="allow_list")
    sources = models.JSONField(
        default=list, blank=True, validators=[_validate_sources],
        help_text='Repositories and paths that may map to the group: [{"repository": glob, "path": glob}] '
        "(repository: name or URL).",
    )
    namespaces = models.JSONField(
        default=list, blank=True, validators=[_validate_namespaces],
        help_text='Namespaces objects may land in: globs, "!glob" excludes.',
    )
    cluster_resources_allow = models.JSONField(
        default=list, blank=True, validators=[_validate_kinds],
        help_text='Cluster-scoped kinds allowed: [{"group": glob, "kind": glob}]. Empty: none.',
    )
    cluster_resources_deny = models.JSONField(
        default=list, blank=True, validators=[_validate_kinds],
        help_text="Cluster-scoped kinds denied even when allowed above.",
    )
    namespace_resources_allow = models.JSONField(
        default=list, blank=True, validators=[_validate_kinds],
        help_text="Namespaced kinds allowed. Empty: every namespaced kind.",
    )
    namespace_resources_deny = models.JSONField(
        default=list, blank=True, validators=[_validate_kinds],
        help_text="Namespaced kinds denied.",
    )
    service_account_namespace = models.CharField(max_length=63, blank=True, validators=[dns_label])
    service_account_name = models.CharField(
        max_length=253, blank=True,
        validators=[RegexValidator(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
                                   "A Kubernetes service account name (lower-case DNS subdomain).")],
        help_text="The service account the group's syncs impersonate (Impersonate-User "
        "system:serviceaccount:NAMESPACE:NAME), where the cluster supports it. Empty: none.",
    )

    class Meta:
        ordering = ["cluster_group__name"]
        verbose_name = "allow-list"

    def __str__(self) -> str:
        return f"allow-list of {self.cluster_group.name}" if self.cluster_group_id else "allow-list"

    def audit_scope(self) -> ClusterGroup:
        return self.cluster_group

    def clean(self) -> None:
        if bool(self.service_account_namespace) != bool(self.service_account_name):
            raise ValidationError(
                {"service_account_name": "Give both the service account's namespace and name, or neither."})

    def rules(self) -> allowlist.Rules:
        sa = (f"{self.service_account_namespace}:{self.service_account_name}"
              if self.service_account_name else "")
        return allowlist.rules_from(
            self.cluster_group.name,
            sources=self.sources or [], namespaces=self.namespaces or [],
            cluster_allow=self.cluster_resources_allow or [], cluster_deny=self.cluster_resources_deny or [],
            namespaced_allow=self.namespace_resources_allow or [],
            namespaced_deny=self.namespace_resources_deny or [],
            service_account=sa,
        )


class AgentCredential(models.Model):
    """A pull-mode agent's bearer token (or the one-time bootstrap token it is exchanged for), kept as the
    sha256 of the plain token only: the plain token is shown once and never stored, logged or audited.
    Services: clusters/agent_tokens.py."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="agent_credentials")
    kind = models.CharField(max_length=16, choices=AgentCredentialKind.choices)
    digest = models.CharField(max_length=64, unique=True, help_text="sha256 (hex) of the plain token.")
    prefix = models.CharField(max_length=12, help_text="The token's first characters, for display.")
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, help_text="Bootstrap: when it was exchanged.")
    last_used = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.prefix}… of {self.cluster.name}"
