from typing import Any

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from fleet.observability.views import healthz, metrics, readyz

api_patterns: list[Any] = [
    path("", include("clusters.api.urls")),
    path("", include("fleet.sources.api.urls")),
    path("", include("policies.api.urls")),
    path("", include("fleet.rollouts.api.urls")),
    path("access/", include("fleet.access.api.urls")),
    path("audit/", include("fleet.audit.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("", include("fleet.web.urls")),
]

handler400 = "fleet.core.api.errors.bad_request"
handler403 = "fleet.core.api.errors.permission_denied"
handler404 = "fleet.core.api.errors.page_not_found"
handler500 = "fleet.core.api.errors.server_error"
