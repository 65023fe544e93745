"""No secret reaches the audit log or any export of it: objects are created and changed through the API with
known secret values, then every audit row and the CSV, JSON Lines and PDF exports are searched for them."""

from __future__ import annotations

import base64
import json
import re
import zlib
from typing import Any

import pytest
from django.http import StreamingHttpResponse

from fleet.audit.models import AuditEvent
from fleet.audit.services import verify

pytestmark = pytest.mark.django_db

CLUSTER_TOKEN = "s3cr3t-cluster-token-AAAA1111"
ROTATED_TOKEN = "s3cr3t-rotated-token-EEEE5555"
KUBECONFIG_TOKEN = "s3cr3t-kubeconfig-token-BBBB2222"
GIT_TOKEN = "s3cr3t-git-token-CCCC3333"
WEBHOOK_SECRET = "s3cr3t-webhook-secret-DDDD4444"
PASSWORD = "s3cr3t-Password-FFFF6666"


def _kubeconfig() -> str:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    return f"""
apiVersion: v1
kind: Config
current-context: ctx
clusters:
- name: a
  cluster: {{server: "https://kc.example.com:6443", certificate-authority-data: "{ca}"}}
users:
- name: u
  user: {{token: "{KUBECONFIG_TOKEN}"}}
contexts:
- name: ctx
  context: {{cluster: a, user: u}}
"""


def pdf_text(data: bytes) -> bytes:
    """The PDF's bytes with every content stream decoded (reportlab: ASCII85 then Flate), so that its text can
    be searched."""
    assert data.startswith(b"%PDF-")
    decoded = [data]
    for match in re.finditer(
        rb"/Filter \[ /ASCII85Decode /FlateDecode \].*?stream\r?\n(.*?)endstream", data, re.S
    ):
        body = match.group(1).strip()
        body = body.removesuffix(b"~>")
        decoded.append(zlib.decompress(base64.a85decode(body)))
    assert len(decoded) > 1, "no compressed content stream found"
    return b"\n".join(decoded)


def _download(response: Any) -> bytes:
    assert response.status_code == 200
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response.streaming_content)
    return response.content


def test_no_secret_in_audit_rows_or_exports(make_user: Any, token_client: Any) -> None:
    admin = make_user("sec-admin", role="admin")
    admin.set_password(PASSWORD)
    admin.save()
    client = token_client(admin)

    created = client.post(
        "/api/clusters/",
        {
            "name": "c-secret",
            "api_url": "https://c.example.com:6443",
            "auth_method": "token",
            "token": CLUSTER_TOKEN,
            "labels": {"env": "staging"},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    changed = client.patch(f"/api/clusters/{created.json()['id']}/", {"token": ROTATED_TOKEN}, format="json")
    assert changed.status_code == 200, changed.content
    from_kubeconfig = client.post(
        "/api/clusters/",
        {"name": "c-kubeconfig", "auth_method": "kubeconfig", "kubeconfig": _kubeconfig()},
        format="json",
    )
    assert from_kubeconfig.status_code == 201, from_kubeconfig.content
    repo = client.post(
        "/api/repositories/",
        {
            "name": "platform",
            "url": "https://git.example.com/platform/deploy.git",
            "branch": "main",
            "auth_method": "token",
            "username": "fleetgate",
            "token": GIT_TOKEN,
            "webhook_secret": WEBHOOK_SECRET,
        },
        format="json",
    )
    assert repo.status_code == 201, repo.content
    token = client.post("/api/access/tokens/", {"description": "ci"}, format="json")
    assert token.status_code == 201, token.content
    api_key = token.json()["key"]
    assert client.delete(f"/api/access/tokens/{token.json()['id']}/").status_code == 204
    assert client.delete(f"/api/repositories/{repo.json()['id']}/").status_code == 204

    secrets = [
        CLUSTER_TOKEN,
        ROTATED_TOKEN,
        KUBECONFIG_TOKEN,
        GIT_TOKEN,
        WEBHOOK_SECRET,
        PASSWORD,
        api_key,
        admin.password,
    ]
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "cluster.create",
        "cluster.update",
        "repository.create",
        "repository.delete",
        "apitoken.create",
        "apitoken.delete",
    } <= actions
    # The rows themselves, every column.
    rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert "c-kubeconfig" in rows and "<redacted>" in rows
    for secret in secrets:
        assert secret not in rows, secret

    exports = {
        fmt: _download(client.get("/api/audit/events/export/", {"format": fmt}))
        for fmt in ("csv", "jsonl", "pdf")
    }
    exports["pdf"] = pdf_text(exports["pdf"])
    for fmt, data in exports.items():
        assert b"c-kubeconfig" in data, f"{fmt}: the export is not searchable as text"
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} in the {fmt} export"
    # Also the PDF's event table and summaries: the cluster created with a token is named, the token is not.
    assert b"c-secret" in exports["pdf"]
    assert verify().ok
