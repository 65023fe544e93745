"""Agent parts on their own: credential state (file permissions, atomic replace, the Secret store on a
sandbox cluster), in-cluster credential discovery from a service-account directory (and a real TLS
connection with it), backoff with jitter, the HTTP client's sorting of answers, and masked logs."""

from __future__ import annotations

import json
import logging
import os
import random
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from clusters.agent.backoff import Backoff
from clusters.agent.client import (
    AgentClient,
    ApiError,
    Conflict,
    Stopped,
    Unauthorized,
    Unreachable,
    retrying,
)
from clusters.agent.kube import (
    KubeAccess,
    NotInCluster,
    agent_connector_options,
    in_cluster_credentials,
    in_cluster_namespace,
)
from clusters.agent.logs import JsonFormatter, mask
from clusters.agent.main import parser
from clusters.agent.state import Credential, FileState, SecretState, StateError
from clusters.sandbox import SandboxServer
from tests.agent.process import free_port

TOKEN = "fga_a_" + "A" * 43


def _credential(token: str = TOKEN, **extra: Any) -> Credential:
    return Credential(token=token, server="https://fleetgate.example", cluster="edge-1", **extra)


# -- credential state ---------------------------------------------------------------------------------


def test_file_state_is_0600_in_a_0700_directory_and_replaced_atomically(tmp_path: Path) -> None:
    store = FileState(tmp_path / "state")
    assert store.load() is None
    store.save(_credential())
    path = tmp_path / "state" / "credential.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.load() == _credential()
    store.save(_credential("fga_a_" + "B" * 43))
    assert store.load().token.endswith("B" * 43)  # type: ignore[union-attr]
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["credential.json"]  # no temporary left
    store.clear()
    assert store.load() is None


def test_file_state_tightens_loose_permissions_and_refuses_garbage(tmp_path: Path) -> None:
    store = FileState(tmp_path)
    store.save(_credential())
    os.chmod(store.path, 0o644)
    assert store.load() is not None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.path.write_text("{not json")
    with pytest.raises(StateError, match="not a credential file"):
        store.load()


def test_credential_repr_hides_the_token_and_rotation_is_due_after_rotate_after() -> None:
    cred = _credential(rotate_after=(datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    assert TOKEN not in repr(cred)
    assert cred.due_for_rotation()
    assert not _credential(
        rotate_after=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ).due_for_rotation()
    assert not _credential(rotate_after="").due_for_rotation()
    with pytest.raises(ValueError, match="no agent credential"):
        Credential.from_answer({"token": "fga_b_bootstrap"}, "https://x")


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tls=True) as server:
        yield server


def _service_account_dir(tmp_path: Path, server: SandboxServer, token: str, namespace: str) -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token + "\n")
    ca = server.ca_pem
    (sa / "ca.crt").write_text(ca.decode() if isinstance(ca, bytes) else ca)
    (sa / "namespace").write_text(namespace)
    return sa


def test_in_cluster_discovery_from_a_service_account_directory(
    tls_sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The pod's files and environment, laid out in a temporary directory, reach a TLS API server (the
    sandbox served at its root, CA verified) and keep the state in a Secret of the agent's namespace."""
    name = f"incluster-{random.randrange(10**6)}"
    tls_sandbox.add_cluster(name, token="sa-token-1", root=True, rollout_delay=0)
    try:
        sa = _service_account_dir(tmp_path, tls_sandbox, "sa-token-1", "fleetgate-agent")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_sandbox.port)}
        creds = in_cluster_credentials(sa, env)
        assert creds.server == f"https://127.0.0.1:{tls_sandbox.port}"
        assert creds.token == "sa-token-1" and "BEGIN CERTIFICATE" in creds.ca_data
        assert "sa-token-1" not in repr(creds)
        assert in_cluster_namespace(sa) == "fleetgate-agent"

        kube = KubeAccess(lambda: in_cluster_credentials(sa, env), agent_connector_options())
        assert kube.version().startswith("v1.")
        k8s.CoreV1Api(kube.api_client()).create_namespace({"metadata": {"name": "fleetgate-agent"}})
        store = SecretState("fleetgate-agent", "fleetgate-agent-state", kube.api_client)
        assert store.load() is None
        store.save(_credential())
        assert store.load() == _credential()
        store.save(_credential("fga_a_" + "C" * 43))  # replaced, not created twice
        assert store.load().token.endswith("C" * 43)  # type: ignore[union-attr]
        secret = k8s.CoreV1Api(kube.api_client()).read_namespaced_secret(
            "fleetgate-agent-state", "fleetgate-agent"
        )
        assert set(secret.data) == {"credential.json"}
        store.clear()
        assert store.load() is None
        kube.close()
    finally:
        tls_sandbox.remove_cluster(name)


def test_in_cluster_discovery_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(NotInCluster, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_credentials(tmp_path, {})
    with pytest.raises(NotInCluster, match="no service account token"):
        in_cluster_credentials(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    (tmp_path / "token").write_text("t")
    with pytest.raises(NotInCluster, match="no service account CA"):
        in_cluster_credentials(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    (tmp_path / "ca.crt").write_text("pem")
    creds = in_cluster_credentials(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert creds.server == "https://[fd00::1]:443"
    assert in_cluster_namespace(tmp_path / "nowhere") == ""


# -- backoff ------------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base=1.0, cap=10.0, rng=random.Random(7))
    waits = [backoff.next() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 10, 10, 10, 10]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling * 0.5 <= wait <= ceiling
    assert len(set(waits)) == len(waits)  # jittered: no two the same
    backoff.reset()
    assert backoff.peek() == 1.0
    # two agents that failed together do not retry in step
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [a.next() for _ in range(3)] != [b.next() for _ in range(3)]


class _Scripted(BaseHTTPRequestHandler):
    """Answers from a script of (status, body); records the Authorization header of each call."""

    script: list[tuple[int, dict[str, Any]]]
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        code, body = self.script.pop(0) if self.script else (200, {"work": []})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def scripted() -> Iterator[tuple[str, list[tuple[int, dict[str, Any]]], list[str]]]:
    script: list[tuple[int, dict[str, Any]]] = []
    seen: list[str] = []
    handler = type("H", (_Scripted,), {"script": script, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script, seen
    httpd.shutdown()
    httpd.server_close()


def test_retrying_waits_out_5xx_and_429_then_answers(scripted: Any) -> None:
    url, script, seen = scripted
    script += [
        (503, {"detail": "restarting"}),
        (502, {}),
        (429, {"detail": "slow down"}),
        (200, {"work": [1]}),
    ]
    client = AgentClient(url, allow_http=True)
    backoff = Backoff(base=0.01, cap=0.02)
    answer = retrying(lambda: client.work(TOKEN, 0), "poll", backoff=backoff, stop=threading.Event())
    assert answer == {"work": [1]}
    assert seen == [f"Bearer {TOKEN}"] * 4
    assert backoff.failures == 0  # reset after the success


def test_retrying_gives_up_after_its_attempts_and_stops_on_request(scripted: Any) -> None:
    url, script, _ = scripted
    script += [(500, {})] * 3
    client = AgentClient(url, allow_http=True)
    with pytest.raises(Unreachable, match="HTTP 500"):
        retrying(
            lambda: client.managed(TOKEN),
            "managed",
            backoff=Backoff(base=0.01),
            stop=threading.Event(),
            attempts=3,
        )
    stop = threading.Event()
    stop.set()
    dead = AgentClient(f"http://127.0.0.1:{free_port()}", allow_http=True)
    with pytest.raises(Stopped):
        retrying(lambda: dead.managed(TOKEN), "managed", backoff=Backoff(base=5), stop=stop)


def test_client_sorts_answers_and_never_puts_the_token_in_an_error(scripted: Any) -> None:
    url, script, _ = scripted
    script += [
        (401, {"detail": "invalid agent credential"}),
        (409, {"detail": "lease lost"}),
        (404, {"detail": "no such work"}),
        (200, ["not", "an", "object"]),
    ]
    client = AgentClient(url, allow_http=True)
    errors = []
    for expected in (Unauthorized, Conflict, ApiError, Unreachable):
        with pytest.raises(expected) as caught:
            client.heartbeat(TOKEN, 5, 1)
        errors.append(str(caught.value))
    assert "invalid agent credential" in errors[0] and errors[0].startswith(
        "POST /api/agent/v1/work/5/heartbeat"
    )
    assert "lease lost" in errors[1] and "no such work" in errors[2]
    assert not any(TOKEN in e for e in errors)
    with pytest.raises(Unreachable) as refused:
        AgentClient(f"http://127.0.0.1:{free_port()}", allow_http=True).managed(TOKEN)
    assert TOKEN not in str(refused.value)


def test_client_refuses_plain_http_unless_allowed() -> None:
    with pytest.raises(ValueError, match="unencrypted"):
        AgentClient("http://fleetgate.example")
    with pytest.raises(ValueError, match="https://"):
        AgentClient("ftp://fleetgate.example")
    assert AgentClient("https://fleetgate.example/").server == "https://fleetgate.example"


def test_every_option_also_comes_from_the_environment() -> None:
    env = {
        "FLEETGATE_AGENT_SERVER": "https://fg.example",
        "FLEETGATE_AGENT_STATE_DIR": "/var/lib/agent",
        "FLEETGATE_AGENT_HEALTH_PORT": "9000",
        "FLEETGATE_AGENT_ONCE": "true",
        "FLEETGATE_AGENT_KUBECONFIG": "/k",
        "FLEETGATE_AGENT_CONTEXT": "edge",
        "FLEETGATE_AGENT_CA_FILE": "/ca.pem",
        "FLEETGATE_AGENT_POLL_WAIT": "5",
    }
    args = parser(env).parse_args([])
    assert (args.server, args.state_dir, args.health_port, args.once) == (
        "https://fg.example",
        "/var/lib/agent",
        9000,
        True,
    )
    assert (args.kubeconfig, args.context, args.ca_file, args.poll_wait) == ("/k", "edge", "/ca.pem", 5)
    assert parser(env).parse_args(["--server", "https://other"]).server == "https://other"  # flags win


def test_logs_mask_tokens_everywhere() -> None:
    record = logging.LogRecord("fleetgate.agent", logging.INFO, "", 0, f"got {TOKEN}", (), None)
    record.error = f"Authorization: Bearer {TOKEN}"
    record.bootstrap = ["fga_b_" + "z" * 43]
    line = JsonFormatter().format(record)
    assert TOKEN not in line and "z" * 43 not in line
    assert json.loads(line)["msg"] == "got fga_a_***"
    assert mask({"a": [TOKEN]}) == {"a": ["fga_a_***"]}
