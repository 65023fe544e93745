"""scripts/kube_apiserver.py: a pair it starts is usable, and nothing is left running after it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kube_apiserver as kube_helper  # scripts/kube_apiserver.py, loaded by tests/kubeapi/conftest.py
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pids: list[int], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"processes still running after {limit}s: {[p for p in pids if alive(p)]}")
        time.sleep(0.1)


def test_started_pair_serves_kubectl_and_stop_ends_both(kube_apiserver_bin_dir: Path, tmp_path: Path) -> None:
    handle = kube_helper.start_kube_apiserver(tmp_path, bin_dir=kube_apiserver_bin_dir)
    pids = list(handle.pids.values())
    try:
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
        # The written kubeconfig works for a real kubectl, TLS verified against the test CA.
        result = subprocess.run(
            [
                str(REPO_ROOT / ".venv" / "bin" / "kubectl"),
                "--kubeconfig",
                str(handle.kubeconfig),
                "get",
                "--raw",
                "/readyz",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
        assert handle.token not in handle.apiserver_log.read_text()
    finally:
        handle.stop()
    assert not any(alive(pid) for pid in pids)
    etcd_port = int(handle.etcd_url.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", etcd_port))
    handle.stop()  # idempotent


def test_killed_starter_takes_both_servers_along(kube_apiserver_bin_dir: Path, tmp_path: Path) -> None:
    """If the test process dies outright (SIGKILL, no cleanup), etcd and kube-apiserver die with it."""
    starter = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT / 'scripts')!r})\n"
        "import kube_apiserver\n"
        f"h = kube_apiserver.start_kube_apiserver({str(tmp_path)!r},"
        f" bin_dir={str(kube_apiserver_bin_dir)!r})\n"
        "print(json.dumps(list(h.pids.values())), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"starter exited with {proc.wait()}"
        pids = json.loads(line)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_until_gone(pids)


def test_missing_binaries_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(kube_helper.KubeApiServerError, match=r"not found in .*build-kube-apiserver\.sh"):
        kube_helper.start_kube_apiserver(tmp_path / "work", bin_dir=tmp_path / "no-binaries-here")
