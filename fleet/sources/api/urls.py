from rest_framework.routers import DefaultRouter

from fleet.sources.api import views

app_name = "sources-api"

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet)
router.register("mappings", views.PathMappingViewSet)
router.register("commits", views.CommitViewSet)
urlpatterns = router.urls
