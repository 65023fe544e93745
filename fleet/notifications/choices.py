from django.db import models


class EventType(models.TextChoices):
    COMMIT_BLOCKED = "commit_blocked", "Commit blocked by policy"
    APPROVAL_NEEDED = "approval_needed", "Approval needed"
    ROLLOUT_FAILED = "rollout_failed", "Rollout failed"
    ROLLOUT_HALTED = "rollout_halted", "Rollout halted"
    DRIFT_DETECTED = "drift_detected", "Drift detected"
    SYNC_WINDOW_OPENED = "sync_window_opened", "Sync window opened"
    WAIVER_EXPIRING = "waiver_expiring", "Waiver expiring"


class Channel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (JSON, signed with HMAC-SHA256)"
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams incoming webhook"
    EMAIL = "email", "Email"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


FINAL_DELIVERY_STATES = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.FAILED})
