"""Verified commits: a repository's trusted keys, and the signature check before a commit is rendered.

A repository with ``verification_mode = required`` renders (and so rolls out) only commits signed by one of
its ``trusted_keys``.  ``check_signature`` runs in the fetch/render step under the repository's git lock
(``fetch_repository`` for the head, before its policy sources are imported; ``render_pending`` for every
commit before it is rendered).  A refused commit gets status ``unverified`` with the reason; it is never
rendered, so no rollout starts from it, and what was deployed before stays deployed.

The check itself is ``fleet.sources.git.verify`` (``git verify-commit --raw`` against exactly these keys).
A commit's outcome is kept with the digest of the keys it was checked against (``verified_with``): when the
keys change, the head is checked again (a key added for a new signer lets a refused head through; a key
removed is no longer trusted).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from fleet.audit.services import record
from fleet.sources.choices import CommitStatus, Verification, VerificationMode
from fleet.sources.git import GitError, RepositoryCache
from fleet.sources.git import verify as gitverify
from fleet.sources.models import Commit, Repository

logger = logging.getLogger(__name__)

MAX_TRUSTED_KEYS = 50
MAX_KEY_NAME = 100


def normalize_trusted_keys(value: Any) -> list[dict[str, str]]:
    """The stored form of trusted keys: ``[{name, kind, fingerprint, public_key}]``, each key checked.

    Accepts ``[{name, public_key}]`` (``kind`` optional; if given it must match the key).  ValueError with
    a message naming the entry for anything unusable: not a list, a missing or repeated name, a private
    key, an unreadable key, the same key twice.
    """
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise ValueError("Trusted keys must be a list of {name, public_key} objects.")
    if len(value) > MAX_TRUSTED_KEYS:
        raise ValueError(f"At most {MAX_TRUSTED_KEYS} trusted keys per repository.")
    keys: list[dict[str, str]] = []
    names: set[str] = set()
    fingerprints: dict[str, str] = {}
    for index, item in enumerate(value):
        where = f"key {index + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object with name and public_key.")
        unknown = set(item) - {"name", "kind", "public_key", "fingerprint"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.")
        name, text = item.get("name"), item.get("public_key")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_KEY_NAME:
            raise ValueError(f"{where}: a name of 1 to {MAX_KEY_NAME} characters is required.")
        name = name.strip()
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ValueError(f"{where}: the name may not contain control characters.")
        where = f"key {name!r}"
        if name in names:
            raise ValueError(f"{where}: the name is used twice.")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: public_key is required.")
        if "\x00" in text:
            raise ValueError(f"{where}: public_key may not contain NUL characters.")
        try:
            parsed = gitverify.parse_public_key(text)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        except (OSError, GitError) as exc:
            raise ValueError(f"{where}: the key could not be checked ({type(exc).__name__}).") from None
        kind = item.get("kind")
        if kind not in (None, "", parsed.kind):
            raise ValueError(f"{where}: kind is {kind!r} but the key is an {parsed.kind} key.")
        if parsed.fingerprint in fingerprints:
            raise ValueError(f"{where}: the same key as {fingerprints[parsed.fingerprint]!r}.")
        names.add(name)
        fingerprints[parsed.fingerprint] = name
        keys.append({"name": name, "kind": parsed.kind, "fingerprint": parsed.fingerprint,
                     "public_key": text.strip() + "\n"})
    return keys


def trusted_keys(repo: Repository) -> list[gitverify.TrustedKey]:
    return [
        gitverify.TrustedKey(name=str(k.get("name", "")), kind=str(k.get("kind", "")),
                             public_key=str(k.get("public_key", "")),
                             fingerprint=str(k.get("fingerprint", "")))
        for k in (repo.trusted_keys or []) if isinstance(k, dict)
    ]


def keys_digest(repo: Repository) -> str:
    """A digest of the trusted keys (kind and fingerprint), to tell when they changed."""
    parts = sorted(f"{k.kind}:{k.fingerprint}:{k.name}" for k in trusted_keys(repo))
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def key_summary(repo: Repository) -> list[dict[str, str]]:
    """Name, kind and fingerprint of each trusted key (what the API shows besides the key itself)."""
    return [{"name": k.name, "kind": k.kind, "fingerprint": k.fingerprint} for k in trusted_keys(repo)]


def keyring(repo: Repository) -> AbstractContextManager[gitverify.Keyring | None]:
    """The repository's trusted keys made ready for many checks (a context manager; see check_signature);
    nothing is written (None) when the repository does not require signed commits."""
    if repo.verification_mode != VerificationMode.REQUIRED:
        return nullcontext(None)
    return gitverify.Keyring(trusted_keys(repo))


def check_signature(repo: Repository, cache: RepositoryCache, commit: Commit, *,
                    keys: gitverify.Keyring | None = None) -> bool:
    """May ``commit`` be rendered?  Verifies it (once per set of trusted keys) when the repository requires
    signed commits, stores the outcome on the commit and audits it; True when verified or not required.

    A refused commit not rendered yet gets status ``unverified``; one refused before that now passes (keys
    changed, or verification turned off) goes back to ``seen`` so that it is rendered.  Call under the git
    lock; pass ``keys`` (``with keyring(repo) as keys``) when checking many commits."""
    if repo.verification_mode != VerificationMode.REQUIRED:
        if commit.status == CommitStatus.UNVERIFIED:
            _save(commit, status=CommitStatus.SEEN)
        return True
    digest = keys_digest(repo)
    if commit.verified_with == digest and commit.verification != Verification.UNCHECKED:
        return commit.verification == Verification.VERIFIED
    try:
        if keys is not None:
            outcome = keys.verify(cache.repo(), commit.sha)
        else:
            with gitverify.Keyring(trusted_keys(repo)) as once:
                outcome = once.verify(cache.repo(), commit.sha)
    except (GitError, OSError, ValueError) as exc:
        logger.warning("verifying %s failed: %s", commit, exc)
        outcome = gitverify.Verification(gitverify.ERROR, f"the signature could not be checked "
                                         f"({type(exc).__name__})")
    fields: dict[str, Any] = {
        "verification": outcome.status,
        "verification_reason": outcome.reason[:500],
        "signature_format": outcome.signature_format,
        "signer": outcome.signer[:200],
        "signing_key": outcome.fingerprint[:100],
        "verified_with": digest,
    }
    if outcome.ok:
        if commit.status == CommitStatus.UNVERIFIED:
            fields["status"] = CommitStatus.SEEN
        _save(commit, **fields)
        record("commit.verified", commit, repository=repo,
               after={"signature_format": outcome.signature_format, "signer": outcome.signer,
                      "signing_key": outcome.fingerprint, "key_name": outcome.key_name},
               message=f"{commit.short_sha} signed by {outcome.signer or outcome.key_name} "
                       f"({outcome.signature_format} {outcome.fingerprint})")
        return True
    if commit.status in (CommitStatus.SEEN, CommitStatus.UNVERIFIED):
        fields["status"] = CommitStatus.UNVERIFIED
    # else: rendered before verification was required, or before its key was removed: what it rolled out
    # stays as it was, it keeps its status, and nothing more is rendered from it.
    _save(commit, **fields)
    record("commit.refused", commit, repository=repo,
           after={"verification": outcome.status, "reason": outcome.reason,
                  "signature_format": outcome.signature_format, "signing_key": outcome.fingerprint},
           message=f"{commit.short_sha} not rendered: {outcome.reason}"[:500])
    return False


def _save(commit: Commit, **fields: Any) -> None:
    Commit.objects.filter(pk=commit.pk).update(**fields)
    for key, value in fields.items():
        setattr(commit, key, value)


__all__ = [
    "check_signature",
    "key_summary",
    "keyring",
    "keys_digest",
    "normalize_trusted_keys",
    "trusted_keys",
]
