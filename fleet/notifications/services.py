"""Notifications: subscriptions, the fan-out of an audit event to the subscriptions that may see it, the
delivery of each (retried with backoff, logged, audited) and the periodic scan that records the events the
flow has no moment for (a sync window that opens, a waiver about to expire)."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet.access.restrict import restrict
from fleet.audit.models import AuditEvent
from fleet.audit.redact import snapshot
from fleet.audit.services import record, record_change, seal
from fleet.core import dispatch
from fleet.core.errors import DomainError, ErrorKind
from fleet.core.urlguard import URLRefused, check_url, deny_networks
from fleet.notifications import events, payloads, senders, tasks
from fleet.notifications.choices import FINAL_DELIVERY_STATES, Channel, DeliveryStatus, EventType
from fleet.notifications.models import Delivery, EmittedMark, Subscription, WindowState

# --------------------------------------------------------------------------------------------- subscriptions


def _hint(channel: str, target: str) -> str:
    if channel == Channel.EMAIL:
        return target[:200]
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"[:200]


def clean_target(channel: str, target: str) -> str:
    """The destination, checked: an http(s) URL outside the denied networks, or email addresses."""
    target = (target or "").strip()
    if channel == Channel.EMAIL:
        addresses = [a.strip() for a in target.split(",") if a.strip()]
        if not addresses:
            raise DomainError("Give one or more email addresses, separated by commas.", field="target")
        for address in addresses:
            try:
                EmailValidator()(address)
            except ValidationError:
                raise DomainError(f"{address!r} is not an email address.", field="target") from None
        return ", ".join(addresses)
    if not target.lower().startswith(("http://", "https://")):
        raise DomainError("Give an http:// or https:// URL.", field="target")
    if len(target) > 2000:
        raise DomainError("The URL is longer than 2000 characters.", field="target")
    try:
        check_url(target, deny_networks(), what="notification URL")
    except URLRefused as exc:
        raise DomainError(str(exc), field="target") from None
    return target


def clean_events(values: Any) -> list[str]:
    if not isinstance(values, list) or not values:
        raise DomainError("Choose at least one event.", field="events")
    unknown = [v for v in values if v not in EventType.values]
    if unknown:
        raise DomainError(
            f"Unknown event(s) {', '.join(map(str, unknown))}; known: {', '.join(EventType.values)}.",
            field="events",
        )
    return sorted(set(values))


def check_subject(user: Any, subscription: Subscription) -> None:
    """Exactly one of group, mapping, repository, and one the owner may see."""
    given = [s for s in (subscription.cluster_group, subscription.mapping, subscription.repository) if s]
    if len(given) != 1:
        raise DomainError(
            "Subscribe to exactly one cluster group, mapping or repository.", field="cluster_group"
        )
    subject = given[0]
    if not restrict(type(subject)._default_manager.filter(pk=subject.pk), user, "view").exists():
        field = {"ClusterGroup": "cluster_group", "PathMapping": "mapping"}.get(
            type(subject).__name__, "repository"
        )
        raise DomainError("Not found.", field=field)


def save_subscription(user: Any, subscription: Subscription, *, target: str | None = None) -> str:
    """Create or change a subscription for ``user`` (its owner); audited. Returns the webhook's signing
    secret when one was made (on creating a generic webhook), else ""."""
    creating = subscription.pk is None
    stored = None if creating else Subscription.objects.get(pk=subscription.pk)
    before = snapshot(stored) if stored is not None else None
    if creating:
        subscription.owner = user
    elif stored is not None and stored.channel != subscription.channel:
        raise DomainError("The channel cannot change; create a new subscription.", field="channel")
    subscription.events = clean_events(subscription.events)
    subjects = ("cluster_group_id", "mapping_id", "repository_id")
    if stored is None or any(getattr(stored, f) != getattr(subscription, f) for f in subjects):
        # A new subject must be one the owner may see (an unchanged one is checked at each delivery).
        check_subject(subscription.owner, subscription)
    if target is not None or creating:
        subscription.target = clean_target(subscription.channel, target or "")
        subscription.target_hint = _hint(subscription.channel, subscription.target)
    new_secret = ""
    if subscription.channel == Channel.WEBHOOK and not subscription.secret:
        new_secret = subscription.secret = secrets.token_urlsafe(32)
    if subscription.channel != Channel.WEBHOOK:
        subscription.secret = ""
    with transaction.atomic():
        subscription.save()
        record_change(
            f"subscription.{'create' if creating else 'update'}",
            subscription,
            before,
            message=f"{subscription.name}: {', '.join(subscription.events)} "
            f"of {subscription.subject_label()}",
        )
    return new_secret


def rotate_secret(subscription: Subscription) -> str:
    if subscription.channel != Channel.WEBHOOK:
        raise DomainError("Only a generic webhook has a signing secret.", kind=ErrorKind.CONFLICT)
    with transaction.atomic():
        subscription.secret = secrets.token_urlsafe(32)
        subscription.save(update_fields=["secret", "updated"])
        record("subscription.rotate_secret", subscription, message=f"{subscription.name}: new signing secret")
    return subscription.secret


def delete_subscription(subscription: Subscription) -> None:
    with transaction.atomic():
        record_change("subscription.delete", subscription, snapshot(subscription))
        subscription.delete()


# --------------------------------------------------------------------------------------------- fan-out


def may_see(user: Any, event: events.Event) -> bool:
    """Whether a subscription's owner may see what the event is about: its object and its group."""
    from clusters.models import ClusterGroup

    if user is None or not user.is_active:
        return False
    target = event.target
    if target is not None and not restrict(type(target)._default_manager.filter(pk=target.pk), user).exists():
        return False
    if event.group_id is not None:
        return restrict(ClusterGroup.objects.filter(pk=event.group_id), user).exists()
    return True


def visible_clusters(user: Any, names: list[str]) -> set[str]:
    from clusters.models import Cluster

    return set(restrict(Cluster.objects.filter(name__in=names), user).values_list("name", flat=True))


def payload_for(event: events.Event, subscription: Subscription) -> dict[str, Any]:
    """The generic payload as the subscription's owner may see it (clusters they may not see left out)."""
    shown = visible_clusters(subscription.owner, list(event.per_cluster))
    base = settings.FLEETGATE_NOTIFY_BASE_URL.rstrip("/")
    audit = event.audit_event
    return {
        "version": payloads.PAYLOAD_VERSION,
        "event": str(event.type),
        "title": event.title,
        "summary": event.summary,
        "time": audit.time.isoformat(),
        "audit_sequence": audit.sequence,
        "group": event.group,
        "mapping": event.mapping,
        "repository": event.repository,
        "commit": event.commit,
        "url": f"{base}{event.link}" if event.link and base else "",
        "details": event.details,
        "clusters": {name: info for name, info in event.per_cluster.items() if name in shown},
        "subscription": {"id": subscription.pk, "name": subscription.name},
    }


def candidates(event: events.Event) -> list[Subscription]:
    match = Q(pk__in=[])
    if event.all_groups:
        match |= Q(cluster_group__isnull=False)
    elif event.group_id is not None:
        match |= Q(cluster_group_id=event.group_id)
    if event.mapping_id is not None:
        match |= Q(mapping_id=event.mapping_id)
    if event.repository_id is not None:
        match |= Q(repository_id=event.repository_id)
    rows = Subscription.objects.filter(match, enabled=True).select_related("owner").order_by("pk")
    return [s for s in rows if str(event.type) in s.events]


def fan_out(audit_event_id: int) -> int:
    """One Delivery per subscription that wants this event and whose owner may see it; each is queued.
    Idempotent: a delivery exists once per (subscription, audit event). Returns the number created."""
    audit = AuditEvent.objects.filter(pk=audit_event_id).first()
    if audit is None:
        return 0
    if audit.sequence is None:  # committed, not sealed yet: seal it, so the payload names its sequence
        seal(wait=True)
        audit.refresh_from_db()
    sequence = audit.sequence
    if sequence is None:
        raise RuntimeError(f"audit event {audit.pk} is still pending after sealing")
    event = events.from_audit(audit)
    if event is None:
        return 0
    made = 0
    for subscription in candidates(event):
        if not may_see(subscription.owner, event):
            continue
        if (
            event.type is EventType.COMMIT_BLOCKED
            and Delivery.objects.filter(
                subscription=subscription,
                event_type=EventType.COMMIT_BLOCKED,
                payload__mapping=event.mapping,
                payload__commit=event.commit,
            )
            .exclude(audit_event_id=audit.pk)
            .exists()
        ):
            continue  # the gate's decision and the rollout's block are one event to a subscriber
        payload = payload_for(event, subscription)
        with transaction.atomic():
            delivery, created = Delivery.objects.get_or_create(
                subscription=subscription,
                audit_event_id=audit.pk,
                defaults={
                    "audit_sequence": sequence,
                    "event_type": str(event.type),
                    "channel": subscription.channel,
                    "title": event.title[:300],
                    "payload": payload,
                },
            )
            if created:
                made += 1
                dispatch.send(tasks.deliver, delivery.pk)
    return made


# --------------------------------------------------------------------------------------------- delivery


def _backoff(attempt: int) -> float:
    return min(settings.FLEETGATE_NOTIFY_RETRY_BASE * 2 ** (attempt - 1), settings.FLEETGATE_NOTIFY_RETRY_MAX)


def _send(delivery: Delivery) -> senders.Sent:
    subscription = delivery.subscription
    payload = delivery.payload
    timeout = float(settings.FLEETGATE_NOTIFY_TIMEOUT)
    if subscription.channel == Channel.EMAIL:
        subject, text = payloads.email(payload)
        recipients = [a.strip() for a in subscription.target.split(",") if a.strip()]
        return senders.send_email(recipients, subject, text, timeout=timeout)
    headers = {payloads.EVENT_HEADER: delivery.event_type, payloads.DELIVERY_HEADER: str(delivery.pk)}
    if subscription.channel == Channel.SLACK:
        body = payloads.body(payloads.slack(payload))
    elif subscription.channel == Channel.TEAMS:
        body = payloads.body(payloads.teams(payload))
    else:
        body = payloads.body(payload)
        stamp = int(time.time())
        headers[payloads.TIMESTAMP_HEADER] = str(stamp)
        headers[payloads.SIGNATURE_HEADER] = payloads.sign(subscription.secret, stamp, body)
    return senders.post(subscription.target, body, headers, timeout=timeout)


def _audit(delivery: Delivery, action: str, message: str) -> None:
    record(
        action,
        delivery,
        after={
            "status": delivery.status,
            "attempts": delivery.attempts,
            "response_code": delivery.response_code,
            "error": delivery.error,
            "event": delivery.event_type,
            "audit_sequence": delivery.audit_sequence,
            "channel": delivery.channel,
            "subscription": delivery.subscription_id,
            "destination": delivery.subscription.target_hint,
        },
        message=message,
        target_repr=f"delivery {delivery.pk} of {delivery.event_type} to {delivery.subscription.name}",
    )


def deliver(delivery_id: int) -> str:
    """Send one delivery once more: take its lease, send, record the outcome. A delivery already final, or
    leased by a live attempt, is left alone; a retryable failure is queued again after a backoff."""
    now = timezone.now()
    lease = float(settings.FLEETGATE_NOTIFY_TIMEOUT) * 2 + 30
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("subscription")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return "gone"
        if delivery.status in FINAL_DELIVERY_STATES:
            return str(delivery.status)
        if delivery.status == DeliveryStatus.SENDING and delivery.lease_until and delivery.lease_until > now:
            return "leased"
        if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=1):
            return "not yet"
        delivery.status = DeliveryStatus.SENDING
        delivery.attempts += 1
        delivery.lease_until = now + timedelta(seconds=lease)
        delivery.save(update_fields=["status", "attempts", "lease_until", "updated"])
    attempt = delivery.attempts
    if not delivery.subscription.enabled:
        sent = senders.Sent(False, False, None, "the subscription is disabled")
    else:
        sent = _send(delivery)
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("subscription")
            .get(pk=delivery_id)
        )
        if delivery.attempts != attempt or delivery.status != DeliveryStatus.SENDING:
            return str(delivery.status)  # a later attempt took over
        delivery.response_code, delivery.error, delivery.lease_until = sent.code, sent.error, None
        if sent.ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                DeliveryStatus.DELIVERED,
                timezone.now(),
                None,
            )
            delivery.save()
            _audit(delivery, "notification.delivered", f"attempt {attempt}: delivered ({sent.code})")
        elif sent.retryable and attempt < settings.FLEETGATE_NOTIFY_MAX_ATTEMPTS:
            delay = _backoff(attempt)
            delivery.status = DeliveryStatus.RETRYING
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            delivery.save()
            _audit(
                delivery,
                "notification.retrying",
                f"attempt {attempt} failed: {sent.error}; retry in {delay:g}s",
            )
            dispatch.send(tasks.deliver, delivery.pk, countdown=delay)
        else:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            delivery.save()
            _audit(delivery, "notification.failed", f"attempt {attempt} failed: {sent.error}")
    return str(delivery.status)


def redeliver(delivery: Delivery) -> None:
    """Send a failed delivery again (a user's request from the delivery log); audited."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("subscription")
            .get(pk=delivery.pk)
        )
        if delivery.status != DeliveryStatus.FAILED:
            raise DomainError("Only a failed delivery can be sent again.", kind=ErrorKind.CONFLICT)
        delivery.status, delivery.next_attempt_at = DeliveryStatus.PENDING, None
        delivery.save(update_fields=["status", "next_attempt_at", "updated"])
        _audit(delivery, "notification.redeliver", "sent again on request")
        dispatch.send(tasks.deliver, delivery.pk)


# --------------------------------------------------------------------------------------------- periodic scan


def _scan_windows(now: Any) -> int:
    from clusters.models import ClusterGroup
    from clusters.windows import sync_allowed

    opened = 0
    for group in ClusterGroup.objects.exclude(sync_windows=[]).order_by("pk"):
        allowed, _ = sync_allowed(group.sync_windows or [], now)
        with transaction.atomic():
            state = WindowState.objects.select_for_update().filter(cluster_group=group).first()
            if state is None:
                WindowState.objects.create(cluster_group=group, open=allowed, checked_at=now)
                continue
            if allowed and not state.open:
                record(
                    "syncwindow.opened",
                    group,
                    after={"opened_by": now.isoformat()},
                    message=f"the sync windows of {group.name} allow syncing again",
                )
                opened += 1
            state.open, state.checked_at = allowed, now
            state.save(update_fields=["open", "checked_at"])
    # Groups whose windows were removed: nothing to watch any more.
    WindowState.objects.filter(cluster_group__sync_windows=[]).delete()
    return opened


def _scan_waivers(now: Any) -> int:
    from policies.models import Waiver

    horizon = now + timedelta(hours=settings.FLEETGATE_NOTIFY_WAIVER_NOTICE_HOURS)
    emitted = 0
    for waiver in Waiver.objects.select_related("policy").filter(expires_at__gt=now, expires_at__lte=horizon):
        key = f"waiver:{waiver.pk}:{waiver.expires_at.isoformat()}"
        with transaction.atomic():
            _, created = EmittedMark.objects.get_or_create(key=key)
            if not created:
                continue
            record(
                "waiver.expiring",
                waiver,
                after={"expires_at": waiver.expires_at.isoformat(), "policy": waiver.policy.name},
                message=f"waiver #{waiver.pk} of {waiver.policy.name} "
                f"expires at {waiver.expires_at.isoformat()}",
            )
            emitted += 1
    return emitted


def _redispatch(now: Any) -> int:
    """Deliveries whose task was lost (a lease that lapsed, a retry that is due): queued again."""
    due = Delivery.objects.filter(
        Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
        | Q(status=DeliveryStatus.RETRYING, next_attempt_at__lt=now - timedelta(seconds=60))
        | Q(status=DeliveryStatus.PENDING, created__lt=now - timedelta(seconds=300))
    ).values_list("pk", flat=True)[:500]
    count = 0
    for pk in due:
        dispatch.send(tasks.deliver, pk)
        count += 1
    return count


def scan() -> dict[str, int]:
    """The periodic task: record the sync windows that opened and the waivers about to expire (each once),
    and queue again the deliveries whose task was lost."""
    now = timezone.now()
    return {
        "windows_opened": _scan_windows(now),
        "waivers_expiring": _scan_waivers(now),
        "redispatched": _redispatch(now),
    }
