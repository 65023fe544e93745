"""``manage.py agent_manifest CLUSTER [--image IMG] [--server URL] [--bootstrap] [--ca-file PEM]``: the
Kubernetes manifest that installs Fleetgate's pull-mode agent on a pull-mode cluster, as YAML on stdout.

    manage.py agent_manifest edge-1 --server https://fleetgate.example.com --bootstrap | kubectl apply -f -

What it prints (docs/clusters.md, "Installing the agent"):

- Namespace ``fleetgate-agent`` and ServiceAccount ``fleetgate-agent``;
- ClusterRole + ClusterRoleBinding ``fleetgate-agent``: read, apply and delete any kind (what server-side
  apply, prune, health, drift and live reads need for whatever the cluster's mappings deploy) and impersonate
  service accounts (tenant groups' allow-lists). Broad on purpose: narrow it to the kinds you deploy;

- Role + RoleBinding ``fleetgate-agent-state``: the agent's state Secret in its namespace;
- with ``--bootstrap``: a new one-time bootstrap token (earlier unused ones are revoked; audited as
  ``agent.bootstrap_issued``) in Secret ``fleetgate-agent-bootstrap``;
- with ``--ca-file``: the CA bundle that signs Fleetgate's certificate, in ConfigMap ``fleetgate-agent-ca``;
- Deployment ``fleetgate-agent``: one replica (Recreate: never two agents at once), ``python -m
  clusters.agent`` from the Fleetgate image, probes on /healthz and /readyz, non-root, read-only root
  filesystem, no privilege escalation, every capability dropped.

A push-mode cluster is refused: Fleetgate connects to it, an agent is only for pull mode.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clusters.models import Cluster
from fleet.core.choices import ChangeContext
from fleet.core.context import acting

NAMESPACE = "fleetgate-agent"
NAME = "fleetgate-agent"
STATE_SECRET = "fleetgate-agent-state"  # noqa: S105 - a Secret's name
BOOTSTRAP_SECRET = "fleetgate-agent-bootstrap"  # noqa: S105 - a Secret's name
CA_CONFIGMAP = "fleetgate-agent-ca"
HEALTH_PORT = 8080
RUN_AS = 10001  # any non-root id: the image's files are world-readable, the agent writes only to /tmp
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "fleetgate"}


def default_image() -> str:
    return f"fleetgate:{settings.SPECTACULAR_SETTINGS.get('VERSION', '0.1.0')}"


def _meta(name: str, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta.update(extra)
    return meta


def manifest(
    cluster: Cluster,
    *,
    image: str,
    server: str,
    bootstrap_token: str = "",
    ca_pem: str = "",
) -> list[dict[str, Any]]:
    """The manifest's objects, in apply order."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(NAMESPACE, namespaced=False)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME, namespaced=False),
            "rules": [
                # Server-side apply, prune, health, drift and live reads of whatever the mappings deploy.
                # Narrow this to the API groups and resources your repositories contain (docs/clusters.md).
                {
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                # Roles and bindings in the repositories may grant what the agent itself does not hold.
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles", "roles"],
                    "verbs": ["escalate", "bind"],
                },
                # Tenant groups with an allow-list service account: the agent acts as that account.
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                {"nonResourceURLs": ["/version", "/api", "/api/*", "/apis", "/apis/*"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME, namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(STATE_SECRET),
            "rules": [
                # The agent's credential (create cannot be limited to one name).
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [STATE_SECRET],
                    "verbs": ["get", "update", "patch"],
                },
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(STATE_SECRET),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": STATE_SECRET},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
    ]
    if bootstrap_token:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": _meta(BOOTSTRAP_SECRET),
                "stringData": {"token": bootstrap_token},
            }
        )
    if ca_pem:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(CA_CONFIGMAP),
                "data": {"ca.crt": ca_pem},
            }
        )
    docs.append(_deployment(cluster, image=image, server=server, ca=bool(ca_pem)))
    return docs


def _deployment(cluster: Cluster, *, image: str, server: str, ca: bool) -> dict[str, Any]:
    args = ["--server", server, "--state-secret", STATE_SECRET, "--health-port", str(HEALTH_PORT)]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - an emptyDir
    if ca:
        args += ["--ca-file", "/etc/fleetgate-agent/ca/ca.crt"]
        volumes.append({"name": "ca", "configMap": {"name": CA_CONFIGMAP}})
        mounts.append({"name": "ca", "mountPath": "/etc/fleetgate-agent/ca", "readOnly": True})
    probe = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, annotations={"fleetgate.io/cluster": cluster.name}),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one agent per cluster at any time
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "command": ["python", "-m", "clusters.agent"],
                            "args": args,
                            "env": [
                                {
                                    "name": "FLEETGATE_AGENT_BOOTSTRAP_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": BOOTSTRAP_SECRET,
                                            "key": "token",
                                            "optional": True,
                                        }
                                    },
                                },
                                {"name": "FLEETGATE_AGENT_LOG_FORMAT", "value": "json"},
                            ],
                            "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "health"},
                                "initialDelaySeconds": 10,
                                **probe,
                            },
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, **probe},
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def _operator() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no login name (containers without a passwd entry)
        return f"uid {os.getuid()}@{socket.gethostname()}"


class Command(BaseCommand):
    help = "Print the Kubernetes manifest that installs the pull-mode agent on CLUSTER (YAML on stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cluster", help="the pull-mode cluster's name (or id)")
        parser.add_argument("--image", default="", help=f"the agent's image (default {default_image()})")
        parser.add_argument(
            "--server",
            default="",
            help="Fleetgate's URL as the agent reaches it (default FLEETGATE_NOTIFY_BASE_URL)",
        )
        parser.add_argument(
            "--bootstrap",
            action="store_true",
            help="issue a new one-time bootstrap token (audited; earlier unused ones are "
            "revoked) and include it in a Secret",
        )
        parser.add_argument(
            "--ca-file",
            default="",
            help="PEM bundle that verifies Fleetgate's certificate (put in a ConfigMap)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cluster = self._cluster(options["cluster"])
        if not cluster.is_pull:
            raise CommandError(
                f"cluster {cluster.name!r} is in push mode: Fleetgate connects to its API server itself. "
                "An agent is only for pull-mode clusters (connection_mode: pull)."
            )
        server = (options["server"] or getattr(settings, "FLEETGATE_NOTIFY_BASE_URL", "")).rstrip("/")
        parts = urlsplit(server)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise CommandError(
                "--server must be Fleetgate's URL as the agent reaches it, e.g. https://fleetgate.example.com"
            )
        ca_pem = ""
        if options["ca_file"]:
            try:
                ca_pem = Path(options["ca_file"]).read_text()
            except OSError as exc:
                raise CommandError(f"cannot read --ca-file: {exc.strerror}") from None
            if "BEGIN CERTIFICATE" not in ca_pem:
                raise CommandError("--ca-file holds no PEM certificate")
        if parts.scheme == "http":
            self.stderr.write(
                "warning: --server is plain http://; the agent refuses it unless run with "
                "--allow-http (tests only): its credential would travel unencrypted"
            )
        token = ""
        if options["bootstrap"]:
            from clusters.agent_tokens import issue_bootstrap

            with acting(change_context=ChangeContext.COMMAND, operator=_operator()):
                token, cred = issue_bootstrap(cluster)
            self.stderr.write(
                f"bootstrap token {cred.prefix}... issued for {cluster.name}, valid until "
                f"{cred.expires_at.isoformat()}; it is in Secret {NAMESPACE}/{BOOTSTRAP_SECRET} "
                "below and shown nowhere else"
            )
        docs = manifest(
            cluster,
            image=options["image"] or default_image(),
            server=server,
            bootstrap_token=token,
            ca_pem=ca_pem,
        )
        self.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False), ending="")

    @staticmethod
    def _cluster(value: str) -> Cluster:
        found = Cluster.objects.filter(name=value).first()
        if found is None and value.isdigit():
            found = Cluster.objects.filter(pk=int(value)).first()
        if found is None:
            raise CommandError(f"no cluster named {value!r}")
        return found
