"""The connector's pure parts (retry policy, error text, drift comparison, masking, health rules) and its
TLS handling against a sandbox served over HTTPS."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.rest import ApiException

from clusters.connector import ClusterCredentials, Connector, ConnectorOptions, ObjectRef, RetryPolicy
from clusters.connector import retry as retry_mod
from clusters.connector.drift import changed_fields
from clusters.connector.errors import describe
from clusters.connector.health import assess
from clusters.connector.objects import mask_secret_pair, prune_disabled, sort_for_apply
from clusters.sandbox import SandboxServer


def api_error(
    status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body or {"kind": "Status", "reason": "ServiceUnavailable", "message": "busy"})
    exc.headers = headers or {}
    return exc


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retry_backs_off_exponentially_with_jitter_and_honours_retry_after() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=2.0, deadline=60)
    fn = Flaky(
        [api_error(503), ConnectionResetError(), api_error(429, headers={"Retry-After": "1"}), api_error(500)]
    )
    assert retry_mod.call(fn, policy, sleep=waits.append) == "ok"
    assert fn.calls == 5
    assert 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2  # base * 2**n, scaled by [0.5, 1]
    assert waits[2] == 1.0  # the server asked
    assert 0.4 <= waits[3] <= 0.8


def test_retry_gives_up_and_never_retries_client_errors() -> None:
    waits: list[float] = []
    fn = Flaky([api_error(503)] * 10)
    with pytest.raises(ApiException):
        retry_mod.call(fn, RetryPolicy(attempts=3, base_delay=0.01), sleep=waits.append)
    assert fn.calls == 3 and len(waits) == 2
    for code in (400, 404, 409, 422):
        fn = Flaky([api_error(code)])
        with pytest.raises(ApiException):
            retry_mod.call(fn, RetryPolicy(), sleep=waits.append)
        assert fn.calls == 1
    fn = Flaky([api_error(503, headers={"Retry-After": "4"})] * 10)
    waits.clear()
    with pytest.raises(ApiException):  # the deadline bounds the total wait: 4 + 4, not a third 4
        retry_mod.call(fn, RetryPolicy(attempts=10, max_delay=5, deadline=10), sleep=waits.append)
    assert fn.calls == 3 and waits == [4.0, 4.0]


def test_error_text_keeps_the_server_message_and_drops_secrets() -> None:
    body = {
        "kind": "Status",
        "reason": "Conflict",
        "message": 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas',
        "details": {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "field": ".spec.replicas",
                    "message": 'conflict with "kubectl"',
                }
            ]
        },
    }
    failure = describe(api_error(409, body), secrets=["tok"])
    assert failure.message.startswith("HTTP 409 Conflict: Apply failed with 1 conflict")
    assert [(c.manager, c.field) for c in failure.conflicts] == [("kubectl", ".spec.replicas")]
    leaky = api_error(
        400, {"kind": "Status", "reason": "BadRequest", "message": "bad token s3cr3t-token-xyz"}
    )
    assert "s3cr3t-token-xyz" not in describe(leaky, secrets=["s3cr3t-token-xyz"]).message


def test_drift_compares_the_intent_only() -> None:
    applied = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "x", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {"containers": [{"name": "web", "image": "a:1", "ports": [{"containerPort": 80}]}]}
            },
        },
    }
    live = json.loads(json.dumps(applied))
    live["metadata"]["labels"]["extra"] = "someone"  # not Fleetgate's field
    live["metadata"]["resourceVersion"] = "9"
    live["spec"]["template"]["spec"]["containers"].insert(0, {"name": "sidecar", "image": "s:1"})  # injected
    live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = "IfNotPresent"  # defaulted
    live["spec"]["template"]["spec"]["containers"][1]["ports"][0]["protocol"] = "TCP"
    live["status"] = {"replicas": 2}
    assert changed_fields(applied, live) == []
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "a:2"
    del live["metadata"]["labels"]["app"]
    found = {(d.path, d.expected, d.actual) for d in changed_fields(applied, live)}
    assert found == {
        (".spec.template.spec.containers[name=web].image", "a:1", "a:2"),
        (".metadata.labels.app", "web", None),
    }


def test_secret_masking_shows_which_keys_changed_never_values() -> None:
    old = {"apiVersion": "v1", "kind": "Secret", "data": {"a": "MQ==", "b": "Mg=="}}
    new = {"apiVersion": "v1", "kind": "Secret", "data": {"a": "MQ==", "b": "Mw==", "c": "NA=="}}
    before, after = mask_secret_pair(old, new)
    assert before == {"apiVersion": "v1", "kind": "Secret", "data": {"a": "***", "b": "***"}}
    assert after is not None and after["data"] == {"a": "***", "b": "*** (changed)", "c": "***"}
    drift = changed_fields({**new, "metadata": {"name": "s"}}, {**old, "metadata": {"name": "s"}})
    assert {(d.path, d.expected, d.actual) for d in drift} == {
        (".data.b", "***", "***"),
        (".data.c", "***", None),
    }


def test_order_and_prune_opt_outs() -> None:
    kinds = ["Deployment", "Widget", "ConfigMap", "CustomResourceDefinition", "Namespace", "Service"]
    ordered = sort_for_apply([{"kind": k} for k in kinds])
    assert [o["kind"] for o in ordered] == [
        "Namespace",
        "CustomResourceDefinition",
        "ConfigMap",
        "Service",
        "Deployment",
        "Widget",
    ]
    assert prune_disabled({"metadata": {"annotations": {"fleetgate.io/prune": "disabled"}}})
    assert prune_disabled(
        {"metadata": {"annotations": {"argocd.argoproj.io/sync-options": "Replace=true, Prune=false"}}}
    )
    assert not prune_disabled({"metadata": {"annotations": {"fleetgate.io/prune": "enabled"}}})


@pytest.mark.parametrize(
    ("kind", "obj", "state", "reason"),
    [
        (
            "StatefulSet",
            {"spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 1}},
            "Progressing",
            "Updating",
        ),
        (
            "StatefulSet",
            {
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "readyReplicas": 2,
                    "updatedReplicas": 2,
                    "currentRevision": "r1",
                    "updateRevision": "r1",
                },
            },
            "Healthy",
            "",
        ),
        (
            "DaemonSet",
            {
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 3,
                }
            },
            "Healthy",
            "",
        ),
        (
            "Job",
            {
                "status": {
                    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
                }
            },
            "Degraded",
            "BackoffLimitExceeded",
        ),
        ("Job", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "Healthy", "Complete"),
        (
            "Deployment",
            {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": {"observedGeneration": 1}},
            "Progressing",
            "ObservedGeneration",
        ),
    ],
)
def test_health_rules(kind: str, obj: dict[str, Any], state: str, reason: str) -> None:
    group = "batch/v1" if kind == "Job" else "apps/v1"
    obj.setdefault("metadata", {"generation": 1})
    health = assess(ObjectRef(group, kind, "ns", "x"), obj)
    assert (health.state, health.reason) == (state, reason)
    ready = {
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]},
        "metadata": {},
    }
    assert assess(ObjectRef("example.com/v1", "Cert", "ns", "c"), ready).state == "Progressing"
    assert assess(ObjectRef("v1", "ConfigMap", "ns", "c"), None).state == "Missing"


# -- TLS against a sandbox served over HTTPS --------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server() -> Iterator[SandboxServer]:
    with SandboxServer(tls=True) as server:
        server.add_cluster("tls", token="tls-token-value")
        yield server


def _client_pair() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetgate")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key.decode()


def test_tls_is_verified_against_the_ca_bundle(tls_server: SandboxServer) -> None:
    assert tls_server.ca_pem is not None
    url = tls_server.url_for("tls")
    good = ClusterCredentials("tls", url, token="tls-token-value", ca_data=tls_server.ca_pem.decode())
    with Connector(good, ConnectorOptions(retry=RetryPolicy(attempts=1))) as kube:
        assert kube.check().reachable
    unknown_ca = ClusterCredentials("tls", url, token="tls-token-value")
    with Connector(unknown_ca, ConnectorOptions(retry=RetryPolicy(attempts=1))) as kube:
        result = kube.check()
    assert not result.reachable and "CERTIFICATE_VERIFY_FAILED" in result.error
    assert "tls-token-value" not in result.error


def test_client_certificate_files_do_not_outlive_the_client(tls_server: SandboxServer) -> None:
    assert tls_server.ca_pem is not None
    cert, key = _client_pair()
    creds = ClusterCredentials(
        "tls",
        tls_server.url_for("tls"),
        auth_method="client-certificate",
        client_certificate=cert,
        client_key=key,
        ca_data=tls_server.ca_pem.decode(),
    )
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "fleetgate-tls-*")))
    with Connector(creds, ConnectorOptions(retry=RetryPolicy(attempts=1))) as kube:
        # the sandbox does not check client certificates; the TLS handshake with one must work
        result = kube.check()
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "fleetgate-tls-*"))) == before
    assert "401" in result.error  # reached the server; no token, so the sandbox refuses
    assert key.splitlines()[1] not in repr(creds)
    bad = ClusterCredentials(
        "tls",
        tls_server.url_for("tls"),
        auth_method="client-certificate",
        client_certificate=cert,
        client_key="nope",
    )
    with Connector(bad) as kube:
        assert "client certificate or key is not usable" in kube.check().error


def test_kubeconfig_with_exec_is_refused() -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://x"}}],
            "users": [{"name": "u", "user": {"exec": {"command": "rm"}}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )
    creds = ClusterCredentials("c", auth_method="kubeconfig", kubeconfig=text)
    with pytest.raises(ValueError, match="Exec and auth-provider"):
        creds.resolved()


def test_drift_names_the_managers_that_own_a_changed_field() -> None:
    from clusters.connector.drift import owners

    web = 'k:{"name":"web"}'
    live = {
        "metadata": {
            "managedFields": [
                {"manager": "fleetgate", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {
                    "manager": "kubectl",
                    "fieldsV1": {
                        "f:spec": {"f:template": {"f:spec": {"f:containers": {web: {"f:image": {}}}}}}
                    },
                },
                {"manager": "helm", "fieldsV1": {"f:data": {".": {}}}},
            ]
        }
    }
    assert owners(live, ".spec.template.spec.containers[name=web].image") == ["kubectl"]
    assert owners(live, ".spec.replicas") == ["fleetgate"]
    assert owners(live, ".data.key") == ["helm"]  # the map is owned as a whole
    assert owners(live, ".spec.args[0]") == []
