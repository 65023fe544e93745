"""The OpenID Connect provider's discovery document (``<issuer>/.well-known/openid-configuration``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

DISCOVERY_TTL = 3600.0  # seconds a discovery document is reused


class ProviderUnavailable(Exception):
    """The provider could not be asked (down, wrong address, or a document that is not OIDC discovery)."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str = ""


_lock = threading.Lock()
_cache: dict[str, tuple[float, Provider]] = {}


def enabled() -> bool:
    return bool(settings.FLEETGATE_OIDC_ISSUER)


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def get_provider() -> Provider:
    """The configured issuer's endpoints, from its discovery document (cached for an hour)."""
    issuer = settings.FLEETGATE_OIDC_ISSUER
    if not issuer:
        raise ProviderUnavailable("single sign-on is not configured (FLEETGATE_OIDC_ISSUER is empty)")
    now = time.monotonic()
    with _lock:
        cached = _cache.get(issuer)
        if cached is not None and now - cached[0] < DISCOVERY_TTL:
            return cached[1]
    provider = _fetch(issuer)
    with _lock:
        _cache[issuer] = (now, provider)
    return provider


def forget() -> None:
    """Drop cached discovery documents (tests that start a new provider; a rotated configuration)."""
    with _lock:
        _cache.clear()


def _fetch(issuer: str) -> Provider:
    url = discovery_url(issuer)
    try:
        response = requests.get(url, timeout=settings.FLEETGATE_OIDC_TIMEOUT)
        response.raise_for_status()
        document: Any = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"cannot read the OIDC discovery document at {url}: {exc}") from exc
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{url} is not an OIDC discovery document")
    if document.get("issuer") != issuer:
        # OpenID Connect Discovery 1.0, section 4.3: the issuer in the document must be the one asked for.
        raise ProviderUnavailable(
            f"the discovery document at {url} names issuer {document.get('issuer')!r}, "
            f"not FLEETGATE_OIDC_ISSUER {issuer!r}"
        )
    missing = [
        key
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
        if not isinstance(document.get(key), str) or not document[key]
    ]
    if missing:
        raise ProviderUnavailable(f"the discovery document at {url} lacks {', '.join(missing)}")
    return Provider(
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        userinfo_endpoint=document["userinfo_endpoint"],
        jwks_uri=document["jwks_uri"],
        end_session_endpoint=str(document.get("end_session_endpoint") or ""),
    )
