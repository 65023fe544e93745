"""``/healthz`` (the process answers), ``/readyz`` (it can do its work) and ``/metrics`` (Prometheus).

The probes are unauthenticated and answer no secrets. ``/metrics`` answers to a bearer token
(``FLEETGATE_METRICS_TOKEN``) or a staff session, and to no one else: it names repositories' queues and
counts of the fleet. ``manage.py metrics_server`` serves the same metrics on a port of their own instead."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from fleet.observability.collector import FleetStateCollector
from fleet.observability.multiproc import metrics_dir
from fleet.observability.probes import run_checks


def registry() -> CollectorRegistry:
    """The metrics of every Fleetgate process (the multiprocess files) and the database's state, anew for
    each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(metrics_dir()))
    registry.register(FleetStateCollector())
    return registry


def exposition(accept: str | None) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry()), content_type


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers (no database, no broker: a liveness probe must not restart a healthy web
    server because a dependency is down)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    ready = all(r.ok for r in results)
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {
            r.name: ({"status": "ok"} if r.ok else {"status": "failed", "error": r.error}) for r in results
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


def _bearer_token_matches(request: HttpRequest) -> bool:
    expected = str(getattr(settings, "FLEETGATE_METRICS_TOKEN", "") or "")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not getattr(settings, "FLEETGATE_METRICS_ON_WEB", True):
        raise Http404
    user = request.user
    if not _bearer_token_matches(request):
        if not user.is_authenticated:
            response = HttpResponse(
                "metrics need a bearer token or a staff session\n", status=401, content_type="text/plain"
            )
            response["WWW-Authenticate"] = 'Bearer realm="fleetgate-metrics"'
            return response
        if not user.is_staff:
            return HttpResponse("metrics are for staff users\n", status=403, content_type="text/plain")
    body, content_type = exposition(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)
