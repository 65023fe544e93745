from rest_framework.routers import DefaultRouter

from fleet.notifications.api import views

app_name = "notifications-api"

router = DefaultRouter()
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register("deliveries", views.DeliveryViewSet, basename="delivery")
urlpatterns = router.urls
