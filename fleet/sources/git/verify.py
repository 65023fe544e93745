"""Commit signature verification with git itself: ``git verify-commit --raw`` against trusted keys only.

Django-free.  ``verify_commit(repo, sha, keys)`` (or ``Keyring(keys).verify(repo, sha)`` for many commits)
runs ``git verify-commit --raw`` through GitPython with

* a throwaway ``GNUPGHOME`` holding exactly the trusted OpenPGP public keys (``trust-model always``: a key
  is trusted because it is in this keyring, nothing else is), and
* ``gpg.ssh.allowedSignersFile`` built from the trusted SSH public keys (one principal per key, namespace
  ``git``), for SSH signatures (git >= 2.34),

and reads the outcome from the machine-readable output: GnuPG's ``[GNUPG:]`` status lines for OpenPGP, and
``ssh-keygen -Y verify``'s result line for SSH (OpenSSH does not translate it), never from translated text.
git runs with ``LC_ALL=C`` and its signing programs pinned (``gpg.program``, ``gpg.ssh.program``), so a
user's or system git config cannot swap in another verifier.

``parse_public_key(text)`` checks one trusted key and returns its kind and fingerprint: OpenPGP keys through
``gpg --import-options show-only``, SSH keys through ``ssh-keygen -l``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

from fleet.sources.git.errors import GitError

KEY_OPENPGP = "openpgp"
KEY_SSH = "ssh"

# Outcomes (the values of fleet.sources.choices.Verification).
VERIFIED = "verified"
UNSIGNED = "unsigned"
UNTRUSTED = "untrusted_key"
BAD = "bad_signature"
EXPIRED_KEY = "expired_key"
EXPIRED_SIGNATURE = "expired_signature"
REVOKED = "revoked_key"
UNSUPPORTED = "unsupported"
ERROR = "error"

VERIFY_TIMEOUT = 30.0
MAX_KEY_CHARS = 64 * 1024

_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$")
_SSH_GOOD_RE = re.compile(r'^Good "git" signature for (?P<principal>.+) with (?P<type>\S+) key (?P<fpr>\S+)$')
_SSH_GOOD_NO_PRINCIPAL_RE = re.compile(r'^Good "git" signature with (?P<type>\S+) key (?P<fpr>\S+)$')


class KeyError_(ValueError):
    """A trusted key that cannot be used (not a public key, unreadable, more than one)."""


@dataclass(frozen=True)
class TrustedKey:
    name: str
    kind: str  # KEY_OPENPGP | KEY_SSH
    public_key: str
    fingerprint: str = ""  # as parse_public_key gave it when the key was stored


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    fingerprint: str
    description: str  # the OpenPGP user id or the SSH key's comment and type


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying one commit.  ``reason`` is a sentence for people; the rest is data."""

    status: str
    reason: str
    signature_format: str = ""  # openpgp | ssh | x509 | ""
    signer: str = ""  # the OpenPGP user id, or the SSH principal (= the trusted key's name)
    fingerprint: str = ""  # primary key fingerprint (OpenPGP) or SHA256:... (SSH)
    key_name: str = ""  # the name of the trusted key that verified it

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED


# --------------------------------------------------------------------------- keys


def _run(args: Sequence[str], *, env: dict[str, str] | None = None, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=VERIFY_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", **(env or {})}, check=False)


def key_kind(text: str) -> str:
    """``openpgp`` or ``ssh`` by the key's form; ValueError for anything else (private keys included)."""
    body = text.strip()
    if "PRIVATE KEY" in body:
        raise KeyError_("this is a private key; give the public key only")
    if body.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"):
        return KEY_OPENPGP
    if _SSH_KEY_RE.match(body):
        return KEY_SSH
    raise KeyError_("not an OpenPGP public key block (gpg --armor --export) nor one SSH public key line "
                    "(ssh-ed25519 AAAA..., as in a .pub file)")


@contextlib.contextmanager
def _gnupg_home(keys: Sequence[str] = ()) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fg-gpg-") as home:
        os.chmod(home, 0o700)
        Path(home, "gpg.conf").write_text("trust-model always\nno-auto-key-retrieve\n")
        try:
            if keys:  # one import for all of them
                result = _run(["gpg", "--batch", "--no-tty", "--import"], env={"GNUPGHOME": home},
                              stdin="\n".join(keys))
                if result.returncode != 0:
                    raise KeyError_("gpg could not import the trusted keys: "
                                    + _last_line(result.stderr, "unreadable key"))
            yield home
        finally:
            # gpg may have started an agent for this home; it exits when told (nothing if none runs).
            _run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": home})


def _last_line(text: str, default: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else default


def parse_public_key(text: str) -> ParsedKey:
    """Check one trusted public key and return its kind and fingerprint (ValueError if unusable)."""
    if len(text) > MAX_KEY_CHARS:
        raise KeyError_(f"a key has at most {MAX_KEY_CHARS} characters")
    kind = key_kind(text)
    if kind == KEY_SSH:
        with tempfile.TemporaryDirectory(prefix="fg-ssh-") as tmp:
            path = Path(tmp, "key.pub")
            path.write_text(text.strip() + "\n")
            result = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)])
        # "256 SHA256:abc... comment (ED25519)"
        parts = result.stdout.split()
        if result.returncode != 0 or len(parts) < 3 or not parts[1].startswith("SHA256:"):
            raise KeyError_("ssh-keygen cannot read this SSH public key")
        return ParsedKey(kind=KEY_SSH, fingerprint=parts[1], description=" ".join(parts[2:])[:200])
    with tempfile.TemporaryDirectory(prefix="fg-gpg-") as home:
        os.chmod(home, 0o700)
        result = _run(["gpg", "--batch", "--no-tty", "--with-colons", "--import-options", "show-only",
                       "--import"], env={"GNUPGHOME": home}, stdin=text)
    primaries = [ln for ln in result.stdout.splitlines() if ln.startswith(("pub:", "sec:"))]
    if result.returncode != 0 or not primaries:
        raise KeyError_("gpg cannot read this OpenPGP public key: " + _last_line(result.stderr, "no key"))
    if any(ln.startswith("sec:") for ln in primaries):
        raise KeyError_("this is a private key; give the public key only")
    if len(primaries) != 1:
        raise KeyError_(f"one OpenPGP key per entry, this block holds {len(primaries)}")
    fingerprint, uid = "", ""
    for line in result.stdout.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr" and not fingerprint:
            fingerprint = fields[9]
        elif fields[0] == "uid" and not uid:
            uid = fields[9]
    if not fingerprint:
        raise KeyError_("gpg shows no fingerprint for this key")
    return ParsedKey(kind=KEY_OPENPGP, fingerprint=fingerprint, description=uid[:200])


def ssh_principal(name: str) -> str:
    """The principal of a trusted SSH key in the allowed signers file: its name, without spaces."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", name) or "key"


# --------------------------------------------------------------------------- verification


def signature_format(signature: str) -> str:
    if "-----BEGIN PGP SIGNATURE-----" in signature:
        return KEY_OPENPGP
    if "-----BEGIN SSH SIGNATURE-----" in signature:
        return KEY_SSH
    if "-----BEGIN SIGNED MESSAGE-----" in signature:
        return "x509"
    return "unknown"


class Keyring:
    """Trusted keys made ready for git, once for many commits: the allowed signers file at once, the
    throwaway GNUPGHOME on the first OpenPGP signature (setting it up costs more than a verification).
    Use as a context manager; everything is removed on exit."""

    def __init__(self, keys: Sequence[TrustedKey]) -> None:
        self.openpgp = [k for k in keys if k.kind == KEY_OPENPGP]
        self.ssh = [k for k in keys if k.kind == KEY_SSH]
        self._stack = contextlib.ExitStack()
        self._home: str | None = None
        self._signers: Path | None = None

    def __enter__(self) -> Keyring:
        tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="fg-verify-"))
        self._signers = Path(tmp, "allowed_signers")
        self._signers.write_text("".join(
            f'{ssh_principal(k.name)} namespaces="git" {k.public_key.strip()}\n' for k in self.ssh))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _gnupg_home(self) -> str:
        if self._home is None:
            self._home = self._stack.enter_context(_gnupg_home([k.public_key for k in self.openpgp]))
        return self._home

    def verify(self, repo: gitpython.Repo, sha: str) -> Verification:
        """Verify the signature of commit ``sha`` in ``repo`` against these keys (and nothing else)."""
        if self._signers is None:
            raise RuntimeError("use Keyring as a context manager")
        try:
            commit = repo.commit(sha)
        except (ValueError, gitpython.BadName) as exc:
            raise GitError(f"commit {sha[:12]} is not in the repository: {exc}") from None
        raw = commit.gpgsig or ""
        if not raw.strip():
            return Verification(UNSIGNED, "the commit is not signed")
        fmt = signature_format(raw)
        if fmt not in (KEY_OPENPGP, KEY_SSH):
            what = "an X.509/gitsign (Sigstore)" if fmt == "x509" else "an unknown kind of"
            return Verification(UNSUPPORTED, f"the commit carries {what} signature, which Fleetgate does "
                                "not verify (OpenPGP and SSH signatures only)", signature_format=fmt)
        env = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
        if fmt == KEY_OPENPGP:
            env["GNUPGHOME"] = self._gnupg_home()
        status, stdout, stderr = repo.git.execute(
            ["git", "-c", "gpg.program=gpg", "-c", "gpg.ssh.program=ssh-keygen",
             "-c", f"gpg.ssh.allowedSignersFile={self._signers}", "-c", "gpg.minTrustLevel=undefined",
             "verify-commit", "--raw", commit.hexsha],
            env=env, with_extended_output=True, with_exceptions=False, kill_after_timeout=VERIFY_TIMEOUT)
        output = f"{stdout}\n{stderr}"
        if fmt == KEY_OPENPGP:
            return _openpgp_outcome(status, output, self.openpgp)
        return _ssh_outcome(status, output, self.ssh)


def verify_commit(repo: gitpython.Repo, sha: str, keys: Sequence[TrustedKey]) -> Verification:
    """Verify the signature of commit ``sha`` in ``repo`` against ``keys`` (and nothing else)."""
    with Keyring(keys) as keyring:
        return keyring.verify(repo, sha)


def _openpgp_outcome(status: int, output: str, keys: Sequence[TrustedKey]) -> Verification:
    lines: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("[GNUPG:] "):
            word, _, rest = line[len("[GNUPG:] "):].partition(" ")
            lines.setdefault(word, []).append(rest)
    fmt = KEY_OPENPGP
    if "VALIDSIG" in lines:
        fields = lines["VALIDSIG"][0].split()
        fingerprint = fields[-1] if len(fields) >= 10 else fields[0]
    else:
        fingerprint = ""
    def uid(word: str) -> str:
        return lines[word][0].partition(" ")[2][:200]
    if "BADSIG" in lines:
        return Verification(BAD, "bad signature: the commit does not match its signature (altered)",
                            signature_format=fmt, signer=uid("BADSIG"))
    if "REVKEYSIG" in lines:
        return Verification(REVOKED, f"signed by a revoked key ({fingerprint or '?'})", signature_format=fmt,
                            signer=uid("REVKEYSIG"), fingerprint=fingerprint)
    if "EXPKEYSIG" in lines:
        return Verification(EXPIRED_KEY, f"signed by an expired key ({fingerprint or '?'})",
                            signature_format=fmt, signer=uid("EXPKEYSIG"), fingerprint=fingerprint)
    if "EXPSIG" in lines:
        return Verification(EXPIRED_SIGNATURE, "the signature has expired", signature_format=fmt,
                            signer=uid("EXPSIG"), fingerprint=fingerprint)
    if "GOODSIG" in lines and fingerprint and status == 0:
        name = _openpgp_key_name(fingerprint, keys)
        if not name:
            # gpg verified with a key that is not one of ours (its home should hold only ours): untrusted
            return Verification(UNTRUSTED, f"signed by key {fingerprint}, which is not a trusted key of this "
                                "repository", signature_format=fmt, signer=uid("GOODSIG"),
                                fingerprint=fingerprint)
        return Verification(VERIFIED, f"good signature by trusted key {name!r}", signature_format=fmt,
                            signer=uid("GOODSIG"), fingerprint=fingerprint, key_name=name)
    if "NO_PUBKEY" in lines or "ERRSIG" in lines:
        keyid = (lines.get("NO_PUBKEY") or lines.get("ERRSIG") or [""])[0].split(" ")[0]
        issuer = ""
        if "ERRSIG" in lines:
            # ERRSIG <keyid> <pkalgo> <hashalgo> <sig_class> <time> <rc> [<fpr>]; rc 9: no public key
            fields = lines["ERRSIG"][0].split()
            issuer = fields[6] if len(fields) >= 7 and len(fields[6]) >= 32 else ""
            if "NO_PUBKEY" not in lines and (len(fields) < 6 or fields[5] != "9"):
                code = fields[5] if len(fields) > 5 else "?"
                return Verification(ERROR, f"gpg cannot check this signature (error code {code}, e.g. an "
                                    "unsupported algorithm)", signature_format=fmt,
                                    fingerprint=issuer or keyid)
        return Verification(UNTRUSTED, f"signed by key {issuer or keyid or '?'}, which is not a trusted key "
                            "of this repository", signature_format=fmt, fingerprint=issuer or keyid)
    return Verification(ERROR, "gpg gave no verdict on the signature", signature_format=fmt)


def _openpgp_key_name(fingerprint: str, keys: Sequence[TrustedKey]) -> str:
    for key in keys:
        if key.fingerprint.upper() == fingerprint.upper():
            return key.name
    return ""


def _ssh_outcome(status: int, output: str, keys: Sequence[TrustedKey]) -> Verification:
    fmt = KEY_SSH
    principals = {ssh_principal(k.name): k.name for k in keys}
    for line in output.splitlines():
        line = line.strip()
        good = _SSH_GOOD_RE.match(line)
        if good and status == 0:
            name = principals.get(good["principal"], good["principal"])
            return Verification(VERIFIED, f"good signature by trusted key {name!r}", signature_format=fmt,
                                signer=name, fingerprint=good["fpr"], key_name=name)
        other = _SSH_GOOD_NO_PRINCIPAL_RE.match(line)
        if other:
            return Verification(UNTRUSTED, f"signed by SSH key {other['fpr']}, which is not a trusted key of "
                                "this repository", signature_format=fmt, fingerprint=other["fpr"])
    if not keys:
        return Verification(UNTRUSTED, "signed with an SSH key, and this repository trusts no SSH key",
                            signature_format=fmt)
    return Verification(BAD, "bad signature: ssh-keygen could not verify it ("
                        + _last_line(output, "no output") + ")", signature_format=fmt)
