"""The credentials a connector needs, as a plain dataclass (no Django model, no database)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

TOKEN = "token"  # noqa: S105 - an auth method name, not a secret
CLIENT_CERTIFICATE = "client-certificate"
KUBECONFIG = "kubeconfig"


@dataclass(frozen=True)
class ClusterCredentials:
    """How to reach and authenticate to one cluster. ``repr()`` never shows a secret.

    ``auth_method`` is ``token``, ``client-certificate`` or ``kubeconfig``; for a kubeconfig the server,
    CA and user credentials are read from ``kubeconfig`` (inline data only, see clusters.kubeconfig) for
    ``kubeconfig_context`` (or the current context).
    """

    name: str
    server: str = ""
    auth_method: str = TOKEN
    token: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)  # PEM
    client_key: str = field(default="", repr=False)  # PEM
    ca_data: str = field(default="", repr=False)  # PEM bundle
    insecure_skip_tls_verify: bool = False
    kubeconfig: str = field(default="", repr=False)
    kubeconfig_context: str = ""
    # a user name sent as Impersonate-User on every request (a tenant group's service account,
    # "system:serviceaccount:NS:NAME"; clusters/allowlist.py); the credentials must be allowed to impersonate
    impersonate: str = ""

    def resolved(self) -> ClusterCredentials:
        """The same credentials with a kubeconfig expanded into server, CA, token or client certificate.

        Raises ``ValueError`` with a readable message when the kubeconfig cannot be used.
        """
        if self.auth_method != KUBECONFIG:
            return self
        from clusters import kubeconfig  # local import: only this path needs the parser

        try:
            creds = kubeconfig.parse(self.kubeconfig, self.kubeconfig_context)
        except Exception as exc:  # django ValidationError; keep this module free of Django imports
            messages = getattr(exc, "messages", None) or [str(exc)]
            raise ValueError("; ".join(messages)) from None
        return replace(
            self,
            server=creds.server,
            auth_method=TOKEN if creds.token else CLIENT_CERTIFICATE,
            token=creds.token,
            client_certificate=creds.client_certificate,
            client_key=creds.client_key,
            ca_data=creds.ca_data or self.ca_data,
            insecure_skip_tls_verify=creds.insecure_skip_tls_verify or self.insecure_skip_tls_verify,
            kubeconfig="",
            kubeconfig_context=creds.context,
        )

    def secrets(self) -> list[str]:
        """Every secret value held (for scrubbing error text)."""
        return [s for s in (self.token, self.client_key, self.kubeconfig) if s]
