from rest_framework.routers import DefaultRouter

from clusters.api import views

app_name = "clusters-api"

router = DefaultRouter()
router.register("clusters", views.ClusterViewSet)
router.register("groups", views.ClusterGroupViewSet)
urlpatterns = router.urls
