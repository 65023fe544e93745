from django.db import models


class PolicyStyle(models.TextChoices):
    CONFTEST = "conftest", "conftest (deny/warn/violation rules)"
    GATEKEEPER = "gatekeeper", "Gatekeeper ConstraintTemplate"
    VAP = "vap", "ValidatingAdmissionPolicy (CEL) with its binding"
    KYVERNO = "kyverno", "Kyverno ClusterPolicy/Policy (validate rules)"


class Enforcement(models.TextChoices):
    DENY = "deny", "Deny (blocks)"
    WARN = "warn", "Warn (recorded, shown)"
    DRYRUN = "dryrun", "Dry run (recorded only)"


class BindingEnforcement(models.TextChoices):
    INHERIT = "", "Inherit (the Constraint's enforcementAction, else deny)"
    DENY = "deny", "Deny (blocks)"
    WARN = "warn", "Warn (recorded, shown)"
    DRYRUN = "dryrun", "Dry run (recorded only)"


class Decision(models.TextChoices):
    PASSED = "passed", "Passed"
    WARNED = "warned", "Warned"
    BLOCKED = "blocked", "Blocked"
    CANNOT_REVIEW = "cannot_review", "Cannot review"  # the cluster's live state could not be read: blocks


class TestStatus(models.TextChoices):
    NONE = "none", "No tests"
    PASSED = "passed", "All tests passed"
    FAILED = "failed", "Some tests failed"


class PreviewStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
