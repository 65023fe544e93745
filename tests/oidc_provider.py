"""A real OpenID Provider on 127.0.0.1 for the single sign-on tests.

``tools/oidc-provider`` (github.com/zitadel/oidc/v3's provider, built from Go modules by
scripts/build-oidc-provider.sh, cached in $FLEETGATE_CACHE_DIR) with the users, groups and clients a test
gives it: it serves discovery, a JWKS of its own RSA key, a login page with user name and password, the
authorization code flow with PKCE, and the token and userinfo endpoints. Each instance has its own port,
issuer and signing key.

``sign_in`` plays a user agent against the provider's login page (the browser test uses chromium instead);
``tokens`` runs the whole code flow for a client and returns the provider's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import requests

REPO = Path(__file__).resolve().parent.parent


def build_provider() -> str:
    """The provider binary's path (built when missing: about a minute, once per machine)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-oidc-provider.sh")], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProviderUser:
    username: str
    password: str
    groups: list[str] = field(default_factory=list)
    email: str = ""
    first_name: str = ""
    last_name: str = ""


@dataclass
class ProviderClient:
    client_id: str
    secret: str
    redirect_uris: list[str]
    id_token_lifetime_seconds: int = 0


class OIDCProvider:
    def __init__(
        self, binary: str, workdir: Path, users: list[ProviderUser], clients: list[ProviderClient]
    ) -> None:
        self.binary, self.workdir, self.users, self.clients = binary, workdir, users, clients
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OIDCProvider:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "issuer": self.issuer,
            "listen": f"127.0.0.1:{self.port}",
            "clients": [
                {
                    "id": c.client_id,
                    "secret": c.secret,
                    "redirect_uris": c.redirect_uris,
                    "id_token_lifetime_seconds": c.id_token_lifetime_seconds,
                }
                for c in self.clients
            ],
            "users": [
                {
                    "id": f"sub-{u.username}",
                    "username": u.username,
                    "password": u.password,
                    "email": u.email,
                    "first_name": u.first_name,
                    "last_name": u.last_name,
                    "groups": u.groups,
                }
                for u in self.users
            ],
        }
        path = self.workdir / f"provider-{self.port}.json"
        path.write_text(json.dumps(config))
        self.log = (self.workdir / f"provider-{self.port}.log").open("wb")
        self.process = subprocess.Popen([self.binary, "-config", str(path)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.discovery_url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the OIDC provider did not start; see {self.log.name}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log.close()

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def discovery(self) -> dict[str, Any]:
        return dict(requests.get(self.discovery_url, timeout=5).json())

    def sign_in(self, authorize_url: str, username: str, password: str) -> str:
        """Follow an authorization request through the provider's login form as a user agent would;
        return the URL the provider sends the browser back to (the client's redirect URI)."""
        session = requests.Session()
        response = session.get(authorize_url, allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        login_url = urljoin(self.issuer, response.headers["Location"])
        request_id = parse_qs(urlparse(login_url).query)["authRequestID"][0]
        response = session.post(
            urljoin(self.issuer, "/login/username"),
            data={"id": request_id, "username": username, "password": password},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, f"the provider refused the sign-in: {response.text[:200]}"
        response = session.get(
            urljoin(self.issuer, response.headers["Location"]), allow_redirects=False, timeout=10
        )
        assert response.status_code == 302, response.text
        return str(response.headers["Location"])

    def tokens(
        self, username: str, password: str, client: ProviderClient, scope: str = "openid profile email groups"
    ) -> dict[str, Any]:
        """The provider's token response for this user and client (code flow with PKCE S256)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        endpoints = self.discovery()
        redirect_uri = client.redirect_uris[0]
        authorize = requests.Request(
            "GET",
            endpoints["authorization_endpoint"],
            params={
                "client_id": client.client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        ).prepare()
        back = self.sign_in(str(authorize.url), username, password)
        code = parse_qs(urlparse(back).query)["code"][0]
        response = requests.post(
            endpoints["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(client.client_id, client.secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())
