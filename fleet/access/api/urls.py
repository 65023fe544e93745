from django.urls import path
from rest_framework.routers import DefaultRouter

from fleet.access.api import views

app_name = "access-api"

router = DefaultRouter()
router.register("bindings", views.RoleBindingViewSet)
router.register("roles", views.RoleViewSet, basename="role")
router.register("tokens", views.APITokenViewSet, basename="apitoken")
urlpatterns = [path("me/", views.MeView.as_view(), name="me"), *router.urls]
