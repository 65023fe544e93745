"""Policies, their immutable versions, bindings to cluster groups, waivers, and evaluation results.

Design (see docs/policies.md):

* A :class:`Policy` is a name plus its current :class:`PolicyVersion`. A version holds the whole definition
  as JSON (``content``): conftest modules/data/namespaces/combine, or a Gatekeeper ConstraintTemplate with
  its Constraints folded in (one policy = one template and the constraints of its kind), plus test modules.
  Editing a policy creates a new version; versions never change.
* A :class:`PolicyBinding` applies a policy (latest or pinned version) to all clusters or one group.
* A :class:`Waiver` excuses violations of one policy on selected objects until it expires.
* An :class:`Evaluation` is the decision for one (commit, mapping, cluster); :class:`Violation` rows are its
  findings, each naming the waiver that excused it, if any.

Visibility: policies are global documents, visible to anyone holding ``policy.view`` anywhere and written
only by a policy-admin on all clusters. Bindings and waivers of a group are visible to the users of that group
together with the global ones (null group), and written by a policy-admin of that group (global ones only by
a policy-admin on all clusters).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from fleet.access.restrict import RestrictedQuerySet, groups_where, restrict, restrict_by_scope
from fleet.core.models import TimestampedModel
from policies.choices import (
    BindingEnforcement,
    Decision,
    Enforcement,
    PolicyStyle,
    PreviewStatus,
    TestStatus,
)

MAX_WAIVER_DAYS = 90

policy_name = RegexValidator(
    r"^[a-z0-9]([-a-z0-9_.]{0,98}[a-z0-9])?$",
    "Use lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit.",
)


class GlobalViewQuerySet(RestrictedQuerySet):
    """View: anyone holding ``<model>.view`` anywhere sees every row. Writes: ``scope_path`` as usual."""

    def restrict(self, user: Any, action: str = "view") -> models.QuerySet:
        if action == "view":
            scope = groups_where(user, self.model, "view")
            return self if not scope.nowhere else self.none()
        return restrict_by_scope(self, user, action)


class GroupOrGlobalQuerySet(RestrictedQuerySet):
    """View: rows of the user's groups plus the global rows (``cluster_group`` null)."""

    def restrict(self, user: Any, action: str = "view") -> models.QuerySet:
        if action == "view":
            scope = groups_where(user, self.model, "view")
            if scope.everywhere:
                return self
            if scope.nowhere:
                return self.none()
            return self.filter(
                models.Q(cluster_group__isnull=True) | models.Q(cluster_group__in=scope.groups)
            )
        return restrict_by_scope(self, user, action)


class Policy(TimestampedModel):
    name = models.CharField(max_length=100, unique=True, validators=[policy_name])
    description = models.TextField(blank=True)
    style = models.CharField(max_length=16, choices=PolicyStyle.choices)
    kind = models.CharField(
        max_length=100,
        blank=True,
        editable=False,
        help_text="Gatekeeper: the constraint kind of the template.",
    )
    current = models.ForeignKey(
        "PolicyVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    source = models.ForeignKey(
        "PolicySource",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policies",
        editable=False,
        help_text="The Git policy source this policy is synced from, if any.",
    )

    objects = GlobalViewQuerySet.as_manager()
    scope_path = None  # written only by a binding on all clusters

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    @property
    def language(self) -> str:
        """The language the policy is written in: Rego/conftest, Rego/Gatekeeper, VAP (CEL) or Kyverno."""
        from policies.gate import language_of

        return language_of(self.style)


class PolicyVersion(models.Model):
    """One immutable version of a policy's definition. Never updated after it is created."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content = models.JSONField(help_text="The whole definition: style, modules, data, template, constraints.")
    content_hash = models.CharField(max_length=80)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    commit_sha = models.CharField(max_length=64, blank=True, help_text="Git commit it was synced from.")
    test_status = models.CharField(max_length=8, choices=TestStatus.choices, default=TestStatus.NONE)
    test_results = models.JSONField(default=list, blank=True)
    engine = models.CharField(max_length=16, blank=True, help_text="The engine that compiled and tested it.")

    objects = GlobalViewQuerySet.as_manager()
    scope_path = None

    class Meta:
        ordering = ["policy_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="policyversion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValidationError("Policy versions are immutable: edit the policy to create a new version.")
        super().save(*args, **kwargs)


class PolicySource(TimestampedModel):
    """A path of a Git repository holding policies (templates, constraints, .rego, data files)."""

    repository = models.ForeignKey(
        "sources.Repository", on_delete=models.CASCADE, related_name="policy_sources"
    )
    path = models.CharField(max_length=500, help_text="Directory in the repository, e.g. policies/.")
    name = models.CharField(
        max_length=100,
        validators=[policy_name],
        help_text="Name of the conftest policy made of the .rego files.",
    )
    enabled = models.BooleanField(default=True)
    bind_group = models.ForeignKey(
        "clusters.ClusterGroup",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Bind imported policies to this group (empty: all clusters) when an enforcement is set.",
    )
    bind_enforcement = models.CharField(
        max_length=8,
        blank=True,
        choices=Enforcement.choices,
        help_text="Create bindings with this enforcement for new policies (empty: no bindings).",
    )
    last_synced_sha = models.CharField(max_length=64, blank=True, editable=False)
    last_synced = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    objects = GlobalViewQuerySet.as_manager()
    scope_path = None

    class Meta:
        ordering = ["repository_id", "path"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "path"], name="policysource_unique_path")
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.path}"


class PolicyBinding(TimestampedModel):
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="bindings")
    cluster_group = models.ForeignKey(
        "clusters.ClusterGroup",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="policy_bindings",
        help_text="Empty: all clusters.",
    )
    enforcement = models.CharField(
        max_length=8, blank=True, choices=BindingEnforcement.choices, default="deny"
    )
    pinned_version = models.ForeignKey(
        PolicyVersion,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="+",
        help_text="Evaluate this version instead of the latest.",
    )
    enabled = models.BooleanField(default=True)
    # Scheduled enforcement (docs/policies.md#scheduled-enforcement): the binding runs as ``enforcement``
    # (dryrun) until ``enforce_at``, when the periodic task switches it to ``enforce_as`` (audited).
    enforce_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the scheduled switch happens."
    )
    enforce_as = models.CharField(
        max_length=8,
        blank=True,
        choices=Enforcement.choices,
        editable=False,
        help_text="The enforcement the binding switches to at enforce_at.",
    )
    preview = models.ForeignKey(
        "PolicyPreview",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The impact preview of the scheduled enforcement.",
    )

    objects = GroupOrGlobalQuerySet.as_manager()
    scope_path = "cluster_group"

    class Meta:
        ordering = ["policy__name", "id"]

    def __str__(self) -> str:
        where = self.cluster_group.name if self.cluster_group_id and self.cluster_group else "all clusters"
        return f"{self.policy.name} on {where} ({self.enforcement or 'inherit'})"

    @property
    def audit_scope(self) -> Any:
        return self.cluster_group

    def clean(self) -> None:
        pinned = self.pinned_version if self.pinned_version_id else None
        if pinned is not None and self.policy_id and pinned.policy_id != self.policy_id:
            raise ValidationError({"pinned_version": "The pinned version belongs to another policy."})

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Every door (API, Django admin, UI, shell, import) that sets the enforcement by hand cancels a
        scheduled switch, so the beat task never flips an enforcement someone chose afterwards
        (``policies.services.scheduling.overridden_schedule``; the scheduling service's own saves name
        ``enforce_at`` in ``update_fields`` and are left alone)."""
        from policies.services import scheduling

        cancelled = scheduling.overridden_schedule(self, kwargs)
        super().save(*args, **kwargs)
        if cancelled is not None:
            scheduling.record_unschedule(self, cancelled)


class Waiver(TimestampedModel):
    """Excuses violations of one policy on the selected objects, in a scope, until it expires."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="waivers")
    kind = models.CharField(max_length=100, blank=True, help_text="Object kind (empty: any).")
    namespace = models.CharField(max_length=63, blank=True, help_text="Object namespace (empty: any).")
    name_pattern = models.CharField(max_length=253, blank=True, help_text="Object name glob, e.g. web-*.")
    labels = models.JSONField(default=dict, blank=True, help_text="Labels the object must carry.")
    cluster_group = models.ForeignKey(
        "clusters.ClusterGroup",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="waivers",
        help_text="Empty: all clusters.",
    )
    cluster_pattern = models.CharField(max_length=63, blank=True, help_text="Cluster name glob (empty: any).")
    rule = models.CharField(
        max_length=200,
        blank=True,
        help_text="The rule it excuses (e.g. a Kyverno rule name; empty: any rule of the policy).",
    )
    origin = models.CharField(
        max_length=300,
        blank=True,
        editable=False,
        help_text="Where it was imported from, e.g. kyverno PolicyException team-a/legacy (empty: by hand).",
    )
    expires_at = models.DateTimeField()
    justification = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    author_name = models.CharField(max_length=150, blank=True, editable=False)

    objects = GroupOrGlobalQuerySet.as_manager()
    scope_path = "cluster_group"

    class Meta:
        ordering = ["-expires_at", "id"]

    def __str__(self) -> str:
        what = "/".join(x for x in (self.kind, self.namespace, self.name_pattern) if x) or "any object"
        rule = f" (rule {self.rule})" if self.rule else ""
        return f"waiver #{self.pk} of {self.policy.name}{rule} for {what}"

    @property
    def audit_scope(self) -> Any:
        return self.cluster_group

    @property
    def active(self) -> bool:
        return self.expires_at > timezone.now()

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not (self.justification or "").strip():
            errors["justification"] = "A justification is required."
        if self.expires_at is None:
            errors["expires_at"] = "An expiry is required."
        else:
            now = timezone.now()
            if self.expires_at <= now:
                errors["expires_at"] = "The expiry must be in the future."
            elif self.expires_at > now + timedelta(days=MAX_WAIVER_DAYS):
                errors["expires_at"] = f"A waiver lasts at most {MAX_WAIVER_DAYS} days."
        if not isinstance(self.labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in (self.labels or {}).items()
        ):
            errors["labels"] = "Labels must be an object of strings."
        if errors:
            raise ValidationError(errors)


class Evaluation(models.Model):
    """The gate's decision for one (commit, mapping, cluster)."""

    commit = models.ForeignKey(
        "sources.Commit", null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )
    mapping = models.ForeignKey("sources.PathMapping", on_delete=models.CASCADE, related_name="evaluations")
    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.CASCADE, related_name="evaluations")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reasons = models.JSONField(default=list, blank=True)
    review = models.JSONField(
        default=dict,
        blank=True,
        help_text="How the target was reviewed: {mode: live|create_only|cannot_review|rendered, reason, "
        "operations: {CREATE, UPDATE, DELETE}}.",
    )
    errors = models.JSONField(default=list, blank=True)
    object_count = models.PositiveIntegerField(default=0)
    evaluations = models.PositiveIntegerField(default=0, help_text="Policy x object evaluations.")
    deny_count = models.PositiveIntegerField(default=0)
    warn_count = models.PositiveIntegerField(default=0)
    dryrun_count = models.PositiveIntegerField(default=0)
    waived_count = models.PositiveIntegerField(default=0)
    engine = models.CharField(max_length=16, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    policy_versions = models.JSONField(
        default=list, blank=True, help_text="[{policy_id, policy, version, enforcement, group}] as evaluated."
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mapping__cluster_group"

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["commit", "mapping", "cluster"], name="evaluation_target_idx")]

    def __str__(self) -> str:
        return f"evaluation #{self.pk}: {self.decision}"

    @property
    def audit_scope(self) -> Any:
        return self.mapping.cluster_group


class ViolationQuerySet(RestrictedQuerySet):
    """Violations are seen by whoever may see their evaluation (permission ``evaluation.view``)."""

    def restrict(self, user: Any, action: str = "view") -> models.QuerySet:
        if action != "view":
            return self.none()
        visible = restrict(Evaluation.objects.all(), user, "view")
        return self.filter(evaluation__in=visible.values("pk"))


class Violation(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="violations")
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    policy_name = models.CharField(max_length=200)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    enforcement = models.CharField(max_length=8, choices=Enforcement.choices)
    rule = models.CharField(max_length=200, blank=True)
    language = models.CharField(
        max_length=32, blank=True, help_text="Rego/conftest, Rego/Gatekeeper, VAP (CEL) or Kyverno."
    )
    message = models.TextField()
    api_version = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=100, blank=True)
    namespace = models.CharField(max_length=63, blank=True)
    name = models.CharField(max_length=253, blank=True)
    source_file = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)
    waived_by = models.ForeignKey(
        Waiver, null=True, blank=True, on_delete=models.SET_NULL, related_name="uses"
    )

    objects = ViolationQuerySet.as_manager()
    scope_path = "evaluation__mapping__cluster_group"

    class Meta:
        ordering = ["evaluation_id", "id"]

    def __str__(self) -> str:
        return f"{self.policy_name}: {self.message[:80]}"


class PolicyPreview(models.Model):
    """The impact of a proposed policy change, replayed over what the clusters in scope run now.

    ``proposal``: {policy_id, policy, content (a new version's definition, or null), binding: {id,
    cluster_group_id, enforcement, pinned_version_id, enabled} or null}. ``report``: see
    policies/services/preview.py; it is narrowed to the reader's clusters when shown."""

    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    policy_name = models.CharField(max_length=100)
    cluster_group = models.ForeignKey(
        "clusters.ClusterGroup",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The group of the proposed binding (empty: all clusters).",
    )
    binding = models.ForeignKey(
        PolicyBinding, null=True, blank=True, on_delete=models.SET_NULL, related_name="previews"
    )
    proposal = models.JSONField(default=dict)
    description = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=8, choices=PreviewStatus.choices, default=PreviewStatus.PENDING)
    done = models.PositiveIntegerField(default=0, help_text="Targets replayed so far.")
    total = models.PositiveIntegerField(default=0, help_text="Targets to replay.")
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    # A job killed midway (OOM, SIGKILL) never says so: the job writes a heartbeat with its progress, and the
    # beat task policies.reap_stalled_previews fails a pending/running preview whose heartbeat is too old;
    # a redelivered job counts its starts and gives up after FLEETGATE_PREVIEW_MAX_ATTEMPTS.
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the job.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times the job has started.")

    objects = GroupOrGlobalQuerySet.as_manager()
    scope_path = "cluster_group"

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"preview #{self.pk} of {self.policy_name}"

    @property
    def audit_scope(self) -> Any:
        return self.cluster_group
