from typing import Any

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from fleet.access import schema  # noqa: F401  (registers the token schemes with drf-spectacular)
from fleet.access.views import admin_login
from fleet.observability.views import healthz, metrics, readyz

api_patterns: list[Any] = [
    path("", include("clusters.api.urls")),
    path("", include("fleet.sources.api.urls")),
    path("", include("policies.api.urls")),
    path("", include("fleet.rollouts.api.urls")),
    path("access/", include("fleet.access.api.urls")),
    path("audit/", include("fleet.audit.api.urls")),
    path("notifications/", include("fleet.notifications.api.urls")),
    # Pull mode: the agents' own API (agent credentials only, docs/api.md "Pull mode: the agent API")
    path("agent/v1/", include("fleet.rollouts.api.agent")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    # Single sign-on (fleet/access/oidc); the admin's login defers to it when local accounts are off.
    path("oidc/", include("fleet.access.oidc.urls")),
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("notifications/", include("fleet.notifications.urls")),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("", include("fleet.web.urls")),
]

handler400 = "fleet.core.api.errors.bad_request"
handler403 = "fleet.core.api.errors.permission_denied"
handler404 = "fleet.core.api.errors.page_not_found"
handler500 = "fleet.core.api.errors.server_error"
