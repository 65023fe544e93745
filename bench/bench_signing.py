"""Verified commits benchmark: what requiring signed commits adds to a fetch that records and renders them.

    .venv/bin/python -m bench signing                       # 200 signed commits per run
    .venv/bin/python -m bench signing -- --commits 50

A child process gets a scratch SQLite database and git cache (DATABASE_URL, FLEETGATE_VAR_DIR) and makes
three repositories of the same shape: one mapped path, a group of two clusters, a first commit that a first
fetch records, then N commits that each change the mapped file, every one signed (``git commit -S``). For
each, one ``services.fetch_repository()`` records the N commits and renders each of them (sources alone: no
rollouts), and the time is measured:

1. baseline: OpenPGP-signed commits, verification off (nothing is checked);
2. OpenPGP: the same with verification required and the key trusted (every commit verified);
3. SSH: SSH-signed commits (ed25519), verification required.

The overhead ratio is the run's time / the baseline's; the cost per commit is the difference / N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated

ROOT = Path(__file__).resolve().parent.parent

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  revision: \"{rev}\"\n"


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(list(args), cwd=cwd, env={**os.environ, **isolated.GIT_ENV, **(env or {})},
                          check=True, capture_output=True, text=True).stdout.strip()


class Keys:
    """An OpenPGP key (own GNUPGHOME, short path for gpg-agent's socket) and an SSH key, made here."""

    def __init__(self, workdir: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="fgb", dir="/tmp"))
        os.chmod(self.home, 0o700)
        _run("gpg", "--homedir", str(self.home), "--batch", "--passphrase", "", "--quick-gen-key",
             "Bench <bench@example.com>", "ed25519", "sign", "never")
        listing = _run("gpg", "--homedir", str(self.home), "--with-colons", "--list-keys")
        self.fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        self.gpg_public = _run("gpg", "--homedir", str(self.home), "--armor", "--export", self.fingerprint)
        self.gpg_program = self.home / "gpg"
        self.gpg_program.write_text(f'#!/bin/sh\nexec gpg --homedir "{self.home}" "$@"\n')
        self.gpg_program.chmod(0o755)
        self.ssh_path = workdir / "id_ed25519"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(self.ssh_path))
        self.ssh_public = self.ssh_path.with_suffix(".pub").read_text()

    def options(self, kind: str) -> list[str]:
        if kind == "ssh":
            return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.ssh_path}"]
        return ["-c", f"gpg.program={self.gpg_program}", "-c", f"user.signingkey={self.fingerprint}"]

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False,
                       capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


# --- child: the measurements in a scratch database ------------------------------------------------------


def child(commits: int, workdir: Path) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from fleet.rollouts import pipeline
    from fleet.sources.services.fetch import FetchStages, set_fetch_stages

    set_fetch_stages(FetchStages(commits_recorded=pipeline.commits_recorded))  # sources alone

    from clusters.models import Cluster, ClusterGroup
    from fleet.sources.git import verify as gitverify
    from fleet.sources.models import Commit, PathMapping, Repository
    from fleet.sources.services import fetch_repository, repository_cache, signing
    from fleet.sources.services.signing import normalize_trusted_keys

    keys = Keys(workdir)
    group = ClusterGroup.objects.create(name="bench", selector={"matchLabels": {"bench": "yes"}})
    for j in range(2):
        Cluster.objects.create(name=f"c-{j}", api_url=f"https://10.0.0.{j + 1}:6443", token="bench-token",
                               labels={"bench": "yes"})

    def one(name: str, kind: str, required: bool) -> dict[str, Any]:
        origin = workdir / name
        origin.mkdir()
        _run("git", "init", "-q", "-b", "main", cwd=origin)
        (origin / "apps/web").mkdir(parents=True)
        (origin / "apps/web/cm.yaml").write_text(CONFIGMAP.format(rev=0))
        _run("git", "add", "-A", cwd=origin)
        _run("git", *keys.options(kind), "commit", "-q", "-S", "-m", "initial", cwd=origin)
        trusted = [{"name": "bench", "public_key": keys.ssh_public if kind == "ssh" else keys.gpg_public}]
        repo = Repository.objects.create(name=name, url=origin.as_uri(), poll_interval=0,
                                         verification_mode="required" if required else "off",
                                         trusted_keys=normalize_trusted_keys(trusted))
        PathMapping.objects.create(repository=repo, name="web", path="apps/web", cluster_group=group)
        first = fetch_repository(repo)
        if not first.ok:
            raise RuntimeError(f"{name}: {first.error}")
        for i in range(1, commits + 1):
            (origin / "apps/web/cm.yaml").write_text(CONFIGMAP.format(rev=i))
            _run("git", *keys.options(kind), "commit", "-q", "-S", "-am", f"revision {i}", cwd=origin)
        started, cpu_started = time.perf_counter(), time.process_time()
        outcome = fetch_repository(repo)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        if not outcome.ok:
            raise RuntimeError(f"{name}: {outcome.error}")
        rows = Commit.objects.filter(repository=repo)
        verified = rows.filter(verification="verified").count()
        rendered = rows.filter(status="rendered").count()
        if rendered != commits + 1 or (required and verified != commits + 1):
            raise RuntimeError(f"{name}: {rendered} rendered, {verified} verified of {commits + 1}")
        result = {"run": name, "kind": kind, "required": required, "commits": len(outcome.commits),
                  "seconds": seconds, "cpu": cpu, "verified": verified}
        if required:
            # The check alone, over the same commits: one keyring for all (as a fetch does), and a keyring
            # made for each commit (verify_commit, as the first version did).
            git_repo = repository_cache(repo).repo()
            shas = [c.sha for c in outcome.commits]
            trusted_keys = signing.trusted_keys(repo)
            started = time.perf_counter()
            with gitverify.Keyring(trusted_keys) as ring:
                if not all(ring.verify(git_repo, sha).ok for sha in shas):
                    raise RuntimeError(f"{name}: a commit failed verification")
            result["check_shared"] = time.perf_counter() - started
            started = time.perf_counter()
            if not all(gitverify.verify_commit(git_repo, sha, trusted_keys).ok for sha in shas):
                raise RuntimeError(f"{name}: a commit failed verification")
            result["check_each"] = time.perf_counter() - started
        return result

    try:
        results = [one("baseline", "openpgp", False), one("openpgp", "openpgp", True),
                   one("ssh", "ssh", True)]
    finally:
        keys.close()
    return {"commits": commits, "results": results}


# --- parent -----------------------------------------------------------------------------------------------


def run_child(commits: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleetgate-bench-signing-") as tmp:
        work = Path(tmp)
        return isolated.run(
            "bench.bench_signing", ["--child", "--commits", str(commits), "--workdir", str(work)],
            isolated.env(work))


def report(data: dict[str, Any]) -> str:
    n = data["commits"]
    base = data["results"][0]
    lines = [
        f"One fetch recording and rendering {n} new signed commits (one mapped path, two clusters, sources "
        "alone); SQLite file database; one process.",
        "",
        "| run | fetch: wall time | CPU time (this process) | per commit | vs baseline | check alone, one "
        "keyring per fetch: per commit | check alone, a keyring per commit: per commit (ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        label = {"baseline": "baseline: OpenPGP-signed, verification off",
                 "openpgp": "OpenPGP, verification required",
                 "ssh": "SSH (ed25519), verification required"}[r["run"]]
        if "check_shared" in r:
            shared = f"{r['check_shared'] / n * 1000:.0f} ms"
            each = (f"{r['check_each'] / n * 1000:.0f} ms "
                    f"({r['check_each'] / r['check_shared']:.1f}x)")
        else:
            shared = each = "–"
        lines.append(f"| {label} | {r['seconds']:.2f} s | {r['cpu']:.2f} s | "
                     f"{r['seconds'] / n * 1000:.0f} ms | {r['seconds'] / base['seconds']:.2f}x | {shared} | "
                     f"{each} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench signing")
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.commits, args.workdir)))
        return
    print(report(run_child(args.commits)))


if __name__ == "__main__":
    main(sys.argv[1:])
