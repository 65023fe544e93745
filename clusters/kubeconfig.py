"""Reading an uploaded kubeconfig safely: one context, inline credentials only.

A kubeconfig can name files on disk and exec plugins that run commands; both would act on the Fleetgate
server, so both are refused. What is accepted is what a cluster registration needs: server URL, CA data,
and a token or an inline client certificate and key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import yaml
from django.core.exceptions import ValidationError

MAX_KUBECONFIG_BYTES = 256 * 1024


@dataclass(frozen=True)
class KubeconfigCredentials:
    context: str
    server: str
    ca_data: str = ""  # PEM
    token: str = ""
    client_certificate: str = ""  # PEM
    client_key: str = ""  # PEM
    insecure_skip_tls_verify: bool = False
    namespace: str = ""


def contexts(text: str) -> list[str]:
    doc = _load(text)
    return [c.get("name", "") for c in doc.get("contexts") or [] if isinstance(c, dict)]


def _load(text: str) -> dict[str, Any]:
    if len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise ValidationError(f"The kubeconfig is larger than {MAX_KUBECONFIG_BYTES // 1024} KiB.")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValidationError(f"The kubeconfig is not valid YAML{where}.") from None
    if not isinstance(doc, dict) or doc.get("kind", "Config") != "Config":
        raise ValidationError("The kubeconfig must be a YAML document of kind Config.")
    return doc


def _named(items: Any, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(what) or {}
    raise ValidationError(f"The kubeconfig has no {what} named {name!r}.")


def _pem(value: str, field: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValidationError(f"{field} is not valid base64-encoded PEM.") from None


def parse(text: str, context: str = "") -> KubeconfigCredentials:
    doc = _load(text)
    context = context or doc.get("current-context") or ""
    if not context:
        raise ValidationError("Choose a context: the kubeconfig has no current-context.")
    ctx = _named(doc.get("contexts"), context, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster")
    user = _named(doc.get("users"), ctx.get("user", ""), "user") if ctx.get("user") else {}

    for forbidden in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
        if forbidden in cluster or forbidden in user:
            raise ValidationError(f"The kubeconfig refers to a file ({forbidden}); inline the data instead.")
    if "exec" in user or "auth-provider" in user:
        raise ValidationError(
            "Exec and auth-provider credentials run commands on the server and are not accepted."
        )
    server = cluster.get("server", "")
    if not server:
        raise ValidationError("The kubeconfig's cluster has no server URL.")
    creds = KubeconfigCredentials(
        context=context,
        server=server,
        ca_data=_pem(cluster["certificate-authority-data"], "certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else "",
        token=user.get("token", "") or "",
        client_certificate=_pem(user["client-certificate-data"], "client-certificate-data")
        if user.get("client-certificate-data")
        else "",
        client_key=_pem(user["client-key-data"], "client-key-data") if user.get("client-key-data") else "",
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace", "") or "",
    )
    if not creds.token and not (creds.client_certificate and creds.client_key):
        raise ValidationError(
            "The kubeconfig's user has neither a token nor an inline client certificate and key."
        )
    return creds
