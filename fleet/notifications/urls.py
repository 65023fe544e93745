from django.urls import path

from fleet.notifications import views

app_name = "notifications"

urlpatterns = [
    path("", views.subscription_list, name="subscription-list"),
    path("<int:pk>/", views.subscription_detail, name="subscription-detail"),
    path("<int:pk>/<str:action>/", views.subscription_act, name="subscription-act"),
    path("deliveries/<int:pk>/", views.delivery_detail, name="delivery-detail"),
    path("deliveries/<int:pk>/redeliver/", views.delivery_redeliver, name="delivery-redeliver"),
]
