from django.urls import path

from fleet.access.oidc.views import CallbackView, SignInView

# The names are mozilla-django-oidc's, which its views reverse.
urlpatterns = [
    path("authenticate/", SignInView.as_view(), name="oidc_authentication_init"),
    path("callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
]
