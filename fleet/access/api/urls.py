from rest_framework.routers import DefaultRouter

from fleet.access.api import views

app_name = "access-api"

router = DefaultRouter()
router.register("bindings", views.RoleBindingViewSet)
router.register("roles", views.RoleViewSet, basename="role")
router.register("me", views.MeViewSet, basename="me")
router.register("tokens", views.APITokenViewSet, basename="apitoken")
urlpatterns = router.urls
