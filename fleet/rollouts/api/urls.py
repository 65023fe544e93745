from rest_framework.routers import DefaultRouter

from fleet.rollouts.api import views

app_name = "rollouts-api"

router = DefaultRouter()
router.register("rollouts", views.RolloutViewSet)
router.register("cluster-syncs", views.ClusterSyncViewSet)
router.register("synced-states", views.SyncedStateViewSet)
urlpatterns = router.urls
