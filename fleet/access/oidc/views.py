"""The sign-in redirect to the provider and the callback from it (mozilla-django-oidc's views)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc.backend import failure_reason, oidc_setting
from fleet.access.signins import record_sign_in, record_sign_in_failure


class SignInView(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/``: redirects the browser to the provider (state, nonce, PKCE S256)."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_provider.enabled():
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_provider.get_provider().authorization_endpoint
        except oidc_provider.ProviderUnavailable as exc:
            messages.error(request, f"Single sign-on is unavailable: {exc}")
            return HttpResponseRedirect(reverse("web:login"))
        self.OIDC_RP_CLIENT_ID = oidc_setting("OIDC_RP_CLIENT_ID")
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: exchanges the code, signs the user in, audits the sign-in."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_provider.enabled():
            raise Http404("single sign-on is not configured")
        state = request.GET.get("state")
        if "code" in request.GET and state not in request.session.get("oidc_states", {}):
            # A replayed callback, one from another browser, or one whose session has ended: the state
            # (with its nonce and PKCE verifier) is used once and kept only in the session that started it.
            request._fleetgate_oidc_failure = (  # type: ignore[attr-defined]
                "this sign-in was not started in this browser session, or was already used"
            )
            self.request = request
            return self.login_failure()
        return super().get(request)

    @property
    def failure_url(self) -> str:
        return reverse("web:login")

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        record_sign_in(
            self.request, self.user, method=f"single sign-on ({oidc_provider.get_provider().issuer})"
        )
        return response

    def login_failure(self) -> HttpResponse:
        reason = failure_reason(self.request)
        if not reason:
            error = self.request.GET.get("error", "")
            reason = f"the provider answered {error[:100]!r}" if error else "the sign-in did not complete"
        record_sign_in_failure(self.request, method="single sign-on", reason=reason)
        messages.error(self.request, f"Single sign-on failed: {reason}.")
        return super().login_failure()
