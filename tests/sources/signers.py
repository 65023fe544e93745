"""Real signing keys made by the tests: an OpenPGP key (gpg --quick-gen-key, no passphrase, in a throwaway
GNUPGHOME) and an SSH key (ssh-keygen -t ed25519), with the git options that sign a commit with each."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    out = subprocess.run(list(args), check=True, capture_output=True, text=True, input=stdin,
                         env={**os.environ, "LC_ALL": "C", **(env or {})})
    return out.stdout


class OpenPGPKey:
    """An ed25519 signing key in its own GNUPGHOME (short path under /tmp: gpg-agent's socket lives there).

    ``faked_time`` (e.g. "20200101T000000") makes the key and its signatures at that time: with
    ``expire="1d"`` the key has expired by today."""

    def __init__(self, uid: str, *, expire: str = "never", faked_time: str | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="fgk", dir="/tmp"))
        os.chmod(self.home, 0o700)
        self.uid = uid
        self._faked = ["--faked-system-time", faked_time] if faked_time else []
        _run("gpg", "--homedir", str(self.home), "--batch", "--passphrase", "", *self._faked,
             "--quick-gen-key", uid, "ed25519", "sign", expire)
        listing = _run("gpg", "--homedir", str(self.home), "--with-colons", "--list-keys")
        self.fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        # git calls gpg.program with its own arguments: this wrapper adds the home (and faked time).
        self.program = self.home / "gpg-wrapper"
        faked = " ".join(self._faked)
        self.program.write_text(f'#!/bin/sh\nexec gpg --homedir "{self.home}" {faked} "$@"\n')
        self.program.chmod(0o755)

    @property
    def public_key(self) -> str:
        return _run("gpg", "--homedir", str(self.home), "--armor", "--export", self.fingerprint)

    def revoke(self) -> None:
        """Revoke the key with the certificate gpg made at generation (the exported key then carries it)."""
        cert = (self.home / "openpgp-revocs.d" / f"{self.fingerprint}.rev").read_text()
        cert = cert.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        _run("gpg", "--homedir", str(self.home), "--batch", "--import", stdin=cert)

    def git_options(self) -> list[str]:
        return ["-c", "gpg.format=openpgp", "-c", f"gpg.program={self.program}",
                "-c", f"user.signingkey={self.fingerprint}"]

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False,
                       capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


class SSHKey:
    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(self.path))
        self.public_key = self.path.with_suffix(".pub").read_text()
        self.fingerprint = _run("ssh-keygen", "-l", "-E", "sha256", "-f", str(self.path)).split()[1]
        self.private_key = self.path.read_text()

    def git_options(self) -> list[str]:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.path}"]

    def close(self) -> None:
        pass


def signed_commit(git: object, key: OpenPGPKey | SSHKey, message: str) -> None:
    """``git commit -S`` with ``key`` through a fixture's ``git(*args)`` (files staged before)."""
    git(*key.git_options(), "commit", "-q", "-S", "--allow-empty", "-m", message)  # type: ignore[operator]
