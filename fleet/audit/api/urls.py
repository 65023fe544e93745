from rest_framework.routers import DefaultRouter

from fleet.audit.api import views

app_name = "audit-api"

router = DefaultRouter()
router.register("events", views.AuditEventViewSet)
urlpatterns = router.urls
