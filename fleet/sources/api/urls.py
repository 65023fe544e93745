from django.urls import path
from rest_framework.routers import DefaultRouter

from fleet.sources import views as hook_views
from fleet.sources.api import views
from fleet.sources.api.gitops_import import GitOpsImportView

app_name = "sources-api"

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet)
router.register("mappings", views.PathMappingViewSet)
router.register("chart-repositories", views.ChartRepositoryViewSet)
router.register("commits", views.CommitViewSet)
urlpatterns = [
    path("hooks/git/<int:repository_id>/", hook_views.GitWebhookView.as_view(), name="git-webhook"),
    path("import/gitops/", GitOpsImportView.as_view(), name="gitops-import"),
    *router.urls,
]
