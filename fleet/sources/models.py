from __future__ import annotations

import secrets
from typing import Any

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from clusters.models import dns_label
from fleet.access.restrict import RestrictedQuerySet
from fleet.core.fields import EncryptedTextField
from fleet.core.models import TimestampedModel
from fleet.sources.choices import (
    CommitStatus,
    ManifestStatus,
    Renderer,
    RenderReason,
    RenderStatus,
    RepoAuth,
    Verification,
    VerificationMode,
)
from fleet.sources.validators import (
    validate_chart_repository_url,
    validate_directory_glob,
    validate_helm_chart,
    validate_helm_repo,
    validate_helm_version,
    validate_namespace_annotations,
    validate_namespace_labels,
    validate_release_name,
    validate_repo_path,
    validate_repository_url,
    validate_values_files,
)


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
    poll_queued_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the poller last queued a fetch."
    )
    verification_mode = models.CharField(
        max_length=16, choices=VerificationMode.choices, default=VerificationMode.OFF,
        help_text="required: only commits signed by a trusted key are rendered and rolled out.",
    )
    trusted_keys = models.JSONField(
        default=list, blank=True,
        help_text="Public keys whose signatures are trusted: [{name, public_key}] (OpenPGP armored block or "
        "one SSH public key line); kind and fingerprint are filled in when saved.",
    )

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mappings__cluster_group"
    write_scope_path = None

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from fleet.sources.services.signing import normalize_trusted_keys

        try:
            self.trusted_keys = normalize_trusted_keys(self.trusted_keys)
        except ValueError as exc:
            raise ValidationError({"trusted_keys": str(exc)}) from None


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
    helm_release_name = models.CharField(
        max_length=53,
        blank=True,
        validators=[validate_release_name],
        help_text="Helm charts: the release name (.Release.Name); empty: helm.releaseName of fleetgate.yaml "
        "or fleet.yaml, else the chart's name. The release namespace is target_namespace.",
    )
    # A chart from a Helm repository or an OCI registry, named on the mapping itself (Argo CD's source.chart,
    # Flux's HelmRepository/OCIRepository charts); the path then holds its values files (docs/sources.md).
    helm_chart = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_helm_chart],
        help_text="A chart from outside the repository: its name (with helm_repo), an oci://host/path/name "
        "reference, or an https:// URL of one .tgz archive; empty: the chart (or manifests) at the path.",
    )
    helm_repo = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_helm_repo],
        help_text="The Helm repository (https://, index.yaml) or OCI registry path (oci://host/path) of "
        "helm_chart.",
    )
    helm_version = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_helm_version],
        help_text="helm_chart's version or constraint (1.2.3, ^1.2, >= 1.0, < 2.0); empty: the newest "
        "stable one.",
    )
    helm_values_files = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_values_files],
        help_text="Helm values files layered in order over the chart's defaults, under values: paths "
        "relative to the repository root, or chart:<path> for a file inside a chart from a repository.",
    )
    # Argo CD's directory source options, for plain directories (fleet/sources/render/plain.py)
    directory_recurse = models.BooleanField(
        default=True,
        help_text="Plain directories: read subdirectories too (Fleet and Flux do; Argo CD's default is off).",
    )
    directory_include = models.CharField(
        max_length=1000,
        blank=True,
        validators=[validate_directory_glob],
        help_text="Plain directories: only files whose path under the mapped directory matches this glob, "
        "as Argo CD's directory.include ('{a.yaml,b/*.yaml}'; '*' also matches '/').",
    )
    directory_exclude = models.CharField(
        max_length=1000,
        blank=True,
        validators=[validate_directory_glob],
        help_text="Plain directories: leave out files whose path under the mapped directory matches this "
        "glob (Argo CD's directory.exclude; it wins over include).",
    )
    postbuild = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="Flux postBuild.substitute variables ({name: value}) substituted into the rendered objects "
        "as kustomize-controller does (plain and Kustomize); empty: no post-build substitution.",
    )
    # Argo CD's CreateNamespace=true (+ managedNamespaceMetadata), Flux's install.createNamespace: the render
    # gets a Namespace object for target_namespace, applied first and never pruned (docs/sources.md)
    create_namespace = models.BooleanField(
        default=False,
        help_text="Create target_namespace on the clusters (a Namespace object, applied before the others "
        "and kept when it leaves the render, as Argo CD's CreateNamespace=true); needs target_namespace.",
    )
    namespace_labels = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_namespace_labels],
        help_text="Labels of the namespace create_namespace creates (Argo CD "
        "managedNamespaceMetadata.labels).",
    )
    namespace_annotations = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_namespace_annotations],
        help_text="Annotations of the namespace create_namespace creates (Argo CD "
        "managedNamespaceMetadata.annotations).",
    )
    depends_on = models.ManyToManyField(
        "self",
        symmetrical=False,
        blank=True,
        related_name="dependents",
        help_text="Mappings that must be synced and healthy on a cluster before this one syncs there.",
    )
    declared_depends_on = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="Dependencies named by dependsOn in fleetgate.yaml at the last render ('repo/mapping').",
    )
    last_rendered_sha = models.CharField(
        max_length=64, blank=True, editable=False, help_text="The last commit rendered without error."
    )
    last_render_attempt_sha = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="The last commit at which the mapping was rendered or tried (the base for changes).",
    )
    config_fingerprint = models.CharField(
        max_length=80,
        blank=True,
        editable=False,
        help_text="Fingerprint of the mapping, its group and member clusters at the last evaluation.",
    )
    watched_paths = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="Directories outside the path that the last render read (Kustomize bases).",
    )

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
        if self.postbuild is not None:
            from fleet.sources.render.postbuild import validate_variables

            try:
                self.postbuild = validate_variables(self.postbuild)
            except ValueError as exc:
                raise ValidationError({"postbuild": str(exc)}) from None
        self.check_chart()
        self.check_namespace()
        if self.cluster_group_id and self.repository_id and self.path:
            # A restricted group's allow-list names the repositories and paths that may map to it (API and
            # admin call clean(); clusters/tenancy.py lists the other doors).
            from clusters.tenancy import check_mapping_source

            check_mapping_source(self.cluster_group, self.repository, self.path, self.helm_values_files or ())


    def check_namespace(self) -> None:
        """create_namespace needs a target_namespace other than 'default'; labels and annotations of the
        namespace need create_namespace (they would silently do nothing)."""
        from django.core.exceptions import ValidationError

        if self.create_namespace and self.target_namespace in ("", "default"):
            raise ValidationError({"create_namespace": "Needs target_namespace (other than 'default', which "
                                   "every cluster has)."})
        if not self.create_namespace:
            for name in ("namespace_labels", "namespace_annotations"):
                if getattr(self, name):
                    raise ValidationError({name: "Needs create_namespace: Fleetgate labels only a namespace "
                                           "it creates."})

    def chart_spec(self) -> Any:
        """The ``ChartSpec`` of helm_chart/helm_repo/helm_version, or None without a chart."""
        from fleet.sources.charts.spec import ChartSpec

        if not self.helm_chart:
            return None
        return ChartSpec(chart=self.helm_chart, repo=self.helm_repo, version=self.helm_version)

    def check_chart(self) -> None:
        """helm_repo and helm_version need helm_chart; the three must name one chart (ChartSpec.check); a
        chart renders with Helm; chart:<file> values files need a chart from outside the repository."""
        from django.core.exceptions import ValidationError

        from fleet.sources.charts.errors import ChartError
        from fleet.sources.validators import CHART_FILE_PREFIX

        if not self.helm_chart:
            if self.helm_repo or self.helm_version:
                field = "helm_repo" if self.helm_repo else "helm_version"
                raise ValidationError({field: "Needs helm_chart (the chart's name)."})
            if any(str(v).startswith(CHART_FILE_PREFIX) for v in self.helm_values_files or []):
                raise ValidationError({"helm_values_files": "chart:<file> names a file of a chart from a "
                                       "repository: set helm_chart."})
            return
        if "://" not in self.helm_chart and not self.helm_repo:
            raise ValidationError({"helm_chart": "A chart name needs helm_repo (its Helm repository or OCI "
                                   "registry); or give an oci:// reference or an https:// URL of a .tgz."})
        spec = self.chart_spec()
        try:
            spec.check()
        except ChartError as exc:
            message = exc.message.removeprefix("invalid: ").replace("helm.", "helm_")
            field = "helm_repo" if "helm_repo" in message and "helm_chart" not in message else "helm_chart"
            raise ValidationError({field: message}) from None
        if self.renderer not in ("auto", "helm"):
            raise ValidationError({"renderer": f"A mapping with helm_chart renders with Helm, not "
                                   f"{self.renderer}."})


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
    verification = models.CharField(
        max_length=20, choices=Verification.choices, default=Verification.UNCHECKED,
        help_text="The signature check (only while the repository requires signed commits).",
    )
    verification_reason = models.CharField(max_length=500, blank=True)
    signature_format = models.CharField(max_length=16, blank=True, help_text="openpgp, ssh, x509 or empty.")
    signer = models.CharField(max_length=200, blank=True, help_text="OpenPGP user id or SSH key name.")
    signing_key = models.CharField(max_length=100, blank=True, help_text="Fingerprint of the signing key.")
    verified_with = models.CharField(
        max_length=80, blank=True, help_text="Digest of the trusted keys the commit was checked against."
    )

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


class MappingRender(TimestampedModel):
    """The outcome of one mapping at one commit, over every cluster of its group.

    ``failed`` means no cluster of this mapping gets anything from this commit: either every
    RenderedManifest of it is stored with status ok, or none is (only the failed ones, with their error).
    """

    commit = models.ForeignKey(Commit, on_delete=models.CASCADE, related_name="mapping_renders")
    mapping = models.ForeignKey(PathMapping, on_delete=models.CASCADE, related_name="renders")
    status = models.CharField(max_length=16, choices=RenderStatus.choices, default=RenderStatus.PENDING)
    reason = models.CharField(max_length=16, choices=RenderReason.choices, default=RenderReason.PATHS)
    renderer = models.CharField(max_length=16, blank=True)
    cluster_count = models.PositiveIntegerField(default=0)
    object_count = models.PositiveIntegerField(default=0, help_text="Objects over all clusters.")
    rendered_count = models.PositiveIntegerField(default=0, help_text="Renders actually run.")
    reused_count = models.PositiveIntegerField(
        default=0, help_text="Clusters whose result was reused from an identical input."
    )
    failed_count = models.PositiveIntegerField(default=0, help_text="Clusters that failed.")
    error_message = models.TextField(blank=True)
    error_file = models.CharField(max_length=500, blank=True)
    error_line = models.PositiveIntegerField(null=True, blank=True)
    error_cluster = models.CharField(max_length=63, blank=True)
    config_fingerprint = models.CharField(max_length=80, blank=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mapping__cluster_group"

    class Meta:
        ordering = ["commit_id", "mapping_id"]
        constraints = [
            models.UniqueConstraint(fields=["commit", "mapping"], name="mappingrender_unique_commit_mapping")
        ]

    def __str__(self) -> str:
        return f"{self.mapping.repository.name}/{self.mapping.name}@{self.commit.sha[:10]}"

    @property
    def audit_scope(self) -> Any:
        return self.mapping.cluster_group

    def error_dict(self) -> dict[str, Any] | None:
        if self.status != RenderStatus.FAILED:
            return None
        return {
            "message": self.error_message,
            "file": self.error_file or None,
            "line": self.error_line,
            "cluster": self.error_cluster or None,
        }


class RenderedManifest(models.Model):
    """What one cluster receives from one mapping at one commit (or why it failed)."""

    commit = models.ForeignKey(Commit, on_delete=models.CASCADE, related_name="manifests")
    mapping = models.ForeignKey(PathMapping, on_delete=models.CASCADE, related_name="manifests")
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.CASCADE, related_name="rendered_manifests"
    )
    mapping_render = models.ForeignKey(MappingRender, on_delete=models.CASCADE, related_name="manifests")
    input_hash = models.CharField(max_length=80, blank=True, db_index=True)
    renderer = models.CharField(max_length=16, blank=True)
    namespace = models.CharField(max_length=63, blank=True)
    resources = models.JSONField(
        default=list,
        blank=True,
        help_text="Normalized objects: apiVersion, kind, name, namespace, source file, document, object.",
    )
    object_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ManifestStatus.choices, default=ManifestStatus.OK)
    skipped = models.BooleanField(default=False, help_text="doNotDeploy for this cluster.")
    reused = models.BooleanField(default=False, help_text="Copied from an identical earlier render.")
    warnings = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True)
    error_file = models.CharField(max_length=500, blank=True)
    error_line = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mapping__cluster_group"

    class Meta:
        ordering = ["commit_id", "mapping_id", "cluster_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["commit", "mapping", "cluster"], name="renderedmanifest_unique_commit_mapping_cluster"
            )
        ]

    def __str__(self) -> str:
        return f"{self.mapping_id}@{self.commit_id} for {self.cluster_id}"


class ChartRepository(TimestampedModel):
    """Credentials (and a CA) for Helm chart repositories and OCI registries that charts are fetched from.

    A chart whose repository URL starts with ``url`` (the longest match wins) is fetched with these
    credentials, for the mappings of ``cluster_groups`` (none: every group's, which only a role on all
    clusters may set); charts from repositories without an entry, and mappings of other groups, are fetched
    anonymously.  The password is encrypted at rest and never shown (docs/sources.md, Helm charts from
    repositories)."""

    name = models.CharField(max_length=100, unique=True, validators=[dns_label])
    url = models.CharField(
        "URL", max_length=500, unique=True, validators=[validate_chart_repository_url],
        help_text="https://host/path of an index repository, or oci://host[/path] of a registry: every chart "
        "under it uses these credentials.",
    )
    username = models.CharField(max_length=200, blank=True)
    password = EncryptedTextField(help_text="Password or token (encrypted at rest, never shown).")
    ca_bundle = models.TextField(
        blank=True, help_text="PEM certificates trusted for this repository besides the system's."
    )
    description = models.CharField(max_length=500, blank=True)
    cluster_groups = models.ManyToManyField(
        "clusters.ClusterGroup",
        blank=True,
        related_name="chart_repositories",
        help_text="The groups whose mappings may use these credentials (as an Argo CD project's or a Flux "
        "namespace's); empty: every group's, which only a role on all clusters may set.",
    )

    objects = RestrictedQuerySet.as_manager()
    # seen by the groups it serves; added or changed only where the user holds the permission in every one
    # of them (fleet.sources.services.charts.check_chart_repository_scope), and with none only on all clusters
    scope_path = "cluster_groups"

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "chart repositories"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from fleet.sources.charts.errors import ChartError
        from fleet.sources.charts.http import ssl_context

        self.url = self.url.rstrip("/")
        if self.ca_bundle.strip():
            try:
                ssl_context(self.ca_bundle)
            except ChartError:
                raise ValidationError({"ca_bundle": "Not PEM certificates."}) from None
