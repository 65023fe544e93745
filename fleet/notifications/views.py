"""The notification pages: your subscriptions, a new one, one subscription with its delivery log."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from fleet.core.errors import DomainError
from fleet.notifications import services
from fleet.notifications.forms import SubscriptionForm
from fleet.notifications.models import Delivery, Subscription
from fleet.web.views.base import get_visible, paginate, refused, visible


@login_required
def subscription_list(request: HttpRequest) -> HttpResponse:
    form = SubscriptionForm(request.user, request.POST or None)
    secret = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        subscription = Subscription(
            name=data["name"],
            events=list(data["events"]),
            channel=data["channel"],
            cluster_group=data["cluster_group"],
            mapping=data["mapping"],
            repository=data["repository"],
        )
        try:
            secret = services.save_subscription(request.user, subscription, target=data["target"])
        except DomainError as exc:
            if exc.field in form.fields:
                form.add_error(exc.field, exc.message)
            else:
                form.add_error(None, exc.message)
        else:
            messages.success(request, f"Subscription {subscription.name} created.")
            if not secret:
                return redirect("notifications:subscription-detail", pk=subscription.pk)
            form = SubscriptionForm(request.user)
    subscriptions = visible(
        request, Subscription.objects.select_related("owner", "cluster_group", "mapping", "repository")
    )
    return render(
        request,
        "notifications/list.html",
        {"form": form, "subscriptions": subscriptions, "secret": secret},
    )


@login_required
def subscription_detail(request: HttpRequest, pk: int) -> HttpResponse:
    subscription = get_visible(request, Subscription.objects.select_related("owner"), pk=pk)
    deliveries = paginate(request, Delivery.objects.filter(subscription=subscription).order_by("-id"))
    return render(
        request, "notifications/detail.html", {"subscription": subscription, "deliveries": deliveries}
    )


@login_required
@require_POST
def subscription_act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    subscription = get_visible(request, Subscription.objects.all(), pk=pk)
    back = redirect("notifications:subscription-detail", pk=pk)
    try:
        if action == "delete":
            services.delete_subscription(subscription)
            messages.success(request, f"Subscription {subscription.name} deleted.")
            return redirect("notifications:subscription-list")
        if action == "rotate-secret":
            secret = services.rotate_secret(subscription)
            messages.success(request, f"New signing secret (shown only now): {secret}")
        elif action in ("enable", "disable"):
            subscription.enabled = action == "enable"
            services.save_subscription(request.user, subscription)
            messages.success(request, f"Subscription {subscription.name} {action}d.")
        else:
            return HttpResponse("Unknown action.", status=404)
    except DomainError as exc:
        return refused(request, exc, back)
    return back


@login_required
def delivery_detail(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_visible(request, Delivery.objects.select_related("subscription"), pk=pk)
    return render(request, "notifications/delivery.html", {"delivery": delivery})


@login_required
@require_POST
def delivery_redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_visible(request, Delivery.objects.select_related("subscription"), pk=pk)
    back = redirect("notifications:delivery-detail", pk=pk)
    try:
        services.redeliver(delivery)
    except DomainError as exc:
        return refused(request, exc, back)
    messages.success(request, "Queued to be sent again.")
    return back
