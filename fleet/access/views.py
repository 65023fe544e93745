"""Sign-in pages: the web login (password and the single sign-on button) and the admin's login."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

from fleet.access.backends import is_break_glass, local_login_enabled
from fleet.access.oidc.provider import enabled as sso_enabled
from fleet.access.signins import record_sign_in


class LoginView(auth_views.LoginView):
    """The sign-in page: a single sign-on button when an issuer is set; the password form unless local
    accounts are off (then only ``?break-glass=1`` shows it, for the break-glass users)."""

    template_name = "web/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        data = super().get_context_data(**kwargs)
        local = local_login_enabled()
        data.update(
            sso_enabled=sso_enabled(),
            sso_label=settings.FLEETGATE_OIDC_BUTTON_LABEL,
            local_login=local,
            show_password_form=local or "break-glass" in self.request.GET or self.request.method == "POST",
        )
        return data

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.get_user()
        method = "a password"
        if not local_login_enabled() and is_break_glass(user.get_username()):
            method = "a break-glass password (local accounts are off)"
        record_sign_in(self.request, user, method=method)
        return response


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login: Django's, unless local accounts are off; then the sign-in page (single sign-on,
    or the break-glass form), which brings the user back to the admin."""
    if local_login_enabled():
        return admin.site.login(request)
    target = request.GET.get("next") or reverse("admin:index")
    query = {"next": target}
    if request.method == "POST" or "break-glass" in request.GET:
        query["break-glass"] = "1"
    return HttpResponseRedirect(f"{reverse('web:login')}?{urlencode(query)}")
